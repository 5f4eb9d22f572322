"""Fixtures of the cluster suites: clusters with test-unique names that are destroyed
(processes, segments, data directories) after each test, pass or fail."""

from __future__ import annotations

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def cluster_env(monkeypatch):
    """Peers find the test state machines (``cluster_harness:AppendLog``), and served
    peers started by this test process die with it: a SIGKILLed pytest leaves no
    orphaned cluster behind (``rsm_shm.cluster.serve.EXIT_WITH_PARENT_ENV``)."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", HERE + (os.pathsep + path if path else ""))
    monkeypatch.setenv("RSM_SHM_PEER_EXIT_WITH_PARENT", str(os.getpid()))


@pytest.fixture
def make_cluster(shm_name, tmp_path, cluster_env):
    """``make_cluster(state_machine, peers=3, **kw)``: a started LocalCluster named for
    this test, destroyed afterwards."""
    from rsm_shm.cluster import LocalCluster

    made = []

    def make(state_machine, peers: int = 3, start: bool = True, **kw):
        kw.setdefault("data_dir", str(tmp_path / f"cluster{len(made)}"))
        c = LocalCluster(shm_name("c"), state_machine, peers=peers, **kw)
        made.append(c)
        if start:
            c.start()
        return c

    yield make
    for c in made:
        c.destroy()


@pytest.fixture
def served(shm_name, tmp_path, cluster_env):
    """``served(state_machine, n=3, **kw)``: a started ServedCluster (net_harness.py:
    peers over gRPC, each its own ``cluster serve`` process) named for this test,
    destroyed afterwards.  Needs the [net] extra; a test file may define its own."""
    from net_harness import ServedCluster

    made = []

    def make(state_machine, n=3, **kw):
        c = ServedCluster(shm_name("net"), state_machine, n, tmp_path / f"c{len(made)}", **kw)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.destroy()


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: nothing to check
        return 0


@pytest.fixture(autouse=True, scope="module")
def _grpc_leaves_no_threads(request):
    """Modules that use gRPC in this process must release it: gRPC's core threads stop
    only once every channel and server is gone, and a test process with threads left
    over must not fork later (later suites fork; Python 3.12+ warns, an error here)."""
    if not request.module.__name__.startswith("test_net_"):
        yield
        return
    import gc
    import time

    before = _os_threads()
    yield
    deadline = time.monotonic() + 10
    while _os_threads() > before:
        gc.collect()
        if time.monotonic() > deadline:
            names = []
            for t in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{t}/comm") as f:
                        names.append(f.read().strip())
                except OSError:
                    pass
            pytest.fail(f"{_os_threads() - before} thread(s) left running after {request.module.__name__}: {names}")
        time.sleep(0.02)
