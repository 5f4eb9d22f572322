"""Membership of served peers: a peer started with --join is admitted into a loaded
3-peer cluster (as a learner that catches up from a snapshot, then a voter) with the
address it listens at carried by the conf change, then the leader and a follower are
removed; no acknowledged write is lost and every replica agrees."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("grpc", reason="grpcio (the [net] extra, part of [test]) is not installed")

from cluster_harness import (  # noqa: E402
    APPEND_LOG,
    append_writer,
    check_exactly_once,
    finish_clients,
    logs_of_every_peer,
    start_clients,
    wait_caught_up,
    wait_progress,
    wait_until,
)
from net_harness import ServedCluster  # noqa: E402

from rsm_shm.cluster.net.members import add_peer, remove_peer  # noqa: E402

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]

SNAPSHOT_COMMANDS = 50  # a few hundred commands compact the log: the new peer needs a snapshot


def _status(cluster, pid):
    return next(s for s in cluster.status() if s.id == pid)


def test_a_served_peer_joins_a_loaded_cluster_then_the_leader_and_a_follower_leave(shm_name, tmp_path, cluster_env):
    name = shm_name("mem")
    cluster = ServedCluster(
        name, APPEND_LOG, 3, tmp_path / "data", snapshot_commands=SNAPSHOT_COMMANDS, snapshot_keep=10
    ).start()
    try:
        procs = None
        try:
            leader = cluster.wait_leader(timeout=30)
            procs, stop, progress, out = start_clients(
                append_writer, lambda cid, stop, progress, out: (name, cid, stop, progress, out), 2
            )
            wait_progress(progress, 4 * SNAPSHOT_COMMANDS, timeout=60)
            wait_until(lambda: min(s.first_index for s in cluster.status()) > 1, 30, "the logs to compact")
            original = dict(cluster.addresses)
            new = cluster.start_joining(4)
            assert 4 not in _status(cluster, leader).voters + _status(cluster, leader).learners
            add_peer([original[2]], 4, new.address, timeout=60)
            lead = cluster.wait_leader(timeout=10)
            assert 4 in _status(cluster, lead).voters
            st4 = _status(cluster, 4)
            assert st4.alive and st4.snapshots_received >= 1, st4
            wait_progress(progress, 50, timeout=30)

            # The leader leaves: it stops by itself once it applied its removal.
            gone = cluster.wait_leader(timeout=10)
            assert gone != 4
            remove_peer([new.address], gone, timeout=30)
            lead = cluster.wait_leader(timeout=10)
            assert lead != gone and gone not in _status(cluster, lead).voters + _status(cluster, lead).learners
            wait_until(lambda: not cluster.peers[gone].alive, 15, f"removed peer {gone} to stop by itself")
            assert cluster.peers[gone].stop() == 0
            wait_progress(progress, 50, timeout=30)
            # A follower leaves (through the command line, as an operator would).  It is cut
            # off first, so it cannot apply its own removal: the others' status tells it.
            follower = next(p for p in (1, 2, 3) if p not in (gone, cluster.wait_leader(timeout=10)))
            cluster.partition([follower])
            cli = subprocess.run(
                [sys.executable, "-m", "rsm_shm", "cluster", "remove-peer", str(follower), "--remote", new.address],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0 and f"peer {follower} left the cluster" in cli.stdout, cli
            lead = cluster.wait_leader(timeout=10)
            assert follower not in _status(cluster, lead).voters + _status(cluster, lead).learners
            wait_until(lambda: not cluster.peers[follower].alive, 15, f"removed peer {follower} to stop by itself")
            assert cluster.peers[follower].stop() == 0
            cluster.heal()
            wait_progress(progress, 50, timeout=30)
        finally:
            if procs is not None:
                reports = finish_clients(procs, stop, out)
        running = {p for p, peer in cluster.peers.items() if peer.alive}
        assert running == {1, 2, 3, 4} - {gone, follower}
        wait_caught_up(cluster)
        logs = logs_of_every_peer(cluster)
        assert set(logs) == running
        assert check_exactly_once(logs, reports) > 0
        # What the peers learned from the log survives them: peer 4's address is in the
        # members file of an original peer, and the removed one is marked removed there.
        survivor = next(p for p in (1, 2, 3) if p not in (gone, follower))
        book = json.loads((tmp_path / "data" / f"peer{survivor}" / "members.json").read_text())
        assert book["addresses"]["4"] == new.address and {gone, follower} <= set(book["removed"]), book
    finally:
        cluster.destroy()


def test_a_peer_restored_from_a_snapshot_learns_a_new_peers_address_from_the_others(shm_name, tmp_path, cluster_env):
    """Peer 3 is down while peer 4 joins, and the logs compact past 4's admission: 3 comes
    back from a snapshot (ids, no addresses) with its old command line, asks the others
    where 4 listens, and can then form a majority with 2 and 4 alone."""
    from cluster_harness import KV
    from rsm_shm.cluster import Client, KVClient

    name = shm_name("snapjoin")
    cluster = ServedCluster(name, KV, 3, tmp_path / "data", snapshot_commands=SNAPSHOT_COMMANDS, snapshot_keep=10)
    cluster.start()
    try:
        cluster.wait_leader(timeout=30)
        cluster.kill(3)
        new = cluster.start_joining(4)
        with Client.connect([cluster.addresses[1]]) as remote:  # the same, from a remote client
            remote.add_peer(4, new.address, timeout=60)
        admitted = _status(cluster, cluster.wait_leader(timeout=10)).commit
        with KVClient(name) as kv:
            i = 0
            while min(_status(cluster, p).first_index for p in (1, 2, 4)) <= admitted + 1:
                kv.put(f"k{i}", i)
                i += 1
                assert i < 20 * SNAPSHOT_COMMANDS, "the logs never compacted"
        cluster.peers[3].start()  # its command line names peers 1 and 2 only
        wait_until(lambda: _status(cluster, 3).snapshots_received >= 1, 30, "peer 3 to install a snapshot")
        members3 = tmp_path / "data" / "peer3" / "members.json"
        wait_until(
            lambda: json.loads(members3.read_text())["addresses"].get("4") == new.address,
            15,
            "peer 3 to learn peer 4's address",
        )
        # Peer 3 leads, peer 1 dies: only 2, 3 and 4 are left, a bare majority of four.
        cluster.transfer_leadership(3, timeout=15)
        cluster.kill(1)
        with KVClient(name) as kv:
            kv.put("after", "yes", timeout=30)
            assert kv.get("after") == "yes"
            assert kv.get(f"k{i - 1}") == i - 1
        # --join counts at the first start only: peer 4 restarts with every peer it joined
        # through gone.
        for p in (2, 3, 4):
            cluster.kill(p)
        cluster.peers[4].start()
        assert cluster.peers[4].alive
    finally:
        cluster.destroy()


def test_under_mutual_tls_a_peer_joins_with_its_own_identity_and_strangers_cannot_change_members(
    shm_name, tmp_path, cluster_env
):
    pytest.importorskip("cryptography", reason="cryptography (part of [test], via trustme) is not installed")
    from cluster_harness import KV
    from rsm_shm.cluster import KVClient
    from rsm_shm.cluster.net.tls import CertificateAuthority

    ca = CertificateAuthority()
    name = shm_name("tlsjoin")
    tls = {p: ca.issue_peer(name, p).write(str(tmp_path / f"pki{p}"), f"peer{p}") for p in (1, 2, 3, 4)}
    cluster = ServedCluster(name, KV, 3, tmp_path / "data", tls={p: tls[p] for p in (1, 2, 3)}).start()
    try:
        cluster.wait_leader(timeout=30)
        new = cluster.start_joining(4, tls_files=tls[4])
        anonymous = ca.issue([], ["client.example"], server=False).tls_config()
        with pytest.raises(PermissionError, match="names no identity of"):
            add_peer([cluster.addresses[1]], 4, new.address, tls=anonymous, timeout=10)
        admin = ca.issue_client(name, "admin").tls_config()
        add_peer([cluster.addresses[1]], 4, new.address, tls=admin, timeout=30)
        # Again: nothing to do (re-adding a voter as a learner would demote it), no entry.
        lead = cluster.wait_leader(timeout=10)
        before = _status(cluster, lead).last_index
        add_peer([cluster.addresses[2]], 4, new.address, tls=admin, timeout=10)
        assert _status(cluster, lead).last_index == before and 4 in _status(cluster, lead).voters
        cluster.transfer_leadership(4, timeout=15)  # 4's streams are accepted both ways
        with KVClient(name) as kv:
            kv.put("k", "v")
        remove_peer([cluster.addresses[1]], 4, tls=admin, timeout=30)
        wait_until(lambda: not new.alive, 15, "removed leader 4 to stop by itself")
        with KVClient(name) as kv:
            assert kv.get("k") == "v"
    finally:
        cluster.destroy()
