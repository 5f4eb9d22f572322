"""Regressions found by the randomized simulator, as shrunk action lists.

Each case replays a minimal action list (from ``tools/raft_fuzz.py`` / ``shrink``) on a
fresh cluster with the seed it was found with, then checks liveness.  A case marked
``xfail(strict=True)`` documents a core bug that is not fixed yet: when the fix lands the
test starts passing, strict xfail turns that into a failure, and the marker must go.
"""

from __future__ import annotations

import pytest

from rsm_shm.raft.sim import SimOptions  # noqa: E402
from rsm_shm.raft.sim.fuzz import replay  # noqa: E402

pytestmark = pytest.mark.timeout(60)

# Found as a liveness failure (fixed in the core by 6eafd1f: the follower now answers
# SNAP_RESP(refused) and the leader falls back to probing with its newest snapshot).
# chaos profile, seed 38, 3 nodes, default SimOptions (also seeds 17 and 32): node 3 leads, proposes, and
# replaces itself by a new node 5 (joint C(1 2 3 -> 1 2 5)); node 3's application then
# snapshots at index 2, before the conf change.  Node 2 receives that snapshot, becomes
# leader after 3 leaves, and ships it to node 5, which is not in the snapshot's
# configuration and (as in etcd) refuses to install it, answering APP_RESP index=1.  The
# leader stayed in the SNAPSHOT state and re-sent the same cached snapshot after every
# heartbeat response forever, even after its application made a newer snapshot (at 8)
# that node 5 would accept: node 5 never caught up.
REFUSED_SNAPSHOT_ACTIONS = [
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("tick", 3),
    ("ready", 3),
    ("deliver", 3, 1, 0),
    ("ready", 1),
    ("deliver", 1, 3, 0),
    ("ready", 3),
    ("deliver", 3, 1, 0),
    ("ready", 1),
    ("deliver", 1, 3, 0),
    ("ready", 3),
    ("propose", 3),
    ("deliver", 3, 1, 0),
    ("ready", 1),
    ("deliver", 1, 3, 0),
    ("ready", 3),
    ("deliver", 3, 1, 0),
    ("ready", 1),
    ("deliver", 1, 3, 0),
    ("conf", 3, ((0, 5), (2, 3))),
    ("ready", 3),
    ("compact", 3),
]


def test_refused_snapshot_is_replaced_by_a_newer_one():
    v, sim = replay(REFUSED_SNAPSHOT_ACTIONS, seed=38, nodes=3, options=SimOptions())
    assert v is None, f"{v}\n" + "\n".join(sim.out[-30:])
    # the schedule still reaches the interesting case: a snapshot sent to a non-member
    assert sim.refused_snapshots, "the replay no longer sends node 5 a snapshot it must refuse"


def _isolated_lease_leader_keeps_reading():
    """Three nodes with lease-based reads and perfectly synchronised clocks (every node
    ticks together).  Leader 1 is cut off from 2 and 3; each tick 1 is asked for a read
    and the majority side, once it has a leader, commits a write."""
    from rsm_shm.raft.sim import Simulator
    from rsm_shm.raft.sim.check import SafetyChecker
    from rsm_shm.raft.types import Role

    sim = Simulator(seed=0, options=SimOptions(lease_reads=True), checker=SafetyChecker(check_reads=True))
    sim.add_nodes(3)
    sim.do(("campaign", 1))
    sim.stabilize()
    sim.do(("partition", ((1,), (2, 3))))
    for _ in range(4 * sim.options.election_tick):
        sim.do(("tick_all",))
        sim.stabilize([2, 3])
        sim.stabilize([1])
        for nid in (2, 3):
            if sim.status(nid).role == Role.LEADER:
                sim.do(("propose", nid))
                sim.stabilize([2, 3])
        sim.do(("read", 1))
        sim.stabilize([1])
    return sim


# Was a strict xfail (etcd-io/raft#166 in our core): the lease is now counted from the send
# tick of a quorum-acknowledged heartbeat round (rsm_shm/raft/readonly.py).
def test_lease_reads_stop_before_another_leader_can_be_elected():
    # Found by the simulator: with the partition at tick 0, nodes 2/3 elect a leader and
    # commit around tick 15 while node 1 still answers lease reads at its old commit
    # index until its second check-quorum (tick <= 20).  A safe lease must expire
    # before any follower's election timer can (thesis §6.4.1: start + election
    # timeout, counted from when the acknowledged heartbeats were sent).
    _isolated_lease_leader_keeps_reading()
