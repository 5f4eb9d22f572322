"""GrpcTransport and the peer stream service, in one process: delivery into the inbox
ring, refusals (cluster id, unknown peer), malformed input counted, never a crash."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

grpc = pytest.importorskip("grpc", reason="grpcio (the [net] extra, part of [test]) is not installed")

from rsm_shm import Ring  # noqa: E402
from rsm_shm.cluster import envelope as ev  # noqa: E402
from rsm_shm.cluster.net.server import PeerServer  # noqa: E402
from rsm_shm.cluster.net.transport import (  # noqa: E402
    STREAM_METHOD,
    GrpcTransport,
    PeerStreamService,
    frame,
    unframe,
)


def _wait(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def receiver(shm_name):
    """Peer 2 of cluster 77: a server with the stream service over a fresh inbox ring."""
    inbox = Ring(shm_name("inbox"), create=True, capacity=1 << 16)
    svc = PeerStreamService(77, 2, inbox, lambda: {1, 2, 3})
    server = PeerServer("127.0.0.1:0")
    server.add_handlers([svc.handler()])
    server.start()
    yield server, svc, inbox
    server.stop(0)
    inbox.close()
    inbox.unlink()


def test_frame_round_trip_and_truncation():
    envs = [b"a", b"", b"x" * 1000]
    assert unframe(frame(envs)) == (envs, True)
    got, intact = unframe(frame(envs)[:-1])
    assert not intact and got == envs[:2]


def test_messages_reach_the_inbox_and_foreign_ones_are_counted(receiver):
    server, svc, inbox = receiver
    t = GrpcTransport(77, 1, {2: server.address})
    try:
        _wait(lambda: t.connected() == {2}, what="the stream to connect")
        hdr = ev.encode_header(ev.KIND_RAFT, 1, 77)
        for i in range(100):
            assert t.send(2, hdr + b"msg%d" % i)
        got = [inbox.get(timeout=10) for _ in range(100)]
        assert got == [hdr + b"msg%d" % i for i in range(100)]
        # Forged sender, other cluster, client request kind: dropped and counted.
        assert t.send(2, ev.encode_header(ev.KIND_RAFT, 3, 77) + b"forged")
        assert t.send(2, ev.encode_header(ev.KIND_RAFT, 1, 78) + b"other cluster")
        assert t.send(2, ev.encode_header(ev.KIND_PROPOSE, 1, 77) + b"\0\0")
        assert t.send(2, b"garbage")
        _wait(lambda: svc.stats.snapshot()["net_bad"] == 4, what="4 bad envelopes counted")
        assert inbox.qsize() == 0
        assert t.send(5, hdr) is False  # no route to peer 5
        assert t.counters()["dropped_no_route"] == 1
    finally:
        t.close()


def test_no_message_is_lost_to_a_failed_earlier_attempt(shm_name):
    """The peer is not listening yet, so the first stream attempt fails; once it listens,
    every message sent over the stream that finally connected arrives.  (grpc's thread
    that fed a failed attempt's requests lives on until it has taken one more message:
    it once took them from the link's shared queue, and they were lost.)"""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there for now
    t = GrpcTransport(77, 1, {2: f"127.0.0.1:{port}"})
    inbox = Ring(shm_name("late"), create=True, capacity=1 << 16)
    server = None
    try:
        deadline = time.monotonic() + 10
        while t.counters()["attempts"] < 1:  # the first attempt failed (or is failing)
            assert time.monotonic() < deadline, "no stream attempt in 10 s"
            time.sleep(0.001)
        svc = PeerStreamService(77, 2, inbox, lambda: {1, 2})
        server = PeerServer(f"127.0.0.1:{port}")
        server.add_handlers([svc.handler()])
        server.start()
        _wait(lambda: t.connected() == {2}, what="the stream to connect")
        hdr = ev.encode_header(ev.KIND_RAFT, 1, 77)
        for i in range(5):  # one at a time: each would wake a leftover feeder first
            assert t.send(2, hdr + b"m%d" % i)
            assert inbox.get(timeout=5) == hdr + b"m%d" % i
        assert t.counters()["net_lost"] == 0
    finally:
        t.close()
        if server is not None:
            server.stop(0)
        inbox.close()
        inbox.unlink()


def test_streams_of_another_cluster_or_unknown_peer_are_refused(receiver):
    server, svc, inbox = receiver
    other = GrpcTransport(99, 1, {2: server.address})  # another cluster id
    stranger = GrpcTransport(77, 9, {2: server.address})  # not a known peer
    try:
        _wait(lambda: svc.stats.snapshot()["streams_refused"] >= 2, what="two refusals")
        assert other.connected() == set() and stranger.connected() == set()
        assert other.send(2, b"x") is False
        assert svc.stats.snapshot()["streams"] == 0
    finally:
        other.close()
        stranger.close()
    assert inbox.qsize() == 0


def test_malformed_stream_messages_and_random_bytes_never_crash_the_server(receiver):
    server, svc, inbox = receiver
    rnd = os.urandom
    # Random bytes on the TCP port (not even HTTP/2).
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            try:
                s.sendall(rnd(int.from_bytes(rnd(2), "little") % 4096 + 1))
            except OSError:
                pass
    # Well-formed gRPC with broken framing.
    with grpc.insecure_channel(server.address) as ch:
        call = ch.stream_unary(STREAM_METHOD)
        md = (("rsm-cluster-id", "77"), ("rsm-from", "1"), ("rsm-to", "2"))
        call(iter([b"\xff\xff\xff\x7f", rnd(100), b""]), metadata=md, timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            call(iter([b"x"]), metadata=(("rsm-cluster-id", "zz"),), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert svc.stats.snapshot()["net_bad"] >= 1
    # Still serving.
    t = GrpcTransport(77, 1, {2: server.address})
    try:
        _wait(lambda: t.connected() == {2}, what="a stream after the garbage")
        hdr = ev.encode_header(ev.KIND_RAFT, 1, 77)
        assert t.send(2, hdr + b"ok")
        assert inbox.get(timeout=10) == hdr + b"ok"
    finally:
        t.close()


def test_large_envelopes_are_batched_within_the_grpc_limit(shm_name):
    from rsm_shm.cluster.net.server import MAX_GRPC_MESSAGE

    inbox = Ring(shm_name("big"), create=True, capacity=1 << 24)
    svc = PeerStreamService(77, 2, inbox, lambda: {1, 2})
    server = PeerServer("127.0.0.1:0")
    server.add_handlers([svc.handler()])
    server.start()
    t = GrpcTransport(77, 1, {2: server.address})
    try:
        _wait(lambda: t.connected() == {2}, what="the stream to connect")
        hdr = ev.encode_header(ev.KIND_RAFT, 1, 77)
        big = [hdr + bytes([i]) * (700 << 10) for i in range(12)]  # 8.4 MB in all, queued at once
        assert all(t.send(2, b) for b in big)
        assert t.send(2, hdr + b"x" * MAX_GRPC_MESSAGE) is False
        assert t.counters()["dropped_too_large"] == 1
        got = [inbox.get(timeout=20) for _ in big]
        assert got == big
        assert t.connected() == {2} and t.counters()["disconnects"] == 0
    finally:
        t.close()
        server.stop(0)
        inbox.close()
        inbox.unlink()


def test_close_is_prompt_even_when_the_peer_stopped_reading():
    """A peer that accepted the stream and then stopped reading (as a SIGSTOPped one):
    sends fill the queue and are dropped, never block, and close() returns at once."""
    import threading

    release = threading.Event()

    def frozen(requests, context):
        context.send_initial_metadata((("rsm-accepted", "1"),))
        release.wait(30)  # reads nothing
        return b""

    server = PeerServer("127.0.0.1:0")
    server.add_handlers(
        [
            grpc.method_handlers_generic_handler(
                "rsm_shm.cluster.Peer", {"Stream": grpc.stream_unary_rpc_method_handler(frozen)}
            )
        ]
    )
    server.start()
    t = GrpcTransport(77, 1, {2: server.address})
    try:
        _wait(lambda: t.connected() == {2}, what="the stream to connect")
        hdr = ev.encode_header(ev.KIND_RAFT, 1, 77)
        payload = hdr + b"z" * (64 << 10)
        start = time.monotonic()
        results = [t.send(2, payload) for _ in range(6000)]
        assert time.monotonic() - start < 5, "sends blocked"
        assert not all(results) and t.counters()["dropped_queue_full"] > 0
    finally:
        start = time.monotonic()
        t.close()
        closed_in = time.monotonic() - start
        release.set()
        server.stop(0)
    assert closed_in < 1.5, f"close() took {closed_in:.2f} s"


def test_a_full_inbox_drops_and_counts_and_the_stream_stays_up(receiver):
    server, svc, inbox = receiver  # a 64 KiB inbox nobody reads
    t = GrpcTransport(77, 1, {2: server.address})
    try:
        _wait(lambda: t.connected() == {2}, what="the stream to connect")
        hdr = ev.encode_header(ev.KIND_RAFT, 1, 77)
        for i in range(100):
            assert t.send(2, hdr + bytes([i]) * 2000)
        st = lambda: svc.stats.snapshot()  # noqa: E731
        _wait(lambda: st()["net_in"] + st()["net_inbox_full"] == 100, what="all 100 taken or dropped")
        assert 0 < st()["net_in"] < 100 and st()["net_inbox_full"] > 0
        got = []
        while not inbox.empty():
            got.append(inbox.get_nowait())
        assert got == [hdr + bytes([i]) * 2000 for i in range(len(got))]  # a prefix, in order
        assert t.send(2, hdr + b"again")
        assert inbox.get(timeout=10) == hdr + b"again"
        assert t.connected() == {2}
    finally:
        t.close()


def test_one_peer_id_cannot_hold_more_than_four_streams(receiver):
    server, svc, inbox = receiver
    md = (("rsm-cluster-id", "77"), ("rsm-from", "3"), ("rsm-to", "2"))
    import threading

    release = threading.Event()

    def idle():
        release.wait(30)
        return
        yield  # a request iterator that sends nothing until released

    with grpc.insecure_channel(server.address) as ch:
        call = ch.stream_unary(STREAM_METHOD)
        held = [call.future(idle(), metadata=md) for _ in range(4)]
        try:
            for f in held:
                assert any(k == "rsm-accepted" for k, _ in f.initial_metadata())
            with pytest.raises(grpc.RpcError) as e:
                call(iter([b""]), metadata=md, timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Another peer id is not affected.
            other = (("rsm-cluster-id", "77"), ("rsm-from", "1"), ("rsm-to", "2"))
            assert call(iter([b""]), metadata=other, timeout=10) == b""
        finally:
            release.set()
            for f in held:
                f.result(timeout=10)
        # Once they ended, peer 3 may connect again.
        assert call(iter([b""]), metadata=md, timeout=10) == b""


def test_a_destination_can_be_added_moved_and_forgotten(receiver):
    """Membership changes reach the transport: set_address opens a stream to a peer that
    joined (or moved), forget closes it; close() joins the retired senders too."""
    server, svc, inbox = receiver
    t = GrpcTransport(77, 1, {})
    hdr = ev.encode_header(ev.KIND_RAFT, 1, 77)
    threads_before = {th.name for th in threading.enumerate()}
    try:
        assert t.send(2, hdr + b"before") is False  # no route yet
        t.set_address(2, "127.0.0.1:1")  # a wrong address first: never connects
        t.set_address(2, server.address)  # moved
        _wait(lambda: t.connected() == {2}, what="the stream to the new address")
        assert t.send(2, hdr + b"joined")
        assert inbox.get(timeout=10) == hdr + b"joined"
        t.forget(2)
        assert t.connected() == set()
        assert t.send(2, hdr + b"after") is False
        _wait(lambda: svc.stats.snapshot()["streams"] == 1 and not svc._active.get(1), what="the stream to end")
    finally:
        t.close()
    left = {th.name for th in threading.enumerate()} - threads_before
    assert not any(n.startswith("rsm-send-") for n in left), left
    assert inbox.qsize() == 0
