"""Robustness with real signals: SIGKILLed owners, Ctrl-C in waiters, pickling, attaching."""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import rsm_shm

from . import _workers
from ._workers import reap_after_test

# Children start from the suite's fork server (tests/_workers.py), never by fork().
FORKSERVER = _workers.FORKSERVER
SPAWN = mp.get_context("spawn")


def _child(target, *args):
    # Holders sleep forever until killed: the conftest reaps any a failing test left alive.
    return reap_after_test(FORKSERVER.Process(target=target, args=args, daemon=True))


def _holder(kind, name, ready):
    p = _child(_workers.hold_forever, kind, name, ready.name)
    p.start()
    assert ready.wait(30), "holder never acquired"
    return p


def _kill(p):
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL


@pytest.mark.parametrize("cls,kind", [(rsm_shm.Lock, "lock"), (rsm_shm.RLock, "rlock")])
def test_sigkilled_owner_is_recovered_and_told(objs, cls, kind):
    lk = objs(cls)
    ready = objs(rsm_shm.Event)
    p = _holder(kind, lk.name, ready)
    assert lk.acquire(False) is False
    _kill(p)
    t0 = time.monotonic()
    with pytest.warns(rsm_shm.OwnerDiedWarning, match=str(p.pid)):
        assert lk.acquire(timeout=10) is True
    assert time.monotonic() - t0 < 1.0  # the bound: within about a second of the death
    assert lk.recovered is not None and lk.recovered.pid == p.pid
    lk.release()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lk.acquire(timeout=5)  # told once; the next holder gets a clean lock
        assert lk.recovered is None
        lk.release()


def test_sigkilled_owner_waiter_already_blocked(objs):
    """The waiter is asleep in the kernel when the owner dies: it must notice by itself."""
    lk = objs(rsm_shm.Lock)
    ready = objs(rsm_shm.Event)
    p = _holder("lock", lk.name, ready)
    got = []

    def wait():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            got.append((lk.acquire(timeout=20), time.monotonic(), [x.category for x in w]))
            if got[-1][0]:
                lk.release()

    import threading

    t = threading.Thread(target=wait)
    t.start()
    deadline = time.monotonic() + 10
    while lk.pending == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    killed_at = time.monotonic()
    _kill(p)
    t.join(30)
    ok, when, cats = got[0]
    assert ok and rsm_shm.OwnerDiedWarning in cats
    assert when - killed_at < 1.0


def test_warning_as_error_leaves_lock_free_and_marked(objs):
    lk = objs(rsm_shm.Lock)
    ready = objs(rsm_shm.Event)
    _kill(_holder("lock", lk.name, ready))
    with warnings.catch_warnings():
        warnings.simplefilter("error", rsm_shm.OwnerDiedWarning)
        with pytest.raises(rsm_shm.OwnerDiedWarning):
            with lk:
                pytest.fail("the body must not run when telling failed")
    assert not lk.locked()  # not held behind the exception raised out of __enter__
    with pytest.warns(rsm_shm.OwnerDiedWarning):  # the next holder is told instead
        assert lk.acquire(timeout=5)
    lk.release()


def test_rwlock_writer_killed(objs):
    rw = objs(rsm_shm.RWLock)
    ready = objs(rsm_shm.Event)
    _kill(_holder("rwlock", rw.name, ready))
    with pytest.warns(rsm_shm.OwnerDiedWarning):
        assert rw.acquire_write(timeout=10)
    rw.release_write()
    assert rw.acquire_read(timeout=5)
    rw.release_read()


def test_rwlock_writer_killed_readers_proceed(objs):
    rw = objs(rsm_shm.RWLock)
    ready = objs(rsm_shm.Event)
    _kill(_holder("rwlock", rw.name, ready))
    with pytest.warns(rsm_shm.OwnerDiedWarning):
        assert rw.acquire_read(timeout=10)
    rw.release_read()


def test_once_runner_killed_is_taken_over(objs):
    once = objs(rsm_shm.Once)
    ready = objs(rsm_shm.Event)
    p = _child(_workers.once_hang_in_call, once.name, ready.name)
    p.start()
    assert ready.wait(30)
    _kill(p)
    ran = []
    with pytest.warns(rsm_shm.OwnerDiedWarning):
        assert once.call(ran.append, 1, timeout=10) is True
    assert ran == [1] and once.done


@pytest.mark.timeout(180)
def test_sigkill_at_random_points(objs):
    """Kill churning workers at random moments, over and over: never a deadlock, never a
    silent recovery, and the lock keeps working."""
    lk = objs(rsm_shm.Lock)
    counter = objs(rsm_shm.Lock)
    rng = random.Random(1234)
    recoveries = 0
    for _ in range(12):
        procs = [_child(_workers.churn_until_killed, lk.name, counter.name) for _ in range(3)]
        for p in procs:
            p.start()
        start = counter.tag
        deadline = time.monotonic() + 10
        while counter.tag - start < 200 and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.random() * 0.02)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.join(30)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert lk.acquire(timeout=5), "lock wedged after SIGKILL"
        died = [w for w in caught if issubclass(w.category, rsm_shm.OwnerDiedWarning)]
        assert len(died) == (1 if lk.recovered else 0)
        recoveries += len(died)
        lk.release()
        assert not lk.locked()
    assert counter.tag > 0


