"""Log replication: batching, pipelining, fast backtracking, Figure 8, proposals."""

from __future__ import annotations

import random

import pytest
from core_net import Net, cfg

from rsm_shm.raft.core import NotLeaderError, ProposalDroppedError, RawNode
from rsm_shm.raft.log import RaftLog
from rsm_shm.raft.storage import MemoryStorage
from rsm_shm.raft.tracker import ProgressState
from rsm_shm.raft.types import Entry, HardState, Message, MessageType, Role


def test_propose_on_follower_raises_not_leader_with_hint():
    net = Net(3)
    net.elect(1)
    with pytest.raises(NotLeaderError) as ei:
        net.nodes[2].propose(b"x")
    assert ei.value.leader_hint == 1
    with pytest.raises(NotLeaderError) as ei:
        Net(3).nodes[1].propose(b"x")
    assert ei.value.leader_hint == 0


def test_proposals_commit_everywhere_in_order():
    net = Net(5)
    net.elect(3)
    idx = [net.nodes[3].propose(b"v%d" % k) for k in range(20)]
    assert idx == list(range(2, 22))
    net.stabilize()
    for i in net.ids:
        assert net.data(i) == [b"v%d" % k for k in range(20)]
        assert net.status(i).commit == 21


def test_pipelining_sends_several_appends_before_any_ack():
    net = Net(3)
    net.elect(1)
    net.tick(1)
    for k in range(5):
        net.nodes[1].propose(b"p%d" % k)
        net.process(1)  # a Ready per proposal: each goes out at once
    q = net.take()
    apps = [m for m in q if m.type == MessageType.APP and m.to == 2]
    assert len(apps) == 5
    assert [m.index for m in apps] == [1, 2, 3, 4, 5]
    net.queue = q
    net.stabilize()
    assert net.status(2).commit == 6


def test_inflight_window_limits_pipeline():
    net = Net(3, config=cfg(max_inflight_msgs=2))
    net.elect(1)
    for k in range(5):
        net.nodes[1].propose(b"p%d" % k)
        net.process(1)
    q = net.take()
    assert len([m for m in q if m.type == MessageType.APP and m.to == 2]) == 2
    net.queue = q
    net.stabilize()
    assert all(net.status(i).commit == 6 for i in net.ids)


def test_proposals_before_a_ready_are_batched():
    net = Net(3)
    net.elect(1)
    for k in range(50):
        net.nodes[1].propose(b"b%d" % k)
    q = net.take()
    apps = [m for m in q if m.type == MessageType.APP and m.to == 2]
    assert len(apps) == 1 and len(apps[0].entries) == 50
    net.queue = q
    net.stabilize()
    assert net.data(3) == [b"b%d" % k for k in range(50)]


def test_batching_respects_max_size_per_msg():
    net = Net(3, config=cfg(max_size_per_msg=1000))
    net.elect(1)
    net.isolate(3)
    for k in range(100):
        net.nodes[1].propose(bytes(100))
    net.stabilize()
    net.heal()
    net.sent.clear()
    net.tick(2)
    apps = [m for m in net.sent if m.type == MessageType.APP and m.to == 3 and m.entries]
    assert apps and all(sum(len(e.data) + 24 for e in m.entries) <= 1000 for m in apps)
    assert max(len(m.entries) for m in apps) > 1  # batched, not one by one
    assert net.status(3).last_index == 101
    assert net.data(3) == [bytes(100)] * 100


def _storage(terms, hs_term):
    s = MemoryStorage()
    s.append([Entry(term=t, index=i + 1) for i, t in enumerate(terms)])
    s.set_hard_state(HardState(hs_term, 0, 0))
    return s


