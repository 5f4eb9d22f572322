"""Module-level worker functions for tests that start processes (spawn needs importable targets)."""

from __future__ import annotations

import multiprocessing
import os
import time

import rsm_shm

#: How the suite starts child processes: from a fork server that already has rsm_shm and
#: the modules holding the targets imported, so a child starts in milliseconds, and the
#: pytest process (which may be running threads) is never forked.  Targets must be
#: importable functions (here, or in a module this list preloads).
FORKSERVER = multiprocessing.get_context("forkserver")
FORKSERVER.set_forkserver_preload(["rsm_shm", "tests._workers", "tests.test_ring_procs"])

# Children a test started that must not outlive it (tests/conftest.py kills and reaps them
# after every test, pass or fail).
CHILDREN: list = []


def reap_after_test(process):
    """Track a multiprocessing Process so it is killed and joined when the test ends."""
    CHILDREN.append(process)
    return process


def start_together(gate_name: str | None) -> None:
    """Block until the test opens the start gate, so every worker contends from the first op."""
    if gate_name:
        gate = rsm_shm.Gate(gate_name, create=False)
        assert gate.wait(60)
        gate.close()


def lock_increments(kind: str, lock_name: str, counter_name: str, n: int, gate_name: str | None = None) -> None:
    """n lock-protected read-modify-write increments of a counter kept in another lock's tag."""
    cls = {"lock": rsm_shm.Lock, "rlock": rsm_shm.RLock}[kind]
    lk = cls(lock_name, create=False)
    counter = rsm_shm.Lock(counter_name, create=False)  # used only as shared storage (its tag)
    start_together(gate_name)
    for _ in range(n):
        with lk:
            counter.tag = counter.tag + 1
    lk.close()
    counter.close()


def rlock_nested_increments(lock_name: str, counter_name: str, n: int) -> None:
    lk = rsm_shm.RLock(lock_name, create=False)
    counter = rsm_shm.Lock(counter_name, create=False)
    for _ in range(n):
        with lk:
            with lk:
                counter.tag = counter.tag + 1
    lk.close()
    counter.close()


def rwlock_writes(rw_name: str, counter_name: str, n: int) -> None:
    rw = rsm_shm.RWLock(rw_name, create=False)
    counter = rsm_shm.Lock(counter_name, create=False)
    for i in range(n):
        if i % 4 == 0:
            with rw.read():
                _ = counter.tag
        else:
            with rw.write():
                counter.tag = counter.tag + 1
    rw.close()
    counter.close()


def semaphore_concurrency(sem_name: str, inside_name: str, max_name: str, n: int) -> None:
    """Track how many are inside the semaphore at once (counters kept in lock tags, updated under a lock)."""
    sem = rsm_shm.Semaphore(sem_name, create=False)
    inside = rsm_shm.Lock(inside_name, create=False)
    peak = rsm_shm.Lock(max_name, create=False)
    for _ in range(n):
        with sem:
            with inside:
                inside.tag += 1
                if inside.tag > peak.tag:
                    peak.tag = inside.tag
            with inside:
                inside.tag -= 1
    for x in (sem, inside, peak):
        x.close()


def condition_producer(cond_name: str, box_name: str, n: int, start: int) -> None:
    """Put n items into a one-slot box guarded by a Condition (box value in a lock's tag; 0 = empty)."""
    cond = rsm_shm.Condition(cond_name, create=False)
    box = rsm_shm.Lock(box_name, create=False)
    for i in range(n):
        with cond:
            while box.tag != 0:
                cond.wait()
            box.tag = start + i
            cond.notify_all()
    cond.close()
    box.close()


def barrier_cycles(barrier_name: str, cycles: int) -> list[int]:
    b = rsm_shm.Barrier(barrier_name, create=False)
    indexes = [b.wait(timeout=60) for _ in range(cycles)]
    b.close()
    return indexes


def hold_forever(kind: str, name: str, ready_name: str) -> None:
    """Acquire, announce, then sleep until killed."""
    cls = {"lock": rsm_shm.Lock, "rlock": rsm_shm.RLock, "rwlock": rsm_shm.RWLock, "rwlock_read": rsm_shm.RWLock}
    obj = cls[kind](name, create=False)
    if kind == "rwlock":
        obj.acquire_write()
    elif kind == "rwlock_read":
        obj.acquire_read()
        obj.acquire_read()  # two read locks: the whole share must come back
    else:
        obj.acquire()
    rsm_shm.Event(ready_name, create=False).set()
    while True:
        time.sleep(1)


