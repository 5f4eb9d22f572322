"""Supervised automata: restarts after a handler exception or a SIGKILL, the bounded
restart policy, and what joiners see while a restart is pending."""

from __future__ import annotations

import os
import signal
import time

import pytest


from rsm_shm.fsm import (
    Automaton,
    AutomatonFailed,
    AutomatonShutDown,
    ExitKind,
    Mode,
    Opcode,
    RestartPolicy,
    Supervisor,
)

pytestmark = pytest.mark.timeout(90)

SLOW = 30.0


def fragile(total, op):
    """CMD b"<n>" adds n; b"boom" raises."""
    if op.code is Opcode.CMD:
        if op.payload == b"boom":
            raise RuntimeError("fragile handler broke")
        return total + int(op.payload)
    return total


def wait_for(a: Automaton, pred, timeout=SLOW):
    deadline = time.monotonic() + timeout
    while True:
        s = a.statistics()
        if pred(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in time; last status: {s}")
        time.sleep(0.005)


def post_retrying(a: Automaton, payload: bytes, timeout=SLOW):
    """Post, retrying while a restart is in progress (posts to a dead incarnation fail)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            a.post(payload)
            return
        except AutomatonShutDown:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


@pytest.mark.parametrize("host", ["thread", "process"])
def test_supervisor_restarts_after_handler_exception_then_gives_up(shm_name, host):
    sup = Supervisor(RestartPolicy(max_restarts=2, window=60.0))
    a = Automaton(shm_name("sup"), fragile, 0, create=True)
    try:
        sup.watch(a)
        a.start(host)
        a.post(b"5")
        a.post(b"boom")
        s = wait_for(a, lambda s: s.restarts == 1 and s.mode is Mode.RUNNING)
        assert s.generation == 1 and s.exit_kind is ExitKind.NONE
        assert "fragile handler broke" in s.error  # the last failure stays visible
        assert s.state == "0"  # restarted from the initial state
        post_retrying(a, b"7")
        wait_for(a, lambda s: s.state == "7")
        assert a.join(0.05) is False  # alive and well: join keeps waiting
        a.post(b"boom")
        wait_for(a, lambda s: s.restarts == 2 and s.mode is Mode.RUNNING)
        post_retrying(a, b"boom")
        with pytest.raises(AutomatonFailed) as info:
            a.join(SLOW)
        assert info.value.kind is ExitKind.ERROR
        assert "gave up" in info.value.text and "fragile handler broke" in info.value.text
        s = a.statistics()
        assert s.mode is Mode.DEAD and not s.restart_pending and s.restarts == 2
        assert sup.statistics().restarts == 2 and sup.statistics().gave_up == 1
    finally:
        sup.stop()
        a.unlink()
        a.close()


@pytest.mark.parametrize("host", ["process", "subprocess"])
def test_supervisor_restarts_a_sigkilled_process_host(shm_name, host):
    sup = Supervisor(RestartPolicy(max_restarts=3, window=60.0))
    a = Automaton(shm_name("sup"), fragile, 0, create=True)
    try:
        sup.watch(a)
        a.start(host)
        a.post(b"1")
        s = wait_for(a, lambda s: s.state == "1")
        first_pid = s.host_pid
        os.kill(first_pid, signal.SIGKILL)
        s = wait_for(a, lambda s: s.restarts == 1 and s.mode is Mode.RUNNING)
        assert s.host_pid != first_pid and s.host_alive
        assert "SIGKILL" in s.error or "died" in s.error
        post_retrying(a, b"2")
        wait_for(a, lambda s: s.state == "2")
        a.drain()
        assert a.join(SLOW) is True
        assert a.statistics().exit_kind is ExitKind.CLEAN
    finally:
        sup.stop()
        a.unlink()
        a.close()


def test_zero_restart_policy_reports_like_an_unsupervised_automaton(shm_name):
    sup = Supervisor(RestartPolicy(max_restarts=0))
    a = Automaton(shm_name("sup"), fragile, 0, create=True)
    try:
        sup.watch(a).start("thread")
        a.post(b"boom")
        with pytest.raises(AutomatonFailed, match="fragile handler broke"):
            a.join(SLOW)
        assert a.statistics().restarts == 0
    finally:
        sup.stop()
        a.unlink()
        a.close()


def test_a_closed_supervisor_makes_a_pending_restart_final(shm_name):
    sup = Supervisor(RestartPolicy(max_restarts=5))
    a = Automaton(shm_name("sup"), fragile, 0, create=True)
    try:
        sup.watch(a)
        sup._stop.set()  # freeze the supervisor thread, keep the automaton marked supervised
        sup._thread.join(5)
        a.start("thread")
        a.post(b"boom")
        wait_for(a, lambda s: s.mode is Mode.DEAD and s.restart_pending)
        assert a.join(0.1) is False  # a live supervisor may still restart it
        sup.stop()
        with pytest.raises(AutomatonFailed):
            a.join(SLOW)
    finally:
        sup.stop()
        a.unlink()
        a.close()


def test_policy_validation():
    with pytest.raises(ValueError):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ValueError):
        RestartPolicy(window=0)
    with pytest.raises(TypeError):
        Supervisor(policy=3)  # type: ignore[arg-type]


def test_drain_makes_a_pending_restart_final(shm_name):
    sup = Supervisor(RestartPolicy(max_restarts=5))
    a = Automaton(shm_name("sup"), fragile, 0, create=True)
    try:
        sup.watch(a)
        sup._stop.set()  # freeze the supervisor so the pending restart stays pending
        sup._thread.join(5)
        a.start("thread")
        a.post(b"boom")
        wait_for(a, lambda s: s.mode is Mode.DEAD and s.restart_pending)
        a.drain()
        assert not a.statistics().restart_pending
        with pytest.raises(AutomatonFailed, match="fragile handler broke"):
            a.join(SLOW)
    finally:
        sup.stop()
        a.unlink()
        a.close()


def draining_breaks(state, op):
    if op.code is Opcode.DRAIN:
        raise RuntimeError("broke while draining")
    return state


def test_a_failure_while_draining_is_not_restarted(shm_name):
    sup = Supervisor(RestartPolicy(max_restarts=5))
    a = Automaton(shm_name("sup"), draining_breaks, 0, create=True)
    try:
        sup.watch(a).start("thread")
        a.drain()
        with pytest.raises(AutomatonFailed, match="broke while draining"):
            a.join(SLOW)
        time.sleep(0.05)  # a few supervisor polls
        s = a.statistics()
        assert s.restarts == 0 and s.mode is Mode.DEAD and not s.restart_pending
    finally:
        sup.stop()
        a.unlink()
        a.close()


def test_unwatch_makes_the_handle_free_to_close(shm_name):
    sup = Supervisor(RestartPolicy(max_restarts=5))
    a = Automaton(shm_name("sup"), fragile, 0, create=True)
    try:
        sup.watch(a).start("thread")
        sup.unwatch(a)
        assert a.statistics().supervisor_pid == 0
        a.post(b"boom")  # unsupervised now: the failure is final
        with pytest.raises(AutomatonFailed):
            a.join(SLOW)
        assert a.statistics().restarts == 0
    finally:
        sup.stop()
        a.unlink()
        a.close()


def test_a_pending_restart_is_final_once_the_supervisor_process_died(shm_name):
    import subprocess
    import sys

    # A stand-in supervisor process: alive when the automaton fails, killed afterwards.
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    a = Automaton(shm_name("sup"), fragile, 0, create=True)
    try:
        a._status.set_supervisor(stand_in.pid)
        a.start("thread")
        a.post(b"boom")
        wait_for(a, lambda s: s.mode is Mode.DEAD and s.restart_pending)
        assert a.join(0.1) is False  # its supervisor lives: a restart may come
        stand_in.kill()
        stand_in.wait()
        with pytest.raises(AutomatonFailed, match="fragile handler broke"):
            a.join(SLOW)
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
            stand_in.wait()
        a.unlink()
        a.close()


# -- other watchers during a restart ----------------------------------------------------


def _watch_by_name(name: str, stop, failures) -> None:
    """In another process: join() and check_host() in a tight loop until told to stop;
    every AutomatonFailed is a watcher seeing a death the supervisor is handling."""
    a = Automaton(name, create=False)
    try:
        while not stop.is_set():
            try:
                a.check_host()
                a.join(0.002)
            except AutomatonFailed as e:
                failures.put(str(e))
                return
    finally:
        a.close()


@pytest.mark.parametrize("watcher", ["thread", "process"])
def test_one_sigkill_is_one_restart_whoever_watches(shm_name, watcher):
    import multiprocessing
    import queue
    import threading

    sup = Supervisor(RestartPolicy(max_restarts=3, window=60.0))
    a = Automaton(shm_name("sup"), fragile, 0, create=True)
    ctx = multiprocessing.get_context("spawn")
    stop, failures = ctx.Event(), ctx.Queue()
    workers: list = []
    try:
        sup.watch(a)
        a.start("process")
        a.post(b"1")
        wait_for(a, lambda s: s.state == "1")
        if watcher == "thread":
            # Threads of the supervising process, sharing its handle (and its Process object).
            def loop(call):
                try:
                    while not stop.is_set():
                        call()
                except AutomatonFailed as e:
                    failures.put(str(e))

            workers = [
                threading.Thread(target=loop, args=(a.check_host,), daemon=True),
                threading.Thread(target=loop, args=(lambda: a.join(0.002),), daemon=True),
            ]
        else:
            workers = [ctx.Process(target=_watch_by_name, args=(a.name, stop, failures), daemon=True) for _ in range(2)]
        for w in workers:
            w.start()
        for kill in (1, 2):
            pid = a.statistics().host_pid
            os.kill(pid, signal.SIGKILL)
            s = wait_for(a, lambda s: s.restarts >= kill and s.mode is Mode.RUNNING and s.host_pid != pid)
            post_retrying(a, b"%d" % kill)  # the new host takes commands
            wait_for(a, lambda s: s.state == str(kill))
            s = a.statistics()
            assert (s.restarts, s.generation) == (kill, kill), s
        stop.set()
        for w in workers:
            w.join(SLOW)
        try:
            seen = failures.get(timeout=0.1)
        except queue.Empty:
            seen = None
        assert seen is None, f"a watcher saw a final failure: {seen}"
        assert sup.statistics().restarts == 2 and sup.statistics().gave_up == 0
        a.drain()
        assert a.join(SLOW) is True
    finally:
        stop.set()
        for w in workers:
            w.join(SLOW)
            if hasattr(w, "kill") and w.is_alive():
                w.kill()
        sup.stop()
        a.unlink()
        a.close()
