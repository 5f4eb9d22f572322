"""LocalCluster end to end with real peer processes: elect, propose, read, kill, restart."""

from __future__ import annotations

import json
import os
import struct

import pytest

from rsm_shm.cluster import CommandError, KVClient, LocalCluster
from rsm_shm.cluster.layout import segment_pattern

pytestmark = pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")

KV = "rsm_shm.cluster:KVStore"
COUNTER = "cluster_machines:Counter"
FAST = dict(fsync=False)


def _segments_of(name):
    pat = segment_pattern(name)
    return [e for e in os.listdir("/dev/shm") if e.startswith("rsm_shm.") and pat.fullmatch(e[len("rsm_shm.") :])]


@pytest.fixture
def cluster_name(shm_name):
    return shm_name("cl")


def test_propose_read_and_kv_commands(cluster_name):
    with LocalCluster(cluster_name, KV, peers=3, **FAST) as c:
        lead = c.wait_leader(10)
        assert lead in (1, 2, 3)
        kv = KVClient(cluster_name)
        try:
            kv.put("a", {"x": 1})
            assert kv.get("a") == {"x": 1}
            assert kv.get("missing") is None
            assert kv.cas("a", {"x": 1}, 2) is True
            assert kv.cas("a", {"x": 1}, 3) is False
            assert kv.get("a") == 2
            assert kv.delete("a") is True
            assert kv.delete("a") is False
            assert kv.cas("a", None, "new") is True
            assert kv.get("a") == "new"
        finally:
            kv.close()
        sts = c.status()
        assert [s.id for s in sts] == [1, 2, 3]
        assert all(s.alive and s.state == "running" for s in sts)
        assert sum(s.role == "leader" for s in sts) == 1


def test_kill_leader_loses_no_acknowledged_write(cluster_name):
    with LocalCluster(cluster_name, KV, peers=3, **FAST) as c:
        old = c.wait_leader(10)
        kv = KVClient(cluster_name)
        try:
            for i in range(20):
                kv.put(f"k{i}", i)
            c.kill(old)
            for i in range(20, 40):
                kv.put(f"k{i}", i)  # follows the new leader by itself
            new = c.wait_leader(10)
            assert new != old
            assert [kv.get(f"k{i}") for i in range(40)] == list(range(40))
            c.restart(old)
            # The restarted peer catches up with everything committed.
            target = max(s.commit for s in c.status())
            deadline = 200
            while deadline:
                st = {s.id: s for s in c.status()}[old]
                if st.alive and st.applied >= target:
                    break
                deadline -= 1
                import time

                time.sleep(0.05)
            assert st.applied >= target, st
        finally:
            kv.close()


def test_retry_of_the_same_sequence_number_is_applied_once(cluster_name):
    with LocalCluster(cluster_name, COUNTER, peers=3, **FAST) as c:
        c.wait_leader(10)
        cl = c.client()
        assert cl.propose(b"inc") == struct.pack("<Q", 1)
        # Send the same (session, seq) again, as a client does after a lost answer.
        cl._seq -= 1
        cl._acked -= 1
        assert cl.propose(b"inc") == struct.pack("<Q", 1)
        assert cl.read(b"count") == struct.pack("<Q", 1)
        assert cl.propose(b"inc") == struct.pack("<Q", 2)


def test_apply_that_raises_is_an_error_outcome_everywhere(cluster_name):
    with LocalCluster(cluster_name, COUNTER, peers=3, **FAST) as c:
        c.wait_leader(10)
        cl = c.client()
        cl.propose(b"inc")
        with pytest.raises(CommandError, match="boom at 1"):
            cl.propose(b"boom")
        assert cl.propose(b"inc") == struct.pack("<Q", 2)
        assert all(s.alive for s in c.status())


def test_garbage_in_an_inbox_is_dropped_and_counted(cluster_name):
    from rsm_shm.ring import Ring
    from rsm_shm.cluster.layout import inbox_name

    with LocalCluster(cluster_name, COUNTER, peers=3, **FAST) as c:
        c.wait_leader(10)
        ring = Ring(inbox_name(cluster_name, 2), create=False)
        try:
            for junk in (b"", b"RE", b"RE\x01\x01" + b"\0" * 12 + b"garbage", os.urandom(100)):
                ring.put(junk)
        finally:
            ring.close()
        cl = c.client()
        assert cl.propose(b"inc") == struct.pack("<Q", 1)
        import time

        for _ in range(200):
            st = {s.id: s for s in c.status()}[2]
            if st.msgs_bad >= 4:
                break
            time.sleep(0.02)
        assert st.msgs_bad == 4 and st.alive


