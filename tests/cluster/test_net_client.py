"""Clients over the network: ``Client.connect([...])`` against peers' client services.

Every peer of a 3-peer cluster serves clients on its own 127.0.0.1 port; the tests
check the local client's contract over gRPC: propose/read, following a killed leader,
exactly once across leader kills (AppendLog shows a duplicate), linearizable histories
recorded by connect()-clients, mutual TLS refusals, and that malformed requests are
error replies while the peer keeps serving.
"""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")
grpc = pytest.importorskip("grpc", reason="grpcio is not installed (the [net] extra: pip install rsm_shm[net])")

from cluster_harness import (  # noqa: E402
    APPEND_LOG, KV, append_writer, check_exactly_once, finish_clients, kv_recorder, logs_of_every_peer,
    start_clients, wait_caught_up, wait_progress, wait_until,
)

from rsm_shm.cluster import Client, CommandError, KVClient  # noqa: E402
from rsm_shm.cluster import envelope as ev  # noqa: E402
from rsm_shm.cluster.linearizability import check_kv  # noqa: E402
from rsm_shm.cluster.net.client_service import METHOD_PROPOSE, METHOD_STATUS, ClientService  # noqa: E402
from rsm_shm.cluster.net.server import PeerServer  # noqa: E402
from rsm_shm.cluster.net.tls import TLSConfig  # noqa: E402


class Served:
    """A LocalCluster whose every peer has a client service on a 127.0.0.1 port."""

    def __init__(self, cluster, tls=None):
        self.cluster = cluster
        self.servers, self.services = {}, []
        ids = [s.id for s in cluster.status()]
        for i in ids:
            self.servers[i] = PeerServer("127.0.0.1:0", tls=tls)
        self.addresses = {i: srv.address for i, srv in self.servers.items()}
        for i, srv in self.servers.items():
            svc = ClientService(cluster.name, i, self.addresses)
            self.services.append(svc)
            srv.add_handlers([svc.handler()])
            srv.start()

    def addrs(self, *ids):
        return [self.addresses[i] for i in (ids or sorted(self.addresses))]

    def close(self):
        for srv in self.servers.values():
            srv.stop(0)
        for svc in self.services:
            svc.close()


@pytest.fixture
def served(make_cluster):
    made = []

    def make(sm, tls=None, **kw):
        cluster = make_cluster(sm, fsync=False, **kw)
        cluster.wait_leader(timeout=15)
        s = Served(cluster, tls=tls)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_connect_propose_read_and_follow_a_killed_leader(served):
    s = served(KV)
    cluster = s.cluster
    leader = cluster.wait_leader(timeout=15)
    follower = next(i for i in s.addresses if i != leader)
    # One follower's address is enough: it tells the others', and redirects to the leader.
    with KVClient.connect(s.addrs(follower)) as kv:
        kv.put("a", 1)
        assert kv.get("a") == 1
        assert kv.cas("a", 1, 2) is True
        assert kv.cas("a", 1, 3) is False
        assert kv.client.peers() == s.addresses
        assert kv.client.leader() == leader
        with pytest.raises(CommandError):
            kv.client.propose(b"not json")
        assert kv.client.propose_many([b'{"op":"put","key":"k%d","value":%d}' % (i, i) for i in range(500)]) \
            == [b'{"ok": true}'] * 500
        cluster.kill(leader)
        kv.put("b", 2, timeout=10)         # follows the new leader by itself
        assert kv.get("a") == 2 and kv.get("b") == 2 and kv.get("k499") == 499
        assert kv.client.leader() not in (None, leader)
    assert kv.client.closed
    with pytest.raises(ValueError, match="closed"):
        kv.client.propose(b"x")


def test_exactly_once_across_leader_kills_through_connect(served):
    s = served(APPEND_LOG)
    cluster = s.cluster
    addrs = s.addrs()
    procs, stop, progress, out = start_clients(
        append_writer, lambda cid, stop, progress, out: (addrs, cid, stop, progress, out), 3)
    try:
        for _ in range(2):
            wait_progress(progress, 40, timeout=30)
            leader = cluster.wait_leader(timeout=15)
            cluster.kill(leader)            # mid-request: three writers keep one in flight each
            wait_until(lambda: cluster.leader() not in (None, leader), 15, "a new leader")
            wait_progress(progress, 40, timeout=30)
            cluster.restart(leader)
    finally:
        reports = finish_clients(procs, stop, out)
    wait_caught_up(cluster)
    acked = check_exactly_once(logs_of_every_peer(cluster), reports)
    assert acked >= 160


def test_histories_of_connect_clients_are_linearizable(served):
    s = served(KV)
    cluster = s.cluster
    addrs = s.addrs()
    keys = ["a", "b"]
    procs, stop, progress, out = start_clients(
        kv_recorder, lambda cid, stop, progress, out: (addrs, cid, keys, stop, progress, out, cid), 3)
    try:
        wait_progress(progress, 60, timeout=30)
        leader = cluster.wait_leader(timeout=15)
        cluster.kill(leader)
        wait_progress(progress, 60, timeout=30)
        cluster.restart(leader)
        wait_progress(progress, 30, timeout=30)
    finally:
        reports = finish_clients(procs, stop, out)
    history = [op for ops in reports for op in ops]
    known = [op for op in history if not op.unknown]
    assert len(known) >= 150, f"only {len(known)} operations completed"
    result = check_kv(history, timeout=60)
    assert result.ok is True, result.explanation


