"""Mutual TLS between served peers, with certificates made by the test
(rsm_shm.cluster.net.tls.CertificateAuthority, on the cryptography package): the
cluster works over TLS; a peer id must be the one its certificate names; a certificate from another CA, a plaintext connection and a
random-bytes client are refused, and the peer keeps serving."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

grpc = pytest.importorskip("grpc", reason="grpcio (the [net] extra, part of [test]) is not installed")
pytest.importorskip("cryptography", reason="cryptography (part of [test], via trustme) is not installed")

from cluster_harness import KV, wait_until  # noqa: E402
from net_harness import ServedCluster  # noqa: E402

from rsm_shm.cluster.net.members import METHOD_CHANGE  # noqa: E402
from rsm_shm.cluster.net.tls import CertificateAuthority  # noqa: E402
from rsm_shm.cluster.net.transport import STREAM_METHOD  # noqa: E402
from rsm_shm.cluster import Peer  # noqa: E402
from rsm_shm.cluster.serve import derive_cluster_id  # noqa: E402

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]


def _write_identity(ca, directory, label, cluster=None, peer_id=None):
    """cert, key and CA files for one party, signed by ``ca`` (a CertificateAuthority):
    peer ``peer_id`` of ``cluster`` reachable at 127.0.0.1, or a client of ``cluster``."""
    if peer_id is not None:
        ident = ca.issue_peer(cluster, peer_id)
    else:
        ident = ca.issue_client(cluster, label)
    return ident.write(str(directory), label)


def _credentials(files):
    read = lambda k: open(files[k], "rb").read()  # noqa: E731
    return grpc.ssl_channel_credentials(
        root_certificates=read("tls_ca"), private_key=read("tls_key"), certificate_chain=read("tls_cert")
    )


def _probe(channel, cluster_id, frm=9, to=1):
    """One stream call; the status code it ends with."""
    call = channel.stream_unary(STREAM_METHOD)
    md = (("rsm-cluster-id", str(cluster_id)), ("rsm-from", str(frm)), ("rsm-to", str(to)))
    try:
        call(iter([b""]), metadata=md, timeout=5)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_mutual_tls_cluster_refuses_other_ca_plaintext_and_garbage(shm_name, tmp_path, cluster_env):
    from rsm_shm.cluster import KVClient

    ca, rogue_ca = CertificateAuthority(), CertificateAuthority()
    name = shm_name("tls")
    tls = {pid: _write_identity(ca, tmp_path / "pki" / f"p{pid}", f"peer{pid}", name, pid) for pid in (1, 2, 3)}
    # Peer 3 holds a certificate of another CA: nobody may talk to it, nor it to them.
    tls[3] = _write_identity(rogue_ca, tmp_path / "rogue", "peer3", name, 3)
    cluster = ServedCluster(name, KV, 3, tmp_path / "data", tls=tls).start()
    try:
        cluster.wait_leader(timeout=30)
        with KVClient(name) as kv:
            for i in range(20):
                kv.put(f"k{i}", i)
            assert kv.get("k19") == 19
        st = {s.id: s for s in cluster.status()}
        assert st[1].alive and st[2].alive and st[3].alive
        # 20 commits and their heartbeats later, the rogue peer got nothing through.
        assert st[3].msgs_in == 0 and st[3].commit == 0, st[3]
        assert cluster.leader() in (1, 2)

        cid = derive_cluster_id(name)
        good, rogue = tls[1], _write_identity(rogue_ca, tmp_path / "rogue", "client", name)
        target = cluster.addresses[1]
        # A good certificate gets through the handshake and is refused by the peer check
        # (peer id 9 is unknown): the handshake itself is not what refuses the others.
        with grpc.secure_channel(target, _credentials(good)) as ch:
            assert _probe(ch, cid) == grpc.StatusCode.PERMISSION_DENIED
        # Another CA: the handshake fails.
        with grpc.secure_channel(target, _credentials(rogue)) as ch:
            assert _probe(ch, cid, frm=2) == grpc.StatusCode.UNAVAILABLE
        # Plaintext to a TLS peer: refused.
        with grpc.insecure_channel(target) as ch:
            assert _probe(ch, cid, frm=2) == grpc.StatusCode.UNAVAILABLE
        # Random bytes on the port.
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", int(target.rsplit(":", 1)[1])), timeout=5) as s:
                try:
                    s.sendall(os.urandom(1 + os.urandom(1)[0] * 16))
                except OSError:
                    pass
        with KVClient(name) as kv:
            kv.put("after", "garbage")
            assert kv.get("after") == "garbage"
        assert all(cluster.peers[p].alive for p in (1, 2, 3))
    finally:
        cluster.destroy()


def test_a_peer_id_must_be_the_one_its_certificate_names(shm_name, tmp_path, cluster_env):
    """Mutual TLS binds a stream's peer id to the certificate: a certificate of the
    cluster's CA for peer 3 cannot speak as peer 2, nor a client's, another cluster's or
    one without an rsm-shm identity as any peer; each refusal is logged by the peer."""
    ca = CertificateAuthority()
    name = shm_name("ids")
    pki = tmp_path / "pki"
    tls = {pid: _write_identity(ca, pki / f"p{pid}", f"peer{pid}", name, pid) for pid in (1, 2, 3)}
    # A peer started with another peer's certificate refuses to run (before it listens).
    with pytest.raises(ValueError, match=r"is not peer 2's .* URI subject alternative name rsm-shm://"):
        Peer(name, 2, peers={1: "127.0.0.1:1"}, state_machine=KV, data_dir=str(tmp_path / "wrong"), **tls[3]).run()
    cluster = ServedCluster(name, KV, 3, tmp_path / "data", tls=tls).start()
    try:
        cluster.wait_leader(timeout=30)
        cid = derive_cluster_id(name)
        target = cluster.addresses[1]
        impostors = {
            "peer 3 as 2": (tls[3], f"certificate is rsm-shm://{name}/peer/3, not rsm-shm://{name}/peer/2"),
            "client": (
                _write_identity(ca, pki / "client", "client", name),
                f"certificate is rsm-shm://{name}/client/client, not",
            ),
            "other cluster": (
                _write_identity(ca, pki / "other", "other", name + "x", 2),
                f"certificate is rsm-shm://{name}x/peer/2, not",
            ),
            "no identity": (ca.issue([], ["127.0.0.1"]).write(str(pki / "anon"), "anon"), "names no rsm-shm identity"),
        }
        for label, (files, _why) in impostors.items():
            with grpc.secure_channel(target, _credentials(files)) as ch:
                assert _probe(ch, cid, frm=2) == grpc.StatusCode.PERMISSION_DENIED, label
        # Membership changes need a certificate that names this cluster (a client's will do).
        change = b'{"op": "no such op", "id": 4}'
        for label, want in (("no identity", "PERMISSION_DENIED"), ("other cluster", "PERMISSION_DENIED")):
            with grpc.secure_channel(target, _credentials(impostors[label][0])) as ch:
                with pytest.raises(grpc.RpcError) as e:
                    ch.unary_unary(METHOD_CHANGE)(change, timeout=5)
                assert e.value.code().name == want, label
        with grpc.secure_channel(target, _credentials(impostors["client"][0])) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary(METHOD_CHANGE)(change, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # past the identity check
            # Adding a voter as a learner (a demotion) is refused.
            demote = b'{"op": "add_learner", "id": 2, "address": "127.0.0.1:1"}'
            assert json.loads(ch.unary_unary(METHOD_CHANGE)(demote, timeout=5)) == {
                "status": "error",
                "message": "peer 2 is a voter already",
            }
        # The same handshake and metadata pass with the identity the certificate names.
        with grpc.secure_channel(target, _credentials(tls[3])) as ch:
            assert _probe(ch, cid, frm=3) == grpc.StatusCode.OK
        log_file = tmp_path / "data" / "peer1" / "peer1.log"
        for label, (_files, why) in impostors.items():
            wait_until(lambda: why in log_file.read_text(), 10, f"peer 1 to log the refusal of {label}")
        assert "stream claims peer id 2 but" in log_file.read_text()
        # The real peers still talk to each other.
        from rsm_shm.cluster import KVClient

        with KVClient(name) as kv:
            kv.put("k", 1)
            assert kv.get("k") == 1
    finally:
        cluster.destroy()


class _FakePeer:
    """A gRPC server in this process at ``address`` with the certificate ``files``, that
    records the peer streams opened to it (and ends each at once)."""

    def __init__(self, address, files):
        from concurrent import futures

        from rsm_shm.cluster.net.tls import TLSConfig
        from rsm_shm.cluster.net.transport import SERVICE

        self.streams = []
        self._pool = futures.ThreadPoolExecutor(4)
        self._server = grpc.server(self._pool)
        handler = grpc.stream_unary_rpc_method_handler(self._stream)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Stream": handler}),))
        tls = TLSConfig.from_files(files["tls_cert"], files["tls_key"], files["tls_ca"])
        assert self._server.add_secure_port(address, tls.server_credentials())
        self._server.start()

    def _stream(self, requests, context):
        self.streams.append(dict(context.invocation_metadata()).get("rsm-from"))
        return b""

    def stop(self):
        self._server.stop(0).wait()
        self._server = None
        self._pool.shutdown(wait=True)


def test_a_peer_dials_the_others_by_their_identity(shm_name, tmp_path, cluster_env):
    """With certificates that carry DNS identities (CertificateAuthority's), a peer checks
    that the one answering at peer 2's address is peer 2: an impostor there with peer 3's
    certificate (valid for the address, from the cluster's CA) gets no stream."""
    from rsm_shm.cluster import KVClient, LocalCluster

    ca = CertificateAuthority()
    name = shm_name("dial")
    tls = {pid: _write_identity(ca, tmp_path / "pki" / f"p{pid}", f"peer{pid}", name, pid) for pid in (1, 2, 3)}
    cluster = ServedCluster(name, KV, 3, tmp_path / "data", tls=tls)
    impostor = _FakePeer(cluster.addresses[2], tls[3])
    try:
        cluster.peers[1].start()
        cluster.peers[3].start()
        cluster._attached = LocalCluster.attach(name)
        cluster.wait_leader(timeout=30)
        with KVClient(name) as kv:
            for i in range(10):
                kv.put(f"k{i}", i)
        # Both peers dial "peer 2" all along (backoff at most 1 s): two seconds of it.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert impostor.streams == [], impostor.streams
            time.sleep(0.05)
        impostor.stop()
        impostor = None
        # The control: the same server with peer 2's own certificate gets the streams.
        genuine = _FakePeer(cluster.addresses[2], tls[2])
        try:
            wait_until(lambda: {"1", "3"} <= set(genuine.streams), 10, "the peers to dial the real peer 2")
        finally:
            genuine.stop()
    finally:
        if impostor is not None:
            impostor.stop()
        cluster.destroy()


def test_garbage_over_an_accepted_stream_is_counted_and_the_peer_keeps_serving(shm_name, tmp_path, cluster_env):
    from rsm_shm.cluster import KVClient
    from rsm_shm.cluster import envelope as ev

    name = shm_name("junk")
    cluster = ServedCluster(name, KV, 3, tmp_path / "data").start()
    try:
        cluster.wait_leader(timeout=30)
        victim = 1
        before = next(s for s in cluster.status() if s.id == victim).msgs_bad
        cid = derive_cluster_id(name)
        junk = [
            b"\xff\xff\xff\x7f",  # a length beyond the message
            os.urandom(300),  # random framing
            b"\x03\x00\x00\x00abc",  # not an envelope
            b"\x10\x00\x00\x00" + ev.encode_header(ev.KIND_PROPOSE, 2, cid),  # a client request from a peer
        ]
        with grpc.insecure_channel(cluster.addresses[victim]) as ch:
            call = ch.stream_unary(STREAM_METHOD)
            md = (("rsm-cluster-id", str(cid)), ("rsm-from", "2"), ("rsm-to", str(victim)))
            call(iter(junk), metadata=md, timeout=10)
        wait_until(
            lambda: next(s for s in cluster.status() if s.id == victim).msgs_bad >= before + 4,
            10,
            "the peer to count the garbage",
        )
        with KVClient(name) as kv:
            kv.put("still", "works")
        assert cluster.peers[victim].alive
    finally:
        cluster.destroy()