def test_fast_backtracking_skips_a_divergent_term_in_one_round():
    """A follower with 50 uncommitted entries of a stale term is repaired with one
    rejection instead of 50 (reject_hint + log_term, etcd's findConflictByTerm)."""
    net = Net(3, config=cfg(pre_vote=False))
    good = [1] * 10 + [3] * 50
    bad = [1] * 10 + [2] * 50
    net.stores[1] = _storage(good, 3)
    net.stores[2] = _storage(bad, 3)
    net.stores[3] = _storage(good, 3)
    for i in net.ids:
        net.nodes[i] = net._make(i, net.ids)
    net.elect(1)
    rejects = [m for m in net.sent if m.type == MessageType.APP_RESP and m.frm == 2 and m.reject]
    assert len(rejects) == 1
    assert net.status(2).last_index == 61
    assert [net.stores[2].term(i) for i in range(11, 62)] == [3] * 50 + [4]


def test_follower_far_behind_catches_up_with_few_messages():
    net = Net(3, config=cfg(max_size_per_msg=1 << 20))
    net.elect(1)
    net.isolate(3)
    for k in range(300):
        net.nodes[1].propose(b"e%d" % k)
    net.stabilize()
    net.heal()
    net.sent.clear()
    net.tick(1)
    to3 = [m for m in net.sent if m.to == 3 and m.type == MessageType.APP]
    assert len(to3) <= 3
    assert net.status(3).last_index == net.status(1).last_index


def test_figure8_previous_term_entries_not_committed_by_counting():
    """§5.4.2: a new leader does not commit an entry of an earlier term because a
    majority stores it; only once an entry of its own term is replicated."""
    net = Net(3, config=cfg(pre_vote=False, max_size_per_msg=1))
    net.stores[1] = _storage([1, 2], 3)
    net.stores[2] = _storage([1], 3)
    net.stores[3] = _storage([1], 3)
    for i in net.ids:
        net.nodes[i] = net._make(i, net.ids)
    # drop every AppendEntries that carries the new leader's own (term 4) no-op to a
    # follower that would accept it (the first probe must be rejected, not lost)
    net.filter = lambda m: (
        m.type == MessageType.APP and any(e.index == 3 for e in m.entries) and net.status(m.to).last_index >= 2
    )
    net.elect(1)
    net.tick(3)
    assert net.status(2).last_index == 2 and net.stores[2].term(2) == 2  # majority has (2, 2)
    assert net.status(1).commit < 2  # ... but it is not committed
    net.filter = None
    net.tick(3)
    assert all(net.status(i).commit == 3 for i in net.ids)


def test_raftlog_maybe_commit_requires_current_term():
    s = _storage([1, 2], 3)
    log = RaftLog(s)
    assert not log.maybe_commit(2, 4)
    assert log.maybe_commit(2, 2) and log.committed == 2


def test_conflicting_uncommitted_suffix_is_replaced():
    net = Net(3, config=cfg(pre_vote=False, check_quorum=False))
    net.elect(1)
    net.isolate(1)
    for k in range(3):
        net.nodes[1].propose(b"lost%d" % k)  # never reaches anyone
    net.stabilize()
    net.elect(2)
    net.nodes[2].propose(b"kept")
    net.stabilize()
    net.heal()
    net.tick(5)
    assert net.leaders() == [2]
    assert net.data(1) == [b"kept"] and net.status(1).last_index == net.status(2).last_index


def test_max_uncommitted_size_drops_proposals():
    net = Net(3, config=cfg(max_uncommitted_size=250))
    net.elect(1)
    net.isolate(1)
    net.nodes[1].propose(bytes(100))
    net.nodes[1].propose(bytes(100))
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].propose(bytes(100))
    net.heal()
    net.tick(3)
    net.nodes[1].propose(bytes(100))  # committed entries freed the budget


def test_progress_states_probe_then_replicate():
    net = Net(3)
    net.elect(1)
    st = net.status(1)
    assert st.progress[2].state == ProgressState.REPLICATE
    net.isolate(2)
    net.nodes[1].report_unreachable(2)
    assert net.status(1).progress[2].state == ProgressState.PROBE
    net.heal()
    net.tick(2)
    assert net.status(1).progress[2].state == ProgressState.REPLICATE


