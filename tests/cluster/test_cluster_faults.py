"""No acknowledged write lost, none applied twice, every history linearizable -- while
peers are SIGKILLed, restarted, SIGSTOPped and partitioned under load from clients in
their own processes.  Real processes, real files, real signals; every wait is bounded.
"""

from __future__ import annotations

import os
import signal

import pytest

from cluster_harness import (
    APPEND_LOG,
    KV,
    RawLink,
    check_exactly_once,
    finish_clients,
    kv_recorder,
    logs_of_every_peer,
    start_clients,
    append_writer,
    wait_caught_up,
    wait_progress,
    wait_until,
)
from rsm_shm.cluster.linearizability import check_kv

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]


def other_than(cluster, peer):
    return [s.id for s in cluster.status() if s.id != peer]


def new_leader(cluster, old: int, timeout: float = 15.0) -> int:
    """A leader other than ``old`` that the live peers agree on."""

    def elected():
        st = [s for s in cluster.status() if s.alive and s.id != old]
        leaders = [s for s in st if s.role == "leader"]
        return leaders[0].id if len(leaders) == 1 else None

    return wait_until(elected, timeout, f"a new leader after peer {old}")


def fault_schedule(cluster, progress) -> list:
    """Kill the leader, pause a follower, pause the leader, isolate the leader, drop a
    fifth of the messages, kill a follower -- each fault while the clients keep writing,
    each healed before the next."""
    done = []
    leader = cluster.wait_leader(timeout=15)
    wait_progress(progress, 30, timeout=30)

    cluster.kill(leader)
    new_leader(cluster, leader)
    wait_progress(progress, 30, timeout=30)
    cluster.restart(leader)
    done.append(f"killed and restarted leader {leader}")

    leader = cluster.wait_leader(timeout=15)
    follower = other_than(cluster, leader)[0]
    cluster.pause(follower)
    wait_progress(progress, 30, timeout=30)
    cluster.resume(follower)
    done.append(f"paused and resumed follower {follower}")

    leader = cluster.wait_leader(timeout=15)
    cluster.pause(leader)
    new_leader(cluster, leader)
    wait_progress(progress, 30, timeout=30)
    cluster.resume(leader)
    done.append(f"paused and resumed leader {leader}")

    leader = cluster.wait_leader(timeout=15)
    cluster.partition([leader], other_than(cluster, leader))
    new_leader(cluster, leader)
    wait_progress(progress, 30, timeout=30)
    cluster.heal()
    done.append(f"isolated leader {leader}, healed")

    cluster.set_drop_rate(0.2)
    wait_progress(progress, 30, timeout=30)
    cluster.set_drop_rate(0.0)
    done.append("dropped 20% of the messages between peers")

    leader = cluster.wait_leader(timeout=15)
    follower = other_than(cluster, leader)[-1]
    cluster.kill(follower)
    wait_progress(progress, 30, timeout=30)
    cluster.restart(follower)
    wait_progress(progress, 30, timeout=30)
    done.append(f"killed and restarted follower {follower}")
    return done


def test_no_acknowledged_write_lost_nor_applied_twice_under_faults(make_cluster):
    cluster = make_cluster(APPEND_LOG, fsync=False)
    procs, stop, progress, out = start_clients(
        append_writer, lambda cid, stop, progress, out: (cluster.name, cid, stop, progress, out), 3
    )
    try:
        fault_schedule(cluster, progress)
    finally:
        reports = finish_clients(procs, stop, out)
    wait_caught_up(cluster)
    acked = check_exactly_once(logs_of_every_peer(cluster), reports)
    assert acked >= 150


def test_fsync_survives_killing_every_peer_at_once(make_cluster):
    cluster = make_cluster(APPEND_LOG, fsync=True)
    procs, stop, progress, out = start_clients(
        append_writer, lambda cid, stop, progress, out: (cluster.name, cid, stop, progress, out), 3
    )
    try:
        cluster.wait_leader(timeout=15)
        wait_progress(progress, 50, timeout=30)
        pids = [s.pid for s in cluster.status()]
        # All at once: no peer gets to write anything after the first one dies.
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for st in cluster.status():
            cluster.kill(st.id)  # the cluster's own bookkeeping (already dead)
        for st in cluster.status():
            cluster.restart(st.id)
        cluster.wait_leader(timeout=20)
        wait_progress(progress, 50, timeout=30)
    finally:
        reports = finish_clients(procs, stop, out)
    wait_caught_up(cluster)
    acked = check_exactly_once(logs_of_every_peer(cluster), reports)
    assert acked >= 100


