"""Served peers started by a test die with the test process: a SIGKILLed pytest (or
any harness) must not leave a cluster serving on, orphaned.  The harness asks for it
with ``RSM_SHM_PEER_EXIT_WITH_PARENT`` (set by the ``cluster_env`` fixture); without
it, a peer outlives its starter as in production."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

pytest.importorskip("grpc", reason="grpcio (the [net] extra, part of [test]) is not installed")

from cluster_harness import HERE, KV, wait_until  # noqa: E402

from rsm_shm.cluster.serve import EXIT_WITH_PARENT_ENV  # noqa: E402

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's"),
]

# A harness process: three served peers that die with it (the option set the way the
# cluster_env fixture sets it, for its own pid), and a fourth, alone in its own cluster,
# started without the option; it prints their pids and waits to be killed.
_HARNESS = """
import json, os, sys, time
from pathlib import Path
from net_harness import ServedCluster
from rsm_shm.cluster import Peer
name, sm, data = sys.argv[1], sys.argv[2], Path(sys.argv[3])
os.environ.pop("{env}", None)
loner = Peer(name + "x", 1, peers={{}}, state_machine=sm, data_dir=str(data / "loner"), fsync=False).start()
os.environ["{env}"] = str(os.getpid())
cluster = ServedCluster(name, sm, 3, data).start()
cluster.wait_leader(timeout=30)
print(json.dumps({{"peers": [p.pid for p in cluster.peers.values()], "loner": loner.pid}}), flush=True)
time.sleep(100)
""".format(env=EXIT_WITH_PARENT_ENV)


def _gone(pid: int, started: float) -> bool:
    """The process is no more (a zombie nobody reaped counts as gone; so does a new
    process that took the pid)."""
    try:
        p = psutil.Process(pid)
        return p.create_time() != started or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_served_peers_die_with_a_sigkilled_harness_and_only_when_asked(shm_name, tmp_path, cluster_env):
    harness = subprocess.Popen(
        [sys.executable, "-c", _HARNESS, shm_name("orphan"), KV, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=HERE,
        text=True,
    )
    started: dict = {}
    try:
        line = harness.stdout.readline()
        assert line, f"the harness exited with {harness.wait(30)}: {harness.stderr.read()}"
        pids = json.loads(line)
        loner = pids["loner"]
        started.update({pid: psutil.Process(pid).create_time() for pid in [*pids["peers"], loner]})
        assert all(psutil.Process(pid).ppid() == harness.pid for pid in started)
        harness.send_signal(signal.SIGKILL)
        harness.wait(10)
        wait_until(lambda: all(_gone(pid, started[pid]) for pid in pids["peers"]), 10, "the harness's peers to exit")
        # The control: the peer started without the option serves on, orphaned.
        assert not _gone(loner, started[loner])
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait(10)
        harness.stdout.close()
        harness.stderr.close()
        # The loner always, the others if the test failed: nothing outlives the test.
        left = [pid for pid, t in started.items() if not _gone(pid, t)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: all(_gone(pid, started[pid]) for pid in left), 10, "every peer to exit")


def test_a_peer_whose_starter_is_not_the_named_one_refuses_to_serve(shm_name, tmp_path, monkeypatch):
    from rsm_shm.cluster import Peer

    monkeypatch.setenv(EXIT_WITH_PARENT_ENV, "1")  # pid 1 never started this test's peer
    peer = Peer(shm_name("wrongparent"), 1, peers={}, state_machine=KV, data_dir=str(tmp_path / "p"), fsync=False)
    with pytest.raises(RuntimeError, match=r"RSM_SHM_PEER_EXIT_WITH_PARENT=1, but this peer's parent is pid \d+"):
        peer.start()
    monkeypatch.setenv(EXIT_WITH_PARENT_ENV, "me")
    with pytest.raises(RuntimeError, match="must be the pid of the process that starts the peer, not 'me'"):
        peer.start()
