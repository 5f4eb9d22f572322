"""Multi-process torture: many processes, many operations, an exact invariant at the end."""

from __future__ import annotations

import os

import pytest

import rsm_shm

from . import _workers

# Children start from the suite's fork server (tests/_workers.py), never by fork().
FORKSERVER = _workers.FORKSERVER


def _open_when_all_wait(gate, n, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while gate.pending < n:
        assert time.monotonic() < deadline, "workers did not reach the start gate"
        time.sleep(0.005)
    gate.open()


def _run_all(target, argsets, timeout=240, before_join=None):
    procs = [FORKSERVER.Process(target=target, args=a) for a in argsets]
    for p in procs:
        p.start()
    try:
        if before_join is not None:
            before_join()
        for p in procs:
            p.join(timeout)
            assert p.exitcode == 0, f"worker exit code {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("policy", ["barging", "fifo"])
def test_lock_8_processes_exact_counter(objs, policy):
    lk = objs(rsm_shm.Lock, policy=policy)
    counter = objs(rsm_shm.Lock)
    gate = objs(rsm_shm.Gate)
    n, procs = (50_000, 8) if policy == "barging" else (5_000, 8)  # FIFO hands off: one switch per op
    _run_all(
        _workers.lock_increments,
        [("lock", lk.name, counter.name, n, gate.name)] * procs,
        before_join=lambda: _open_when_all_wait(gate, procs),
    )
    assert counter.tag == n * procs
    assert not lk.locked() and lk.pending == 0


@pytest.mark.timeout(300)
def test_rlock_nested_exact_counter(objs):
    lk = objs(rsm_shm.RLock)
    counter = objs(rsm_shm.Lock)
    _run_all(_workers.rlock_nested_increments, [(lk.name, counter.name, 10_000)] * 6)
    assert counter.tag == 60_000
    assert not lk.statistics().locked


@pytest.mark.timeout(300)
def test_rwlock_writers_exact_counter(objs):
    rw = objs(rsm_shm.RWLock)
    counter = objs(rsm_shm.Lock)
    n = 8_000
    _run_all(_workers.rwlock_writes, [(rw.name, counter.name, n)] * 6)
    assert counter.tag == 6 * (n - n // 4)
    st = rw.statistics()
    assert st.readers == 0 and st.writer_tid == 0


@pytest.mark.timeout(300)
def test_semaphore_bounds_concurrency(objs):
    sem = objs(rsm_shm.Semaphore, value=3)
    inside = objs(rsm_shm.Lock)
    peak = objs(rsm_shm.Lock)
    _run_all(_workers.semaphore_concurrency, [(sem.name, inside.name, peak.name, 3_000)] * 8)
    assert 1 <= peak.tag <= 3
    assert inside.tag == 0 and sem.value == 3


@pytest.mark.timeout(300)
def test_condition_producer_consumer_no_lost_wakeup(objs):
    cond = objs(rsm_shm.Condition)
    box = objs(rsm_shm.Lock)
    producers, per = 4, 1_000
    procs = [
        FORKSERVER.Process(target=_workers.condition_producer, args=(cond.name, box.name, per, 1 + k * per))
        for k in range(producers)
    ]
    for p in procs:
        p.start()
    seen = []
    try:
        with cond:
            while len(seen) < producers * per:
                assert cond.wait_for(lambda: box.tag != 0, timeout=60), "lost wake-up: consumer starved"
                seen.append(box.tag)
                box.tag = 0
                cond.notify_all()
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert sorted(seen) == list(range(1, producers * per + 1))


@pytest.mark.timeout(300)
def test_barrier_many_generations(objs):
    parties, cycles = 4, 300
    b = objs(rsm_shm.Barrier, parties=parties)
    with FORKSERVER.Pool(parties) as pool:
        results = pool.starmap(_workers.barrier_cycles, [(b.name, cycles)] * parties, chunksize=1)
    for cycle in range(cycles):
        assert sorted(r[cycle] for r in results) == list(range(parties))
    assert b.n_waiting == 0 and not b.broken


@pytest.mark.timeout(300)
def test_event_pingpong_no_stale_wakeups(objs):
    """A set() must not wake a waiter that started waiting after it (seen on one shared CPU:
    the woken side cleared, waited again, and the same set() woke it a second time)."""
    e1, e2, seq = objs(rsm_shm.Event), objs(rsm_shm.Event), objs(rsm_shm.Lock)
    rounds = 3000
    with FORKSERVER.Pool(1) as pool:
        result = pool.apply_async(_workers.event_pingpong_b, (e1.name, e2.name, seq.name, rounds))
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        try:
            for i in range(1, rounds + 1):
                seq.tag = i
                e1.set()
                assert e2.wait(30), f"B stalled at round {i}"
                e2.clear()
        finally:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        assert result.get(60) == 0
