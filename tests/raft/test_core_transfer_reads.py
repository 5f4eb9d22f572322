"""Leadership transfer (thesis §3.10) and linearizable reads (thesis §6.4)."""

from __future__ import annotations

import pytest
from core_net import Net, cfg

from rsm_shm.raft.core import ProposalDroppedError
from rsm_shm.raft.readonly import ReadOnlyOption
from rsm_shm.raft.types import MessageType, ReadState, Role


# ------------------------------------------------------------------ transfer
def test_transfer_to_caught_up_follower():
    net = Net(3)
    net.elect(1)
    term = net.status(1).term
    net.nodes[1].transfer_leadership(2)
    net.stabilize()
    assert net.leaders() == [2] and net.status(2).term == term + 1
    assert net.count(MessageType.TIMEOUT_NOW) == 1


def test_transfer_waits_for_target_to_catch_up():
    net = Net(3)
    net.elect(1)
    net.isolate(3)
    for k in range(10):
        net.nodes[1].propose(b"e%d" % k)
    net.stabilize()
    net.nodes[1].transfer_leadership(3)
    net.stabilize()
    assert net.count(MessageType.TIMEOUT_NOW) == 0
    assert net.status(1).lead_transferee == 3
    with pytest.raises(ProposalDroppedError):  # no proposals during a transfer
        net.nodes[1].propose(b"x")
    net.heal()
    net.tick(2)
    assert net.leaders() == [3]
    assert net.data(3) == [b"e%d" % k for k in range(10)]


def test_transfer_aborts_after_election_timeout():
    net = Net(3)
    net.elect(1)
    net.isolate(3)
    net.nodes[1].transfer_leadership(3)
    net.tick(12, who=[1, 2])
    assert net.status(1).lead_transferee == 0
    assert net.role(1) == Role.LEADER
    net.nodes[1].propose(b"accepted again")


def test_transfer_from_follower_is_forwarded():
    net = Net(3)
    net.elect(1)
    net.nodes[2].transfer_leadership(3)
    net.stabilize()
    assert net.leaders() == [3]


def test_transfer_bypasses_lease_and_prevote():
    net = Net(3, config=cfg(pre_vote=True, check_quorum=True))
    net.elect(1)
    net.sent.clear()
    net.nodes[1].transfer_leadership(3)
    net.stabilize()
    assert net.count(MessageType.PRE_VOTE) == 0 and net.leaders() == [3]


def test_transfer_to_self_or_learner_or_unknown_is_ignored():
    net = Net(3)
    net.elect(1)
    net.nodes[1].transfer_leadership(1)
    net.nodes[1].transfer_leadership(9)
    net.stabilize()
    assert net.leaders() == [1] and net.status(1).lead_transferee == 0


# ------------------------------------------------------------------ reads
def test_read_index_on_leader_needs_heartbeat_quorum():
    net = Net(3)
    net.elect(1)
    net.nodes[1].propose(b"x")
    net.stabilize()
    net.isolate(1)
    net.nodes[1].read_index(b"r1")
    net.stabilize()
    assert net.read_states[1] == []  # cannot confirm leadership alone
    net.heal()
    net.tick(1)
    assert net.read_states[1] == [ReadState(2, b"r1")]


def test_read_index_on_follower_is_forwarded():
    net = Net(3)
    net.elect(1)
    net.nodes[1].propose(b"x")
    net.stabilize()
    net.nodes[2].read_index(b"from-2")
    net.stabilize()
    assert net.read_states[2] == [ReadState(2, b"from-2")]
    assert net.count(MessageType.READ_INDEX) == 1 and net.count(MessageType.READ_INDEX_RESP) == 1


def test_same_context_from_two_nodes_both_answered():
    net = Net(3)
    net.elect(1)
    net.nodes[2].read_index(b"same")
    net.nodes[3].read_index(b"same")
    net.nodes[1].read_index(b"same")
    net.stabilize()
    for i in (1, 2, 3):
        assert net.read_states[i] == [ReadState(1, b"same")]


def test_read_index_waits_for_commit_in_current_term():
    """thesis §6.4 step 1: a new leader answers only after its no-op commits."""
    net = Net(3)
    net.nodes[1].campaign()
    for _ in range(4):
        for m in net.take():
            if m.type.name.startswith(("PRE_VOTE", "VOTE")):
                net.deliver(m)
    assert net.role(1) == Role.LEADER and net.status(1).commit == 0
    net.nodes[1].read_index(b"early")
    net.process(1)
    assert net.read_states[1] == []
    net.stabilize()
    assert net.read_states[1] == [ReadState(1, b"early")]


def test_read_without_leader_is_refused():
    net = Net(3)
    with pytest.raises(ProposalDroppedError):
        net.nodes[2].read_index(b"r")


def test_single_node_read_is_immediate():
    net = Net(1)
    net.elect(1)
    net.nodes[1].read_index(b"r")
    net.process(1)
    assert net.read_states[1] == [ReadState(1, b"r")]


def test_lease_based_read_answers_without_heartbeat_round():
    net = Net(3, config=cfg(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True))
    net.elect(1)
    net.tick(1)  # one heartbeat round acknowledged by a quorum: the lease starts at its send tick
    net.isolate(1)
    net.sent.clear()
    net.nodes[1].read_index(b"lease")
    net.process(1)
    assert net.read_states[1] == [ReadState(1, b"lease")]
    assert net.count(MessageType.HEARTBEAT) == 0


def test_lease_is_not_granted_by_an_election_alone():
    """Votes do not make followers sticky (they know no leader yet): no lease until a
    quorum acknowledged a heartbeat, so the read falls back to a ReadIndex round."""
    net = Net(3, config=cfg(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True))
    net.elect(1)
    net.isolate(1)
    net.nodes[1].read_index(b"early")
    net.process(1)
    assert net.read_states[1] == []


def test_lease_expires_before_another_leader_can_be_elected():
    net = Net(3, config=cfg(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True))
    net.elect(1)
    net.tick(1)
    net.isolate(1)
    net.tick(8, who=[1])  # round sent at tick 1: the lease holds while now < 1 + 10 - 1
    net.nodes[1].read_index(b"in time")
    net.process(1)
    assert net.read_states[1] == [ReadState(1, b"in time")]
    net.tick(1, who=[1])
    net.nodes[1].read_index(b"late")
    net.process(1)
    assert net.read_states[1] == [ReadState(1, b"in time")]  # "late": a ReadIndex round, unanswerable here


def test_deposed_leader_cannot_answer_safe_read():
    net = Net(3)
    net.elect(1)
    net.isolate(1)
    net.nodes[1].read_index(b"stale?")
    net.tick(40, who=[2, 3])
    assert len([i for i in (2, 3) if net.role(i) == Role.LEADER]) == 1
    net.heal()
    net.tick(3)
    assert net.read_states[1] == []  # never answered: it was no longer the leader
