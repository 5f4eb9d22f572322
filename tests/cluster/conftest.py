"""Fixtures of the cluster suites: clusters with test-unique names that are destroyed
(processes, segments, data directories) after each test, pass or fail."""
from __future__ import annotations

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def cluster_env(monkeypatch):
    """Peers find the test state machines (``cluster_harness:AppendLog``)."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", HERE + (os.pathsep + path if path else ""))


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
