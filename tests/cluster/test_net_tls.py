"""Mutual TLS between served peers, with certificates made by the test (trustme): the
cluster works over TLS; a certificate from another CA, a plaintext connection and a
random-bytes client are refused, and the peer keeps serving."""

from __future__ import annotations

import os
import socket

import pytest

grpc = pytest.importorskip("grpc", reason="grpcio (the [net] extra, part of [test]) is not installed")
trustme = pytest.importorskip("trustme", reason="trustme (part of [test]) is not installed")

from cluster_harness import KV, wait_until  # noqa: E402
from net_harness import ServedCluster  # noqa: E402

from rsm_shm.cluster.net.transport import STREAM_METHOD  # noqa: E402
from rsm_shm.cluster.serve import derive_cluster_id  # noqa: E402

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]


def _write_identity(ca, directory, label):
    """cert, key and CA files for one party, signed by ``ca``, valid for 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "tls_cert": directory / f"{label}.crt",
        "tls_key": directory / f"{label}.key",
        "tls_ca": directory / "ca.crt",
    }
    paths["tls_cert"].write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    paths["tls_key"].write_bytes(cert.private_key_pem.bytes())
    paths["tls_ca"].write_bytes(ca.cert_pem.bytes())
    return {k: str(v) for k, v in paths.items()}


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

    ca, rogue_ca = trustme.CA(), trustme.CA()
    tls = {pid: _write_identity(ca, tmp_path / "pki" / f"p{pid}", f"peer{pid}") for pid in (1, 2, 3)}
    # Peer 3 holds a certificate of another CA: nobody may talk to it, nor it to them.
    tls[3] = _write_identity(rogue_ca, tmp_path / "rogue", "peer3")
    name = shm_name("tls")
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
        good, rogue = tls[1], _write_identity(rogue_ca, tmp_path / "rogue", "client")
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