def test_malformed_requests_are_error_replies_and_the_peer_keeps_serving(served):
    s = served(KV)
    leader = s.cluster.wait_leader(timeout=15)
    addr = s.addresses[leader]
    with grpc.insecure_channel(addr) as ch:
        propose = ch.unary_unary(METHOD_PROPOSE)
        status = json.loads(ch.unary_unary(METHOD_STATUS)(b"", timeout=5))
        assert status["id"] == leader and status["status"]["role"] == "leader"
        assert {int(k): v for k, v in status["peers"].items()} == s.addresses
        good_header = ev.encode_header(ev.KIND_PROPOSE, 0, status["cluster_id"])
        bad = [b"", b"\x00" * 7, b"garbage" * 100, good_header + b"\xff\xff",
               ev.encode_header(ev.KIND_READ, 0, status["cluster_id"]) + b"\x00\x00\x00\x00\x00\x00"]
        for raw in bad:
            with pytest.raises(grpc.RpcError) as info:
                propose(raw, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raw
        foreign = ev.encode_propose(ev.encode_header(ev.KIND_PROPOSE, 0, status["cluster_id"] ^ 1), "",
                                    [(ev.OP_COMMAND, 1, 5, 1, 0, b"{}")])
        with pytest.raises(grpc.RpcError) as info:
            propose(foreign, timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with KVClient.connect([addr]) as kv:
        kv.put("still", "serving")
        assert kv.get("still") == "serving"
    assert sum(svc.refused for svc in s.services) == len(bad) + 1


def test_connect_errors_name_the_problem():
    with pytest.raises(ValueError, match="host:port"):
        Client.connect(["nowhere"])
    with pytest.raises(ValueError, match="at least one"):
        Client.connect([])
    with pytest.raises(ConnectionError, match="no rsm_shm peer answered"):
        Client.connect(["127.0.0.1:1"], timeout=0.3)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    trustme = pytest.importorskip("trustme", reason="trustme is not installed (the [test] extra)")
    ca, other_ca = trustme.CA(), trustme.CA()

    def config(issuer, *names):
        cert = issuer.issue_cert(*names)
        return TLSConfig(cert.private_key_and_cert_chain_pem.bytes(), cert.private_key_pem.bytes(),
                         ca.cert_pem.bytes())

    return {"peer": config(ca, "127.0.0.1", "localhost"), "client": config(ca, "client.example"),
            "stranger": TLSConfig(*(lambda c: (c.private_key_and_cert_chain_pem.bytes(), c.private_key_pem.bytes(),
                                               ca.cert_pem.bytes()))(other_ca.issue_cert("client.example")))}


def test_mutual_tls_admits_the_cluster_ca_and_refuses_others(served, certs):
    s = served(KV, tls=certs["peer"])
    addrs = s.addrs()
    with KVClient.connect(addrs, tls=certs["client"]) as kv:
        kv.put("t", 1)
        assert kv.get("t") == 1
    # A certificate from another CA: the handshake fails; no retry makes it pass.
    with pytest.raises(ConnectionRefusedError):
        Client.connect(addrs, tls=certs["stranger"], timeout=2)
    # Plaintext to a TLS peer.
    with pytest.raises(ConnectionError):
        Client.connect(addrs, timeout=2)


def test_cluster_status_shows_remote_peers(served, capsys):
    from rsm_shm.cli import main

    s = served(KV)
    cluster = s.cluster
    leader = cluster.wait_leader(timeout=15)
    victim = next(i for i in s.addresses if i != leader)
    cluster.kill(victim)
    # One address is enough: the peers it names are asked too.
    assert main(["cluster", "status", "--remote", s.addresses[leader], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == cluster.name and out["leader"] == leader
    peers = {p["id"]: p for p in out["peers"]}
    # The killed peer's service lives in this process here: it answers, and says its
    # peer is dead.
    assert set(peers) == set(s.addresses) and out["unreachable"] == {}
    assert all(p["address"] == s.addresses[p["id"]] for p in peers.values())
    assert peers[leader]["role"] == "leader" and peers[leader]["alive"] is True
    assert peers[victim]["alive"] is False
    # Local and remote together: the local rows win for the peers both show.
    assert main(["cluster", "status", cluster.name, "--remote", ",".join(s.addrs())]) == 0
    text = capsys.readouterr().out
    assert f"cluster {cluster.name}: leader {leader}" in text and "local" in text
    assert main(["cluster", "status", "--remote", "127.0.0.1:1", "--timeout", "0.2"]) == 1
    assert "unreachable 127.0.0.1:1" in capsys.readouterr().out
    assert main(["cluster", "status", "--remote", "nohost"]) == 2
