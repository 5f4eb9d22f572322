"""Automata (rsm_shm.fsm): the pure step rule, the mode machine, posting, draining, joining,
failures and SIGKILL, on thread and process hosts.

Handlers are module-level functions so that spawned hosts can import them.  Every
automaton is named through the ``shm_name`` fixture, so its status block and inbox rings
are removed after the test whatever happens.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

import rsm_shm
from rsm_shm.fsm import (
    MAX_TRANSITION_CHAIN,
    Automaton,
    AutomatonFailed,
    AutomatonShutDown,
    ExitKind,
    HostKind,
    Mode,
    Op,
    Opcode,
    TransitionLoopError,
    current,
    post,
    wait_all,
)
from rsm_shm.fsm._core import Machine

pytestmark = pytest.mark.timeout(60)

#: Generous bound for anything that involves starting a process on a loaded 2-core CI box.
SLOW = 30.0


def wait_until(pred, timeout=SLOW, interval=0.005):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


# -- handlers (module level: spawn imports them) -------------------------------------------


def adder(total, op):
    """State: an int; CMD b"<n>" adds n; b"boom" raises."""
    if op.code is Opcode.CMD:
        if op.payload == b"boom":
            raise ValueError("boom requested")
        return total + int(op.payload)
    return total


def ping_pong(state, op):
    """State: (peer name, rounds, last seen).  Bounces an increasing counter to the peer;
    at ``rounds`` it drains both.  The first one (peer given in START) serves."""
    peer, rounds, last = state
    if op.code is Opcode.START and last == -1:
        post(peer, b"0")
        return (peer, rounds, 0)
    if op.code is Opcode.CMD:
        n = int(op.payload)
        if n >= rounds:
            current().drain()
            Automaton(peer, create=False).drain()
        else:
            post(peer, b"%d" % (n + 1))
        return (peer, rounds, n)
    return state


def self_terminating(state, op):
    """Schedules its own drain 250 ms after START (the seed's timer scenario)."""
    if op.code is Opcode.START:
        current().drain_after(0.25)
        return "armed"
    if op.code is Opcode.EXIT:
        return "exited"
    return state


def sleepy(state, op):
    """Slow commands (to keep work in the inbox while something else happens)."""
    if op.code is Opcode.CMD:
        time.sleep(0.01)
        return state + 1
    return state


# -- the pure step rule ---------------------------------------------------------------------


def test_machine_delivers_transition_after_a_change():
    seen = []

    def h(state, op):
        seen.append((op.code, op.payload, op.previous, state))
        if op.code is Opcode.CMD:
            return state + len(op.payload)
        return state

    m = Machine(h, 0)
    m.deliver(Op(Opcode.START))
    m.deliver(Op(Opcode.CMD, b"abc"))
    m.deliver(Op(Opcode.CMD, b""))  # no change: no TRANSITION
    assert seen == [
        (Opcode.START, b"", None, 0),
        (Opcode.CMD, b"abc", None, 0),
        (Opcode.TRANSITION, b"", 0, 3),
        (Opcode.CMD, b"", None, 3),
    ]
    assert m.state == 3 and m.transitions == 1


def test_machine_chains_transitions_and_bounds_the_chain():
    def settle(state, op):  # counts up to 3 through TRANSITIONs
        if op.code is Opcode.CMD or (op.code is Opcode.TRANSITION and state < 3):
            return state + 1
        return state

    m = Machine(settle, 0)
    m.deliver(Op(Opcode.CMD, b"x"))
    assert m.state == 3 and m.transitions == 3

    def restless(state, op):
        return state + 1

    m = Machine(restless, 0)
    with pytest.raises(TransitionLoopError):
        m.deliver(Op(Opcode.CMD, b""))
    assert m.transitions == MAX_TRANSITION_CHAIN


def test_machine_exit_has_no_transition_and_uncomparable_states_count_as_changed():
    class NoEq:
        def __ne__(self, other):
            raise TypeError("no comparison")

    calls = []

    def h(state, op):
        calls.append(op.code)
        return NoEq() if op.code is not Opcode.TRANSITION else state

    m = Machine(h, None)
    m.deliver(Op(Opcode.CMD, b""))
    assert calls == [Opcode.CMD, Opcode.TRANSITION]
    m.deliver(Op(Opcode.EXIT))
    assert calls[-1] is Opcode.EXIT
    with pytest.raises(TypeError):
        Machine("not callable", 0)


# -- thread host: the mode machine and the opcode sequence ---------------------------------


def test_thread_host_mode_machine_and_opcode_order(shm_name):
    log = []
    gate = threading.Event()

    def h(state, op):
        log.append((op.code, op.payload))
        if op.code is Opcode.CMD:
            gate.wait(10)
            return state + [op.payload]
        return state

    a = Automaton(shm_name("fsm"), h, [], create=True)
    try:
        assert a.mode is Mode.IDLE
        a.post(b"queued before start")  # an IDLE automaton accepts commands
        a.start("thread")
        wait_until(lambda: a.mode is Mode.RUNNING)
        a.post(b"second")
        a.drain()
        assert a.mode in (Mode.SIGNALED, Mode.DRAINING)
        with pytest.raises(AutomatonShutDown, match="draining") as info:
            a.post(b"too late")
        assert isinstance(info.value, rsm_shm.ShutDown)  # as a put to a shut-down ring
        gate.set()
        assert a.join(SLOW) is True
        assert a.mode is Mode.DEAD
        codes = [c for c, _ in log]
        assert codes[0] is Opcode.START and codes[-1] is Opcode.EXIT
        assert [p for c, p in log if c is Opcode.CMD] == [b"queued before start", b"second"]
        assert codes.count(Opcode.DRAIN) == 1
        assert codes.index(Opcode.DRAIN) < codes.index(Opcode.EXIT)
        s = a.statistics()
        assert s.mode is Mode.DEAD and s.exit_kind is ExitKind.CLEAN and s.host is HostKind.THREAD
        assert s.commands == 2 and s.transitions == 2 and s.dropped == 0
        assert "second" in s.state and s.error == ""
        with pytest.raises(AutomatonShutDown, match="dead"):
            a.post(b"after death")
        a.drain()  # idempotent on a dead automaton
        assert a.exception() is None
        assert "FINISHED (drained)" in repr(a)  # a clean end does not read as a failure
    finally:
        a.unlink()
        a.close()


def test_drain_with_a_full_inbox_delivers_every_command_then_exit(shm_name):
    log = []

    def h(state, op):
        log.append(op)
        return state

    capacity = 4096  # bytes: a few hundred small commands
    a = Automaton(shm_name("fsm"), h, None, create=True, capacity=capacity)
    try:
        n = 0
        while True:  # fill the inbox to the brim before the host exists
            try:
                a.post_nowait(b"%d" % n)
            except queue.Full:
                break
            n += 1
            assert n <= 100 * capacity, "the inbox never filled up"
        assert n >= 1
        with pytest.raises(queue.Full):
            a.post(b"x", timeout=0.05)
        a.drain()
        a.start("thread")
        assert a.join(SLOW) is True
        cmds = [int(op.payload) for op in log if op.code is Opcode.CMD]
        assert cmds == list(range(n))
        assert [op.code for op in log if op.code is not Opcode.CMD] == [Opcode.START, Opcode.DRAIN, Opcode.EXIT]
        assert log[-1].code is Opcode.EXIT
        assert a.statistics().commands == n
    finally:
        a.unlink()
        a.close()


def test_misuse_is_reported(shm_name):
    with pytest.raises(TypeError):
        Automaton(shm_name("fsm"), handler=42)
    with pytest.raises(ValueError):
        Automaton(shm_name("fsm"), adder, 0, capacity=0)
    with pytest.raises(FileNotFoundError):
        Automaton(shm_name("missing"), create=False)
    with pytest.raises(RuntimeError, match="outside"):
        current()
    a = Automaton(shm_name("fsm"), adder, 0, create=True)
    try:
        with pytest.raises(ValueError):
            a.start("carrier pigeon")
        other = Automaton(a.name, create=False)
        with pytest.raises(RuntimeError, match="no handler"):
            other.start()
        other.close()
        with pytest.raises(TypeError, match="pickle"):
            Automaton(shm_name("fsm"), lambda s, op: s, 0, create=True).start("process")
        a.start("thread")
        with pytest.raises(RuntimeError, match="already started"):
            a.start("thread")
        a.drain()
        assert a.join(SLOW)
    finally:
        a.unlink()
        a.close()
    with pytest.raises(ValueError, match="closed"):
        a.post(b"1")


def test_handle_pickles_as_its_name_and_post_by_name(shm_name):
    a = Automaton(shm_name("fsm"), adder, 0, create=True).start("thread")
    try:
        b = pickle.loads(pickle.dumps(a))
        assert b.name == a.name and b._handler is None
        b.post(b"2")
        post(a.name, b"3")
        b.drain()
        assert b.join(SLOW) is True
        assert a.statistics().state == "5"
        b.close()
    finally:
        a.unlink()
        a.close()


# -- process hosts ------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [200])
def test_ping_pong_between_two_process_hosted_automata(shm_name, rounds):
    na, nb = shm_name("ping"), shm_name("pong")
    a = Automaton(na, ping_pong, (nb, rounds, -1), create=True)
    b = Automaton(nb, ping_pong, (na, rounds, -2), create=True)
    try:
        b.start("process")
        a.start("process")
        assert wait_all([a, b], timeout=SLOW) is True
        sa, sb = a.statistics(), b.statistics()
        assert sa.exit_kind is ExitKind.CLEAN and sb.exit_kind is ExitKind.CLEAN
        assert sa.host is HostKind.PROCESS and sa.host_pid != os.getpid()
        # b received 0, 2, ..., a received 1, 3, ...: rounds + 1 commands in all.
        assert sa.commands + sb.commands == rounds + 1
        assert str(rounds) in (sa.state + sb.state)
    finally:
        for x in (a, b):
            x.unlink()
            x.close()


def test_timer_terminates_an_automaton_in_250_ms(shm_name):
    a = Automaton(shm_name("fsm"), self_terminating, "new", create=True)
    try:
        t0 = time.monotonic()
        a.start("thread")
        assert a.join(SLOW) is True
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 2.0, elapsed
        s = a.statistics()
        assert s.state == "'exited'" and s.exit_kind is ExitKind.CLEAN
    finally:
        a.unlink()
        a.close()


def test_timer_terminates_a_process_hosted_automaton(shm_name):
    a = Automaton(shm_name("fsm"), self_terminating, "new", create=True)
    try:
        a.start("process")
        assert a.join(SLOW) is True
        s = a.statistics()
        assert s.ended - s.started >= 0.25  # started is stamped before the host even exists
        assert s.state == "'exited'"
    finally:
        a.unlink()
        a.close()


@pytest.mark.parametrize("host", ["thread", "process"])
def test_handler_exception_ends_dead_and_join_reports_it(shm_name, host):
    a = Automaton(shm_name("fsm"), adder, 0, create=True, capacity=64)
    try:
        a.start(host)
        a.post(b"1")
        a.post(b"boom")
        with pytest.raises(AutomatonFailed) as info:
            a.join(SLOW)
        e = info.value
        assert e.kind is ExitKind.ERROR and e.name == a.name
        assert "ValueError: boom requested" in e.text and "Traceback" in e.text
        assert "in state 1" in e.text
        assert a.mode is Mode.DEAD
        assert isinstance(a.exception(), AutomatonFailed)
        with pytest.raises(AutomatonShutDown, match="handler raised"):
            a.post(b"2")
        # Another handle (any process) sees the same report.
        other = Automaton(a.name, create=False)
        with pytest.raises(AutomatonFailed, match="boom requested"):
            other.join(1)
        assert "boom requested" in other.statistics().error
        other.close()
    finally:
        a.unlink()
        a.close()


def test_sigkill_of_a_process_host_is_detected(shm_name):
    a = Automaton(shm_name("fsm"), sleepy, 0, create=True, capacity=1024)
    try:
        a.start("process")
        for _ in range(200):
            a.post(b"x")
        wait_until(lambda: a.statistics().commands > 0)
        pid = a.statistics().host_pid
        os.kill(pid, signal.SIGKILL)
        # A handle without the Process object (as another process would have) notices too.
        other = Automaton(a.name, create=False)
        with pytest.raises(AutomatonFailed) as info:
            other.join(SLOW)
        assert info.value.kind is ExitKind.KILLED
        assert str(pid) in info.value.text
        with pytest.raises(AutomatonFailed, match="SIGKILL|died"):
            a.join(1)
        s = a.statistics()
        assert s.mode is Mode.DEAD and s.exit_kind is ExitKind.KILLED and not s.host_alive
        assert s.dropped > 0
        with pytest.raises(AutomatonShutDown):
            a.post(b"x")
        other.close()
    finally:
        a.unlink()
        a.close()


def test_post_to_a_killed_host_fails_once_noticed(shm_name):
    a = Automaton(shm_name("fsm"), adder, 0, create=True)
    try:
        a.start("process")
        a.post(b"1")
        wait_until(lambda: a.statistics().commands == 1)
        os.kill(a.statistics().host_pid, signal.SIGKILL)
        with pytest.raises(AutomatonShutDown, match="died"):
            deadline = time.monotonic() + SLOW
            while time.monotonic() < deadline:
                a.post(b"1")
                time.sleep(0.01)
    finally:
        a.unlink()
        a.close()


def test_subprocess_host(shm_name):
    a = Automaton(shm_name("fsm"), adder, 10, create=True).start("subprocess")
    try:
        a.post(b"5")
        a.drain()
        assert a.join(SLOW) is True
        assert a.statistics().state == "15"
    finally:
        a.unlink()
        a.close()


def test_wait_all_reports_failures_after_everyone_ended(shm_name):
    good = Automaton(shm_name("good"), adder, 0, create=True).start("thread")
    bad = Automaton(shm_name("bad"), adder, 0, create=True).start("thread")
    try:
        assert wait_all([good, bad], timeout=0.05) is False
        bad.post(b"boom")
        good.post(b"1")
        good.drain()
        with pytest.raises(AutomatonFailed, match="boom"):
            wait_all([good.name, bad.name], timeout=SLOW)
        assert good.mode is Mode.DEAD and good.join(0) is True
    finally:
        for x in (good, bad):
            x.unlink()
            x.close()


def test_the_pipeline_example_runs(shm_name):
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "actors_pipeline.py")
    r = subprocess.run(
        [sys.executable, example, shm_name("pipeline"), "300"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sum of squares 1..300 = 9045050 (expected 9045050, 300 values)" in r.stdout


def test_a_poster_blocked_on_a_full_inbox_learns_that_the_host_was_killed(shm_name):
    a = Automaton(shm_name("fsm"), sleepy, 0, create=True, capacity=1024)
    try:
        a.start("process")
        errors = []

        def flood():
            other = Automaton(a.name, create=False)  # no Process object: only /proc to go by
            try:
                for _ in range(100_000):
                    other.post(b"x" * 64)
            except AutomatonShutDown as e:
                errors.append(e)
            finally:
                other.close()

        t = threading.Thread(target=flood)
        t.start()
        from rsm_shm.ring import Ring

        inbox = Ring(a.name + ".inbox.0", create=False)
        wait_until(lambda: inbox.statistics().blocked_producers >= 1)  # the flooder waits for room
        inbox.close()
        os.kill(a.statistics().host_pid, signal.SIGKILL)
        t.join(SLOW)
        assert not t.is_alive()
        assert len(errors) == 1 and "died" in str(errors[0])
        with pytest.raises(AutomatonFailed):
            a.join(SLOW)
    finally:
        a.unlink()
        a.close()


def stress_counter(state, op):
    """State: (count, {producer: last seq}, in_order).  CMD b"<producer>:<seq>"."""
    if op.code is Opcode.CMD:
        count, last, ok = state
        who, seq = op.payload.split(b":")
        seq = int(seq)
        ok = ok and seq == last.get(who, -1) + 1
        last = dict(last)
        last[who] = seq
        return (count + 1, last, ok)
    return state


def _stress_producer(name, who, n):
    a = Automaton(name, create=False)
    for i in range(n):
        a.post(b"%s:%d" % (who, i))
    a.close()


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_many_producer_processes_one_automaton_exact_count_and_per_producer_order(
    shm_name, start_method, single_threaded
):
    import multiprocessing

    producers, n = 4, 1500
    a = Automaton(shm_name("stress"), stress_counter, (0, {}, True), create=True, capacity=4096)
    try:
        a.start("process", start_method=start_method)
        ctx = multiprocessing.get_context(start_method)
        procs = [ctx.Process(target=_stress_producer, args=(a.name, b"p%d" % i, n)) for i in range(producers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(SLOW)
            assert p.exitcode == 0
        a.drain()
        assert a.join(SLOW) is True
        s = a.statistics()
        assert s.commands == producers * n
        assert s.state.startswith(f"({producers * n}, ") and s.state.endswith("True)")
    finally:
        a.unlink()
        a.close()


def test_an_anonymous_automaton_leaves_nothing_behind():
    code = (
        "import os\n"
        "from rsm_shm.fsm import Automaton\n"
        "a = Automaton(None, lambda s, op: s, 0).start('thread')\n"
        "a.post(b'1'); a.drain(); assert a.join(10)\n"
        "print(os.getpid(), a.name)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pid, name = r.stdout.split()
    assert name.startswith(f"anon.{pid}.")
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"rsm_shm.anon.{pid}.")]


def test_names_too_long_for_the_inbox_are_refused():
    with pytest.raises(ValueError, match="too long"):
        Automaton("x" * 190, lambda s, op: s, 0)


def test_the_benchmark_runs_quick():
    tool = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "bench_fsm.py")
    r = subprocess.run([sys.executable, tool, "--quick", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    import json

    res = json.loads(r.stdout)
    assert res["stream_cmds_per_s"] > 0 and res["ping_pong_round_trips_per_s"] > 0
    assert set(res["timers"]) == {"sleep", "fire", "delivered"}


def test_a_drain_whose_caller_died_before_closing_the_inbox_still_finishes(shm_name):
    log = []

    def h(state, op):
        log.append(op.code)
        return state

    a = Automaton(shm_name("fsm"), h, None, create=True).start("thread")
    try:
        wait_until(lambda: a.mode is Mode.RUNNING)
        # What a drainer killed between its two steps leaves: SIGNALED, inbox still open.
        assert a._status.cas(int(Mode.RUNNING), int(Mode.SIGNALED))
        assert a.join(SLOW) is True
        assert log == [Opcode.START, Opcode.DRAIN, Opcode.EXIT]
    finally:
        a.unlink()
        a.close()


def test_an_inbox_shut_down_behind_our_back_drains_the_automaton(shm_name):
    from rsm_shm.ring import Ring

    log = []

    def h(state, op):
        log.append(op.code)
        return state

    a = Automaton(shm_name("fsm"), h, None, create=True).start("thread")
    try:
        a.post(b"1")
        ring = Ring(a.name + ".inbox.0", create=False)
        ring.shutdown()
        ring.close()
        assert a.join(SLOW) is True
        assert log[0] is Opcode.START and log[-2:] == [Opcode.DRAIN, Opcode.EXIT]
        assert log.count(Opcode.CMD) == 1
    finally:
        a.unlink()
        a.close()


def test_join_is_interruptible(shm_name):
    a = Automaton(shm_name("fsm"), adder, 0, create=True).start("thread")
    try:
        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            a.join(SLOW)
        assert time.monotonic() - t0 < SLOW / 2
        timer.join()
        a.drain()
        assert a.join(SLOW)
    finally:
        a.unlink()
        a.close()


def test_a_handler_cannot_join_its_own_automaton(shm_name):
    errors = []

    def h(state, op):
        if op.code is Opcode.START:
            try:
                current().join(1)
            except RuntimeError as e:
                errors.append(e)
        return state

    a = Automaton(shm_name("fsm"), h, None, create=True).start("thread")
    try:
        a.drain()
        assert a.join(SLOW) is True
        assert len(errors) == 1 and "itself" in str(errors[0])
    finally:
        a.unlink()
        a.close()


def test_post_by_name_follows_an_automaton_created_again_under_the_same_name(shm_name):
    name = shm_name("again")
    first = Automaton(name, adder, 0, create=True).start("thread")
    post(name, b"1")  # caches a handle on the first one
    first.drain()
    assert first.join(SLOW)
    first.unlink()
    first.close()
    second = Automaton(name, adder, 100, create=True).start("thread")
    try:
        post(name, b"2")  # the cached handle says DEAD: the new automaton gets it
        second.drain()
        assert second.join(SLOW)
        assert second.statistics().state == "102"
    finally:
        second.unlink()
        second.close()


def test_kill_a_stuck_process_host(shm_name):
    a = Automaton(shm_name("fsm"), sleepy, 0, create=True)
    try:
        a.start("process")
        a.post(b"x")
        wait_until(lambda: a.statistics().commands == 1)
        a.kill()
        assert a.mode is Mode.DEAD
        with pytest.raises(AutomatonFailed, match="SIGKILL"):
            a.join(SLOW)
        a.kill()  # idempotent on a dead automaton
    finally:
        a.unlink()
        a.close()
    t = Automaton(shm_name("fsm"), adder, 0, create=True).start("thread")
    try:
        with pytest.raises(RuntimeError, match="no host process"):
            t.kill()
        t.drain()
        assert t.join(SLOW)
    finally:
        t.unlink()
        t.close()


def test_post_many(shm_name):
    log = []

    def h(state, op):
        if op.code is Opcode.CMD:
            log.append(op.payload)
        return state

    a = Automaton(shm_name("fsm"), h, None, create=True, capacity=1024)
    try:
        a.post_many([b"a", bytearray(b"b"), memoryview(b"c")])
        with pytest.raises(queue.Full) as info:
            a.post_many([b"x" * 100] * 50, timeout=0.05)  # 50 * 128 bytes cannot fit in 1 KiB
        sent = info.value.sent
        assert 0 < sent < 50
        a.start("thread")
        a.post_many([b"%d" % i for i in range(500)])  # more than fits at once: waits for room
        a.drain()
        with pytest.raises(AutomatonShutDown):
            a.post_many([b"late"])
        assert a.join(SLOW)
        assert log == [b"a", b"b", b"c"] + [b"x" * 100] * sent + [b"%d" % i for i in range(500)]
    finally:
        a.unlink()
        a.close()
