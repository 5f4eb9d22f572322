"""The timer service: ordering, cancellation, drains, failures, and one timer shared by
many automata (lateness is measured by tools/bench_fsm.py, never asserted tightly)."""

from __future__ import annotations

import threading
import time

import pytest


from rsm_shm.fsm import Automaton, Opcode, TimerService, current, default_timer

pytestmark = pytest.mark.timeout(60)

SLOW = 30.0


def test_call_later_order_and_cancel():
    fired: list = []
    with TimerService("test timer") as t:
        handles = {
            label: t.call_later(delay, lambda label=label: fired.append(label))
            for label, delay in (("c", 0.03), ("a", 0.01), ("b", 0.02))
        }
        h = t.call_later(5.0, lambda: fired.append("cancelled"))  # surely still pending
        assert h.cancel() is True and h.cancel() is False
        deadline = time.monotonic() + SLOW
        while len(fired) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        # Fired in deadline order.  (Deadlines are relative to each call: under load the
        # calls can be far enough apart to reorder them, so compare with the real ones.)
        assert fired == sorted(handles, key=lambda label: handles[label].deadline_ns)
        assert all(handles[label].state == "fired" for label in handles) and h.state == "cancelled"
        s = t.statistics()
        assert s.fired == 3 and s.cancelled == 1 and s.pending == 0 and s.failed == 0
        with pytest.raises(ValueError):
            t.call_later(-1, lambda: None)
    with pytest.raises(RuntimeError, match="stopped"):
        t.call_later(0, lambda: None)


def test_close_cancels_pending_timers():
    fired = []
    t = TimerService()
    h = t.call_later(10, lambda: fired.append(1))
    t.stop()
    assert h.state == "cancelled" and not fired


def test_one_timer_serves_many_automata(shm_name):
    received = {}
    lock = threading.Lock()

    def recorder(state, op):
        if op.code is Opcode.CMD:
            with lock:
                received.setdefault(op.payload[:1], []).append(time.monotonic())
        return state

    autos = [Automaton(shm_name("t"), recorder, None, create=True).start("thread") for _ in range(5)]
    t = TimerService()
    try:
        t0 = time.monotonic()
        for i, a in enumerate(autos):
            t.schedule(0.02 * (i + 1), a, bytes([65 + i]))
            t.schedule(0.02 * (i + 1), a.name, bytes([65 + i]))  # by name works too
        cancelled = t.schedule(0.01, autos[0], b"Z")
        cancelled.cancel()
        for i, a in enumerate(autos):
            t.schedule_drain(0.02 * (i + 1) + 0.05, a)
        for a in autos:
            assert a.join(SLOW) is True
        assert sorted(received) == [bytes([65 + i]) for i in range(5)]
        for i in range(5):
            times = received[bytes([65 + i])]
            assert len(times) == 2
            assert min(times) - t0 >= 0.02 * (i + 1)  # never early
        assert b"Z" not in received
    finally:
        t.stop()
        for a in autos:
            a.unlink()
            a.close()


def test_a_timer_to_a_dead_automaton_is_counted_not_silent(shm_name):
    errors = []
    a = Automaton(shm_name("t"), lambda s, op: s, None, create=True).start("thread")
    t = TimerService(on_error=lambda h, e: errors.append(e))
    try:
        a.drain()
        assert a.join(SLOW)
        done = threading.Event()
        t.schedule(0.0, a, b"late")
        t.call_later(0.01, done.set)
        assert done.wait(SLOW)
        assert t.statistics().failed == 1
        assert len(errors) == 1 and "dead" in str(errors[0])
        with pytest.raises(TypeError):
            t.schedule(0, a, "not bytes")  # type: ignore[arg-type]
    finally:
        t.stop()
        a.unlink()
        a.close()


def test_default_timer_is_shared():
    assert default_timer() is default_timer()


def ticker(state, op):
    """Counts b"tick" commands; at 5 it cancels nothing and drains itself."""
    if op.code is Opcode.START:
        current().every(0.01, b"tick")
        return 0
    if op.code is Opcode.CMD and op.payload == b"tick":
        if state + 1 == 5:
            current().drain()
        return state + 1
    return state


@pytest.mark.parametrize("host", ["thread", "process"])
def test_periodic_ticks_stop_when_the_automaton_drains(shm_name, host):
    a = Automaton(shm_name("tick"), ticker, None, create=True).start(host)
    try:
        assert a.join(SLOW) is True
        assert a.statistics().state == "5"
    finally:
        a.unlink()
        a.close()


def test_periodic_timer_does_not_drift_and_cancels(shm_name):
    missing = shm_name("missing")
    times = []
    with TimerService() as t:
        h = t.call_later(0, lambda: None)  # warm the thread up
        start = time.monotonic_ns()
        h = t.schedule_every(0.01, missing, b"x", first=0.01)
        h2 = t._add(0.01, "call", lambda: times.append(time.monotonic_ns()), None, 0.01)
        deadline = time.monotonic() + SLOW
        while len(times) < 10 and time.monotonic() < deadline:
            time.sleep(0.005)
        h2.cancel()
        assert h2.state == "cancelled" and h2.fired >= 10
        # Deadlines are start + k * interval: the k-th firing is never early.
        for k, ts in enumerate(times[:10], 1):
            assert ts >= start + k * 10_000_000 - 1_000_000  # (start was read just before scheduling)
        # The timer to a missing automaton cancelled itself after its first failure.
        while h.state != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.005)
        assert h.state == "cancelled" and h.fired == 1
        with pytest.raises(ValueError):
            t.schedule_every(0, "x", b"x")
        with pytest.raises(ValueError, match="invalid segment name"):
            t.schedule(1, "no such automaton", b"x")  # refused when scheduled, not when fired


def test_cancelled_timers_do_not_pile_up():
    with TimerService() as t:
        for _ in range(20):  # a timeout re-armed again and again (a Raft election timer)
            handles = [t.call_later(60, lambda: None) for _ in range(100)]
            for h in handles:
                h.cancel()
        assert len(t._heap) <= 200
        assert t.statistics().pending == 0 and t.statistics().cancelled == 2000
