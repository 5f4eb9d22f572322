"""Remote clients under faults: every client process reaches the cluster only through
``Client.connect([...])`` (gRPC to the peers' client services, no ring of this host),
while the served peers -- each its own process and port on 127.0.0.1 -- are killed,
restarted, paused, cut off by the transport and made to drop messages.

The histories are checked for linearizability, every acknowledged write must be
applied exactly once, and the replicas must agree at the end.  A partitioned leader
still answers its client-service port (the cut is between peers only), which is what
makes the stale-read probe meaningful.
"""

from __future__ import annotations

import json
import secrets
import threading
import time

import pytest

pytest.importorskip("grpc", reason="grpcio (the [net] extra, part of [test]) is not installed")

from cluster_harness import (  # noqa: E402
    APPEND_LOG,
    KV,
    append_writer,
    check_exactly_once,
    finish_clients,
    kv_recorder,
    logs_of_every_peer,
    start_clients,
    wait_caught_up,
    wait_progress,
    wait_until,
)
from test_cluster_faults import fault_schedule, new_leader, other_than  # noqa: E402

from rsm_shm.cluster import KVClient  # noqa: E402
from rsm_shm.cluster.linearizability import check_kv  # noqa: E402
from rsm_shm.cluster.serve import derive_cluster_id  # noqa: E402

pytestmark = [pytest.mark.timeout(150), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]


def addresses(cluster) -> list:
    return [cluster.addresses[i] for i in sorted(cluster.addresses)]


def kv_of_every_peer(cluster, keys, timeout: float = 30.0) -> dict:
    """Each running peer's value of every key, read remotely while that peer leads
    (leadership goes to each in turn: a read is served by the leader's own replica)."""
    states = {}
    with KVClient.connect(addresses(cluster)) as kv:
        for st in cluster.status():
            if not st.alive:
                continue
            if cluster.leader() != st.id:
                cluster.transfer_leadership(st.id)
                wait_until(lambda: cluster.leader() == st.id, timeout, f"peer {st.id} to lead")
            states[st.id] = {k: kv.get(k, timeout=10) for k in keys}
    return states


def check_history(reports, at_least: int) -> None:
    history = [op for ops in reports for op in ops]
    known = [op for op in history if not op.unknown]
    assert len(known) >= at_least, f"only {len(known)} operations completed"
    result = check_kv(history, timeout=60)
    assert result.ok is True, result.explanation


def test_remote_clients_stay_linearizable_under_every_fault_on_3_peers(served):
    cluster = served(KV)
    addrs = addresses(cluster)
    keys = ["a", "b", "c"]
    procs, stop, progress, out = start_clients(
        kv_recorder, lambda cid, stop, progress, out: (addrs, cid, keys, stop, progress, out, cid), 3
    )
    try:
        done = fault_schedule(cluster, progress)
    finally:
        reports = finish_clients(procs, stop, out)
    assert len(done) == 6, done
    check_history(reports, 150)
    wait_caught_up(cluster)
    states = kv_of_every_peer(cluster, keys)
    assert len(states) == 3 and len({tuple(sorted(s.items())) for s in states.values()}) == 1, states


def test_remote_clients_stay_linearizable_on_5_peers_losing_two(served):
    """Five peers: the leader and a follower killed together, restarted; a paused
    leader; the leader cut off from the four others; a fifth of the messages dropped."""
    cluster = served(KV, n=5)
    addrs = addresses(cluster)
    keys = ["a", "b"]
    procs, stop, progress, out = start_clients(
        kv_recorder, lambda cid, stop, progress, out: (addrs, cid, keys, stop, progress, out, 100 + cid), 3
    )
    try:
        leader = cluster.wait_leader(timeout=15)
        wait_progress(progress, 30, timeout=30)
        follower = other_than(cluster, leader)[0]
        cluster.kill(leader)
        cluster.kill(follower)
        new_leader(cluster, leader)
        wait_progress(progress, 30, timeout=30)
        cluster.restart(leader)
        cluster.restart(follower)

        leader = cluster.wait_leader(timeout=15)
        cluster.pause(leader)
        new_leader(cluster, leader)
        wait_progress(progress, 30, timeout=30)
        cluster.resume(leader)

        leader = cluster.wait_leader(timeout=15)
        cluster.partition([leader], other_than(cluster, leader))
        new_leader(cluster, leader)
        wait_progress(progress, 30, timeout=30)
        cluster.heal()

        cluster.set_drop_rate(0.2)
        wait_progress(progress, 30, timeout=30)
        cluster.set_drop_rate(0.0)
        wait_progress(progress, 20, timeout=30)
    finally:
        reports = finish_clients(procs, stop, out)
    check_history(reports, 150)
    wait_caught_up(cluster)
    states = kv_of_every_peer(cluster, keys)
    assert len(states) == 5 and len({tuple(sorted(s.items())) for s in states.values()}) == 1, states


