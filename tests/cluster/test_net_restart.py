"""Restarting served peers: what a SIGKILLed peer left on its host is taken back when it
starts again, and the host-side cluster handle says what it cannot do for served peers."""

from __future__ import annotations

import os
import re

import pytest

pytest.importorskip("grpc", reason="grpcio (the [net] extra, part of [test]) is not installed")

from cluster_harness import KV  # noqa: E402
from net_harness import ServedCluster  # noqa: E402

from rsm_shm.cluster import Client, KVClient  # noqa: E402
from rsm_shm.cluster.layout import reply_ring_prefix  # noqa: E402
from rsm_shm.segment import PREFIX, SHM_DIR  # noqa: E402

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]


def _reply_rings(name):
    """{creator pid: [ring names]} of cluster ``name``'s reply rings in /dev/shm."""
    ring = re.compile(re.escape(PREFIX + reply_ring_prefix(name)) + r"([0-9a-f]+)\.[0-9a-f]+")
    out = {}
    for entry in os.listdir(SHM_DIR):
        m = ring.fullmatch(entry)
        if m:
            out.setdefault(int(m.group(1), 16), []).append(entry)
    return out


def test_a_sigkilled_served_peer_takes_back_its_reply_rings_when_it_restarts(shm_name, tmp_path, cluster_env):
    name = shm_name("rr")
    cluster = ServedCluster(name, KV, 3, tmp_path / "data").start()
    try:
        leader = cluster.wait_leader(timeout=30)
        # A remote client makes the leader's client service create reply rings, named
        # with the leader's pid; a local client of this process makes one of its own.
        with KVClient.connect([cluster.addresses[leader]]) as kv:
            for i in range(5):
                kv.put(f"k{i}", i)
        local = Client(name)
        try:
            local.read(b"")
        except Exception:
            pass  # KV's read of b"" may be refused: only the reply ring matters here
        old_pid = cluster.peers[leader].pid
        rings = _reply_rings(name)
        assert rings.get(old_pid), rings
        assert rings.get(os.getpid()), rings
        # The host's handle cannot restart a served peer (it does not know its command).
        with pytest.raises(RuntimeError, match="served peer; restart it by running its `rsm-shm cluster serve`"):
            cluster.local.restart(leader)
        cluster.kill(leader)
        # SIGKILL ran no cleanup: the rings stay (what `rsm-shm gc` used to be needed for).
        assert set(_reply_rings(name).get(old_pid, ())) == set(rings[old_pid])
        cluster.restart(leader)
        after = _reply_rings(name)
        assert old_pid not in after, after  # taken back as the peer started
        assert set(after.get(os.getpid(), ())) == set(rings[os.getpid()])  # a live client's stay
        local.close()
        with KVClient(name) as kv:
            assert kv.get("k4") == 4
    finally:
        cluster.destroy()
