"""The client service a peer offers over gRPC: propose, read and status for remote clients.

A peer that serves the network (``rsm-shm cluster serve``) hosts one
:class:`ClientService` next to its Raft loop.  The service behaves like a local client
of its own peer: an RPC's thread puts the client's request envelope into the peer's
inbox ring as it came -- only the reply ring's name is replaced by one of the service's
-- and reads the answers from that ring itself (one ring per RPC in flight, from a
pool; no other thread in between).  The remote client's ``(session, seq)`` and request
ids travel unchanged, so the replicated session table gives the same exactly-once
guarantee as for a local client.  The request is checked (walked, not copied) before it
goes in, and the answers go back as the peer wrote them (several reply envelopes are
joined without decoding).  Request ids start at a random 62-bit offset per remote
client, so an answer that arrives late, after its RPC gave up, never passes for the
answer to another client's request (and the client ignores ids it does not wait for).

Wire format: gRPC generic handlers carrying the cluster's envelopes (no protobuf):

* ``/rsm_shm.cluster.Client/Propose``: a ``PROPOSE`` envelope in, a ``REPLY`` envelope out;
* ``/rsm_shm.cluster.Client/Read``: a ``READ`` envelope in, a ``REPLY`` envelope out;
* ``/rsm_shm.cluster.Client/Status``: anything in, UTF-8 JSON out:
  ``{"schema": 1, "cluster", "cluster_id", "id", "status": PeerStatus fields,
  "peers": {"<id>": "host:port", ...}, "refused": client requests refused}``.

A reply holds the answers that arrived within ``max_wait`` seconds (or the RPC's
deadline, if sooner); a request id missing from it is unanswered so far and the client
sends it again (same sequence number: still exactly once).  "Not the leader" answers
carry the leader's id; the client maps it to an address with the status map.

Errors are gRPC status codes, never a crash of the peer: a malformed envelope is
``INVALID_ARGUMENT``; one larger than :data:`MAX_REQUEST_BYTES` ``RESOURCE_EXHAUSTED``;
one of another cluster (id) ``FAILED_PRECONDITION``; a peer that is stopping
``UNAVAILABLE``.  Each refusal is counted (:attr:`ClientService.refused`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Tuple, Union

from ... import _proc
from ...ring import Ring
from .. import envelope as ev
from ..layout import REPLY_CAPACITY, RING_MAX_MESSAGE, RING_SHUTDOWN, inbox_name, reply_ring_prefix
from ..status import StatusRecord, status_segment_name

__all__ = [
    "ClientService",
    "SERVICE",
    "METHOD_PROPOSE",
    "METHOD_READ",
    "METHOD_STATUS",
    "MAX_REQUEST_BYTES",
    "MAX_WAIT",
]

log = logging.getLogger("rsm_shm.cluster.net")

SERVICE = "rsm_shm.cluster.Client"
METHOD_PROPOSE = f"/{SERVICE}/Propose"
METHOD_READ = f"/{SERVICE}/Read"
METHOD_STATUS = f"/{SERVICE}/Status"
# A client's envelopes are at most about 1 MiB plus one command; the rewritten envelope
# must fit in one inbox ring message.
MAX_REQUEST_BYTES = min(4 << 20, RING_MAX_MESSAGE - 4096)
MAX_WAIT = 2.0  # seconds an RPC waits for its answers before returning the ones it has
_PUT_TIMEOUT = 0.5  # a full inbox: the leader is busy; past this the client is told RETRY
_MAX_REPLY_BYTES = RING_MAX_MESSAGE  # under the gRPC message limit both sides set (server.MAX_GRPC_MESSAGE)
_LIVENESS_SLICE = 0.05  # how often a waiting RPC checks that the peer process lives


_Addresses = Union[Mapping[int, str], Callable[[], Mapping[int, str]], None]
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_PROPOSE_ITEM = struct.Struct("<B32xI")  # op, (rid session seq acked), len of ev's request
_PROPOSE_ITEM_SIZE = 37
_READ_ITEM = struct.Struct("<8xI")  # (rid), len
_READ_ITEM_SIZE = 12


def _check_request(b: bytes, kind: int) -> Tuple[int, int]:
    """Walk a PROPOSE or READ envelope's requests without copying them: (offset of the
    body after the reply ring name, number of requests).  EnvelopeError if malformed."""
    end = len(b)
    off = ev.HEADER_SIZE
    if off + 2 > end:
        raise ev.EnvelopeError("truncated reply ring name")
    off += 2 + _U16.unpack_from(b, off)[0]
    body = off
    if off + 4 > end:
        raise ev.EnvelopeError("truncated count")
    (n,) = _U32.unpack_from(b, off)
    off += 4
    if kind == ev.KIND_PROPOSE:
        item, size = _PROPOSE_ITEM.unpack_from, _PROPOSE_ITEM_SIZE
        for _ in range(n):
            if off + size > end:
                raise ev.EnvelopeError("truncated proposal")
            op, ln = item(b, off)
            if op != ev.OP_COMMAND and op != ev.OP_REGISTER:
                raise ev.EnvelopeError(f"unknown proposal op {op}")
            off += size + ln
    else:
        item, size = _READ_ITEM.unpack_from, _READ_ITEM_SIZE
        for _ in range(n):
            if off + size > end:
                raise ev.EnvelopeError("truncated read")
            off += size + item(b, off)[0]
    if off != end:
        raise ev.EnvelopeError("truncated request data" if off > end else "trailing bytes after the requests")
    return body, n


class ClientService:
    """Serves remote clients of peer ``peer_id`` of the local cluster ``cluster``.

    ``addresses``: the cluster's peer id -> "host:port" map (or a callable returning it)
    that the Status RPC hands to clients.  Register :meth:`handler` on a gRPC server;
    :meth:`close` removes the reply rings.
    """

    def __init__(
        self,
        cluster: str,
        peer_id: int,
        addresses: _Addresses = None,
        *,
        cluster_id: Optional[int] = None,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.cluster = cluster
        self.peer_id = int(peer_id)
        self._addresses = addresses
        self.max_wait = float(max_wait)
        if cluster_id is None:
            from ..control import ControlBlock

            ctl = ControlBlock(cluster)
            try:
                cluster_id = int(ctl.load().cluster_id)
            finally:
                ctl.close()
        self.cluster_id = int(cluster_id)
        self.refused = 0
        self._pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()  # the ring pool
        self._put_lock = threading.Lock()  # one producer thread at a time on our inbox handle
        self._free: List[Ring] = []  # reply rings not in use by an RPC
        self._rings: List[Ring] = []  # every reply ring made
        self._inbox = Ring(inbox_name(cluster, self.peer_id), create=False)
        self._status = StatusRecord(status_segment_name(cluster, self.peer_id), create=False)
        self._reply_hdr = ev.encode_header(ev.KIND_REPLY, self.peer_id, self.cluster_id)

    # ------------------------------------------------------------------ gRPC glue
    def handler(self) -> Any:
        """The ``grpc.GenericRpcHandler`` to register on the peer's server."""
        import grpc

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Propose": grpc.unary_unary_rpc_method_handler(self._rpc_propose),
                "Read": grpc.unary_unary_rpc_method_handler(self._rpc_read),
                "Status": grpc.unary_unary_rpc_method_handler(self._rpc_status),
            },
        )

    def _rpc_propose(self, request: bytes, context: Any) -> bytes:
        return self._serve(request, context, ev.KIND_PROPOSE)

    def _rpc_read(self, request: bytes, context: Any) -> bytes:
        return self._serve(request, context, ev.KIND_READ)

    def _rpc_status(self, request: bytes, context: Any) -> bytes:
        return self.status_json().encode()

    def _refuse(self, context: Any, code_name: str, message: str) -> NoReturn:
        import grpc

        self.refused += 1
        log.info("peer %d refused a client request from %s: %s", self.peer_id, _peer_of(context), message)
        context.abort(getattr(grpc.StatusCode, code_name), message)
        raise AssertionError("grpc's context.abort returned")  # it raises

    # ------------------------------------------------------------------ reply rings
    def _take_ring(self) -> Ring:
        with self._lock:
            if self._free:
                ring = self._free.pop()
            else:
                name = f"{reply_ring_prefix(self.cluster)}{self._pid:x}.{secrets.token_hex(4)}"
                ring = Ring(name, create=True, capacity=REPLY_CAPACITY)
                self._rings.append(ring)
        # Late answers to an RPC that gave up: not ours (the ids differ), drop them now.
        try:
            while True:
                ring.get_nowait()
        except queue.Empty:
            pass
        return ring

    def _give_ring(self, ring: Ring) -> None:
        with self._lock:
            if not self._closed:
                self._free.append(ring)

    # ------------------------------------------------------------------ the requests
    def _serve(self, request: bytes, context: Any, kind: int) -> bytes:
        if self._closed:
            self._refuse(context, "UNAVAILABLE", f"peer {self.peer_id} is stopping")
        if not isinstance(request, bytes):
            request = bytes(request)
        if len(request) > MAX_REQUEST_BYTES:
            self._refuse(
                context,
                "RESOURCE_EXHAUSTED",
                f"a {len(request)}-byte request exceeds the limit of {MAX_REQUEST_BYTES} bytes",
            )
        try:
            got_kind, _sender, cid = ev.decode_header(request)
            if got_kind != kind:
                raise ev.EnvelopeError(f"envelope of kind {got_kind} sent to the method for kind {kind}")
            body, n = _check_request(request, kind)
        except ev.EnvelopeError as exc:
            self._refuse(context, "INVALID_ARGUMENT", f"malformed request: {exc}")
        if cid != self.cluster_id:
            self._refuse(
                context,
                "FAILED_PRECONDITION",
                f"request for cluster id {cid:#x}; peer {self.peer_id} serves cluster {self.cluster!r} "
                f"(id {self.cluster_id:#x})",
            )
        if n == 0:
            return ev.encode_reply(self._reply_hdr, [])
        if not self._peer_alive():
            self._refuse(context, "UNAVAILABLE", f"peer {self.peer_id} is not running")
        ring = self._take_ring()
        try:
            # The client's request as it came, answered into our ring: the peer answers
            # every request once, under the client's own request id.
            name = ring.name.encode()
            env = b"".join((request[: ev.HEADER_SIZE], _U16.pack(len(name)), name, request[body:]))
            try:
                with self._put_lock:
                    self._inbox.put(env, timeout=_PUT_TIMEOUT)
            except queue.Full:
                return self._retry_all(request, kind)
            except RING_SHUTDOWN:
                self._refuse(context, "UNAVAILABLE", f"peer {self.peer_id} is stopping")
            return self._collect(ring, n, context)
        finally:
            self._give_ring(ring)

    def _collect(self, ring: Ring, n: int, context: Any) -> bytes:
        """The reply envelopes for ``n`` requests (fewer after ``max_wait``), merged."""
        remaining = context.time_remaining()
        wait = self.max_wait if remaining is None else max(0.0, min(self.max_wait, remaining - 0.05))
        end = time.monotonic() + wait
        got: List[bytes] = []
        answered = size = 0
        while answered < n and size < _MAX_REPLY_BYTES:
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                data = ring.get(timeout=min(_LIVENESS_SLICE, left))
            except queue.Empty:
                if not self._peer_alive():
                    # Hosted outside the peer (a gateway): its peer died; the client
                    # goes elsewhere at once rather than after max_wait.
                    self._refuse(context, "UNAVAILABLE", f"peer {self.peer_id} is not running")
                continue
            if len(data) < ev.HEADER_SIZE + 4 or data[3] != ev.KIND_REPLY:
                continue
            got.append(data)
            answered += _U32.unpack_from(data, ev.HEADER_SIZE)[0]
            size += len(data)
        if len(got) == 1:
            return got[0]
        # Several reply envelopes: one, by concatenating their items (no decoding).
        total = sum(_U32.unpack_from(d, ev.HEADER_SIZE)[0] for d in got)
        return b"".join([self._reply_hdr, _U32.pack(total)] + [d[ev.HEADER_SIZE + 4 :] for d in got])

    def _retry_all(self, request: bytes, kind: int) -> bytes:
        """Every request answered RETRY (the peer's inbox stayed full)."""
        if kind == ev.KIND_PROPOSE:
            rids = [r[1] for r in ev.decode_propose(request)[1]]
        else:
            rids = [r[0] for r in ev.decode_read(request)[1]]
        return ev.encode_reply(self._reply_hdr, [(rid, ev.RETRY, b"the peer's inbox is full") for rid in rids])

    def _peer_alive(self) -> bool:
        raw = self._status.load()
        if raw is None:
            return True  # never published yet, or mid-publication: assume alive
        if int(raw.pid) == self._pid:
            return True
        return _proc.process_alive(int(raw.pid), int(raw.start_time))

    # ------------------------------------------------------------------ status
    def addresses(self) -> Dict[int, str]:
        a = self._addresses() if callable(self._addresses) else self._addresses
        return {int(k): str(v) for k, v in dict(a or {}).items()}

    def status_json(self) -> str:
        st = self._status.read(peer_id=self.peer_id)
        return json.dumps(
            {
                "schema": 1,
                "cluster": self.cluster,
                "cluster_id": self.cluster_id,
                "id": self.peer_id,
                "time": time.time(),
                "status": st.as_dict(),
                "refused": self.refused,
                "peers": {str(k): v for k, v in sorted(self.addresses().items())},
            }
        )

    # ------------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Remove the reply rings and unmap everything (idempotent).  RPCs still running
        get no more answers; new ones are refused UNAVAILABLE."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            rings, self._rings, self._free = self._rings, [], []
        for ring in rings:
            try:
                ring.unlink()
            except FileNotFoundError:
                pass
            ring.close()
        self._inbox.close()
        self._status.close()

    def __repr__(self) -> str:
        return f"<rsm_shm.cluster.net.ClientService {self.cluster!r} peer {self.peer_id}{' closed' if self._closed else ''}>"


def _peer_of(context: Any) -> str:
    try:
        return str(context.peer())
    except Exception:
        return "?"


def serve_clients(served: Any) -> List[Any]:
    """The service factory of served peers (``rsm_shm.cluster.serve``): the client service
    of ``served`` (a ServedPeer), answering at its listen address.  The peer map handed to
    clients holds the addresses this peer knows now (``--peer ID=HOST:PORT``, and those of
    peers that joined later; peers reached through local rings are left out: a client
    learns their addresses from them).
    The service closes (its reply ring removed) when the process exits."""
    import atexit

    spec = served.spec
    # A callable: the map follows membership changes (peers that joined or left).
    svc = ClientService(spec.name, spec.id, served.client_addresses, cluster_id=spec.cluster_id)
    served.client_service = svc
    atexit.register(svc.close)
    return [svc.handler()]