def test_remote_writers_are_applied_exactly_once_under_every_fault_on_3_peers(served):
    cluster = served(APPEND_LOG)
    addrs = addresses(cluster)
    procs, stop, progress, out = start_clients(
        append_writer, lambda cid, stop, progress, out: (addrs, cid, stop, progress, out), 3
    )
    try:
        done = fault_schedule(cluster, progress)
    finally:
        reports = finish_clients(procs, stop, out)
    assert len(done) == 6, done
    wait_caught_up(cluster)
    acked = check_exactly_once(logs_of_every_peer(cluster), reports)
    assert acked >= 200


def _poll_reads(address, cluster_id, key, stop, seen):
    """Raw ``Read`` RPCs for ``key`` to one peer's client service, one after another
    (no redirect, no retry): ``seen`` gets (invoked, reply status, gRPC code or
    "unanswered", value)."""
    import grpc

    from rsm_shm.cluster import envelope as ev
    from rsm_shm.cluster.net.client_service import METHOD_READ

    hdr = ev.encode_header(ev.KIND_READ, 0, cluster_id)
    query = json.dumps({"op": "get", "key": key}).encode()
    rid = secrets.randbits(60)
    with grpc.insecure_channel(address) as ch:
        read = ch.unary_unary(METHOD_READ)
        while not stop.is_set():
            rid += 1
            t0 = time.monotonic()
            try:
                replies = ev.decode_reply(read(ev.encode_read(hdr, "", [(rid, query)]), timeout=0.3))
            except grpc.RpcError as e:
                seen.append((t0, e.code().name, None))
                stop.wait(0.02)
                continue
            answers = [(status, payload) for r, status, payload in replies if r == rid]
            if not answers:  # not answered within the call: the peer could not confirm its lead
                seen.append((t0, "unanswered", None))
            for status, payload in answers:
                seen.append((t0, status, json.loads(payload).get("value") if status == ev.OK else None))


def test_a_deposed_leader_that_still_believes_it_leads_never_serves_a_stale_read(served):
    """Peer 1 leads with an 8 s election timeout (a slow clock, say); the others use
    100 ms.  Cut off by the transport, peer 1 goes on believing it leads for seconds
    after the others elected a new leader and overwrote ``x`` -- and its client port
    still answers.  Reads sent straight to it in that window must never return the old
    value (a lease-based read would: its lease rests on clocks that agree); it may only
    leave them unanswered or send the client on."""
    from rsm_shm.cluster import envelope as ev

    cluster = served(KV, peer_timing={1: {"election_tick": 800}})
    cluster.wait_leader(timeout=15)
    if cluster.leader() != 1:
        cluster.transfer_leadership(1)
        wait_until(lambda: cluster.leader() == 1, 15, "peer 1 to lead")
    with KVClient.connect([cluster.addresses[1]]) as kv:
        kv.put("x", "old")
    cid = derive_cluster_id(cluster.name)
    stop, seen = threading.Event(), []
    poller = threading.Thread(target=_poll_reads, args=(cluster.addresses[1], cid, "x", stop, seen))
    poller.start()
    try:
        # The control: the poller's reads are answered while peer 1 leads with a quorum.
        wait_until(lambda: any(s[1] == ev.OK and s[2] == "old" for s in seen), 10, "a read answered by peer 1")
        cluster.partition([1], [2, 3])
        new = new_leader(cluster, 1)
        with KVClient.connect([cluster.addresses[2], cluster.addresses[3]]) as kv:
            kv.put("x", "new", timeout=10)
        overwritten = time.monotonic()
        # Peer 1 must still think it leads for the probe to mean anything.
        me = next(s for s in cluster.status() if s.id == 1)
        assert me.role == "leader", f"peer 1 stepped down already ({me}): the window closed before the probe"
        polled = len(seen)
        wait_until(lambda: len(seen) >= polled + 3, 10, "three more reads to peer 1")
        still_leading = next(s for s in cluster.status() if s.id == 1).role == "leader"
    finally:
        stop.set()
        poller.join(10)
    after = [s for s in seen if s[0] >= overwritten]
    stale = [s for s in after if s[1] == ev.OK and s[2] != "new"]
    assert not stale, f"peer 1 (isolated, new leader {new}) answered reads with a stale value: {stale[:5]}"
    # Not vacuous: reads were sent while peer 1 still believed it led.
    assert len(after) >= 3 and still_leading, (after, still_leading)
    cluster.heal()
    with KVClient.connect(addresses(cluster)) as kv:
        assert kv.get("x", timeout=10) == "new"
