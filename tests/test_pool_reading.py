"""Who waits how: a thread waiting on a ProcessPool future reads the results ring itself;
every other way of waiting (wait, as_completed, callbacks, polling done(), other threads)
is still served, and nothing deadlocks.  Also: workers leave when their owner is killed."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import signal
import threading

import psutil
import pytest

import rsm_shm
from rsm_shm.pool import ProcessPool
from tests import _pool_jobs as jobs
from tests._workers import reap_after_test


@pytest.fixture
def pool(shm_name):
    p = ProcessPool(2, shm_name("pool"))
    yield p
    p.shutdown(wait=True, cancel_futures=True)


def _round_trips(pool, n=20):
    # result() reads the ring in this thread: afterwards the collector stays off it
    for i in range(n):
        assert pool.submit(jobs.square, i).result(timeout=60) == i * i


def test_every_way_of_waiting_completes_after_direct_reads(pool):
    _round_trips(pool)
    f = pool.submit(jobs.square, 2)
    done, _ = cf.wait([f], timeout=60)
    assert f in done and f.result() == 4

    _round_trips(pool)
    fs = [pool.submit(jobs.square, i) for i in range(10)]
    assert sorted(f.result() for f in cf.as_completed(fs, timeout=60)) == [i * i for i in range(10)]

    _round_trips(pool)
    called = threading.Event()
    pool.submit(jobs.square, 5).add_done_callback(lambda f: called.set())
    assert called.wait(60)

    _round_trips(pool)
    f = pool.submit(jobs.square, 6)
    polled = threading.Event()

    def poll():
        while not f.done():
            polled.wait(0.001)
        polled.set()

    t = threading.Thread(target=poll)
    t.start()
    assert polled.wait(60)  # nobody calls result(): the collector reads for the poller
    t.join(60)
    assert f.result(timeout=0) == 36


def test_a_thread_waiting_on_a_long_job_does_not_hold_up_others(pool, objs):
    ev = objs(rsm_shm.Event)
    started = objs(rsm_shm.Semaphore, value=0)
    slow = pool.submit(jobs.wait_event, ev.name, "slow", started.name)
    assert started.acquire(timeout=60)
    got = []
    waiter = threading.Thread(target=lambda: got.append(slow.result(timeout=60)))
    waiter.start()  # it reads the ring until the slow job ends
    try:
        # This thread's outcome is taken by the other reader (or this one once it has the
        # turn): either way it returns while the slow job still runs.
        for i in range(20):
            assert pool.submit(jobs.square, i).result(timeout=60) == i * i
        assert list(pool.map(jobs.square, range(50), chunksize=3)) == [i * i for i in range(50)]
        assert not slow.done()
    finally:
        ev.set()
        waiter.join(60)
    assert got == ["slow"]


def test_a_done_callback_may_wait_on_another_future(pool):
    got = []
    finished = threading.Event()

    def callback(_f):
        # runs on the thread that read the outcome (this one, or the collector)
        got.append(pool.submit(jobs.square, 7).result(timeout=60))
        finished.set()

    f = pool.submit(jobs.square, 1)
    f.add_done_callback(callback)
    assert f.result(timeout=60) == 1
    assert finished.wait(60)
    _round_trips(pool, 3)
    f = pool.submit(jobs.square, 2)
    f.add_done_callback(callback)
    assert finished.wait(60) and f.result(timeout=60) == 4
    assert got == [49, 49]


def test_cancelling_a_future_another_thread_waits_on_wakes_it(shm_name, objs):
    ev = objs(rsm_shm.Event)
    started = objs(rsm_shm.Semaphore, value=0)
    with ProcessPool(1, shm_name("pool")) as pool:
        running = pool.submit(jobs.wait_event, ev.name, "r", started.name)
        assert started.acquire(timeout=60)
        queued = pool.submit(jobs.square, 3)  # waits in the owner behind the running job
        outcome = []

        def wait():
            try:
                queued.result(timeout=60)
            except cf.CancelledError:
                outcome.append("cancelled")

        t = threading.Thread(target=wait)
        t.start()
        assert queued.cancel()
        t.join(30)
        assert outcome == ["cancelled"] and not t.is_alive()  # woken, not left reading the ring
        ev.set()
        assert running.result(timeout=60) == "r"


def test_map_results_close_cancels_the_queued_chunks(pool):
    results = pool.map(jobs.square, range(10_000), chunksize=10, buffersize=50)
    assert next(results) == 0
    results.close()
    with pytest.raises(StopIteration):
        next(results)
    before = pool.statistics().submitted
    assert before <= 50 + 50 // 8 + 1  # the look-ahead, not the input
    _round_trips(pool, 2)


def test_workers_leave_when_the_owner_is_killed(shm_name, tmp_path, objs):
    ready = objs(rsm_shm.Event)
    out = tmp_path / "pids.json"
    owner = reap_after_test(
        mp.get_context("spawn").Process(target=jobs.own_a_pool_then_hang, args=(shm_name("pool"), str(out), ready.name))
    )
    owner.start()
    assert ready.wait(120)
    workers = [psutil.Process(pid) for pid in json.loads(out.read_text())]
    os.kill(owner.pid, signal.SIGKILL)
    owner.join(30)
    # A worker checks on its owner twice a second, blocked in its inbox or not.
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []


def test_map_switches_functions_and_carries_an_unpicklable_one(pool):
    # A map's function travels once per chunk as bytes the worker decodes only when they
    # change: consecutive maps with other functions must not reuse the last one.
    for _ in range(2):
        assert list(pool.map(jobs.square, range(40), chunksize=3)) == [i * i for i in range(40)]
        assert list(pool.map(str, range(40), chunksize=3)) == [str(i) for i in range(40)]
    results = pool.map(lambda x: x, range(3))  # as Executor.map: iterating raises, not map()
    with pytest.raises(Exception, match="(?i)pickl|lambda"):
        list(results)
    assert list(pool.map(jobs.square, range(5))) == [0, 1, 4, 9, 16]


def test_a_callback_raising_keyboardinterrupt_costs_no_outcome(pool):
    # The callback runs in whichever thread reads the outcome: this one (then result()
    # raises it, after every outcome taken was delivered) or the collector (which logs it
    # and keeps reading).  Either way no future is left behind and the pool still works.
    for _ in range(3):
        _round_trips(pool, 5)
        f1 = pool.submit(jobs.square, 2)
        f1.add_done_callback(_raise_keyboard_interrupt)
        fs = [pool.submit(jobs.square, i) for i in range(20)]
        try:
            assert f1.result(timeout=60) == 4
        except KeyboardInterrupt:
            assert f1.done() and f1.result(timeout=0) == 4
        assert [f.result(timeout=60) for f in fs] == [i * i for i in range(20)]
    assert list(pool.map(jobs.square, range(30), chunksize=4)) == [i * i for i in range(30)]


def _raise_keyboard_interrupt(_f):
    raise KeyboardInterrupt
