"""Membership changes: single-server, joint consensus, learners, removal of the leader."""

from __future__ import annotations

import pytest
from core_net import Net, cfg

from rsm_shm.raft.core import ProposalDroppedError
from rsm_shm.raft.types import ConfChange, ConfChangeTransition, ConfChangeType, ConfState, Role

ADD, LEARNER, REMOVE = ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER, ConfChangeType.REMOVE_NODE


def cc(*changes, transition=ConfChangeTransition.AUTO):
    return ConfChange(tuple(changes), b"", transition)


def ready_net(n=3, **kw):
    net = Net(n, config=cfg(**kw))
    net.elect(1)
    net.tick(1)
    return net


def conf(net, i) -> ConfState:
    return net.status(i).conf_state


def test_add_voter_one_at_a_time():
    net = ready_net()
    net.add_node(4, voters=(1, 2, 3))
    net.nodes[1].propose_conf_change(cc((ADD, 4)))
    net.stabilize()
    net.tick(3)
    for i in (1, 2, 3, 4):
        assert conf(net, i).voters == (1, 2, 3, 4)
    net.nodes[1].propose(b"x")
    net.stabilize()
    assert net.data(4)[-1] == b"x"
    # the 4-voter cluster needs 3 acks: with two nodes down nothing commits
    net.crash(3)
    net.crash(4)
    before = net.status(1).commit
    net.nodes[1].propose(b"y")
    net.stabilize()
    assert net.status(1).commit == before


def test_remove_follower():
    net = ready_net()
    net.nodes[1].propose_conf_change(cc((REMOVE, 3)))
    net.stabilize()
    assert conf(net, 1).voters == (1, 2)
    net.crash(3)
    net.nodes[1].propose(b"x")
    net.stabilize()
    assert net.data(2)[-1] == b"x"


def test_removed_leader_steps_down_and_others_elect():
    """thesis §4.2.2: the leader manages the cluster until C_new commits, then steps down."""
    net = ready_net()
    net.nodes[1].propose_conf_change(cc((REMOVE, 1)))
    net.stabilize()
    assert net.role(1) == Role.FOLLOWER
    assert conf(net, 2).voters == (2, 3)
    net.tick(40)
    assert len([i for i in (2, 3) if net.role(i) == Role.LEADER]) == 1
    assert net.role(1) != Role.LEADER


def test_joint_consensus_auto_leave():
    net = ready_net()
    net.add_node(4, voters=(1, 2, 3))
    net.add_node(5, voters=(1, 2, 3))
    net.nodes[1].propose_conf_change(cc((ADD, 4), (ADD, 5), (REMOVE, 2), (REMOVE, 3)))
    net.stabilize()
    net.tick(5)
    for i in (1, 4, 5):
        c = conf(net, i)
        assert c.voters == (1, 4, 5) and c.voters_outgoing == () and not c.auto_leave
    net.crash(2)
    net.crash(3)
    net.nodes[1].propose(b"new")
    net.stabilize()
    assert net.data(4)[-1] == b"new"


def test_joint_explicit_leave_and_double_majority():
    net = ready_net()
    net.add_node(4, voters=(1, 2, 3))
    net.add_node(5, voters=(1, 2, 3))
    net.nodes[1].propose_conf_change(
        cc((ADD, 4), (ADD, 5), (REMOVE, 3), transition=ConfChangeTransition.JOINT_EXPLICIT)
    )
    net.stabilize()
    net.tick(3)
    c = conf(net, 1)
    assert c.voters == (1, 2, 4, 5) and c.voters_outgoing == (1, 2, 3)
    # joint: a majority of the new config alone (1, 4, 5) cannot commit without a
    # majority of the old one (1, 2, 3)
    net.partition([1, 4, 5], [2, 3])
    before = net.status(1).commit
    net.nodes[1].propose(b"needs-both")
    net.stabilize()
    assert net.status(1).commit == before
    net.heal()
    net.tick(2)
    assert net.status(1).commit > before
    # another change is refused until the joint config is left
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].propose_conf_change(cc((REMOVE, 2)))
    net.nodes[1].propose_conf_change(ConfChange())  # leave joint
    net.stabilize()
    assert conf(net, 1) == ConfState(voters=(1, 2, 4, 5))