def test_destroy_leaves_no_segment_and_no_data(cluster_name, tmp_path):
    data = tmp_path / "data"
    c = LocalCluster(cluster_name, KV, peers=3, data_dir=str(data), **FAST)
    c.start()
    try:
        c.wait_leader(10)
        c.client().propose(b'{"op":"put","key":"a","value":1}')
        assert _segments_of(cluster_name)
        assert (data / "cluster.json").exists()
    finally:
        c.destroy()
    assert _segments_of(cluster_name) == []
    assert not data.exists()


def test_a_reused_data_directory_keeps_its_peers_and_refuses_another_count(cluster_name, tmp_path):
    data = str(tmp_path / "data")
    with LocalCluster(cluster_name, KV, peers=1, data_dir=data, **FAST) as c:
        c.wait_leader(10)
    with pytest.raises(ValueError, match=r"created with 1 peers, not peers=3"):
        LocalCluster(cluster_name, KV, peers=3, data_dir=data, **FAST).start()
    assert _segments_of(cluster_name) == []
    with LocalCluster(cluster_name, KV, data_dir=data, **FAST) as c:  # peers unset: the directory's
        assert c.peers == 1
        assert [s.id for s in c.status()] == [1]


def test_temporary_data_dir_is_removed(cluster_name):
    with LocalCluster(cluster_name, KV, peers=1, **FAST) as c:
        c.wait_leader(10)
        d = c.data_dir
        assert os.path.isdir(d)
    assert not os.path.exists(d)
    assert _segments_of(cluster_name) == []


def test_clear_errors_at_start(cluster_name, tmp_path):
    with pytest.raises(ValueError, match="no_such_module"):
        LocalCluster(cluster_name, "no_such_module:X").start()
    with pytest.raises(ValueError, match="not a subclass"):
        LocalCluster(cluster_name, "cluster_machines:NotAMachine").start()
    with pytest.raises(TypeError, match="unknown timing option"):
        LocalCluster(cluster_name, KV, bogus=1)
    with LocalCluster(cluster_name, KV, peers=1, **FAST):
        with pytest.raises(RuntimeError, match="already running"):
            LocalCluster(cluster_name, KV, peers=1, **FAST).start()
    other = tmp_path / "other"
    other.mkdir()
    (other / "cluster.json").write_text(json.dumps({"format": 1, "name": "someone-else"}))
    with pytest.raises(ValueError, match="someone-else"):
        LocalCluster(cluster_name, KV, data_dir=str(other), **FAST).start()
    (other / "cluster.json").write_text(json.dumps({"format": 99, "name": cluster_name}))
    with pytest.raises(ValueError, match="newer"):
        LocalCluster(cluster_name, KV, data_dir=str(other), **FAST).start()
    assert _segments_of(cluster_name) == []


def test_attach_from_another_handle_controls_the_cluster(cluster_name):
    with LocalCluster(cluster_name, KV, peers=3, **FAST) as c:
        lead = c.wait_leader(10)
        other = LocalCluster.attach(cluster_name)
        assert other.leader() == lead
        other.kill(lead)
        assert c.wait_leader(10) != lead
        assert {s.id: s.state for s in c.status()}[lead] == "killed"
        other.close()
        assert c.leader() is not None  # closing an attached handle stops nothing


def test_state_survives_a_full_stop_and_a_kill_of_every_peer(cluster_name, tmp_path):
    data = str(tmp_path / "data")
    with LocalCluster(cluster_name, COUNTER, peers=3, data_dir=data) as c:  # fsync=True
        c.wait_leader(10)
        cl = c.client()
        for _ in range(5):
            cl.propose(b"inc")
    with LocalCluster(cluster_name, COUNTER, peers=3, data_dir=data) as c:
        c.wait_leader(10)
        cl = c.client()
        assert cl.read(b"") == struct.pack("<Q", 5)
        assert cl.propose(b"inc") == struct.pack("<Q", 6)
        for p in (1, 2, 3):
            c.kill(p)
        for p in (1, 2, 3):
            c.restart(p)
        c.wait_leader(10)
        assert cl.propose(b"inc") == struct.pack("<Q", 7)
    assert os.path.isdir(data)  # stop() keeps the data directory


def test_a_pipelined_batch_larger_than_an_inbox_message_is_applied_in_order(cluster_name):
    from rsm_shm.cluster.layout import INBOX_CAPACITY

    with LocalCluster(cluster_name, KV, peers=3, **FAST) as c:
        c.wait_leader(10)
        kv = KVClient(cluster_name)
        try:
            pad = "x" * 64
            n = 50_000
            cmds = [json.dumps({"op": "put", "key": f"k{i % 100}", "value": [i, pad]}).encode() for i in range(n)]
            assert sum(map(len, cmds)) > INBOX_CAPACITY  # more than one ring message can hold
            assert set(kv.client.propose_many(cmds, timeout=60)) == {b'{"ok": true}'}
            assert [kv.get(f"k{j}")[0] for j in range(100)] == [n - 100 + j for j in range(100)]
        finally:
            kv.close()
