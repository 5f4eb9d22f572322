"""Random and malformed traffic on a served peer's one port -- which carries both the
client service (Propose, Read, Status), the membership service and the peers' Raft
streams -- never crashes the peer, never makes a handler fail with an unexpected
exception (gRPC's UNKNOWN), and leaves the cluster serving.

Plaintext peers on 127.0.0.1 (the TLS variant, where the handshake refuses strangers
first, is in test_net_tls.py).  The traffic: raw TCP garbage, an HTTP/2 preface then
garbage, random bodies to every method and to a method that does not exist, and
mutations (flipped, cut, lengthened) of well-formed client envelopes and of framed
Raft envelopes of the right cluster id.
"""

from __future__ import annotations

import json
import os
import random
import socket

import pytest

grpc = pytest.importorskip("grpc", reason="grpcio (the [net] extra, part of [test]) is not installed")

from cluster_harness import KV, wait_caught_up, wait_until  # noqa: E402
from net_harness import ServedCluster  # noqa: E402

from rsm_shm.cluster import KVClient  # noqa: E402
from rsm_shm.cluster import envelope as ev  # noqa: E402
from rsm_shm.cluster.net.client_service import METHOD_PROPOSE, METHOD_READ, METHOD_STATUS  # noqa: E402
from rsm_shm.cluster.net.members import METHOD_CHANGE  # noqa: E402
from rsm_shm.cluster.net.transport import STREAM_METHOD, frame  # noqa: E402
from rsm_shm.cluster.serve import derive_cluster_id  # noqa: E402
from rsm_shm.raft.codec import encode_message  # noqa: E402
from rsm_shm.raft.types import Entry, Message, MessageType  # noqa: E402

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]

