"""Raft messages between peers on different hosts: :class:`GrpcTransport` and its service.

Wire: one long-lived client-streaming gRPC call per ordered peer pair, method
``/rsm_shm.cluster.Peer/Stream`` with generic bytes handlers (no protobuf).  The caller
sends metadata ``rsm-cluster-id``, ``rsm-from`` and ``rsm-to``; every request message is
a batch of envelopes, each framed as ``length u32 (little-endian) | envelope`` (the same
envelopes as in the inbox rings: see :mod:`rsm_shm.cluster.envelope`).

Receiving (:class:`PeerStreamService`, registered on the peer's
:class:`~rsm_shm.cluster.net.server.PeerServer`): a stream from another cluster id, from
a peer id the server does not know, addressed to another id, or (mutual TLS) from a
certificate that does not name the peer id it claims is refused
(``PERMISSION_DENIED``) and logged, and so is a stream beyond the fourth open one from
the same peer id (``RESOURCE_EXHAUSTED``: each holds a server thread).  An accepted
stream's envelopes go into the local peer's inbox ring, which stays the peer's only
receive path (its loop is unchanged and single-threaded).  Only Raft envelopes whose header names the stream's sender and the
cluster are taken; anything else, and any framing error, is dropped and counted as bad.
A full inbox drops and counts.  Messages larger than
:data:`~rsm_shm.cluster.net.server.MAX_GRPC_MESSAGE` are refused by gRPC itself.

Sending (:class:`GrpcTransport`): ``send(to, payload)`` appends to a bounded
per-destination queue and returns at once; one sender thread per destination drains it
into the stream, batching what waits.  While a destination is not connected, or its
queue is full, ``send`` returns False (dropped; the peer counts it and Raft
retransmits).  A broken stream is re-established with exponential backoff (50 ms to
1 s); ``on_lost(peer id)`` is called, if set, when an established stream fails (the
peer loop takes it as a sign that the destination may be dead).  Destinations without an address go to ``local`` (a
:class:`~rsm_shm.cluster.transport.RingTransport` for peers on this host): a cluster may
mix both.

No fork here: the threads are started in the peer process itself, which was started
with subprocess (a fresh interpreter).
"""

from __future__ import annotations

import collections
import logging
import queue
import struct
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Set, Tuple

import grpc

from ...ring import Ring
from .. import envelope as ev
from ..layout import RING_SHUTDOWN
from ..transport import Transport
from .server import MAX_GRPC_MESSAGE, grpc_options
from .tls import TLSConfig

__all__ = ["GrpcTransport", "PeerStreamService", "SERVICE", "STREAM_METHOD", "frame", "unframe"]

log = logging.getLogger("rsm_shm.cluster.net")

SERVICE = "rsm_shm.cluster.Peer"
STREAM_METHOD = f"/{SERVICE}/Stream"
_LEN = struct.Struct("<I")
_QUEUE_MESSAGES = 4096  # per destination
_QUEUE_BYTES = 64 << 20  # per destination
_BATCH_BYTES = 1 << 20  # one gRPC message carries up to this many bytes of envelopes
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 1.0
_IDLE_WAKE = 0.2  # a sender thread looks at `closed` at least this often
_MAX_ENVELOPE = MAX_GRPC_MESSAGE - 4  # one framed envelope alone must fit in a gRPC message
_STREAMS_PER_PEER = 4  # concurrent streams one peer id may hold open
_LOG_EVERY = 10.0  # repeated refusals are logged at most this often


def frame(envelopes: List[bytes]) -> bytes:
    """One stream message holding ``envelopes``."""
    parts = []
    for e in envelopes:
        parts.append(_LEN.pack(len(e)))
        parts.append(e)
    return b"".join(parts)


def unframe(msg: bytes) -> Tuple[List[bytes], bool]:
    """(envelopes, intact): the envelopes of one stream message; ``intact`` is False when
    the framing is broken (the rest of the message is dropped)."""
    out: List[bytes] = []
    off, n = 0, len(msg)
    while off < n:
        if off + 4 > n:
            return out, False
        (ln,) = _LEN.unpack_from(msg, off)
        off += 4
        if ln > n - off:
            return out, False
        out.append(msg[off : off + ln])
        off += ln
    return out, True


class _Counters:
    """Counters bumped by several threads (rare events: a lock is fine)."""

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        self._c = dict.fromkeys(names, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._c[name] += n

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._c)