def test_leave_joint_refused_when_not_joint():
    net = ready_net()
    with pytest.raises(ProposalDroppedError, match="not in joint"):
        net.nodes[1].propose_conf_change(ConfChange())


def test_learner_catches_up_without_voting_then_is_promoted():
    net = ready_net()
    for k in range(5):
        net.nodes[1].propose(b"e%d" % k)
    net.stabilize()
    net.add_node(4, voters=(1, 2, 3))
    net.nodes[1].propose_conf_change(cc((LEARNER, 4)))
    net.stabilize()
    net.tick(2)
    assert conf(net, 1).learners == (4,)
    assert net.data(4) == [b"e%d" % k for k in range(5)]
    assert net.status(1).progress[4].is_learner
    # a learner does not count toward the quorum
    net.crash(2)
    net.crash(3)
    before = net.status(1).commit
    net.nodes[1].propose(b"x")
    net.stabilize()
    assert net.status(1).commit == before
    net.restart(2)
    net.restart(3)
    net.tick(30)
    lead = net.leaders()[0]
    net.tick(2)
    net.nodes[lead].propose_conf_change(cc((ADD, 4)))
    net.stabilize()
    net.tick(2)
    assert conf(net, 4).voters == (1, 2, 3, 4) and conf(net, 4).learners == ()
    assert net.role(4) in (Role.FOLLOWER, Role.LEADER)


def test_demote_voter_in_joint_uses_learners_next():
    net = ready_net()
    net.nodes[1].propose_conf_change(cc((LEARNER, 3), transition=ConfChangeTransition.JOINT_EXPLICIT))
    net.stabilize()
    c = conf(net, 1)
    assert c.voters == (1, 2) and c.voters_outgoing == (1, 2, 3) and c.learners_next == (3,)
    net.nodes[1].propose_conf_change(ConfChange())
    net.stabilize()
    assert conf(net, 1) == ConfState(voters=(1, 2), learners=(3,))


def test_only_one_pending_conf_change():
    net = ready_net()
    net.add_node(4, voters=(1, 2, 3))
    net.add_node(5, voters=(1, 2, 3))
    net.isolate(2)
    net.isolate(3)
    net.nodes[1].propose_conf_change(cc((ADD, 4)))
    with pytest.raises(ProposalDroppedError, match="unapplied"):
        net.nodes[1].propose_conf_change(cc((ADD, 5)))


def test_new_leader_refuses_conf_change_until_its_noop_is_applied():
    """The fix for the single-server change bug: no conf change before the leader has
    committed (and applied) an entry of its own term."""
    net = Net(3)
    net.nodes[1].campaign()
    # deliver only the votes: the leader exists but its no-op is not committed yet
    for _ in range(4):
        q = net.take()
        for m in q:
            if m.type.name.startswith(("PRE_VOTE", "VOTE")):
                net.deliver(m)
    assert net.role(1) == Role.LEADER
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].propose_conf_change(cc((ADD, 4)))
    net.stabilize()
    net.nodes[1].propose_conf_change(cc((ADD, 4)))


def test_invalid_changes_are_refused_at_proposal():
    net = ready_net()
    with pytest.raises(ProposalDroppedError, match="removed all voters"):
        net.nodes[1].propose_conf_change(cc((REMOVE, 1), (REMOVE, 2), (REMOVE, 3)))
    # ignoring a committed invalid change keeps the configuration (deterministically)
    before = conf(net, 2)
    assert net.nodes[2].apply_conf_change(cc((REMOVE, 1), (REMOVE, 2), (REMOVE, 3))) == before


def test_restart_takes_conf_state_from_snapshot():
    net = ready_net()
    net.add_node(4, voters=(1, 2, 3))
    net.nodes[1].propose_conf_change(cc((ADD, 4)))
    net.stabilize()
    st = net.status(2)
    net.stores[2].create_snapshot(st.applied, st.conf_state, b"")
    net.stores[2].compact(st.applied)
    net.restart(2)
    assert conf(net, 2).voters == (1, 2, 3, 4)


def test_status_of_new_node_without_config():
    net = ready_net()
    n = net.add_node(9)
    assert n.status().conf_state == ConfState()
    for _ in range(50):
        n.tick()
    assert n.status().term == 0  # not promotable: no campaign
