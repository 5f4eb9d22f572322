"""A named ProcessPool takes jobs from other processes: ProcessPool.attach(name)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest

from rsm_shm.pool import BrokenProcessPool, ProcessPool
from tests import _pool_jobs as jobs


def _leftovers(name: str) -> list[str]:
    return [e for e in os.listdir("/dev/shm") if e.startswith("rsm_shm." + name)]


def test_clients_in_other_processes_share_the_workers(shm_name, tmp_path):
    name = shm_name("pool")
    ctx = mp.get_context("spawn")
    with ProcessPool(2, name, max_retries=1) as pool:
        outs = [tmp_path / f"client{i}.json" for i in range(3)]
        procs = [ctx.Process(target=jobs.client_session, args=(name, str(o), 300 + i)) for i, o in enumerate(outs)]
        for p in procs:
            p.start()
        mine = list(pool.map(jobs.square, range(200)))  # the owner submits meanwhile
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        st = pool.statistics()
    assert mine == [i * i for i in range(200)]
    for i, o in enumerate(outs):
        got = json.loads(o.read_text())
        assert got["squares"] == [k * k for k in range(300 + i)]
        assert got["single"] == 6
        assert got["died"] == [2, "SIGKILL"]  # a client's job is retried, then fails alone
        assert got["raised"] == "job 1 failed on purpose"
    assert st.failed == 3 and st.worker_deaths == 6
    assert _leftovers(name) == []


def test_attach_in_the_owner_process_and_after_shutdown(shm_name):
    name = shm_name("pool")
    pool = ProcessPool(1, name)
    client = ProcessPool.attach(name)
    assert client.submit(jobs.square, 12).result(timeout=60) == 144
    assert list(client.map(jobs.square, range(10))) == [i * i for i in range(10)]
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        client.submit(jobs.square, 1)
    client.shutdown()
    assert _leftovers(name) == []


def test_a_client_learns_that_the_owner_went_away(shm_name, objs):
    import rsm_shm

    ev = objs(rsm_shm.Event)
    name = shm_name("pool")
    pool = ProcessPool(1, name)
    client = ProcessPool.attach(name)
    f = client.submit(jobs.wait_event, ev.name)
    pool.kill_workers()
    with pytest.raises(BrokenProcessPool):
        f.result(timeout=60)
    client.shutdown()
    assert _leftovers(name) == []


def test_attach_to_a_missing_pool_fails_clearly(shm_name):
    with pytest.raises(FileNotFoundError):
        ProcessPool.attach(shm_name("nothing"))


def test_a_clients_queued_future_can_be_cancelled(shm_name, objs):
    import concurrent.futures as cf

    import rsm_shm

    ev = objs(rsm_shm.Event)
    started = objs(rsm_shm.Semaphore, value=0)
    name = shm_name("pool")
    with ProcessPool(1, name) as pool:
        client = ProcessPool.attach(name)
        try:
            running = client.submit(jobs.wait_event, ev.name, "r", started.name)
            assert started.acquire(timeout=60)
            assert not running.cancel()  # a worker runs it: too late, as for the owner's futures
            assert not running.cancelled()
            queued = [client.submit(jobs.square, i) for i in range(6)]
            # The one worker is busy and no job has come back yet: all six wait in the owner.
            assert queued[2].cancel() and queued[4].cancel()
            assert queued[2].cancel()  # cancelling again: still True, as Future.cancel
            assert queued[2].cancelled() and queued[2].done()
            with pytest.raises(cf.CancelledError):
                queued[4].result(timeout=0)
            ev.set()
            assert running.result(timeout=60) == "r"
            assert not running.cancel()  # finished
            for i, f in enumerate(queued):
                if i in (2, 4):
                    assert f.cancelled()
                else:
                    assert f.result(timeout=60) == i * i
            assert pool.statistics().cancelled == 2
        finally:
            client.shutdown()
    assert _leftovers(name) == []


def test_client_shutdown_cancel_futures_and_map_close(shm_name, objs):
    import rsm_shm

    ev = objs(rsm_shm.Event)
    started = objs(rsm_shm.Semaphore, value=0)
    name = shm_name("pool")
    with ProcessPool(1, name) as pool:
        client = ProcessPool.attach(name)
        running = client.submit(jobs.wait_event, ev.name, "r", started.name)
        assert started.acquire(timeout=60)
        results = client.map(jobs.square, range(100), chunksize=10)  # ten chunks wait in the owner
        queued = [client.submit(jobs.square, i) for i in range(5)]
        results.close()  # the map's chunks are cancelled (one exchange with the owner)
        assert pool.statistics().cancelled == 10
        client.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        ev.set()
        assert running.result(timeout=60) == "r"
        client.shutdown(wait=True)
        assert pool.statistics().cancelled == 15
    assert _leftovers(name) == []