class _RateLimitedLog:
    def __init__(self) -> None:
        self._last: Dict[str, float] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -_LOG_EVERY) < _LOG_EVERY:
                return
            self._last[key] = now
        log.warning(msg, *args)


class PeerStreamService:
    """The receiving side: accepts streams from the known peers of cluster
    ``cluster_id`` addressed to ``my_id`` and puts their envelopes into ``inbox``.

    ``known_peers`` is a callable returning the peer ids allowed to connect (read at
    each new stream, so it may follow membership).  ``authorize(context, peer id)``, if
    given, returns why the caller may not speak for that id (None: it may); with mutual
    TLS it checks the certificate (:func:`~rsm_shm.cluster.net.tls.peer_identity_problem`).  ``on_lost(peer_id)``, if given, is
    called (from a gRPC server thread: it must be thread-safe and quick) when an
    accepted stream ends other than by this server refusing more: the connection
    broke, the sender's process was killed, or its transport closed (it is stopping).
    A live sender never ends its stream otherwise, and grpc cannot be relied on to
    tell a killed sender from a clean end (either may be reported), so each counts.
    """

    def __init__(
        self,
        cluster_id: int,
        my_id: int,
        inbox: Ring,
        known_peers: Callable[[], Set[int]],
        on_lost: Optional[Callable[[int], None]] = None,
        authorize: Optional[Callable[[Any, int], Optional[str]]] = None,
    ) -> None:
        self.cluster_id = cluster_id
        self.my_id = my_id
        self._inbox = inbox
        self._known = known_peers
        self._on_lost = on_lost
        self._authorize = authorize
        self.stats = _Counters("streams", "streams_refused", "net_in", "net_bad", "net_inbox_full")
        self._log = _RateLimitedLog()
        self._active: Dict[int, int] = {}
        self._active_lock = threading.Lock()

    def handler(self) -> "grpc.GenericRpcHandler":
        return grpc.method_handlers_generic_handler(
            SERVICE, {"Stream": grpc.stream_unary_rpc_method_handler(self._stream)}
        )

    def _refuse(self, context: "grpc.ServicerContext", why: str) -> None:
        self.stats.add("streams_refused")
        self._log.warning(why, "refused a peer stream from %s: %s", context.peer(), why)
        context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

    def _stream(self, requests: Iterator[bytes], context: "grpc.ServicerContext") -> bytes:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            cid = int(md["rsm-cluster-id"])
            frm = int(md["rsm-from"])
            to = int(md["rsm-to"])
        except (KeyError, ValueError):
            self._refuse(context, "missing or malformed rsm-cluster-id/rsm-from/rsm-to metadata")
            return b""
        if cid != self.cluster_id:
            self._refuse(context, f"cluster id {cid} is not this cluster's ({self.cluster_id})")
            return b""
        if to != self.my_id:
            self._refuse(context, f"stream addressed to peer {to}, this is peer {self.my_id}")
            return b""
        if frm == self.my_id or frm not in self._known():
            self._refuse(context, f"peer id {frm} is not a known peer of this cluster")
            return b""
        why = self._authorize(context, frm) if self._authorize is not None else None
        if why is not None:
            self._refuse(context, f"stream claims peer id {frm} but {why}")
            return b""
        # A peer needs one stream (two while a reconnect overlaps a dying one): more
        # would only tie up the server's worker threads.
        with self._active_lock:
            if self._active.get(frm, 0) >= _STREAMS_PER_PEER:
                busy = True
            else:
                busy = False
                self._active[frm] = self._active.get(frm, 0) + 1
        if busy:
            self.stats.add("streams_refused")
            self._log.warning(
                f"busy{frm}",
                "refused a stream from %s: peer %d already has %d streams",
                context.peer(),
                frm,
                _STREAMS_PER_PEER,
            )
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"peer {frm} already has {_STREAMS_PER_PEER} streams")
            return b""
        try:
            return self._serve_stream(requests, context, cid, frm)
        finally:
            with self._active_lock:
                self._active[frm] -= 1

    def _serve_stream(self, requests: Iterator[bytes], context: "grpc.ServicerContext", cid: int, frm: int) -> bytes:
        self.stats.add("streams")
        # Tell the sender it was accepted: it starts queueing only now.
        context.send_initial_metadata((("rsm-accepted", "1"),))
        log.info("peer %d connected from %s", frm, context.peer())
        put_many = self._inbox.put_many
        too_large = self._inbox.max_message
        decode_header = ev.decode_header
        raft = ev.KIND_RAFT
        for msg in self._watch(requests, frm):
            envs, intact = unframe(msg)
            take: List[bytes] = []
            bad = 0
            for env in envs:
                if len(env) > too_large:  # could never enter the inbox
                    bad += 1
                    continue
                try:
                    kind, sender, bcid = decode_header(env)
                except ev.EnvelopeError:
                    bad += 1
                    continue
                # Peers exchange Raft messages only: a client request names a reply ring
                # on this host, which a remote peer has no business choosing.
                if kind != raft or sender != frm or bcid != cid:
                    bad += 1
                    continue
                take.append(env)
            if not intact:
                bad += 1
            if bad:
                self.stats.add("net_bad", bad)
            if not take:
                continue
            # One call (and at most one wake-up of the peer) per stream message; what
            # does not fit is dropped, never waited for.
            try:
                put_many(take, 0)
                put = len(take)
            except queue.Full as e:
                put = int(getattr(e, "sent", 0))
                self.stats.add("net_inbox_full", len(take) - put)
            except RING_SHUTDOWN:
                context.abort(grpc.StatusCode.UNAVAILABLE, "peer is stopping")
            except ValueError:  # the inbox was closed: the peer is stopping
                context.abort(grpc.StatusCode.UNAVAILABLE, "peer is stopping")
            if put:
                self.stats.add("net_in", put)
        log.info("peer %d disconnected", frm)
        return b""

    def _watch(self, requests: Iterator[bytes], frm: int) -> Iterator[bytes]:
        """``requests``, telling ``on_lost`` when they end (an RpcError: connection lost
        or call cancelled; or their end).  Not when the loop gives up on them (this
        server aborting the stream: it is stopping)."""
        try:
            yield from requests
        except grpc.RpcError:
            log.info("peer %d: stream lost", frm)
            self._lost(frm)
            raise  # grpc made this error itself and does not log it again
        self._lost(frm)

    def _lost(self, frm: int) -> None:
        if self._on_lost is not None:
            self._on_lost(frm)


