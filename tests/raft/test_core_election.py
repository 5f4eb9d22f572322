"""Leader election: timeouts, votes, pre-vote, check-quorum and leader stickiness."""

from __future__ import annotations

import random

import pytest
from core_net import Net, cfg

from rsm_shm.raft.core import Config, RawNode
from rsm_shm.raft.storage import MemoryStorage
from rsm_shm.raft.types import Entry, HardState, Message, MessageType, Role


def test_single_node_elects_itself_and_commits_noop():
    net = Net(1)
    net.tick(25)
    assert net.leaders() == [1]
    st = net.status(1)
    assert st.term == 1 and st.commit == 1  # the no-op of its term


@pytest.mark.parametrize("n", [3, 5])
def test_election_by_timeout(n):
    net = Net(n, seed=3)
    net.tick(40)
    assert len(net.leaders()) == 1
    lead = net.leaders()[0]
    for i in net.ids:
        assert net.status(i).leader == lead
        assert net.status(i).term == net.status(lead).term


def test_randomized_timeout_is_in_range_and_uses_rng():
    r = RawNode(1, [1, 2, 3], MemoryStorage(), cfg(), random.Random(1)).raft
    seen = set()
    for _ in range(200):
        r.reset_randomized_election_timeout()
        assert 10 <= r.randomized_election_timeout < 20
        seen.add(r.randomized_election_timeout)
    assert len(seen) > 5
    a = RawNode(1, [1, 2, 3], MemoryStorage(), cfg(), random.Random(7)).raft
    b = RawNode(1, [1, 2, 3], MemoryStorage(), cfg(), random.Random(7)).raft
    assert a.randomized_election_timeout == b.randomized_election_timeout


def test_no_election_before_timeout():
    net = Net(3)
    net.tick(9)
    assert net.leaders() == []
    assert all(net.status(i).term == 0 for i in net.ids)


def test_pre_vote_then_vote_bumps_term_once():
    net = Net(3)
    net.elect(1)
    assert net.count(MessageType.PRE_VOTE) == 2 and net.count(MessageType.VOTE) == 2
    assert all(net.status(i).term == 1 for i in net.ids)


def test_without_pre_vote():
    net = Net(3, config=cfg(pre_vote=False))
    net.elect(2)
    assert net.count(MessageType.PRE_VOTE) == 0 and net.count(MessageType.VOTE) == 2


def test_candidate_with_stale_log_loses():
    """§5.4.1: a voter denies its vote to a candidate whose log is less up-to-date."""
    net = Net(3, config=cfg(pre_vote=False, check_quorum=False))
    net.elect(1)
    net.isolate(3)
    net.nodes[1].propose(b"x")
    net.stabilize()
    net.heal()
    net.nodes[3].campaign()
    net.stabilize()
    assert net.role(3) != Role.LEADER
    # node 3's election pushed the term up; the up-to-date nodes can win it back
    net.tick(40)
    assert len(net.leaders()) == 1 and net.leaders()[0] in (1, 2)


def test_vote_is_persisted_and_honoured_after_restart():
    """Figure 2: votedFor is persistent; a node restarted in the same term does not vote
    for a second candidate."""
    net = Net(3, config=cfg(pre_vote=False, check_quorum=False))
    net.isolate(1)
    net.nodes[2].campaign()  # 2 asks 3: 3 votes for 2 in term 1
    msgs = net.take()
    for m in msgs:
        if m.to == 3:
            net.deliver(m)
    assert net.stores[3].hard_state == HardState(1, 2, 0)
    net.queue = []
    net.restart(3)
    r3 = net.nodes[3]
    assert r3.status().term == 1 and r3.status().vote == 2
    # a competing candidate in the same term 1 is rejected
    r3.step(Message(MessageType.VOTE, to=3, frm=1, term=1, log_term=0, index=0))
    out = [m for m in net.take() if m.frm == 3]
    assert out and out[-1].type == MessageType.VOTE_RESP and out[-1].reject


