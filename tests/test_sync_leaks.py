"""Process death where a share used to leak: RWLock readers, Barrier parties, robust
semaphore holders.  Each test SIGKILLs a real process at an awaited point."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import pytest

import rsm_shm

from . import _workers
from ._workers import reap_after_test

# forkserver (tests/_workers.py): fast starts, and no fork() of this multi-threaded process.
SPAWN = _workers.FORKSERVER


def _start(target, *args):
    p = reap_after_test(SPAWN.Process(target=target, args=args, daemon=True))
    p.start()
    return p


def _kill(p):
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL


def _await(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def _reader(rw, ready):
    p = _start(_workers.hold_forever, "rwlock_read", rw.name, ready.name)
    assert ready.wait(60), "reader never got its read lock"
    ready.clear()
    return p


# -- RWLock: a killed reader's share comes back, and the next writer is told -------------


@pytest.mark.parametrize("prefer", ["writer", "reader"])
def test_rwlock_killed_reader_is_reclaimed_and_writer_told(objs, prefer):
    rw = objs(rsm_shm.RWLock, prefer=prefer)
    ready = objs(rsm_shm.Event)
    p = _reader(rw, ready)
    assert rw.statistics().readers == 2 and rw.statistics().reader_pids == (p.pid,)
    assert rw.acquire_write(timeout=0) is False
    _kill(p)
    t0 = time.monotonic()
    with pytest.warns(rsm_shm.OwnerDiedWarning, match=f"reader \\(pid {p.pid}\\)"):
        assert rw.acquire_write(timeout=10) is True
    assert time.monotonic() - t0 < 1.0
    assert rw.recovered == rsm_shm.sync.lock.OwnerDied(p.pid, 0)
    assert rw.statistics().readers == 0
    rw.release_write()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # told once: the next writer gets a clean lock
        assert rw.acquire_write(timeout=5)
        assert rw.recovered is None
        rw.release_write()
        assert rw.acquire_read(timeout=5)
        rw.release_read()


def test_rwlock_writer_asleep_when_reader_dies(objs):
    """The writer already sleeps (draining) when the reader is killed: it must notice."""
    rw = objs(rsm_shm.RWLock)
    ready = objs(rsm_shm.Event)
    p = _reader(rw, ready)
    got = []

    def write():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ok = rw.acquire_write(timeout=20)
            got.append((ok, time.monotonic(), [w.category for w in caught]))
        if ok:
            rw.release_write()

    t = threading.Thread(target=write)
    t.start()
    _await(lambda: rw.statistics().waiting_writers == 1, "the writer to queue")
    killed_at = time.monotonic()
    _kill(p)
    t.join(30)
    ok, when, categories = got[0]
    assert ok and categories == [rsm_shm.OwnerDiedWarning]
    assert when - killed_at < 1.0


def test_rwlock_live_readers_keep_their_share(objs):
    """Reclaiming one dead reader leaves another process's read locks alone."""
    rw = objs(rsm_shm.RWLock)
    ready = objs(rsm_shm.Event)
    alive, dead = _reader(rw, ready), _reader(rw, ready)
    _kill(dead)
    # Only a writer that gets the lock is told; this one times out: the live reader reads on.
    assert rw.acquire_write(timeout=0.5) is False
    assert rw.statistics().reader_pids == (alive.pid,) and rw.statistics().readers == 2
    _kill(alive)
    with pytest.warns(rsm_shm.OwnerDiedWarning, match=str(alive.pid)):
        assert rw.acquire_write(timeout=10)
    rw.release_write()


def test_rwlock_read_lock_belongs_to_its_process(objs):
    rw = objs(rsm_shm.RWLock)
    ready = objs(rsm_shm.Event)
    _reader(rw, ready)
    with pytest.raises(RuntimeError, match=f"process {os.getpid()} holds no read lock"):
        rw.release_read()
    assert rw.statistics().readers == 2
    # Any thread of the holding process may release (they share the process's slot).
    assert rw.acquire_read(timeout=5)
    t = threading.Thread(target=rw.release_read)
    t.start()
    t.join(10)
    assert rw.statistics().readers == 2


def test_rwlock_untracked_reader_is_the_documented_limit(objs):
    """With every reader slot taken, a reader is counted untracked: its death is not
    reclaimed (documented); the tracked one's is."""
    rw = objs(rsm_shm.RWLock, max_waiters=1)
    ready = objs(rsm_shm.Event)
    tracked, untracked = _reader(rw, ready), _reader(rw, ready)
    st = rw.statistics()
    assert st.reader_pids == (tracked.pid,) and st.untracked_readers == 2
    _kill(tracked)
    _kill(untracked)
    assert rw.acquire_write(timeout=0.5) is False
    assert rw.statistics().reader_pids == ()
    assert rw.statistics().readers == 2 and rw.statistics().untracked_readers == 2