def churn_until_killed(name: str, counter_name: str) -> None:
    """Acquire/increment/release forever: SIGKILL lands at a random point."""
    lk = rsm_shm.Lock(name, create=False)
    counter = rsm_shm.Lock(counter_name, create=False)
    while True:
        with lk:
            counter.tag = counter.tag + 1


def once_hang_in_call(once_name: str, ready_name: str) -> None:
    """Run a Once's function that signals and then hangs (the test kills this process)."""
    once = rsm_shm.Once(once_name, create=False)
    ready = rsm_shm.Event(ready_name, create=False)

    def hang():
        ready.set()
        time.sleep(3600)

    once.call(hang)


def once_runner(once_name: str, marker_name: str) -> bool:
    once = rsm_shm.Once(once_name, create=False)
    marker = rsm_shm.Lock(marker_name, create=False)

    def fn():
        with marker:
            marker.tag += 1

    return once.call(fn)


def getpid_via(sem) -> int:
    """Used with ProcessPoolExecutor: the handle arrives pickled, by name."""
    sem.release()
    return os.getpid()


def event_pingpong_b(e1_name: str, e2_name: str, seq_name: str, rounds: int) -> int:
    """Side B of an Event ping-pong: every wake must correspond to a new set() by A."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    e1, e2 = rsm_shm.Event(e1_name, create=False), rsm_shm.Event(e2_name, create=False)
    seq = rsm_shm.Lock(seq_name, create=False)
    spurious, last = 0, 0
    for _ in range(rounds):
        if not e1.wait(30):
            raise TimeoutError("A never set e1")
        e1.clear()
        if seq.tag == last:
            spurious += 1  # woken without a new set(): the bug this test guards against
        last = seq.tag
        e2.set()
    return spurious


def barrier_party(barrier_name: str) -> None:
    """One party: wait at the barrier (the test kills it while it waits)."""
    rsm_shm.Barrier(barrier_name, create=False).wait()


def barrier_die_holding_lock(barrier_name: str, ready_name: str) -> None:
    """Take the barrier's own lock and half-enter (count raised, no seat), as a party
    killed in the middle of wait()'s critical section would leave it."""
    b = rsm_shm.Barrier(barrier_name, create=False)
    b._lock.acquire()
    b._b.count += 1
    rsm_shm.Event(ready_name, create=False).set()
    while True:
        time.sleep(1)


def semaphore_hold(kind: str, name: str, n: int, ready_name: str) -> None:
    """Take n permits, announce, then sleep until killed."""
    sem = {"semaphore": rsm_shm.Semaphore, "bounded": rsm_shm.BoundedSemaphore}[kind](name, create=False)
    for _ in range(n):
        assert sem.acquire(timeout=60)
    rsm_shm.Event(ready_name, create=False).set()
    while True:
        time.sleep(1)


def rwlock_churn(rw_name: str, progress, slot: int) -> None:
    """Read (mostly) and write in a loop until killed; progress[slot] counts iterations."""
    import warnings

    warnings.simplefilter("ignore")  # taking over from a killed writer warns: expected here
    rw = rsm_shm.RWLock(rw_name, create=False)
    i = 0
    while True:
        if i % 5 == 0:
            with rw.write():
                pass
        else:
            with rw.read():
                pass
        i += 1
        progress[slot] = i


def semaphore_churn(sem_name: str, progress, slot: int) -> None:
    """Acquire and release a robust semaphore's permit in a loop until killed."""
    sem = rsm_shm.Semaphore(sem_name, create=False)
    i = 0
    while True:
        with sem:
            pass
        i += 1
        progress[slot] = i


def semaphore_wait_one(sem_name: str) -> None:
    """Block on a semaphore (the test stops, hands a permit to, and kills this process)."""
    rsm_shm.Semaphore(sem_name, create=False).acquire(timeout=120)
    while True:
        time.sleep(1)