# What a peer may answer garbage with: anything but UNKNOWN (a handler raised something
# it did not expect) or INTERNAL.
REFUSALS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def mutate(rng: random.Random, b: bytes) -> bytes:
    """One random mutation of ``b``: flipped bytes, a cut, random bytes appended or
    inserted, or a length-like field set to a huge value."""
    b = bytearray(b)
    how = rng.randrange(5)
    if how == 0 and b:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif how == 1:
        del b[rng.randrange(len(b) + 1) :]
    elif how == 2:
        b += rng.randbytes(rng.randint(1, 64))
    elif how == 3:
        at = rng.randrange(len(b) + 1)
        b[at:at] = rng.randbytes(rng.randint(1, 16))
    elif len(b) >= 4:
        at = rng.randrange(len(b) - 3)
        b[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80"])
    return bytes(b)


def call(ch, method: str, body: bytes, codes: list) -> None:
    try:
        ch.unary_unary(method)(body, timeout=5)
        codes.append((method, grpc.StatusCode.OK, body))
    except grpc.RpcError as e:
        codes.append((method, e.code(), body))


def raft_envelopes(cid: int, frm: int, to: int) -> list:
    """Well-formed Raft envelopes from ``frm`` to ``to`` (the seeds of the mutations)."""
    hdr = ev.encode_header(ev.KIND_RAFT, frm, cid)
    msgs = [
        Message(MessageType.HEARTBEAT_RESP, to=to, frm=frm, term=1),
        Message(MessageType.PRE_VOTE, to=to, frm=frm, term=1, log_term=1, index=1),
        Message(MessageType.APP_RESP, to=to, frm=frm, term=1, index=1, reject=True, reject_hint=0, log_term=0),
        Message(
            MessageType.APP,
            to=to,
            frm=frm,
            term=1,
            log_term=1,
            index=1,
            entries=(Entry(term=1, index=2, data=b"x"),),
        ),
    ]
    return [hdr + encode_message(m) for m in msgs]


def test_garbage_on_a_served_peers_port_never_crashes_it(shm_name, tmp_path, cluster_env):
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random.Random seed {seed}")  # shown with a failure: the run can be replayed
    rng = random.Random(seed)
    name = shm_name("fuzz")
    cluster = ServedCluster(name, KV, 3, tmp_path / "data").start()
    try:
        leader = cluster.wait_leader(timeout=30)
        follower = next(i for i in cluster.peers if i != leader)
        addrs = [cluster.addresses[i] for i in sorted(cluster.addresses)]
        with KVClient.connect(addrs) as kv:
            kv.put("before", 1)
        pids = {i: p.pid for i, p in cluster.peers.items()}
        cid = derive_cluster_id(name)
        codes: list = []
        for victim in (leader, follower):
            target = cluster.addresses[victim]
            host, port = target.rsplit(":", 1)
            # Not even HTTP/2; then HTTP/2's preface and garbage.
            for i in range(20):
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    head = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" if i % 2 else b""
                    try:
                        s.sendall(head + rng.randbytes(rng.randint(1, 4096)))
                    except OSError:
                        pass
            good_propose = ev.encode_propose(
                ev.encode_header(ev.KIND_PROPOSE, 0, cid),
                "",
                [(ev.OP_COMMAND, 7, 0, 1, 0, json.dumps({"op": "get", "key": "k"}).encode())],
            )
            good_read = ev.encode_read(
                ev.encode_header(ev.KIND_READ, 0, cid), "", [(9, json.dumps({"op": "get", "key": "k"}).encode())]
            )
            changes = [
                b'{"op": "remove", "id": 1e400}',
                b'{"op": "remove", "id": "x"}',
                b'{"op": ["remove"], "id": 2}',
                b"[" * 100_000 + b"]" * 100_000,
                b'{"op": "add_learner", "id": 9, "address": 5}',
                b"\xff\xfe",
            ] + [
                json.dumps({"op": op, "id": pid, "address": "127.0.0.1:1"}).encode()
                for op in ("add_learner", "promote", "remove")
                for pid in (0, -1, 65, 2**64, 2**70)
            ]
            with grpc.insecure_channel(target) as ch:
                for method in (METHOD_PROPOSE, METHOD_READ, METHOD_STATUS, METHOD_CHANGE, "/rsm_shm.nothing/Here"):
                    for _ in range(10):
                        call(ch, method, rng.randbytes(rng.randint(0, 2048)), codes)
                for _ in range(150):
                    call(ch, METHOD_PROPOSE, mutate(rng, good_propose), codes)
                    call(ch, METHOD_READ, mutate(rng, good_read), codes)
                for body in changes:  # each one malformed: refused before it reaches Raft
                    answers: list = []
                    call(ch, METHOD_CHANGE, body, answers)
                    assert answers[0][1] == grpc.StatusCode.INVALID_ARGUMENT, (body[:80], answers[0][1])
                # The Raft stream, as the peer that does not exist and as a real one.
                stream = ch.stream_unary(STREAM_METHOD)
                other = next(i for i in cluster.peers if i != victim)
                seeds = raft_envelopes(cid, other, victim)
                for frm in (other, 9):
                    md = (("rsm-cluster-id", str(cid)), ("rsm-from", str(frm)), ("rsm-to", str(victim)))
                    batches = [mutate(rng, frame([mutate(rng, rng.choice(seeds))])) for _ in range(200)]
                    batches += [rng.randbytes(rng.randint(1, 512)) for _ in range(50)]
                    try:
                        stream(iter(batches), metadata=md, timeout=10)
                        codes.append((STREAM_METHOD, grpc.StatusCode.OK, b""))
                    except grpc.RpcError as e:
                        codes.append((STREAM_METHOD, e.code(), b""))
        bad = [(m, c, body[:80]) for m, c, body in codes if c not in REFUSALS]
        assert not bad, f"{len(bad)} calls failed inside the peer: {bad[:5]}"
        # Every peer is the same process as before, and the cluster still serves.
        dead = {i: p.log_tail(40) for i, p in cluster.peers.items() if not p.alive}
        assert not dead, f"peers died: {dead}"
        assert {i: p.pid for i, p in cluster.peers.items()} == pids
        assert all(s.alive for s in cluster.status())
        with KVClient.connect(addrs) as kv:
            kv.put("after", 2, timeout=10)
            assert kv.get("before") == 1 and kv.get("after") == 2
        wait_caught_up(cluster)
        wait_until(lambda: all(s.alive for s in cluster.status()), 5, "every peer to run")
    finally:
        cluster.destroy()
