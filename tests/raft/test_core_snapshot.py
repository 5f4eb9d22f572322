"""Snapshots: compaction, chunked InstallSnapshot, loss and restarts during a transfer."""

from __future__ import annotations

from core_net import Net, cfg

from rsm_shm.raft.storage import SnapshotTemporarilyUnavailable
from rsm_shm.raft.tracker import ProgressState
from rsm_shm.raft.types import ConfChange, ConfChangeType, MessageType, Role


def compact(net: Net, i: int, data: bytes) -> int:
    """The application on node ``i`` snapshots at its applied index and compacts."""
    st = net.status(i)
    applied = st.applied
    net.stores[i].create_snapshot(applied, st.conf_state, data)
    net.stores[i].compact(applied)
    return applied


def lagging_cluster(chunk: int = 1000, n_entries: int = 20, **kw):
    net = Net(3, config=cfg(snapshot_chunk_size=chunk, **kw))
    net.elect(1)
    net.isolate(3)
    for k in range(n_entries):
        net.nodes[1].propose(b"e%d" % k)
    net.stabilize()
    return net


def test_follower_behind_compaction_gets_chunked_snapshot():
    net = lagging_cluster()
    data = bytes(range(256)) * 40  # 10240 bytes -> 11 chunks of <= 1000
    idx = compact(net, 1, data)
    assert net.stores[1].first_index() == idx + 1
    net.heal()
    net.sent.clear()
    net.tick(3)
    snaps = [m for m in net.sent if m.type == MessageType.SNAP and m.to == 3]
    assert len(snaps) == 11
    assert all(len(m.snapshot.data) <= 1000 for m in snaps)
    assert [m.snap_offset for m in snaps] == list(range(0, 10240, 1000))
    assert all(m.snap_total == 10240 for m in snaps)
    assert net.stores[3].snapshot().meta.index == idx
    assert net.stores[3].snapshot().data == data
    assert net.applied[3][0] == ("snap", idx, data)
    # after the snapshot the follower is replicated normally
    net.nodes[1].propose(b"after")
    net.stabilize()
    assert net.data(3)[-1] == b"after"
    assert net.status(1).progress[3].state == ProgressState.REPLICATE


def test_snapshot_window_limits_chunks_in_flight():
    net = lagging_cluster(max_inflight_snapshot_chunks=2)
    compact(net, 1, bytes(10000))
    net.heal()
    net.filter = lambda m: m.type == MessageType.SNAP_RESP  # no chunk is acknowledged
    net.tick(5)
    offsets = {m.snap_offset for m in net.sent if m.type == MessageType.SNAP}
    assert offsets == {0, 1000}  # never more than 2 chunks beyond the acked offset
    net.filter = None
    net.tick(5)
    assert net.stores[3].snapshot().data == bytes(10000)


def test_lost_chunk_is_resent():
    net = lagging_cluster()
    data = bytes(7) * 5000
    idx = compact(net, 1, data)
    net.heal()
    dropped = []

    def drop_third_once(m):
        if m.type == MessageType.SNAP and m.snap_offset == 2000 and not dropped:
            dropped.append(m)
            return True
        return False

    net.filter = drop_third_once
    net.tick(5)
    assert dropped
    assert net.stores[3].snapshot().meta.index == idx and net.stores[3].snapshot().data == data


def test_follower_restart_mid_transfer_restarts_from_zero():
    net = lagging_cluster(max_inflight_snapshot_chunks=1)
    data = b"x" * 5000
    idx = compact(net, 1, data)
    net.heal()
    seen = []

    def crash_after_two(m):
        if m.type == MessageType.SNAP and m.to == 3:
            seen.append(m.snap_offset)
            if len(seen) == 3:
                net.crash(3)
                net.restart(3)
        return False

    net.filter = crash_after_two
    net.tick(8)
    assert net.stores[3].snapshot().meta.index == idx and net.stores[3].snapshot().data == data
    assert seen.count(0) >= 2  # the transfer started over


