"""Timeouts and blocking arguments, side by side with threading and queue (docs/blocking.md).

Each case makes the same call on the standard object and on ours, in the same state (free
or held, set or unset, empty or full), and compares the outcome: the value returned, the
exception type raised, or "blocks" (still waiting after a short look; the test then
unblocks both and checks they finish).  The only deliberate difference is NaN, which
every rsm_shm call refuses with ValueError (threading's own Lock does too; elsewhere
CPython's outcome is an accident of float comparisons: Event.wait(nan) returns False at
once, Semaphore.acquire(timeout=nan) spins a CPU forever).
"""

from __future__ import annotations

import math
import queue
import threading
import time
import warnings

import pytest

import rsm_shm

NAN = float("nan")
VALUES = [None, -1, -0.5, 0, 0.001, threading.TIMEOUT_MAX, math.inf, -math.inf, 1e10, 10**30, "x", True, NAN]
LOOK = 0.3  # how long a call may take before it counts as blocking (every other outcome is immediate)


def outcome(fn, box: dict) -> None:
    try:
        box["out"] = ("returned", fn())
    except Exception as e:  # noqa: BLE001 -- the type is the outcome
        box["out"] = ("raised", type(e).__name__)


def run_pair(std_call, our_call, unblock_std, unblock_ours):
    """Start both calls, look once, unblock what still waits; returns both outcomes."""
    boxes = ({}, {})
    threads = [threading.Thread(target=outcome, args=(c, b), daemon=True) for c, b in zip((std_call, our_call), boxes)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + LOOK
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0))
    results = []
    for t, box, unblock in zip(threads, boxes, (unblock_std, unblock_ours)):
        if t.is_alive():
            unblock()
            t.join(10)
            assert not t.is_alive(), "a blocked call did not finish once unblocked"
            results.append(("blocks",))
        else:
            results.append(box["out"])
    return results


# Each scenario: (make the standard object, make ours (given a name), the call, how to
# unblock).  The call and unblock take the object; state is set up by the maker.


def _held_lock(cls):
    def make(*a):
        lk = cls(*a)
        lk.acquire()
        return lk

    return make


def _held_elsewhere(cls):
    """Held by a live helper thread, which releases it when ``lk.let_go`` is set."""

    def make(*a):
        lk = cls(*a)
        held, let_go = threading.Event(), threading.Event()

        def hold():
            lk.acquire()
            held.set()
            let_go.wait(30)
            lk.release()

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        held.wait(5)
        return lk, let_go, holder

    return make


def _release_any(lk):
    lk.release()


def _set_event(cls):
    def make(*a):
        e = cls(*a)
        e.set()
        return e

    return make


def _cond_wait(c, t):
    with c:
        return c.wait(t)


def _cond_wait_for(c, t):
    with c:
        return c.wait_for(lambda: getattr(c, "flag", False), t)


def _notify(c):
    with c:
        c.flag = True  # makes wait_for's predicate true
        c.notify_all()


def _queue_with_item(std: bool):
    def make(*a):
        q = queue.Queue(4) if std else rsm_shm.Queue(*a, capacity=4096)
        q.put(1)
        return q

    return make


def _full_queue(std: bool):
    def make(*a):
        q = queue.Queue(1) if std else rsm_shm.Queue(*a, capacity=4096)
        if std:
            q.put(b"y")
        else:
            try:
                while True:
                    q.put_nowait(b"y")  # what the call puts: then it cannot fit either
            except queue.Full:
                pass
        return q

    return make


def _drain_one(q):
    q.get(timeout=5)


S = threading.Semaphore
SCENARIOS = {
    "Lock.acquire(True, t) free": (threading.Lock, rsm_shm.Lock, lambda o, t: o.acquire(True, t), _release_any),
    "Lock.acquire(True, t) held": (
        _held_lock(threading.Lock),
        _held_lock(rsm_shm.Lock),
        lambda o, t: o.acquire(True, t),
        _release_any,
    ),
    "Lock.acquire(False, t)": (threading.Lock, rsm_shm.Lock, lambda o, t: o.acquire(False, t), _release_any),
    "Lock.acquire(timeout=t)": (
        _held_lock(threading.Lock),
        _held_lock(rsm_shm.Lock),
        lambda o, t: o.acquire(timeout=t),
        _release_any,
    ),
    "RLock.acquire(True, t) held elsewhere": (
        _held_elsewhere(threading.RLock),
        _held_elsewhere(rsm_shm.RLock),
        lambda o, t: o[0].acquire(True, t),
        lambda o: o[1].set(),
    ),
    "Semaphore(1).acquire(True, t)": (
        lambda *a: S(1),
        lambda *a: rsm_shm.Semaphore(*a, value=1),
        lambda o, t: o.acquire(True, t),
        lambda o: o.release(),
    ),
    "Semaphore(0).acquire(True, t)": (
        lambda *a: S(0),
        lambda *a: rsm_shm.Semaphore(*a, value=0),
        lambda o, t: o.acquire(True, t),
        lambda o: o.release(),
    ),
    "Semaphore(0).acquire(False, t)": (
        lambda *a: S(0),
        lambda *a: rsm_shm.Semaphore(*a, value=0),
        lambda o, t: o.acquire(False, t),
        lambda o: o.release(),
    ),
    "Event.wait(t) set": (
        _set_event(threading.Event),
        _set_event(rsm_shm.Event),
        lambda o, t: o.wait(t),
        lambda o: o.set(),
    ),
    "Event.wait(t) unset": (threading.Event, rsm_shm.Event, lambda o, t: o.wait(t), lambda o: o.set()),
    "Condition.wait(t)": (threading.Condition, rsm_shm.Condition, _cond_wait, _notify),
    "Condition.wait_for(false, t)": (threading.Condition, rsm_shm.Condition, _cond_wait_for, None),
    "Queue.get(True, t) not empty": (
        _queue_with_item(True),
        _queue_with_item(False),
        lambda o, t: o.get(True, t),
        None,
    ),
    "Queue.get(True, t) empty": (
        lambda *a: queue.Queue(4),
        lambda *a: rsm_shm.Queue(*a, capacity=4096),
        lambda o, t: o.get(True, t),
        lambda o: o.put(1),
    ),
    "Queue.get(False, t) empty": (
        lambda *a: queue.Queue(4),
        lambda *a: rsm_shm.Queue(*a, capacity=4096),
        lambda o, t: o.get(False, t),
        lambda o: o.put(1),
    ),
    "Queue.put(x, True, t) not full": (
        lambda *a: queue.Queue(4),
        lambda *a: rsm_shm.Queue(*a, capacity=4096),
        lambda o, t: o.put(1, True, t),
        None,
    ),
    "Queue.put(x, True, t) full": (
        _full_queue(True),
        _full_queue(False),
        lambda o, t: o.put(b"y", True, t),
        _drain_one,
    ),
    "Barrier(1).wait(t)": (
        lambda *a: threading.Barrier(1),
        lambda *a: rsm_shm.Barrier(*a, parties=1),
        lambda o, t: o.wait(t),
        None,
    ),
    "Barrier(2).wait(t)": (
        lambda *a: threading.Barrier(2),
        lambda *a: rsm_shm.Barrier(*a, parties=2),
        lambda o, t: o.wait(t),
        lambda o: o.abort(),
    ),
}


