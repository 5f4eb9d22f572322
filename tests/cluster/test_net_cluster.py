"""Clusters of served peers talking gRPC on 127.0.0.1, each peer its own process with
its own port: the fault suites' schedule (kill, restart, pause, partition by cutting
the transport, drop) under load, the linearizability check, exactly-once on 5 peers,
and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
from net_harness import free_ports  # noqa: E402
from test_cluster_faults import fault_schedule, new_leader, other_than  # noqa: E402

from rsm_shm.cluster.linearizability import check_kv  # noqa: E402

pytestmark = [pytest.mark.timeout(150), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]


def test_3_served_peers_stay_linearizable_under_faults_over_grpc(served):
    cluster = served(KV)
    keys = ["a", "b", "c"]
    procs, stop, progress, out = start_clients(
        kv_recorder, lambda cid, stop, progress, out: (cluster.name, cid, keys, stop, progress, out, cid), 3
    )
    try:
        done = fault_schedule(cluster, progress)
    finally:
        reports = finish_clients(procs, stop, out)
    assert len(done) == 6
    history = [op for ops in reports for op in ops]
    known = [op for op in history if not op.unknown]
    assert len(known) >= 150, f"only {len(known)} operations completed"
    result = check_kv(history, timeout=60)
    assert result.ok is True, result.explanation


def test_5_served_peers_apply_every_acknowledged_write_exactly_once(served):
    cluster = served(APPEND_LOG, n=5)
    procs, stop, progress, out = start_clients(
        append_writer, lambda cid, stop, progress, out: (cluster.name, cid, stop, progress, out), 3
    )
    try:
        leader = cluster.wait_leader(timeout=15)
        wait_progress(progress, 30, timeout=30)
        # Lose two of five (the leader and a follower): the other three carry on.
        follower = other_than(cluster, leader)[0]
        cluster.kill(leader)
        cluster.kill(follower)
        new_leader(cluster, leader)
        wait_progress(progress, 30, timeout=30)
        cluster.restart(leader)
        cluster.restart(follower)
        wait_progress(progress, 30, timeout=30)
        # Cut the leader off from the four others over the transport: they elect another.
        second = cluster.wait_leader(timeout=15)
        cluster.partition([second], other_than(cluster, second))
        new_leader(cluster, second)
        wait_progress(progress, 30, timeout=30)
        cluster.heal()
        wait_progress(progress, 30, timeout=30)
    finally:
        reports = finish_clients(procs, stop, out)
    wait_caught_up(cluster)
    acked = check_exactly_once(logs_of_every_peer(cluster), reports)
    assert acked >= 120


def test_a_killed_leader_is_replaced_before_any_election_timeout(served):
    """The followers' streams from a SIGKILLed leader break at once: they forget it
    (RawNode.forget_leader) and one campaigns within a few heartbeats, long before the
    1.5-3 s election timeout configured here would let anyone campaign."""
    cluster = served(KV, tick=0.01, heartbeat_tick=2, election_tick=150)
    leader = cluster.wait_leader(timeout=30)
    wait_until(
        lambda: all(s.leader == leader for s in cluster.status() if s.alive), 10, f"every peer to follow {leader}"
    )

    def linked(pid, p):  # every stream of peer ``pid`` is up (its log says so)
        log = p.log_tail(400)
        return all(f"connected to peer {q} at" in log for q in cluster.peers if q != pid)

    # Freshly started streams may still be connecting: a vote sent before is lost.
    wait_until(lambda: all(linked(pid, p) for pid, p in cluster.peers.items()), 10, "every stream to be up")
    term = next(s.term for s in cluster.status() if s.id == leader)
    t0 = time.monotonic()
    cluster.kill(leader)
    new = new_leader(cluster, leader, timeout=15)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.4, f"peer {new} was elected {elapsed:.2f} s after the kill: the election timeout ran out"
    assert next(s.term for s in cluster.status() if s.id == new) == term + 1


def test_a_spurious_loss_of_a_live_leader_costs_at_most_a_pre_vote_round(shm_name, tmp_path, cluster_env):
    """A follower told that its leader's stream broke although the leader is fine (a
    network blip: here the leader's messages to it are cut) forgets the leader and
    campaigns early; the other follower still hears the leader and ignores the pre-vote,
    so nobody's term moves, and the follower follows the same leader once the link is
    back.  Peer 3 runs in this process so that the test can hand it the notice."""
    import threading

    from rsm_shm.cluster import LocalCluster, Peer

    name = shm_name("blip")
    addrs = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}

    def spec(i):
        return Peer(
            name,
            i,
            listen=addrs[i],
            peers={q: a for q, a in addrs.items() if q != i},
            state_machine=KV,
            data_dir=str(tmp_path / f"p{i}"),
            fsync=False,
            tick=0.01,
            heartbeat_tick=2,
            election_tick=150,
        )

    procs = {1: spec(1), 2: spec(2)}
    me = spec(3)
    errors = []

    def run():
        try:
            me.run()
        except BaseException as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=run)
    cluster = None
    try:
        for p in procs.values():
            p.start()
        t.start()
        wait_until(lambda: me._served is not None or errors, 30, "peer 3 to serve")
        assert not errors, errors
        cluster = LocalCluster.attach(name)

        def st(i):
            return next(s for s in cluster.status() if s.id == i)

        leader = cluster.wait_leader(timeout=30)
        if leader == 3:
            cluster.transfer_leadership(1, timeout=10)
            leader = wait_until(lambda: cluster.leader() if cluster.leader() in (1, 2) else None, 10, "leader 1")
        wait_until(lambda: all(st(i).leader == leader for i in addrs), 10, f"every peer to follow {leader}")
        wait_until(
            lambda: (
                me._served.transport.connected() == {1, 2}
                and all(
                    f"connected to peer {q} at" in p.log_tail(400) for i, p in procs.items() for q in addrs if q != i
                )
            ),
            10,
            "every stream to be up",
        )
        term = st(leader).term
        # The blip: the leader's messages to 3 are lost, and 3 hears that its stream broke.
        cluster._set_links(lambda rec: rec.cut.__setitem__(leader - 1, 1 << 2))
        me._served.node.peer_lost(leader)
        # 3 forgets the leader and runs a pre-vote round long before its 1.5-3 s election
        # timeout could fire (a few heartbeat intervals)...
        wait_until(lambda: st(3).role == "pre_candidate", 1.4, "peer 3 to campaign early")
        # ...which nobody grants: the leader and the other follower still hear each other.
        cluster.heal()
        wait_until(lambda: st(3).role == "follower" and st(3).leader == leader, 10, "peer 3 to follow again")
        assert [(st(i).term, st(i).leader) for i in addrs] == [(term, leader)] * 3
        assert st(leader).role == "leader"
    finally:
        if cluster is not None:
            cluster.close()
        me.stop()
        t.join(30)
        for p in procs.values():
            p.stop()
    assert not t.is_alive() and not errors, errors


def _serve_cmd(name, pid, listen, peers, data, *extra):
    cmd = [
        sys.executable,
        "-m",
        "rsm_shm",
        "cluster",
        "serve",
        name,
        "--id",
        str(pid),
        "--listen",
        listen,
        "--sm",
        KV,
        "--data",
        str(data),
        "--no-fsync",
        *extra,
    ]
    for q, addr in peers.items():
        cmd += ["--peer", f"{q}={addr}"]
    return cmd


def test_serve_command_runs_in_the_foreground_and_stops_cleanly_on_sigterm(shm_name, tmp_path, cluster_env):
    from rsm_shm.cluster import KVClient, LocalCluster

    name = shm_name("cli")
    ports = free_ports(3)
    addrs = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
    procs = {}
    try:
        for pid, addr in addrs.items():
            others = {q: a for q, a in addrs.items() if q != pid}
            procs[pid] = subprocess.Popen(
                _serve_cmd(name, pid, addr, others, tmp_path / f"p{pid}"),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )

        def attached():
            try:
                return LocalCluster.attach(name)
            except FileNotFoundError:  # no control block yet, or the first peer is filling it in
                return None

        cluster = wait_until(attached, 30, "the cluster to be attachable")
        try:
            cluster.wait_leader(timeout=30)
            wait_until(lambda: len([s for s in cluster.status() if s.alive]) == 3, 30, "every peer to run")
            with KVClient(name) as kv:
                kv.put("x", 1)
                assert kv.get("x") == 1
        finally:
            cluster.close()
        ls = subprocess.run(
            [sys.executable, "-m", "rsm_shm", "cluster", "ls", "--json"], capture_output=True, text=True, timeout=60
        )
        listed = {c["name"]: c for c in json.loads(ls.stdout)["clusters"]}
        assert ls.returncode == 0 and listed[name]["peers"] == 3, ls.stdout + ls.stderr
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for pid, p in procs.items():
            out, _ = p.communicate(timeout=20)
            assert p.returncode == 0, out.decode(errors="replace")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    leftovers = [e for e in os.listdir("/dev/shm") if e.startswith(f"rsm_shm.{name}.")]
    assert leftovers == []


def test_serve_refuses_bad_starts_clearly(shm_name, tmp_path, cluster_env):
    name = shm_name("bad")
    port = free_ports(1)[0]
    # Plaintext on a non-loopback address without --insecure.
    out = subprocess.run(
        _serve_cmd(name, 1, f"0.0.0.0:{port}", {2: "127.0.0.1:1"}, tmp_path / "a"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "without TLS" in out.stderr, out.stderr
    # A data directory of another cluster id.
    out = subprocess.run(
        _serve_cmd(name, 1, f"127.0.0.1:{port}", {2: "127.0.0.1:1"}, tmp_path / "a", "--cluster-id", "12345"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "cluster_id" in out.stderr, out.stderr
    # Usage errors.
    out = subprocess.run(
        _serve_cmd(name, 1, f"127.0.0.1:{port}", {2: "nowhere"}, tmp_path / "b"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "HOST:PORT" in out.stderr, out.stderr
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"rsm_shm.{name}.")]


def test_a_restarted_peer_catches_up_from_a_snapshot_over_grpc(served):
    from rsm_shm.cluster import KVClient

    cluster = served(KV, snapshot_commands=20, snapshot_keep=5)
    leader = cluster.wait_leader(timeout=30)
    lagging = other_than(cluster, leader)[0]
    cluster.kill(lagging)
    with KVClient(cluster.name) as kv:
        for i in range(120):
            kv.put(f"k{i % 7}", i)
    cluster.restart(lagging)
    # Peer.start() returns once the status record shows the new process (the old record
    # named the killed one: wait_caught_up would leave the peer out as not alive).
    (now,) = [s for s in cluster.status() if s.id == lagging]
    assert now.alive and now.pid == cluster.peers[lagging].pid, now
    st = wait_caught_up(cluster)
    me = next(s for s in st if s.id == lagging)
    assert me.snapshots_received >= 1 and me.applied >= 120, me


def test_a_cluster_may_mix_rings_and_grpc(shm_name, tmp_path, cluster_env):
    """Peers 1 and 2 share this host's rings; peer 3 is reached (and reaches them) over
    gRPC only."""
    from rsm_shm.cluster import KVClient, LocalCluster, Peer

    name = shm_name("mix")
    port3 = free_ports(3)
    addr = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(port3)}
    peers_of = {1: {2: "local", 3: addr[3]}, 2: {1: "local", 3: addr[3]}, 3: {1: addr[1], 2: addr[2]}}
    peers = [
        Peer(
            name,
            pid,
            listen=addr[pid],
            peers=peers_of[pid],
            state_machine=KV,
            data_dir=str(tmp_path / f"p{pid}"),
            fsync=False,
        )
        for pid in (1, 2, 3)
    ]
    cluster = None
    try:
        for p in peers:
            p.start()
        cluster = LocalCluster.attach(name)
        cluster.wait_leader(timeout=30)
        with KVClient(name) as kv:
            for i in range(30):
                kv.put("k", i)
        # Every peer applies everything, and peer 3 only ever heard of it over gRPC;
        # cut 3 off and the ring pair still commits.
        wait_until(lambda: all(s.applied >= 30 and s.alive for s in cluster.status()), 30, "every peer to apply")
        cluster.partition([3], [1, 2])
        with KVClient(name) as kv:
            kv.put("k", "cut")
            assert kv.get("k") == "cut"
    finally:
        if cluster is not None:
            cluster.close()
        for p in peers:
            p.stop()


def test_peer_runs_in_this_process_and_stops_from_another_thread(shm_name, tmp_path):
    import threading

    from rsm_shm.cluster import KVClient, LocalCluster, Peer

    name = shm_name("inproc")
    peer = Peer(name, 1, listen="127.0.0.1:0", peers={}, state_machine=KV, data_dir=str(tmp_path / "p1"), fsync=False)
    errors = []

    def run():
        try:
            peer.run()
        except BaseException as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        wait_until(
            lambda: os.path.exists(os.path.join(str(tmp_path / "p1"), "peer1.addr")) or errors, 30, "the peer to serve"
        )
        assert not errors, errors
        cluster = LocalCluster.attach(name)
        try:
            assert cluster.wait_leader(timeout=30) == 1
            with KVClient(name) as kv:
                kv.put("solo", 1)
                assert kv.get("solo") == 1
        finally:
            cluster.close()
    finally:
        assert peer.stop() is None
        t.join(30)
    assert not t.is_alive() and not errors, errors
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"rsm_shm.{name}.")]


def test_a_second_copy_of_a_running_peer_is_refused_and_leaves_it_alone(served, tmp_path):
    from rsm_shm.cluster import KVClient, Peer

    cluster = served(KV)
    cluster.wait_leader(timeout=30)
    first = cluster.peers[2]
    twin = Peer(
        cluster.name,
        2,
        listen="127.0.0.1:0",
        peers=first.peers,
        state_machine=KV,
        data_dir=str(tmp_path / "twin"),
        fsync=False,
    )
    with pytest.raises(RuntimeError, match="peer 2 .* already runs on this host"):
        twin.run()
    st = {s.id: s for s in cluster.status()}
    assert st[2].alive and st[2].pid == first.pid and first.alive
    with KVClient(cluster.name) as kv:
        kv.put("twin", "refused")
    cluster.transfer_leadership(2)
    with KVClient(cluster.name) as kv:
        assert kv.get("twin") == "refused"