SIGINT_CHILD = textwrap.dedent(
    """
    import sys, time, rsm_shm
    lk = rsm_shm.{cls}(sys.argv[1], create=False)
    print("waiting", flush=True)
    t0 = time.monotonic()
    try:
        lk.{call}
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(0)
    sys.exit(3)
    """
)


@pytest.mark.parametrize(
    "cls,call,setup",
    [
        ("Lock", "acquire()", "acquire"),
        ("Semaphore", "acquire()", "drain"),
        ("Event", "wait()", None),
        ("Condition", "acquire() and lk.wait()", None),
    ],
)
def test_sigint_interrupts_blocked_waiter(objs, cls, call, setup):
    obj = objs(getattr(rsm_shm, cls))
    if setup == "acquire":
        obj.acquire()
    elif setup == "drain":
        obj.acquire()
    child = subprocess.Popen(
        [sys.executable, "-c", SIGINT_CHILD.format(cls=cls, call=call), obj.name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "waiting"
        deadline = time.monotonic() + 10
        pending = (lambda: obj.waiters) if cls == "Condition" else (lambda: obj.pending)
        while pending() == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=10) == 0
        elapsed = time.monotonic() - t0
        assert child.stdout.read().strip() == "interrupted"
        assert elapsed < 1.0, f"Ctrl-C took {elapsed:.3f} s"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # The interrupted waiter left the queue: nothing is pending, nothing wedged.
    if cls in ("Lock", "Semaphore"):
        assert obj.pending == 0
        obj.release()
        assert obj.acquire(timeout=5)


UNTIMED_CHILD = textwrap.dedent(
    """
    import signal, sys, threading, time, rsm_shm
    signal.signal(signal.SIGUSR1, lambda *a: None)
    obj = getattr(rsm_shm, sys.argv[1])(sys.argv[2], create=False)
    if sys.argv[3] == "with a thread":
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    print("waiting", flush=True)
    obj.acquire() if sys.argv[1] == "Semaphore" else obj.wait()
    print("done", flush=True)
    """
)


def _voluntary_switches(pid: int) -> int:
    with open(f"/proc/{pid}/task/{pid}/status") as f:  # the main thread's own counters
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


@pytest.mark.parametrize("cls", ["Semaphore", "Event"])
@pytest.mark.parametrize("threads", ["alone", "with a thread"])
def test_an_infinite_wait_has_slices_only_when_it_needs_them(objs, cls, threads):
    """An infinite wait on the main thread of a process without other Python threads
    sleeps with no timer (no wake-up every ~50 ms slice): signals still interrupt it (a
    handler that does not raise lets it wait on) and the release still ends it.  With
    another thread, which could close() the handle, it keeps its slices."""
    obj = objs(getattr(rsm_shm, cls), **({"value": 0} if cls == "Semaphore" else {}))
    child = subprocess.Popen(
        [sys.executable, "-c", UNTIMED_CHILD, cls, obj.name, threads], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "waiting"
        deadline = time.monotonic() + 10
        while obj.pending == 0:
            assert time.monotonic() < deadline, "the child never waited"
            time.sleep(0.005)
        time.sleep(0.05)  # past the spin, asleep
        before = _voluntary_switches(child.pid)
        time.sleep(0.5)  # ~10 slices
        child.send_signal(signal.SIGUSR1)
        time.sleep(0.1)
        during = _voluntary_switches(child.pid) - before
        assert child.poll() is None and obj.pending == 1  # the signal did not end the wait
        obj.release() if cls == "Semaphore" else obj.set()
        assert child.wait(timeout=10) == 0 and child.stdout.read().strip() == "done"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if threads == "alone":
        assert during <= 3, f"{during} wake-ups in 0.6 s: the wait woke up for its slices"
    else:
        assert during >= 6, f"{during} wake-ups in 0.6 s: no slices, so a close() would go unseen"


def test_timeout_carries_over_signals(objs):
    """Signals that do not raise must not restart the timeout."""
    lk = objs(rsm_shm.Lock)
    lk.acquire()
    code = textwrap.dedent(
        """
        import signal, sys, time, rsm_shm
        signal.signal(signal.SIGUSR1, lambda *a: None)
        lk = rsm_shm.Lock(sys.argv[1], create=False)
        print("ready", flush=True)
        t0 = time.monotonic()
        ok = lk.acquire(timeout=0.5)
        print(ok, round(time.monotonic() - t0, 3), flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code, lk.name], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        while child.poll() is None:
            child.send_signal(signal.SIGUSR1)
            time.sleep(0.01)
        ok, elapsed = child.stdout.read().split()
        assert ok == "False" and 0.5 <= float(elapsed) < 2.0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    lk.release()


def test_pickling_into_spawn_pool(objs):
    sem = objs(rsm_shm.Semaphore, value=0)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=SPAWN) as pool:
        pids = list(pool.map(_workers.getpid_via, [sem] * 4))
    assert len(pids) == 4 and os.getpid() not in pids
    assert sem.value == 4


def test_attach_from_unrelated_program(objs):
    lk = objs(rsm_shm.Lock)
    ev = objs(rsm_shm.Event)
    lk.acquire()
    code = (
        "import sys, rsm_shm; l = rsm_shm.Lock(sys.argv[1], create=False); "
        "e = rsm_shm.Event(sys.argv[2], create=False); "
        "print(l.acquire(False), l.statistics().owner_pid); e.set()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, lk.name, ev.name], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out == ["False", str(os.getpid())]
    assert ev.is_set()
    lk.release()