@pytest.mark.parametrize("timeout", VALUES, ids=repr)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_outcome_as_the_standard_library(scenario, timeout, shm_name):
    make_std, make_ours, call, unblock = SCENARIOS[scenario]
    std, ours = make_std(), make_ours(shm_name())
    try:

        def unblocker(obj):
            return (
                (lambda: unblock(obj))
                if unblock
                else (lambda: _notify(obj) if "Condition" in scenario else _release_any(obj))
            )

        std_out, our_out = run_pair(
            lambda: call(std, timeout), lambda: call(ours, timeout), unblocker(std), unblocker(ours)
        )
        if isinstance(timeout, float) and math.isnan(timeout) and our_out != ("blocks",) and std_out != our_out:
            # the one deliberate difference: NaN is refused (when the call looks at it)
            assert our_out == ("raised", "ValueError"), (scenario, std_out, our_out)
            return
        assert our_out == std_out, f"{scenario} with timeout={timeout!r}: threading/queue {std_out}, rsm_shm {our_out}"
    finally:
        for obj in (std, ours):
            if isinstance(obj, tuple):  # held by a helper thread: let it release and end
                obj[1].set()
                obj[2].join(10)
        ours = ours[0] if isinstance(ours, tuple) else ours
        ours.close()
        ours.unlink()


def test_acquire_with_timeout_max_waits_and_succeeds(objs):
    lk = objs(rsm_shm.Lock)
    lk.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(lk.acquire(timeout=threading.TIMEOUT_MAX)))
    t.start()
    t.join(0.2)
    assert t.is_alive()
    lk.release()
    t.join(10)
    assert got == [True]


def test_huge_timeouts_are_one_overflow_error_everywhere(objs):
    # Gate.wait(1e10) used to leak cffi's "int too big to convert"
    for call in (
        lambda: objs(rsm_shm.Gate).wait(1e10),
        lambda: objs(rsm_shm.Countdown, count=1).wait(math.inf),
        lambda: objs(rsm_shm.RWLock).acquire_write(timeout=1e10),
        lambda: objs(rsm_shm.Ring, capacity=4096).get(1e10),
    ):
        with pytest.raises(OverflowError, match="TIMEOUT_MAX"):
            call()


def test_messages_name_what_the_user_passed(shm_name):
    with pytest.raises(ValueError, match=r"Semaphore value .* not 1\.5"):
        rsm_shm.Semaphore(shm_name(), value=1.5)
    with pytest.raises(ValueError, match=r"Barrier parties .* not 1000000") as e:
        rsm_shm.Barrier(shm_name(), parties=10**6)
    assert "max_waiters" not in str(e.value)
    with pytest.raises(ValueError, match=r"Countdown count .* not 2\.5"):
        rsm_shm.Countdown(shm_name(), count=2.5)
    with pytest.raises(ValueError, match=r"non-negative number or -1, not -0\.5"):
        rsm_shm.Lock(shm_name()).acquire(timeout=-0.5)


# -- who owns a lock (threading's rules) ----------------------------------------------------


def test_a_lock_left_held_by_an_exited_thread_stays_held_as_in_threading(objs):
    std, ours = threading.Lock(), objs(rsm_shm.Lock)
    for lk in (std, ours):
        t = threading.Thread(target=lk.acquire)
        t.start()
        t.join()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no OwnerDiedWarning: the owner's process lives
        assert std.acquire(timeout=0.3) is False
        assert ours.acquire(timeout=0.3) is False
    ours.release()  # any thread may release a Lock
    std.release()
    assert ours.acquire(timeout=1) is True


def test_an_rlock_left_held_by_an_exited_thread_stays_held_as_in_threading(objs):
    std, ours = threading.RLock(), objs(rsm_shm.RLock)
    for lk in (std, ours):
        t = threading.Thread(target=lk.acquire)
        t.start()
        t.join()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the owner's process lives: no takeover, no warning
        assert std.acquire(timeout=0.3) is False
        assert ours.acquire(timeout=0.3) is False