class _Refused(Exception):
    """The stream ended before the server accepted it, without an error status."""


class _Feed:
    """What one stream attempt takes its requests from.  grpc's thread that iterates a
    call's requests outlives the call until it has taken one more item, so every
    attempt gets its own feed and only the current one takes from the link's queue: a
    failed attempt's thread must not take (and lose) a message meant for its successor."""

    __slots__ = ("live", "sleeping", "wake")

    def __init__(self) -> None:
        self.live = True  # False once its attempt ended: its iterator stops, taking nothing
        self.sleeping = False
        self.wake = threading.Event()


class _Link:
    """One destination: a bounded queue and the thread that streams it."""

    def __init__(self, owner: "GrpcTransport", to: int, address: str) -> None:
        self.owner = owner
        self.to = to
        self.address = address
        self.q: Deque[bytes] = collections.deque()
        self.enq_bytes = 0  # written by the peer's thread only
        self.deq_bytes = 0  # written by the sender thread only
        self.connected = False
        self.feed = _Feed()  # the current attempt's
        # Held while a feed checks that it is live and takes a batch, and while an ended
        # attempt's feed is retired: a retired feed never takes another message.
        self._take_lock = threading.Lock()
        # Set by the transport's close(), or when the destination leaves the membership.
        self.closed = threading.Event()
        self.call: Optional["grpc.Future"] = None
        self.thread = threading.Thread(target=self._run, name=f"rsm-send-{to}", daemon=True)

    # -- the peer's thread ---------------------------------------------------------
    def offer(self, payload: bytes) -> bool:
        if not self.connected:
            self.owner.dropped_disconnected += 1
            return False
        if len(payload) > _MAX_ENVELOPE:
            self.owner.dropped_too_large += 1
            return False
        if len(self.q) >= _QUEUE_MESSAGES or self.enq_bytes - self.deq_bytes > _QUEUE_BYTES:
            self.owner.dropped_queue_full += 1
            return False
        self.q.append(payload)
        self.enq_bytes += 4 + len(payload)
        feed = self.feed
        if feed.sleeping:
            feed.wake.set()
        return True

    @property
    def wake(self) -> threading.Event:
        """The current feed's wake-up (set to make it look at ``closed``)."""
        return self.feed.wake

    # -- the sender thread ---------------------------------------------------------
    def _requests(self, feed: _Feed) -> Iterator[bytes]:
        q = self.q
        closed = self.closed
        take_lock = self._take_lock
        wake = feed.wake
        while feed.live and not closed.is_set():
            if not q:
                feed.sleeping = True
                if not q:  # re-check: offer() appends before it looks at `sleeping`
                    wake.wait(_IDLE_WAKE)
                feed.sleeping = False
                wake.clear()
                continue
            batch: List[bytes] = []
            size = 0
            with take_lock:
                if not feed.live:
                    return
                # Up to _BATCH_BYTES, and always at least one envelope (each is far
                # below the gRPC message limit: offer() refused anything larger).
                while q:
                    p = q[0]
                    if batch and size + 4 + len(p) > _BATCH_BYTES:
                        break
                    q.popleft()
                    batch.append(p)
                    size += 4 + len(p)
                self.deq_bytes += size
            self.owner.stats.add("net_out", len(batch))
            yield frame(batch)

    def _run(self) -> None:
        owner = self.owner
        closed = self.closed
        options: List[Tuple[str, object]] = [*grpc_options()]
        options += [
            ("grpc.initial_reconnect_backoff_ms", int(_BACKOFF_MIN * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(_BACKOFF_MAX * 1000)),  # = the least connect timeout
            ("grpc.max_reconnect_backoff_ms", int(_BACKOFF_MAX * 1000)),
        ]
        if owner.tls is not None:
            if owner.server_name is not None:
                # Check that the answering certificate is this peer's, not just its host's.
                options.append(("grpc.ssl_target_name_override", owner.server_name(self.to)))
            channel = grpc.secure_channel(self.address, owner.tls.channel_credentials(), options=options)
        else:
            channel = grpc.insecure_channel(self.address, options=options)
        stream = channel.stream_unary(STREAM_METHOD)
        md = (("rsm-cluster-id", str(owner.cluster_id)), ("rsm-from", str(owner.my_id)), ("rsm-to", str(self.to)))
        backoff = _BACKOFF_MIN
        refused_logged = False
        try:
            while not closed.is_set():
                feed = self.feed = _Feed()
                # Not wait_for_ready: a call on a channel that cannot connect fails at
                # once (UNAVAILABLE) and we back off.  (No channel_ready_future: its
                # polling thread outlives a timeout and trips over channel.close().)
                call = stream.future(self._requests(feed), metadata=md, wait_for_ready=False)
                owner.stats.add("attempts")
                self.call = call
                if closed.is_set():  # close() may have looked before self.call was set
                    call.cancel()
                try:
                    # Returns once the server accepted the stream (or failed it).
                    accepted = any(k == "rsm-accepted" for k, _v in call.initial_metadata() or ())
                    if not accepted:
                        call.result()  # raises the refusal
                        raise _Refused()
                    self.connected = True
                    owner.stats.add("connects")
                    backoff = _BACKOFF_MIN
                    refused_logged = False
                    log.info("connected to peer %d at %s", self.to, self.address)
                    call.result()
                except (_Refused, grpc.FutureCancelledError):  # refused, or cancelled by close()
                    pass
                except grpc.RpcError as e:
                    code = e.code() if isinstance(e, grpc.Call) else None
                    if code == grpc.StatusCode.PERMISSION_DENIED and not refused_logged:
                        log.warning(
                            "peer %d at %s refused our stream: %s",
                            self.to,
                            self.address,
                            e.details() if isinstance(e, grpc.Call) else e,
                        )
                        refused_logged = True
                    elif self.connected:
                        log.info("lost peer %d at %s: %s", self.to, self.address, code)
                        on_lost = owner.on_lost
                        if on_lost is not None and not closed.is_set():
                            on_lost(self.to)
                finally:
                    was = self.connected
                    self.connected = False
                    with self._take_lock:
                        feed.live = False
                    feed.wake.set()  # its iterator, if grpc still runs it, ends now
                    call.cancel()
                    # What waited in the queue is lost with the stream: Raft resends.
                    lost = len(self.q)
                    self.q.clear()
                    self.deq_bytes = self.enq_bytes
                    if lost:
                        owner.stats.add("net_lost", lost)
                    if was:
                        owner.stats.add("disconnects")
                if not closed.is_set():
                    closed.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
        finally:
            channel.close()


class GrpcTransport:
    """A :class:`~rsm_shm.cluster.transport.Transport` over gRPC streams (see the module
    docstring).  ``addresses``: ``{peer id: "host:port"}`` of the peers reached over the
    network; every other destination goes to ``local`` (dropped if there is none).
    Membership changes: :meth:`set_address` and :meth:`forget`."""

    def __init__(
        self,
        cluster_id: int,
        my_id: int,
        addresses: Mapping[int, str],
        *,
        tls: Optional[TLSConfig] = None,
        local: Optional[Transport] = None,
        server_name: Optional[Callable[[int], str]] = None,
    ) -> None:
        self.cluster_id = cluster_id
        self.my_id = my_id
        self.tls = tls
        # With TLS: the name the certificate of peer N must carry (instead of the host
        # or IP address dialed), e.g. its DNS identity (tls.peer_dns_name).
        self.server_name = server_name
        self._local = local
        # Called with a destination's id when its established stream fails (from the
        # sender thread: thread-safe and quick), e.g. Peer.peer_lost.
        self.on_lost: Optional[Callable[[int], None]] = None
        self._closed = threading.Event()
        self.stats = _Counters("net_out", "net_lost", "attempts", "connects", "disconnects")
        # Bumped only by the peer's thread (in send): plain ints.
        self.dropped_disconnected = 0
        self.dropped_queue_full = 0
        self.dropped_no_route = 0
        self.dropped_too_large = 0
        self._links: Dict[int, _Link] = {}
        self._retired: List[_Link] = []
        self._links_lock = threading.Lock()  # set_address/forget/close (send only reads)
        for pid, addr in addresses.items():
            if pid == my_id:
                continue
            self._links[pid] = _Link(self, pid, addr)
        for link in self._links.values():
            link.thread.start()

    def set_address(self, peer_id: int, address: str) -> None:
        """Reach ``peer_id`` at ``address`` from now on (a peer that joined, or moved):
        a new stream, the old one (if any) closed.  Thread-safe (:meth:`send` reads the
        link table without the lock: one dict lookup, atomic)."""
        with self._links_lock:
            old = self._links.get(peer_id)
            if peer_id == self.my_id or self._closed.is_set() or (old is not None and old.address == address):
                return
            link = _Link(self, peer_id, address)
            self._links[peer_id] = link
            link.thread.start()
            if old is not None:
                self._retire(old)

    def forget(self, peer_id: int) -> None:
        """Stop sending to ``peer_id`` (it left the membership): its stream is closed
        and later sends go to ``local``, if any (none: dropped)."""
        with self._links_lock:
            old = self._links.pop(peer_id, None)
            if old is not None:
                self._retire(old)

    def _retire(self, link: _Link) -> None:
        link.closed.set()
        link.wake.set()
        call = link.call
        if call is not None:
            call.cancel()
        self._retired.append(link)  # joined by close()

    def send(self, to: int, payload: bytes) -> bool:
        link = self._links.get(to)
        if link is not None:
            return link.offer(payload)
        if self._local is not None:
            return self._local.send(to, payload)
        self.dropped_no_route += 1
        return False

    def connected(self) -> Set[int]:
        """The destinations whose stream is up."""
        return {pid for pid, link in self._links.items() if link.connected}

    def counters(self) -> Dict[str, int]:
        out = self.stats.snapshot()
        if self._local is not None:
            out.update(self._local.counters())
        out.update(
            dropped_disconnected=self.dropped_disconnected,
            dropped_queue_full=self.dropped_queue_full,
            dropped_no_route=self.dropped_no_route,
            dropped_too_large=self.dropped_too_large,
        )
        return out

    def close(self, timeout: float = 2.0) -> None:
        if self._closed.is_set():
            return
        with self._links_lock:
            self._closed.set()
            links = list(self._links.values()) + self._retired
        for link in links:
            link.closed.set()
            link.wake.set()
            # A stream to a paused or silent peer would not end by itself before the
            # keepalive gives up: cancel it.
            call = link.call
            if call is not None:
                call.cancel()
        deadline = time.monotonic() + timeout
        for link in links:
            link.thread.join(max(0.0, deadline - time.monotonic()))
        if self._local is not None:
            self._local.close()

    def __repr__(self) -> str:
        return f"<rsm_shm.cluster.net.GrpcTransport peer {self.my_id} links={sorted(self._links)}>"