def test_restart_keeps_term_log_and_commit():
    net = Net(3)
    net.elect(1)
    for k in range(5):
        net.nodes[1].propose(b"p%d" % k)
    net.stabilize()
    before = net.status(2)
    net.restart(2)
    after = net.status(2)
    assert (after.term, after.vote, after.commit, after.last_index) == (
        before.term,
        before.vote,
        before.commit,
        before.last_index,
    )
    assert after.role == Role.FOLLOWER
    # the restarted node re-applies its committed entries
    net.stabilize()
    net.tick(3)
    assert net.data(2)[-5:] == [b"p%d" % k for k in range(5)]


def test_check_quorum_leader_steps_down():
    """thesis §6.2: a leader that hears from no quorum for an election timeout steps down."""
    net = Net(3)
    net.elect(1)
    net.isolate(1)
    net.tick(25, who=[1])
    assert net.role(1) == Role.FOLLOWER


def test_without_check_quorum_leader_stays():
    net = Net(3, config=cfg(check_quorum=False))
    net.elect(1)
    net.isolate(1)
    net.tick(25, who=[1])
    assert net.role(1) == Role.LEADER


def test_rejoining_node_does_not_disrupt_leader():
    """Pre-vote: a partitioned node never bumps its term, so healing does not depose
    the healthy leader (the seed's leader stickiness)."""
    net = Net(3, seed=5)
    net.elect(1)
    term = net.status(1).term
    net.isolate(3)
    net.tick(100)
    assert net.status(3).term == term  # pre-votes failed, term unchanged
    assert net.role(1) == Role.LEADER
    net.heal()
    net.tick(20)
    assert net.role(1) == Role.LEADER and net.status(1).term == term
    assert net.status(3).leader == 1


def test_leader_stickiness_rejects_votes_in_lease():
    """check-quorum without pre-vote: followers that heard from the leader recently
    ignore a higher-term vote request (thesis §4.2.3)."""
    net = Net(3, config=cfg(pre_vote=False, check_quorum=True))
    net.elect(1)
    net.isolate(3)
    net.tick(30, who=[3])  # 3 campaigns alone, term goes up
    t3 = net.status(3).term
    assert t3 > net.status(1).term
    net.heal()
    net.tick(1, who=[1])
    net.nodes[3].campaign()
    net.stabilize()
    # 2 ignored 3's vote request; 1 stays the leader... until 3's higher term reaches
    # it through responses to its heartbeats; then a new election happens, but 3 can
    # only win with an up-to-date log.
    assert net.status(2).leader in (1, 0) or net.role(2) == Role.FOLLOWER
    net.tick(60)
    assert len(net.leaders()) == 1


def test_prevote_rejected_by_higher_term_updates_pre_candidate():
    net = Net(3)
    net.elect(1)
    n3 = net.nodes[3].raft
    n3.term = 0  # pretend 3 lags behind (a pre-candidate of a lower term)
    n3.lead = 0
    net.nodes[3].campaign()
    net.stabilize()
    net.tick(30)
    assert net.status(3).term >= 1 and len(net.leaders()) == 1


def test_learner_never_campaigns():
    s = MemoryStorage()
    from rsm_shm.raft.types import ConfState, Snapshot, SnapshotMeta

    s.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState(voters=(1,), learners=(2,)))))
    n = RawNode(2, [], s, cfg(), random.Random(0))
    for _ in range(100):
        n.tick()
    assert n.status().role == Role.FOLLOWER and n.status().term == 0
    assert not n.ready().messages


def test_stale_term_messages_are_ignored():
    net = Net(3)
    net.elect(1)
    net.nodes[1].transfer_leadership(2)
    net.stabilize()
    before = net.status(2)
    assert before.role == Role.LEADER and before.term == 2
    net.nodes[2].step(Message(MessageType.APP, to=2, frm=1, term=1, index=0, log_term=0, commit=0))
    msgs = [m for m in net.take() if m.frm == 2]
    # a stale leader is told the new term so it steps down
    assert msgs and msgs[0].type == MessageType.APP_RESP and msgs[0].term == before.term
    assert net.status(2).role == Role.LEADER