def test_histories_under_faults_are_linearizable(make_cluster):
    cluster = make_cluster(KV, fsync=False)
    keys = ["a", "b", "c"]
    procs, stop, progress, out = start_clients(
        kv_recorder, lambda cid, stop, progress, out: (cluster.name, cid, keys, stop, progress, out, cid), 4
    )
    try:
        fault_schedule(cluster, progress)
    finally:
        reports = finish_clients(procs, stop, out)
    history = [op for ops in reports for op in ops]
    known = [op for op in history if not op.unknown]
    assert len(known) >= 150, f"only {len(known)} operations completed"
    assert {op.kind for op in known} >= {"put", "get", "cas"}
    result = check_kv(history, timeout=60)
    assert result.ok is True, result.explanation


def test_partitioned_old_leader_never_acknowledges_nor_serves_stale_reads(make_cluster):
    """The old leader is frozen (SIGSTOP: its clock stops, so it still believes it leads
    when it wakes), cut off, and a new leader takes a write; then a read and a write are
    put straight into the old leader's inbox and it is woken.  It must answer neither
    with OK -- it cannot confirm its leadership nor commit -- and commit nothing."""
    from rsm_shm.cluster import KVClient

    cluster = make_cluster(KV, fsync=False)
    old = cluster.wait_leader(timeout=15)
    raw = RawLink(cluster.name)
    try:
        with KVClient(cluster.name) as kv:
            kv.put("k", "before")
            cluster.pause(old)
            cluster.partition([old], other_than(cluster, old))
            leader = new_leader(cluster, old)
            kv.put("k", "after")
            frozen = next(s for s in cluster.status() if s.id == old)
            raw.read(old, 1, b'{"op":"get","key":"k"}')
            raw.propose(old, 2, b'{"op":"put","key":"k","value":"stale"}')
            cluster.resume(old)
            replies = raw.replies(1.5)
            answered_ok = [r for r in replies if r[1] == "OK"]
            assert not answered_ok, f"the isolated old leader answered {answered_ok}"
            for i in range(10):
                assert kv.get("k") == "after", f"read {i} returned a stale value"
                kv.put(f"w{i}", "x")
            st = {s.id: s for s in cluster.status()}
            assert st[old].alive and st[leader].commit > frozen.commit + 10
            # It committed and applied nothing after it lost its quorum.
            assert st[old].commit == frozen.commit and st[old].applied <= frozen.commit, (frozen, st[old])
            cluster.heal()
            wait_until(
                lambda: {s.id: s for s in cluster.status()}[old].applied >= st[leader].commit,
                15,
                "the old leader to catch up after the heal",
            )
            # The write it was handed while isolated never took effect anywhere.
            assert kv.get("k") == "after"
            cluster.transfer_leadership(old)
            assert kv.get("k") == "after"
    finally:
        raw.close()


def test_leadership_transfer(make_cluster):
    cluster = make_cluster(KV, fsync=False)
    first = cluster.wait_leader(timeout=15)
    with cluster.client() as client:
        for target in other_than(cluster, first):
            cluster.transfer_leadership(target)
            wait_until(lambda: cluster.leader() == target, 10, f"peer {target} to lead")
            client.propose(b'{"op": "put", "key": "t", "value": "%d"}' % target)
            assert client.read(b'{"op": "get", "key": "t"}')


def test_garbage_in_an_inbox_is_dropped_and_counted(make_cluster):
    from rsm_shm.cluster import KVClient
    from rsm_shm.cluster.layout import inbox_name
    from rsm_shm.ring import Ring

    cluster = make_cluster(KV, fsync=False)
    leader = cluster.wait_leader(timeout=15)
    victim = other_than(cluster, leader)[0]
    bad_before = next(s for s in cluster.status() if s.id == victim).msgs_bad
    ring = Ring(inbox_name(cluster.name, victim), create=False)
    try:
        for junk in (b"", b"\x00", b"garbage" * 10, os.urandom(300), b"\xff" * 4096):
            ring.put(junk, timeout=5)
    finally:
        ring.close()
    wait_until(
        lambda: next(s for s in cluster.status() if s.id == victim).msgs_bad >= bad_before + 5,
        10,
        "the peer to count the garbage",
    )
    st = next(s for s in cluster.status() if s.id == victim)
    assert st.alive and st.role == "follower"
    with KVClient(cluster.name) as kv:
        kv.put("still", "works")
    wait_caught_up(cluster)
