"""The client service a peer offers over gRPC: propose, read and status for remote clients.

A peer that serves the network (``rsm-shm cluster serve``) hosts one
:class:`ClientService` next to its Raft loop.  The service behaves like a local client
of its own peer: it puts each request into the peer's inbox ring, tagged with a reply
ring the service owns, and a dispatcher thread hands the answers that arrive in that
ring to the RPCs waiting for them.  The remote client's ``(session, seq)`` travel
unchanged, so the replicated session table gives the same exactly-once guarantee as
for a local client; only the request ids are renamed (every RPC gets ids of its own, so
two clients' ids never collide in the one reply ring).

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
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Set, Tuple, Union

from ... import _proc
from ...ring import Ring
from .. import envelope as ev
from ..layout import REPLY_CAPACITY, RING_MAX_MESSAGE, RING_SHUTDOWN, inbox_name, reply_ring_prefix
from ..status import StatusRecord, status_segment_name

__all__ = ["ClientService", "SERVICE", "METHOD_PROPOSE", "METHOD_READ", "METHOD_STATUS", "MAX_REQUEST_BYTES",
           "MAX_WAIT"]

log = logging.getLogger("rsm_shm.cluster.net")

SERVICE = "rsm_shm.cluster.Client"
METHOD_PROPOSE = f"/{SERVICE}/Propose"
METHOD_READ = f"/{SERVICE}/Read"
METHOD_STATUS = f"/{SERVICE}/Status"
# A client's envelopes are at most about 1 MiB plus one command; the rewritten envelope
# must fit in one inbox ring message.
MAX_REQUEST_BYTES = min(4 << 20, RING_MAX_MESSAGE - 4096)
MAX_WAIT = 2.0           # seconds an RPC waits for its answers before returning the ones it has
_PUT_TIMEOUT = 0.5       # a full inbox: the leader is busy; past this the client is told RETRY
_MAX_REPLY_BYTES = RING_MAX_MESSAGE  # under the gRPC message limit both sides set (server.MAX_GRPC_MESSAGE)
_LIVENESS_SLICE = 0.05  # how often a waiting RPC checks that the peer process lives
_SLICE = 0.2             # the dispatcher's wake-ups while idle (to notice close())


_Addresses = Union[Mapping[int, str], Callable[[], Mapping[int, str]], None]


class _Call:
    """One RPC waiting for its answers."""

    __slots__ = ("rids", "silent", "results", "left", "done")

    def __init__(self, n: int) -> None:
        self.rids: Dict[int, int] = {}      # service rid -> the client's rid
        self.silent: Set[int] = set()            # service rids of registrations (no wait for them)
        self.results: List[Tuple[int, int, bytes]] = []
        self.left = n
        self.done = threading.Event()


class ClientService:
    """Serves remote clients of peer ``peer_id`` of the local cluster ``cluster``.

    ``addresses``: the cluster's peer id -> "host:port" map (or a callable returning it)
    that the Status RPC hands to clients.  Register :meth:`handler` on a gRPC server;
    :meth:`close` stops the dispatcher and removes the reply ring.
    """

    def __init__(self, cluster: str, peer_id: int, addresses: _Addresses = None, *,
                 cluster_id: Optional[int] = None, max_wait: float = MAX_WAIT) -> None:
        self.cluster = cluster
        self.peer_id = int(peer_id)
        self._addresses = addresses
        self.max_wait = float(max_wait)
        if cluster_id is None:
            from ..control import ControlBlock

            ctl = ControlBlock(cluster)
            try:
                cluster_id = int(ctl.load().cluster_id)  # type: ignore[no-untyped-call]
            finally:
                ctl.close()
        self.cluster_id = int(cluster_id)
        self.refused = 0
        self._pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()       # waiters and the rid counter
        self._put_lock = threading.Lock()   # one producer thread at a time on our inbox handle
        self._waiters: Dict[int, _Call] = {}
        self._next_rid = 0
        self._inbox = Ring(inbox_name(cluster, self.peer_id), create=False)
        self._status = StatusRecord(status_segment_name(cluster, self.peer_id), create=False)
        self.reply_to = f"{reply_ring_prefix(cluster)}{os.getpid():x}.{secrets.token_hex(4)}"
        self._reply = Ring(self.reply_to, create=True, capacity=REPLY_CAPACITY)
        self._hdr = {k: ev.encode_header(k, 0, self.cluster_id) for k in (ev.KIND_PROPOSE, ev.KIND_READ)}
        self._reply_hdr = ev.encode_header(ev.KIND_REPLY, self.peer_id, self.cluster_id)
        self._thread = threading.Thread(target=self._dispatch, name=f"rsm-client-service-{self.peer_id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ gRPC glue
    def handler(self) -> Any:
        """The ``grpc.GenericRpcHandler`` to register on the peer's server."""
        import grpc

        return grpc.method_handlers_generic_handler(SERVICE, {
            "Propose": grpc.unary_unary_rpc_method_handler(self._rpc_propose),
            "Read": grpc.unary_unary_rpc_method_handler(self._rpc_read),
            "Status": grpc.unary_unary_rpc_method_handler(self._rpc_status),
        })

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

    # ------------------------------------------------------------------ the requests
    def _serve(self, request: bytes, context: Any, kind: int) -> bytes:
        if self._closed:
            self._refuse(context, "UNAVAILABLE", f"peer {self.peer_id} is stopping")
        if not isinstance(request, bytes):
            request = bytes(request)
        if len(request) > MAX_REQUEST_BYTES:
            self._refuse(context, "RESOURCE_EXHAUSTED",
                         f"a {len(request)}-byte request exceeds the limit of {MAX_REQUEST_BYTES} bytes")
        try:
            got_kind, _sender, cid = ev.decode_header(request)
            if got_kind != kind:
                raise ev.EnvelopeError(f"envelope of kind {got_kind} sent to the method for kind {kind}")
            if kind == ev.KIND_PROPOSE:
                _reply_to, reqs = ev.decode_propose(request)
            else:
                _reply_to, reqs = ev.decode_read(request)
        except ev.EnvelopeError as exc:
            self._refuse(context, "INVALID_ARGUMENT", f"malformed request: {exc}")
        if cid != self.cluster_id:
            self._refuse(context, "FAILED_PRECONDITION",
                         f"request for cluster id {cid:#x}; peer {self.peer_id} serves cluster {self.cluster!r} "
                         f"(id {self.cluster_id:#x})")
        if not reqs:
            return ev.encode_reply(self._reply_hdr, [])
        if not self._peer_alive():
            self._refuse(context, "UNAVAILABLE", f"peer {self.peer_id} is not running")
        call = _Call(len(reqs))
        with self._lock:
            base = self._next_rid
            self._next_rid += len(reqs)
            for i, r in enumerate(reqs):
                # PROPOSE: (op, rid, ...); READ: (rid, query).  A registration is answered
                # too (rid 0 to a local client), but the RPC does not wait for it.
                crid = r[1] if kind == ev.KIND_PROPOSE else r[0]
                call.rids[base + i] = crid
                self._waiters[base + i] = call
                if kind == ev.KIND_PROPOSE and r[0] == ev.OP_REGISTER:
                    call.silent.add(base + i)
                    call.left -= 1
        if kind == ev.KIND_PROPOSE:
            env = ev.encode_propose(self._hdr[kind], self.reply_to,
                                    [(op, base + i, s, q, a, d) for i, (op, _rid, s, q, a, d) in enumerate(reqs)])
        else:
            env = ev.encode_read(self._hdr[kind], self.reply_to, [(base + i, q) for i, (_rid, q) in enumerate(reqs)])
        try:
            try:
                with self._put_lock:
                    self._inbox.put(env, timeout=_PUT_TIMEOUT)
            except queue.Full:
                return self._answer_all(call, ev.RETRY, b"the peer's inbox is full")
            except RING_SHUTDOWN:
                self._refuse(context, "UNAVAILABLE", f"peer {self.peer_id} is stopping")
            if call.left > 0:
                remaining = context.time_remaining()
                wait = self.max_wait if remaining is None else max(0.0, min(self.max_wait, remaining - 0.05))
                end = time.monotonic() + wait
                while not call.done.wait(min(_LIVENESS_SLICE, max(0.0, end - time.monotonic()))):
                    if time.monotonic() >= end:
                        break
                    if not self._peer_alive():
                        # Hosted outside the peer (gateway): its peer died; the client
                        # goes elsewhere at once rather than after max_wait.
                        self._refuse(context, "UNAVAILABLE", f"peer {self.peer_id} is not running")
            with self._lock:
                results = list(call.results)
            # Within gRPC's message limit: answers left out are sent again by the client
            # (their results stay recorded in the session table until it acknowledges them).
            size, keep = 64, 0
            for _rid, _st, payload in results:
                size += 13 + len(payload)
                if size > _MAX_REPLY_BYTES:
                    break
                keep += 1
            return ev.encode_reply(self._reply_hdr, results[:keep])
        finally:
            with self._lock:
                for rid in call.rids:
                    self._waiters.pop(rid, None)

    def _peer_alive(self) -> bool:
        raw = self._status.load()  # type: ignore[no-untyped-call]
        if raw is None:
            return True   # never published yet, or mid-publication: assume alive
        if int(raw.pid) == self._pid:
            return True
        return _proc.process_alive(int(raw.pid), int(raw.start_time))

    def _answer_all(self, call: _Call, status: int, payload: bytes) -> bytes:
        return ev.encode_reply(self._reply_hdr, [(crid, status, payload) for crid in call.rids.values()])

    def _dispatch(self) -> None:
        reply = self._reply
        while True:
            try:
                data = reply.get(timeout=_SLICE)
            except queue.Empty:
                if self._closed:
                    return
                continue
            except RING_SHUTDOWN:
                return
            except ValueError:   # closed under us
                return
            try:
                items = ev.decode_reply(data)
            except ev.EnvelopeError:
                continue
            with self._lock:
                for rid, status, payload in items:
                    call = self._waiters.pop(rid, None)
                    if call is None:
                        continue   # an RPC that gave up already
                    call.results.append((call.rids[rid], status, payload))
                    if rid not in call.silent:
                        call.left -= 1
                    if call.left <= 0 or status == ev.NOT_LEADER:
                        # A "not the leader" answer ends the RPC at once: the client
                        # redirects; the other answers of the batch say the same.
                        call.done.set()

    # ------------------------------------------------------------------ status
    def addresses(self) -> Dict[int, str]:
        a = self._addresses() if callable(self._addresses) else self._addresses
        return {int(k): str(v) for k, v in dict(a or {}).items()}

    def status_json(self) -> str:
        st = self._status.read(peer_id=self.peer_id)
        return json.dumps({"schema": 1, "cluster": self.cluster, "cluster_id": self.cluster_id, "id": self.peer_id,
                           "time": time.time(), "status": st.as_dict(), "refused": self.refused,
                           "peers": {str(k): v for k, v in sorted(self.addresses().items())}})

    # ------------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the dispatcher, wake the waiting RPCs, remove the reply ring (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._thread.join(2 * _SLICE + 1)
        with self._lock:
            for call in self._waiters.values():
                call.done.set()
            self._waiters.clear()
        try:
            self._reply.unlink()
        finally:
            self._reply.close()
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
    clients holds the addresses this peer was started with (``--peer ID=HOST:PORT``; peers
    reached through local rings are left out: a client learns their addresses from them).
    The service closes (its reply ring removed) when the process exits."""
    import atexit

    spec = served.spec
    addresses = {int(pid): str(a) for pid, a in spec.peers.items() if ":" in str(a)}
    addresses[int(spec.id)] = served.server.address
    svc = ClientService(spec.name, spec.id, addresses, cluster_id=spec.cluster_id)
    served.client_service = svc
    atexit.register(svc.close)
    return [svc.handler()]