# -- Barrier: a party killed inside wait() breaks it for the others, promptly --------------


def _full_cycle(barrier, n):
    """n threads of this process pass the barrier once; returns their indices."""
    out, errors = [], []

    def party():
        try:
            out.append(barrier.wait(timeout=20))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=party) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return sorted(out)


def test_barrier_party_killed_in_wait_breaks_it_promptly(objs):
    b = objs(rsm_shm.Barrier, parties=3)
    outcome = []

    def party():
        try:
            b.wait()
            outcome.append("passed")
        except threading.BrokenBarrierError:
            outcome.append(time.monotonic())

    t = threading.Thread(target=party)
    t.start()
    _await(lambda: b.n_waiting == 1, "the local party to wait")
    p = _start(_workers.barrier_party, b.name)
    _await(lambda: b.n_waiting == 2, "the child party to wait")
    killed_at = time.monotonic()
    _kill(p)
    t.join(30)
    assert not t.is_alive() and len(outcome) == 1 and outcome[0] != "passed"
    assert outcome[0] - killed_at < 0.25, f"broken after {outcome[0] - killed_at:.3f} s"
    assert b.broken and b.statistics().waiting == 0  # the dead party's place was freed
    b.reset()
    assert _full_cycle(b, 3) == [0, 1, 2]


def test_barrier_party_killed_holding_its_lock(objs):
    """Killed mid critical section (count raised, no seat): the count is rebuilt from the
    seats and the waiting party is released with BrokenBarrierError, not left hanging."""
    b = objs(rsm_shm.Barrier, parties=3)
    ready = objs(rsm_shm.Event)
    raised = []

    def party():
        try:
            b.wait(timeout=20)
        except threading.BrokenBarrierError:
            raised.append(time.monotonic())

    t = threading.Thread(target=party)
    t.start()
    _await(lambda: b.n_waiting == 1, "the local party to wait")
    p = _start(_workers.barrier_die_holding_lock, b.name, ready.name)
    assert ready.wait(60)
    killed_at = time.monotonic()
    _kill(p)
    t.join(30)
    assert raised and raised[0] - killed_at < 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the barrier repairs itself; no lock warning leaks out
        assert b.broken and b.statistics().waiting == 0
        b.reset()
        assert _full_cycle(b, 3) == [0, 1, 2]


# -- Semaphore(robust=True): a dead holder's permits come back ---------------------------


def _holder(sem, ready, n, kind="semaphore"):
    p = _start(_workers.semaphore_hold, kind, sem.name, n, ready.name)
    assert ready.wait(60), "holder never got its permits"
    ready.clear()
    return p


@pytest.mark.parametrize("cls,kind", [(rsm_shm.Semaphore, "semaphore"), (rsm_shm.BoundedSemaphore, "bounded")])
def test_robust_semaphore_returns_a_dead_holders_permits(objs, cls, kind):
    sem = objs(cls, value=2, robust=True)
    ready = objs(rsm_shm.Event)
    p = _holder(sem, ready, 2, kind)
    assert sem.statistics().holders == ((p.pid, 2),) and sem.value == 0
    got = []

    def take():
        got.append((sem.acquire(timeout=20), time.monotonic()))

    t = threading.Thread(target=take)
    t.start()
    _await(lambda: sem.pending == 1, "the waiter to queue")
    killed_at = time.monotonic()
    _kill(p)
    t.join(30)
    assert got[0][0] and got[0][1] - killed_at < 1.0
    assert sem.acquire(False) is True  # the second permit came back too
    assert sem.acquire(False) is False and sem.value == 0  # and no more than that
    sem.release()
    sem.release()
    assert sem.value == 2 and sem.statistics().holders == ()
    if cls is rsm_shm.BoundedSemaphore:
        with pytest.raises(ValueError):
            sem.release()


def test_robust_semaphore_failed_try_reclaims(objs):
    """A non-blocking acquire that would fail looks for dead holders itself."""
    sem = objs(rsm_shm.Semaphore, value=1, robust=True)
    ready = objs(rsm_shm.Event)
    _kill(_holder(sem, ready, 1))
    assert sem.acquire(blocking=False) is True
    assert sem.acquire(blocking=False) is False


def test_default_semaphore_stays_unowned(objs):
    """Without robust=True a dead holder's permit stays taken, as with POSIX semaphores."""
    sem = objs(rsm_shm.Semaphore, value=1)
    ready = objs(rsm_shm.Event)
    _kill(_holder(sem, ready, 1))
    assert sem.acquire(timeout=0.2) is False
    assert not sem.robust and sem.statistics().holders == ()