def test_config_validation():
    with pytest.raises(ValueError):
        Config(election_tick=1, heartbeat_tick=1).validate()
    from rsm_shm.raft.readonly import ReadOnlyOption

    with pytest.raises(ValueError, match="check_quorum"):
        RawNode(1, [1], MemoryStorage(), Config(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=False))
    with pytest.raises(ValueError):
        RawNode(0, [1], MemoryStorage())


def test_local_messages_from_the_wire_are_ignored():
    net = Net(3)
    net.nodes[2].step(Message(MessageType.HUP, to=2, frm=1))
    net.nodes[2].step(Message(MessageType.APP, to=3, frm=1, term=5))  # not for us
    assert net.status(2).term == 0 and net.status(2).role == Role.FOLLOWER


def test_leadership_is_the_cheap_part_of_status():
    net = Net(3, seed=3)
    net.tick(40)
    for i in net.ids:
        node = net.nodes[i]
        st = node.status()
        assert node.leadership() == (st.term, st.role, st.leader)
        term, role, leader = node.leadership()  # unpacks as a plain tuple
        assert leader == net.leaders()[0]


@pytest.mark.parametrize("check_quorum", [False, True])
def test_rejecting_a_higher_term_vote_keeps_the_election_timer(check_quorum):
    # Figure 2: the timer restarts on hearing from the current leader or on granting a
    # vote, not on a vote request we reject.  (etcd restarts it in becomeFollower.)
    s = MemoryStorage()
    s.append([Entry(term=1, index=1), Entry(term=1, index=2)])
    s.set_hard_state(HardState(term=1, vote=0, commit=0))
    node = RawNode(1, [1, 2, 3], s, cfg(pre_vote=False, check_quorum=check_quorum), random.Random(5))
    r = node.raft
    for _ in range(7):
        node.tick()
    assert r.election_elapsed == 7 and r.randomized_election_timeout > 7
    timeout = r.randomized_election_timeout
    stale = Message(MessageType.VOTE, to=1, frm=3, term=5, log_term=1, index=1)  # log behind ours
    node.step(stale)
    assert (r.term, r.role, r.vote) == (5, Role.FOLLOWER, 0)
    assert node.ready().messages[-1].reject
    node.advance()
    assert (r.election_elapsed, r.randomized_election_timeout) == (7, timeout)
    fresh = Message(MessageType.VOTE, to=1, frm=2, term=6, log_term=1, index=2)  # as up to date
    node.step(fresh)
    assert r.vote == 2 and r.election_elapsed == 0  # granting a vote does restart it


class _Draws(random.Random):
    """Always draws ``offset`` for a randomized election timeout: one legal schedule of
    the random timeouts, picked by the test."""

    def __init__(self, offset: int) -> None:
        super().__init__(0)
        self.offset = offset

    def randrange(self, *args, **kwargs) -> int:  # type: ignore[override]
        return self.offset


def test_a_stale_candidate_cannot_keep_the_up_to_date_node_from_campaigning():
    # Node 2 alone has the committed entry; node 3 is behind and node 1 is down, so only
    # node 2 can win.  Node 3 draws the shortest timeout (10 ticks), node 2 the longest
    # (19).  Had each rejected vote request restarted node 2's timer, node 3 would
    # campaign every 10 ticks and node 2 would never reach 19: no leader, ever.
    net = Net(3, config=cfg(pre_vote=False, check_quorum=False))
    net.elect(1)
    net.isolate(3)
    net.nodes[1].propose(b"x")
    net.stabilize()
    assert net.status(2).commit == 2 and net.status(3).commit == 1
    net.crash(1)
    net.heal()
    for i, offset in ((2, 9), (3, 0)):
        r = net.nodes[i].raft
        r.rng = _Draws(offset)
        r.reset_randomized_election_timeout()
    net.tick(200, who=[2, 3])
    assert net.leaders() == [2], [net.nodes[i].leadership() for i in (2, 3)]
    assert net.status(3).leader == 2 and net.status(3).commit == 3  # the new leader's no-op