def test_empty_snapshot_data_is_one_chunk():
    net = lagging_cluster()
    idx = compact(net, 1, b"")
    net.heal()
    net.sent.clear()
    net.tick(3)
    snaps = [m for m in net.sent if m.type == MessageType.SNAP]
    assert len(snaps) >= 1 and snaps[0].snap_total == 0
    assert net.stores[3].snapshot().meta.index == idx


def test_up_to_date_follower_does_not_take_snapshot():
    net = Net(3)
    net.elect(1)
    for k in range(5):
        net.nodes[1].propose(b"e%d" % k)
    net.stabilize()
    compact(net, 1, b"state")
    net.nodes[1].propose(b"more")
    net.stabilize()
    assert net.count(MessageType.SNAP) == 0
    assert net.data(2)[-1] == b"more"


def test_snapshot_temporarily_unavailable_is_retried():
    net = lagging_cluster()
    compact(net, 1, b"data")
    st = net.stores[1]
    real = st.snapshot
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) <= 2:
            raise SnapshotTemporarilyUnavailable()
        return real()

    st.snapshot = flaky
    net.heal()
    net.tick(6)
    assert len(calls) > 2
    assert net.stores[3].snapshot().data == b"data"


def test_restart_from_snapshot_and_log():
    net = Net(3)
    net.elect(1)
    for k in range(10):
        net.nodes[1].propose(b"e%d" % k)
    net.stabilize()
    compact(net, 2, b"S")
    net.nodes[1].propose(b"tail")
    net.stabilize()
    net.restart(2)
    st = net.status(2)
    assert st.first_index == net.stores[2].first_index()
    assert st.applied == net.stores[2].snapshot().meta.index
    net.tick(2)
    assert net.data(2) == [b"tail"]  # replayed after the snapshot


def test_leader_report_snapshot_status():
    net = lagging_cluster()
    compact(net, 1, b"x" * 100)
    net.heal()
    net.filter = lambda m: m.type == MessageType.SNAP  # hold the transfer
    net.tick(2)
    assert net.status(1).progress[3].state == ProgressState.SNAPSHOT
    net.nodes[1].report_snapshot(3, False)
    assert net.status(1).progress[3].state == ProgressState.PROBE
    net.filter = None
    net.tick(4)
    assert net.stores[3].snapshot().data == b"x" * 100


def test_snapshot_chunk_from_stale_term_ignored():
    net = lagging_cluster()
    compact(net, 1, b"abc")
    net.heal()
    net.filter = lambda m: m.type == MessageType.SNAP
    net.tick(2)
    net.filter = None
    assert net.role(1) == Role.LEADER


def test_refused_snapshot_is_replaced_by_a_newer_one():
    """A node added after the leader's last snapshot refuses that snapshot (it is not in
    its configuration); the leader falls back to probing and, once its application
    made a newer snapshot, sends that one (regression found by the simulator)."""
    net = Net(3)
    net.elect(1)
    for k in range(5):
        net.nodes[1].propose(b"e%d" % k)
    net.stabilize()
    compact(net, 1, b"old")
    net.add_node(4)  # joins with no configuration: it needs a snapshot
    net.nodes[1].propose_conf_change(ConfChange(((ConfChangeType.ADD_NODE, 4),)))
    net.tick(3)
    refusals = [m for m in net.sent if m.type == MessageType.SNAP_RESP and m.context == b"refused"]
    assert refusals and net.stores[4].snapshot().meta.index == 0
    idx = compact(net, 1, b"new")
    net.tick(3)
    assert net.stores[4].snapshot().meta.index == idx and net.stores[4].snapshot().data == b"new"
    assert net.status(4).conf_state.voters == (1, 2, 3, 4)
    net.nodes[1].propose(b"caught up")
    net.stabilize()
    assert net.data(4)[-1] == b"caught up"
