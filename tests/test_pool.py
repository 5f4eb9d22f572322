"""ProcessPool against the concurrent.futures.Executor contract (as CPython's own tests
expect it of ProcessPoolExecutor): submit/map/shutdown ordering, exceptions with their
remote tracebacks, as_completed, wait, cancellation, initializer, max_tasks_per_child."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import multiprocessing as mp
import os
import pickle

import pytest

import rsm_shm
from rsm_shm.pool import BrokenProcessPool, ProcessPool, RemoteTraceback, WorkerState
from tests import _pool_jobs as jobs

SHM = "/dev/shm"


def _leftovers(name: str) -> list[str]:
    return [e for e in os.listdir(SHM) if e.startswith("rsm_shm." + name)]


@pytest.fixture
def pool(shm_name):
    p = ProcessPool(2, shm_name("pool"))
    yield p
    p.shutdown(wait=True, cancel_futures=True)
    assert _leftovers(p.name) == []


@pytest.fixture
def blocker(objs):
    """An Event jobs block on and a Semaphore they release when they start."""
    ev = objs(rsm_shm.Event)
    started = objs(rsm_shm.Semaphore, value=0)
    yield ev, started
    ev.set()


def test_submit_returns_results_and_passes_arguments(pool):
    assert pool.submit(jobs.square, 7).result(timeout=60) == 49
    assert pool.submit(jobs.add, 1, 2, c=3).result(timeout=60) == 6
    fs = [pool.submit(jobs.square, i) for i in range(500)]
    assert [f.result(timeout=60) for f in fs] == [i * i for i in range(500)]


def test_exception_propagates_with_remote_traceback(pool):
    f = pool.submit(jobs.fail, 5)
    with pytest.raises(ValueError, match="job 5 failed on purpose") as info:
        f.result(timeout=60)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert isinstance(cause, cf.process._RemoteTraceback)  # what ProcessPoolExecutor sets
    # The worker's stack, as ProcessPoolExecutor shows it: the job's own frame is there.
    assert 'raise ValueError(f"job {x} failed on purpose")' in str(cause)
    assert "_pool_jobs.py" in str(cause)
    assert isinstance(f.exception(), ValueError)


def test_base_exceptions_reach_the_future_and_the_worker_survives(pool):
    with pytest.raises(SystemExit):
        pool.submit(jobs.raise_system_exit).result(timeout=60)
    assert pool.submit(jobs.square, 3).result(timeout=60) == 9
    assert pool.statistics().worker_deaths == 0


def test_unpicklable_result_and_argument(pool):
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as info:
        pool.submit(jobs.unpicklable_result).result(timeout=60)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    f = pool.submit(jobs.square, lambda: 1)  # cannot be sent: the future says so
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        f.result(timeout=60)
    assert pool.submit(jobs.square, 4).result(timeout=60) == 16


def test_map_is_ordered_with_several_iterables_and_chunks(pool):
    assert list(pool.map(jobs.square, range(1000))) == [i * i for i in range(1000)]
    assert list(pool.map(jobs.add, range(300), range(100), chunksize=7)) == [2 * i for i in range(100)]
    assert list(pool.map(jobs.square, [])) == []
    assert list(pool.map(jobs.square, range(10), chunksize=100)) == [i * i for i in range(10)]
    with pytest.raises(ValueError):
        pool.map(jobs.square, range(3), chunksize=0)


def test_map_is_lazy_over_an_endless_iterable(pool):
    results = pool.map(jobs.square, itertools.count(), chunksize=5, buffersize=4)
    assert list(itertools.islice(results, 100)) == [i * i for i in range(100)]
    results.close()  # cancels the look-ahead
    st = pool.statistics()
    assert st.submitted <= 100 // 5 + 4 + 1  # bounded look-ahead, not the endless input


def test_map_raises_at_the_failing_item_and_cancels_the_rest(pool):
    it = pool.map(_fail_on_3, range(10))
    assert [next(it), next(it), next(it)] == [0, 1, 4]
    with pytest.raises(ValueError):
        next(it)


def _fail_on_3(x):
    return jobs.square(x) if x != 3 else jobs.fail(x)


def test_map_timeout(pool, blocker):
    ev, _ = blocker
    it = pool.map(jobs.wait_event, [ev.name], timeout=0.2)
    with pytest.raises(cf.TimeoutError):
        next(it)
    ev.set()


def test_as_completed_and_wait(pool, blocker):
    ev, started = blocker
    slow = pool.submit(jobs.wait_event, ev.name, "slow", started.name)
    assert started.acquire(timeout=60)
    fast = [pool.submit(jobs.square, i) for i in range(5)]
    done = []
    for f in cf.as_completed(fast, timeout=60):
        done.append(f.result())
    assert sorted(done) == [i * i for i in range(5)]
    d, nd = cf.wait([slow, *fast], timeout=0.05, return_when=cf.ALL_COMPLETED)
    assert slow in nd and set(fast) <= d
    ev.set()
    d, nd = cf.wait([slow], timeout=60)
    assert slow in d and slow.result() == "slow"
    f1 = pool.submit(jobs.fail, 1)
    d, _ = cf.wait([f1], timeout=60, return_when=cf.FIRST_EXCEPTION)
    assert f1 in d


def test_queued_futures_can_be_cancelled(shm_name, blocker):
    ev, started = blocker
    with ProcessPool(1, shm_name("pool")) as pool:
        running = pool.submit(jobs.wait_event, ev.name, "r", started.name)
        assert started.acquire(timeout=60)
        assert not running.cancel()  # handed out already
        queued = [pool.submit(jobs.square, i) for i in range(40)]
        cancelled = [f for f in queued[10:] if f.cancel()]
        # No job has come back yet, so none is queued behind the running one: all wait in
        # the owner, cancellable.
        assert len(cancelled) == 30
        ev.set()
        assert running.result(timeout=60) == "r"
        for i, f in enumerate(queued):
            if f in cancelled:
                assert f.cancelled()
                with pytest.raises(cf.CancelledError):
                    f.result()
            else:
                assert f.result(timeout=60) == i * i


def test_shutdown_waits_and_refuses_new_work(shm_name):
    pool = ProcessPool(2, shm_name("pool"))
    fs = [pool.submit(jobs.square, i) for i in range(2000)]
    pool.shutdown(wait=True)
    assert all(f.done() for f in fs)  # shutdown(wait=True) returns after every job
    assert [f.result() for f in fs] == [i * i for i in range(2000)]
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        pool.submit(jobs.square, 1)
    pool.shutdown()  # idempotent
    assert _leftovers(pool.name) == []


def test_shutdown_cancel_futures(shm_name, blocker):
    ev, started = blocker
    pool = ProcessPool(1, shm_name("pool"))
    running = pool.submit(jobs.wait_event, ev.name, 1, started.name)
    assert started.acquire(timeout=60)
    queued = [pool.submit(jobs.square, i) for i in range(50)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert sum(f.cancelled() for f in queued) == 50
    ev.set()
    assert running.result(timeout=60) == 1
    for f in queued:
        assert f.cancelled() or f.result(timeout=60) is not None
    pool.shutdown(wait=True)
    assert _leftovers(pool.name) == []


def test_shutdown_without_wait_finishes_the_work(shm_name):
    pool = ProcessPool(2, shm_name("pool"))
    fs = [pool.submit(jobs.square, i) for i in range(300)]
    pool.shutdown(wait=False)
    assert [f.result(timeout=60) for f in fs] == [i * i for i in range(300)]
    pool.shutdown(wait=True)
    assert _leftovers(pool.name) == []


def test_initializer_runs_once_per_worker(shm_name):
    with ProcessPool(2, shm_name("pool"), initializer=jobs.set_initialised, initargs=("ready",)) as pool:
        out = [pool.submit(jobs.get_initialised).result(timeout=60) for _ in range(20)]
    assert {v for v, _ in out} == {"ready"}


def test_initializer_failure_breaks_the_pool(shm_name):
    pool = ProcessPool(2, shm_name("pool"), initializer=jobs.bad_initializer)
    f = pool.submit(jobs.square, 2)
    with pytest.raises(BrokenProcessPool, match="initializer failed on purpose"):
        f.result(timeout=60)
    with pytest.raises(BrokenProcessPool):
        pool.submit(jobs.square, 2)
    pool.shutdown()
    assert _leftovers(pool.name) == []


def test_max_tasks_per_child_replaces_workers(shm_name):
    with ProcessPool(1, shm_name("pool"), max_tasks_per_child=2) as pool:
        pids = [pool.submit(jobs.pid).result(timeout=60) for _ in range(6)]
        st = pool.statistics()
    assert len(set(pids)) == 3 and pids[0] == pids[1] and pids[2] == pids[3]
    assert st.worker_deaths == 0 and st.workers_started >= 3


def test_pluggable_serializer(shm_name):
    with ProcessPool(2, shm_name("pool"), serializer=jobs.TaggedPickle) as pool:
        assert list(pool.map(jobs.square, range(50), chunksize=3)) == [i * i for i in range(50)]
        with pytest.raises(ValueError, match="failed on purpose"):
            pool.submit(jobs.fail, 1).result(timeout=60)


def test_statistics_show_the_busy_worker_and_its_job(pool, blocker):
    ev, started = blocker
    f = pool.submit(jobs.wait_event, ev.name, None, started.name)
    assert started.acquire(timeout=60)
    st = pool.statistics()
    busy = [w for w in st.workers if w.state == WorkerState.BUSY]
    assert len(busy) == 1 and busy[0].job is not None and busy[0].busy_for >= 0
    assert busy[0].pid in {w.pid for w in st.workers} and st.in_flight >= 1
    assert "busy" in str(st) and "on job" in str(busy[0])
    ev.set()
    f.result(timeout=60)


def test_arguments_are_checked_like_process_pool_executor():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        ProcessPool(0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        ProcessPool(1, initializer=3)
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        ProcessPool(1, max_tasks_per_child=0)
    with pytest.raises(ValueError, match="fork"):
        ProcessPool(1, mp_context=mp.get_context("fork"))


def test_job_larger_than_a_ring_fails_alone(shm_name):
    with ProcessPool(1, shm_name("pool"), ring_capacity=1 << 12) as pool:
        with pytest.raises(ValueError, match="raise ring_capacity"):
            pool.submit(jobs.square, b"x" * 10000).result(timeout=60)
        assert pool.submit(jobs.square, 5).result(timeout=60) == 25


def test_spawn_context_and_anonymous_pool_leave_nothing():
    before = set(os.listdir(SHM))
    with ProcessPool(1, mp_context=mp.get_context("spawn")) as pool:
        assert pool.submit(jobs.square, 6).result(timeout=60) == 36
    assert {e for e in set(os.listdir(SHM)) - before if f".{os.getpid()}." in e} == set()


def test_progress_passes_results_through_and_counts(pool):
    import io

    from rsm_shm.pool.progress import TextBar, progress

    out = io.StringIO()
    bar = TextBar(total=300, desc="squares", file=out, min_interval=0)
    got = list(progress(pool.map(jobs.square, range(300), chunksize=10), total=300, pool=pool, bar=bar, refresh=0))
    assert got == [i * i for i in range(300)] and bar.n == 300
    assert "squares: 300/300" in out.getvalue() and "retries=0" in out.getvalue()


def test_progress_drives_a_tqdm_bar(pool):
    tqdm = pytest.importorskip("tqdm")
    import io

    from rsm_shm.pool.progress import progress

    out = io.StringIO()
    with tqdm.tqdm(total=50, file=out) as bar:
        assert list(progress(pool.map(jobs.square, range(50)), pool=pool, bar=bar)) == [i * i for i in range(50)]
        assert bar.n == 50


def test_rsm_shm_inspect_shows_the_pool_from_another_process(pool, blocker):
    import json
    import subprocess
    import sys

    ev, started = blocker
    running = pool.submit(jobs.wait_event, ev.name, None, started.name)
    assert started.acquire(timeout=60)
    out = subprocess.run(
        [sys.executable, "-m", "rsm_shm", "inspect", "--json", pool.name], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seg = json.loads(out.stdout)["segment"]
    assert seg["kind"] == "pool"
    detail = seg["detail"]
    assert detail["alive"] == 2 and detail["busy"] == 1 and detail["in_flight"] == 1
    busy = [w for w in detail["workers"] if w["state"] == "busy"]
    assert len(busy) == 1 and busy[0]["job"] is not None and busy[0]["busy_for"] >= 0
    assert "1 busy" in seg["state"]
    ev.set()
    running.result(timeout=60)


def test_a_pool_that_cannot_be_built_leaves_nothing(shm_name):
    name = shm_name("pool")
    with pytest.raises(ValueError, match="capacity must be a power of two"):
        ProcessPool(1, name, ring_capacity=1000)
    assert _leftovers(name) == []


def test_shutdown_from_a_done_callback_does_not_deadlock(shm_name, blocker):
    ev, started = blocker
    pool = ProcessPool(1, shm_name("pool"))
    f = pool.submit(jobs.wait_event, ev.name, 4, started.name)
    assert started.acquire(timeout=60)
    called = []
    f.add_done_callback(lambda _: (pool.shutdown(wait=True), called.append(1)))  # runs on the collector
    ev.set()
    assert f.result(timeout=60) == 4
    pool.shutdown(wait=True)  # returns once the collector finished the shutdown
    assert called == [1]
    assert _leftovers(pool.name) == []
