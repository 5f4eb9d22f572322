"""Membership changes, leadership transfer and link faults on a running cluster."""

from __future__ import annotations

import struct

import pytest

from rsm_shm.cluster import LocalCluster

pytestmark = pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")

COUNTER = "cluster_machines:Counter"


def count(b: bytes) -> int:
    return struct.unpack("<Q", b)[0]


@pytest.fixture
def cluster_name(shm_name):
    return shm_name("cl")


def test_add_a_peer_from_a_snapshot_then_transfer_to_it_and_remove_the_old_leader(cluster_name):
    with LocalCluster(cluster_name, COUNTER, peers=3, fsync=False, snapshot_commands=20, snapshot_keep=5) as c:
        old = c.wait_leader(10)
        cl = c.client()
        for _ in range(50):
            cl.propose(b"inc")
        new = c.add_peer(timeout=60)
        assert new == 4
        st = {s.id: s for s in c.status()}
        assert st[new].snapshots_received >= 1  # it caught up from a snapshot, not the log
        assert st[new].applied >= 50
        assert count(cl.propose(b"inc")) == 51
        c.transfer_leadership(new)
        assert c.leader() == new
        c.remove_peer(old)
        assert [s.id for s in c.status()] == sorted({1, 2, 3, 4} - {old})
        assert count(cl.propose(b"inc")) == 52
        c.kill(new)  # two of the three remaining voters still make a quorum
        assert count(cl.propose(b"inc", timeout=10)) == 53


def test_a_partitioned_or_paused_leader_is_replaced(cluster_name):
    with LocalCluster(cluster_name, COUNTER, peers=3, fsync=False) as c:
        first = c.wait_leader(10)
        cl = c.client()
        assert count(cl.propose(b"inc")) == 1
        c.partition([first])
        assert count(cl.propose(b"inc", timeout=10)) == 2  # committed by the majority side
        second = c.wait_leader(10)
        assert second != first
        st = {s.id: s for s in c.status()}
        assert st[first].role != "leader" or st[first].term < st[second].term
        c.heal()
        c.pause(second)
        assert count(cl.propose(b"inc", timeout=10)) == 3
        third = c.wait_leader(10)
        assert third != second
        c.resume(second)
        c.set_drop_rate(0.3)
        for i in range(4, 24):
            assert count(cl.propose(b"inc", timeout=10)) == i
        c.set_drop_rate(0)
        assert count(cl.read(b"")) == 23
        assert sum(s.msgs_dropped for s in c.status()) > 0