def test_robust_release_on_behalf_is_not_returned_twice(objs):
    """A permit released by another process is charged to the holder: when the holder dies
    only what it still holds comes back (no permit is created)."""
    sem = objs(rsm_shm.Semaphore, value=2, robust=True)
    ready = objs(rsm_shm.Event)
    p = _holder(sem, ready, 2)
    sem.release()  # this process holds nothing: charged to the child's share
    assert sem.statistics().holders == ((p.pid, 1),) and sem.value == 1
    _kill(p)
    assert sem.acquire(timeout=5) and sem.acquire(timeout=5)
    assert sem.acquire(timeout=0.2) is False  # 2 permits in all, as created
    sem.release(2)
    assert sem.value == 2


def test_robust_own_release_and_threads(objs):
    """Permits taken by one thread may be released by another thread of the process."""
    sem = objs(rsm_shm.Semaphore, value=3, robust=True)
    assert sem.acquire() and sem.acquire()
    assert sem.statistics().holders == ((os.getpid(), 2),)
    t = threading.Thread(target=sem.release)
    t.start()
    t.join(10)
    assert sem.statistics().holders == ((os.getpid(), 1),)
    sem.release()
    sem.release()  # beyond what was taken: an unowned new permit, as threading allows
    assert sem.value == 4 and sem.statistics().holders == ()
    with pytest.raises(TypeError):
        rsm_shm.Semaphore(robust=1)


# -- SIGKILL at random moments: nothing leaks where the layout says it cannot --------------


def _await_progress(progress, slots, at_least):
    start = [progress[i] for i in slots]
    _await(lambda: all(progress[i] - s >= at_least for i, s in zip(slots, start)), "churners to make progress")


@pytest.mark.timeout(180)
def test_rwlock_churners_killed_at_random_points(objs):
    """Readers and writers killed anywhere (even mid-claim of a reader slot): the lock
    always comes back, with no read lock left over."""
    import random

    rng = random.Random(4321)
    rw = objs(rsm_shm.RWLock)
    progress = SPAWN.RawArray("q", 3)
    for _ in range(4):
        procs = [_start(_workers.rwlock_churn, rw.name, progress, i) for i in range(3)]
        _await_progress(progress, range(3), 200)
        time.sleep(rng.random() * 0.02)  # a random point of the churn, not a wait for a state
        for p in procs:
            _kill(p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a killed writer or reader is reported: fine here
            assert rw.acquire_write(timeout=10), f"RWLock wedged after SIGKILL: {rw.statistics()}"
        assert rw.statistics().readers == 0, rw.statistics()
        rw.release_write()
        assert rw.acquire_read(timeout=5)
        rw.release_read()


@pytest.mark.timeout(180)
def test_robust_semaphore_churners_killed_at_random_points(objs):
    """Permit holders killed anywhere: no permit is created and none leaks (taking a permit
    and recording it are one atomic step, csrc/sem.h): every permit comes back."""
    import random

    rng = random.Random(8765)
    sem = objs(rsm_shm.Semaphore, value=3, robust=True)
    progress = SPAWN.RawArray("q", 3)
    procs = [_start(_workers.semaphore_churn, sem.name, progress, i) for i in range(3)]
    kills = 0
    for _ in range(5):
        _await_progress(progress, range(3), 100)
        time.sleep(rng.random() * 0.02)  # a random point of the churn
        victim = rng.randrange(3)
        _kill(procs[victim])
        kills += 1
        progress[victim] = 0  # the new churner counts from 0
        procs[victim] = _start(_workers.semaphore_churn, sem.name, progress, victim)
    for p in procs:
        _kill(p)
        kills += 1
    got = 0
    while sem.acquire(timeout=1.0):  # a failed try reclaims the dead holders' permits
        got += 1
        assert got <= 3, "a permit was created"
    assert got == 3, f"{3 - got} permits leaked after {kills} kills: {sem.statistics()}"
    # No holder record outlives its process, whatever the kill point (csrc/sem.h; the C
    # stress harness kills churners at 600 random points).  A process may hold several
    # cells (statistics() documents it): compare per process.
    per_pid: dict = {}
    for pid, n in sem.statistics().holders:
        per_pid[pid] = per_pid.get(pid, 0) + n
    assert per_pid == ({os.getpid(): got} if got else {}), f"stale holder record: {sem.statistics()}"


def test_robust_fifo_permit_woken_for_a_dying_waiter_stays(objs):
    """A robust FIFO release does not hand the permit to the oldest waiter (a hand-off is a
    second place a permit could be lost in): it counts it and wakes that waiter.  If the
    waiter dies before it runs (here: stopped, woken, then killed), the permit is still
    there for the next one."""
    sem = objs(rsm_shm.Semaphore, value=0, policy="fifo", robust=True)
    p = _start(_workers.semaphore_wait_one, sem.name)
    _await(lambda: sem.pending == 1, "the child to wait")
    os.kill(p.pid, signal.SIGSTOP)
    sem.release()  # counted, and the stopped child woken
    assert sem.value == 1 and sem.pending == 0
    _kill(p)
    assert sem.acquire(timeout=5) is True
    assert sem.acquire(timeout=0.2) is False