# ---------------------------------------------------------------- forget_leader
def _pre_vote(net, frm: int, to: int) -> Message:
    r = net.nodes[frm].raft
    return Message(
        MessageType.PRE_VOTE,
        to=to,
        frm=frm,
        term=r.term + 1,
        log_term=r.raft_log.last_term(),
        index=r.raft_log.last_index(),
    )


def _answers(net, frm: int, to: int, t: MessageType):
    return [m for m in net.take() if m.type == t and m.frm == frm and m.to == to]


def test_forget_leader_lets_a_follower_grant_a_pre_vote_it_would_refuse():
    net = Net(3, seed=2)
    net.elect(1)
    # In the leader's lease, follower 2 ignores a pre-vote (leader stickiness)...
    net.nodes[2].step(_pre_vote(net, 3, 2))
    assert _answers(net, 2, 3, MessageType.PRE_VOTE_RESP) == []
    # ...after forgetting its leader it grants it at once, in the same term, without
    # campaigning or voting.
    term = net.status(2).term
    net.nodes[2].forget_leader()
    st = net.status(2)
    assert (st.role, st.leader, st.term, st.vote) == (Role.FOLLOWER, 0, term, 1)
    net.nodes[2].step(_pre_vote(net, 3, 2))
    resp = _answers(net, 2, 3, MessageType.PRE_VOTE_RESP)
    assert len(resp) == 1 and not resp[0].reject and resp[0].term == term + 1
    assert net.status(2).term == term and net.status(2).role == Role.FOLLOWER
    # The leader's next heartbeat makes it follow again.
    net.tick(1, who=[1])
    assert net.status(2).leader == 1


def test_forget_leader_after_the_leader_dies_elects_at_once():
    net = Net(3, seed=4)
    net.elect(1)
    term = net.status(1).term
    net.crash(1)
    # Without forgetting, 3 campaigning at once gets nowhere: 2 is in the lease.
    net.nodes[3].campaign()
    net.stabilize()
    assert net.leaders() == [] and net.status(3).term == term
    assert net.role(3) == Role.PRE_CANDIDATE and net.status(2).leader == 1
    # 2 learns that 1 is gone (its connection broke) and forgets it: 3's next
    # pre-vote round, long before any election timeout, wins.
    net.nodes[2].forget_leader()
    net.nodes[3].campaign()
    net.stabilize()
    assert net.leaders() == [3] and net.status(3).term == term + 1
    assert net.status(2).leader == 3


def test_forget_leader_is_a_no_op_on_leaders_candidates_and_under_lease_reads():
    from rsm_shm.raft.readonly import ReadOnlyOption

    net = Net(3, seed=6)
    net.elect(1)
    before = net.status(1)
    net.nodes[1].forget_leader()
    assert net.status(1) == before and net.role(1) == Role.LEADER
    net.isolate(3)
    net.nodes[3].campaign()  # pre-candidate: nobody hears it
    net.stabilize()
    assert net.role(3) == Role.PRE_CANDIDATE
    before = net.status(3)
    net.nodes[3].forget_leader()
    assert net.status(3) == before
    # A follower that knows no leader: nothing to forget.
    n = RawNode(1, [1, 2, 3], MemoryStorage(), cfg(), random.Random(0))
    before = n.status()
    n.forget_leader()
    assert n.status() == before
    # Lease-based reads: the leader relies on its followers' leases; forgetting is refused.
    lease = Net(3, seed=6, config=cfg(read_only_option=ReadOnlyOption.LEASE_BASED))
    lease.elect(1)
    lease.nodes[2].forget_leader()
    assert lease.status(2).leader == 1
    lease.nodes[2].step(_pre_vote(lease, 3, 2))
    assert _answers(lease, 2, 3, MessageType.PRE_VOTE_RESP) == []
