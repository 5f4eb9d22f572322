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