def test_heartbeat_commit_is_capped_by_match():
    net = Net(3)
    net.elect(1)
    net.isolate(3)
    net.nodes[1].propose(b"x")
    net.stabilize()
    net.heal()
    net.filter = lambda m: m.type == MessageType.APP and m.to == 3
    net.sent.clear()
    net.tick(1)
    hbs = [m for m in net.sent if m.type == MessageType.HEARTBEAT and m.to == 3]
    assert hbs and all(m.commit <= 1 for m in hbs)


def test_ready_twice_without_advance_is_an_error():
    n = RawNode(1, [1], MemoryStorage(), cfg(), random.Random(0))
    n.campaign()
    n.ready()
    with pytest.raises(RuntimeError):
        n.ready()


def test_ready_contract_messages_after_entries():
    """The Ready holds the entries/hard state to persist with the messages that
    depend on them; advance() makes them stable."""
    s = MemoryStorage()
    n = RawNode(1, [1, 2], s, cfg(pre_vote=False), random.Random(0))
    n.campaign()
    rd = n.ready()
    assert rd.hard_state == HardState(1, 1, 0)  # the self-vote, persisted before...
    assert [m.type for m in rd.messages] == [MessageType.VOTE]  # ...asking for votes
    s.set_hard_state(rd.hard_state)
    n.advance(rd)
    n.step(Message(MessageType.VOTE_RESP, to=1, frm=2, term=1))
    rd = n.ready()
    assert rd.soft_state is not None and rd.soft_state.role == Role.LEADER
    assert [e.index for e in rd.entries] == [1]
    assert all(m.type == MessageType.APP for m in rd.messages)
    s.append(rd.entries)
    n.advance(rd)
    assert not n.has_ready()
    assert n.raft.raft_log.unstable.entries == []


@pytest.mark.parametrize("broadcast", [True, False])
def test_broadcast_commit_off_leaves_commit_to_the_next_append_or_heartbeat(broadcast):
    net = Net(3, config=cfg(broadcast_commit=broadcast, heartbeat_tick=2))
    net.elect(1)
    net.nodes[1].propose(b"x")
    net.stabilize()
    li = net.status(1).commit
    assert net.data(1)[-1:] == [b"x"]
    # Once the leader commits, only a broadcast tells the followers at once.
    expected = li if broadcast else li - 1
    assert net.status(2).commit == expected and net.status(3).commit == expected
    assert not net.queue
    if not broadcast:
        net.tick(2, who=[1])  # the next heartbeat carries the commit index
        net.stabilize()
        assert net.status(2).commit == li and net.status(3).commit == li
        net.nodes[1].propose(b"y")  # ... and so does the next append
        net.process(1)
        apps = [m for m in net.take() if m.type == MessageType.APP]
        assert apps and all(m.commit == li for m in apps)


def test_a_ready_that_only_moves_the_commit_index_need_not_sync():
    """must_sync (etcd's MustSync): new entries, or a new term or vote -- not a commit
    index alone, which a restarted node learns again from the leader."""
    net = Net(3)
    net.elect(1)
    leader, store = net.nodes[1], net.stores[1]
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries and rd.must_sync
    store.append(rd.entries)
    leader.advance(rd)
    for m in rd.messages:
        net.nodes[m.to].step(m)
        net.process(m.to)
    for m in net.take():
        if m.to == 1:
            leader.step(m)
    rd = leader.ready()
    assert rd.hard_state is not None and rd.hard_state.commit == rd.committed_entries[-1].index
    assert not rd.entries and not rd.must_sync
    leader.advance(rd)
    # a new term and vote must be synced
    other = Net(3, config=cfg(pre_vote=False))
    other.nodes[2].campaign()
    rd = other.nodes[2].ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 2 and not rd.entries and rd.must_sync
