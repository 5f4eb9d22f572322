"""A client of a cluster whose peers serve the network: ``Client.connect(["host:port", ...])``.

:class:`RemoteClient` has the contract of :class:`rsm_shm.cluster.Client` --
``propose`` / ``propose_many`` (exactly once), ``read`` (linearizable), ``close``, a
context manager -- but talks gRPC to the peers' client service
(:mod:`rsm_shm.cluster.net.client_service`) instead of shared memory.

Finding the leader.  On connect the client asks the given addresses for their status
until one answers; the answer names the cluster (its id goes into every request, so a
peer of another cluster refuses it) and maps every peer id to its address.  Requests go
to the peer believed to lead; a "not the leader" answer carries the leader's id, and the
client goes there.  A peer that cannot be reached (killed: the connection is reset at
once; a host gone: after the call's timeout) is skipped and the next one is tried.  A
leader that stops answering without closing its connections (paused, cut off) is noticed
by asking the other peers for their status while the answer is late (after 0.3 s, then
every 0.1 s): once one of them says it leads, the request goes there.

Exactly once.  Every command carries ``(session, seq)`` as with a local client; a
resend -- to the same peer after an unanswered call, or to a new leader -- reuses them,
and the replicated session table returns the recorded result instead of applying the
command twice.  ``TimeoutError`` only when the outcome is unknown after the whole
``timeout``.

Refusals that no retry can fix raise at once: ``ConnectionRefusedError`` for a peer
that refused the client's certificate or a plaintext client (TLS), ``ValueError`` for a
request the peer judged malformed or too large, ``ConnectionError`` for a request of
another cluster.

Needs grpcio (``pip install rsm_shm[net]``).  One client serializes its calls (a lock),
like the local client: use one per thread for parallelism, or ``propose_many``.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .. import envelope as ev
from ..client import _SessionClient
from ..status import PeerStatus
from .client_service import METHOD_PROPOSE, METHOD_READ, METHOD_STATUS
from .server import grpc_options
from .tls import TLSConfig

import grpc  # noqa: E402  (rsm_shm.cluster.net already said "pip install rsm_shm[net]" if missing)

__all__ = ["RemoteClient", "fetch_statuses", "peer_status_from_dict"]

_CALL_TIMEOUT = 3.0  # longer than the service's MAX_WAIT: an unanswered call returns before it
_PROBE_AFTER = 0.3  # an answer this late: ask the other peers whether one of them leads now
_PROBE_EVERY = 0.1
_SMALL_REQUEST = 64 << 10  # requests up to this size are sent with a blocking call first
_PROBE_TIMEOUT = 0.2
_NO_LEADER_PAUSE = 0.005  # between rounds over every peer while none leads
_RETRY_PAUSE = 0.005
_CHANNEL_OPTIONS = grpc_options() + [
    # A restarted peer is reached again within a fraction of a second (the default
    # backoff starts at 1 s and grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]
# Refusals that no retry can fix.
_FATAL = {
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "INVALID_ARGUMENT",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "UNIMPLEMENTED",
}
_TLS_HINTS = ("ssl", "tls", "handshake", "certificate", "Socket closed", "connection reset")


def _check_address(a: object) -> str:
    if not isinstance(a, str):
        raise TypeError(f"a peer address is a 'host:port' string, not {type(a).__name__}")
    host, sep, port = a.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a peer address is 'host:port', not {a!r}")
    return a


class RemoteClient(_SessionClient):
    """``Client.connect(addresses, tls=None, timeout=5.0)``: see the module docstring.

    ``tls``: a :class:`~rsm_shm.cluster.net.tls.TLSConfig` (this client's certificate
    and key, and the cluster's CA) for peers that serve mutual TLS; ``server_name``: the
    name to check the peers' certificates against when it is not the dialed host.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        tls: Optional[TLSConfig] = None,
        timeout: float = 5.0,
        server_name: Optional[str] = None,
    ) -> None:
        self._closed = True
        if isinstance(addresses, str):
            addresses = [addresses]
        addrs = [_check_address(a) for a in addresses]
        if not addrs:
            raise ValueError("Client.connect needs at least one 'host:port' address")
        if tls is not None and not isinstance(tls, TLSConfig):
            raise TypeError(f"tls must be a rsm_shm.cluster.net.tls.TLSConfig or None, not {type(tls).__name__}")
        timeout = self._check_timeout(timeout)
        self._server_name = server_name
        self._tls = tls
        self._creds = tls.channel_credentials() if tls is not None else None
        self._channels: Dict[str, Tuple[Any, Any, Any, Any]] = {}
        self._order: List[str] = list(dict.fromkeys(addrs))  # the order to try peers in
        self._by_id: Dict[int, str] = {}
        self._leader_addr: Optional[str] = None
        self._closed = False
        try:
            info = self._first_status(timeout)
        except BaseException:
            self.close()
            raise
        self.name = str(info["cluster"])
        self._init_session(int(info["cluster_id"]), "", random_rids=True)

    # ------------------------------------------------------------------ connection
    def _stubs(self, addr: str) -> Tuple[Any, Any, Any, Any]:
        got = self._channels.get(addr)
        if got is None:
            options: List[Tuple[str, Any]] = list(_CHANNEL_OPTIONS)
            if self._creds is not None:
                if self._server_name:
                    options.append(("grpc.ssl_target_name_override", self._server_name))
                ch = grpc.secure_channel(addr, self._creds, options=options)
            else:
                ch = grpc.insecure_channel(addr, options=options)
            got = self._channels[addr] = (
                ch,
                ch.unary_unary(METHOD_PROPOSE),
                ch.unary_unary(METHOD_READ),
                ch.unary_unary(METHOD_STATUS),
            )
        return got

    def _learn(self, addr: str, info: Dict[str, Any]) -> None:
        """Remember the peer map a status answer carries (the address we dialed wins for
        the peer that answered: its own view of its address may be a wildcard)."""
        me = int(info["id"])
        for k, v in info.get("peers", {}).items():
            pid = int(k)
            if pid != me and pid not in self._by_id and isinstance(v, str):
                self._by_id[pid] = v
                if v not in self._order:
                    self._order.append(v)
        self._by_id[me] = addr
        st = info.get("status") or {}
        if st.get("role") == "leader":
            self._leader_addr = addr
        elif st.get("leader") and int(st["leader"]) in self._by_id and self._leader_addr is None:
            self._leader_addr = self._by_id[int(st["leader"])]

    def _first_status(self, timeout: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        errors: Dict[str, str] = {}
        while True:
            for addr in list(self._order):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    raw = self._stubs(addr)[3](b"", timeout=min(left, _CALL_TIMEOUT))
                    info = json.loads(raw)
                except grpc.RpcError as exc:
                    errors[addr] = _describe(exc)
                    continue
                except ValueError as exc:
                    errors[addr] = f"not an rsm_shm peer ({exc})"
                    continue
                self._learn(addr, info)
                return dict(info)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        detail = "; ".join(f"{a}: {e}" for a, e in errors.items())
        if errors and all(_looks_like_tls(e) for e in errors.values()):
            raise ConnectionRefusedError(f"every peer refused the connection (TLS?): {detail}")
        raise ConnectionError(f"no rsm_shm peer answered at {', '.join(self._order)} within {timeout} s: {detail}")

    def peers(self) -> Dict[int, str]:
        """The peer id -> address map as this client knows it."""
        return dict(self._by_id)

    def add_peer(self, peer_id: int, address: str, timeout: float = 60.0) -> None:
        """Admit the served peer ``peer_id`` listening at ``address`` (started with
        ``--join``): a learner, caught up, then a voter.  See
        :func:`rsm_shm.cluster.net.members.add_peer`."""
        from .members import add_peer

        self._check_open()
        add_peer(
            self._admin_addresses(), peer_id, address, tls=self._tls, timeout=timeout, server_name=self._server_name
        )

    def remove_peer(self, peer_id: int, timeout: float = 30.0) -> None:
        """Remove ``peer_id`` from the cluster (:func:`rsm_shm.cluster.net.members.remove_peer`)."""
        from .members import remove_peer

        self._check_open()
        remove_peer(self._admin_addresses(), peer_id, tls=self._tls, timeout=timeout, server_name=self._server_name)

    def _admin_addresses(self) -> List[str]:
        return list(dict.fromkeys(list(self._by_id.values()) + self._order))

    def leader(self) -> Optional[int]:
        """The peer this client believes leads (None: unknown), without a round trip."""
        for pid, a in self._by_id.items():
            if a == self._leader_addr:
                return pid
        return None

    def status(self, timeout: float = 2.0) -> List[Dict[str, Any]]:
        """Every reachable peer's status answer (dicts as the Status RPC sends them)."""
        self._check_open()
        out = []
        for addr in list(self._order):
            try:
                info = json.loads(self._stubs(addr)[3](b"", timeout=timeout))
            except (grpc.RpcError, ValueError):
                continue
            self._learn(addr, info)
            out.append(info)
        return out

    # ------------------------------------------------------------------ the exchange
    def _next_after(self, addr: Optional[str]) -> str:
        order = self._order
        if addr not in order:
            return order[0]
        return order[(order.index(addr) + 1) % len(order)]

    def _exchange(
        self, build: Callable[[Set[int]], List[bytes]], rids: Set[int], deadline: float
    ) -> Dict[int, Tuple[int, bytes]]:
        done: Dict[int, Tuple[int, bytes]] = {}
        waiting = set(rids)
        target = self._leader_addr or self._order[0]
        misses = 0  # peers tried in a row that could not take the request
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._leader_addr = None
                raise TimeoutError(
                    f"cluster {self.name!r}: no answer within the timeout (outcome unknown; {len(waiting)} pending)"
                )
            redirect: Optional[str] = None
            move_on = retry = False
            for env in build(waiting):
                kind = env[3]
                stub = self._stubs(target)[1 if kind == ev.KIND_PROPOSE else 2]
                try:
                    resp, elsewhere = self._call(stub, env, target, deadline)
                except grpc.RpcError as exc:
                    self._raise_if_fatal(exc, target)
                    move_on = True  # unreachable or gone: try the next peer
                    break
                if elsewhere is not None:
                    redirect = elsewhere  # another peer leads now; the target is paused or cut off
                    break
                try:
                    items = ev.decode_reply(resp) if ev.decode_header(resp)[0] == ev.KIND_REPLY else ()
                except ev.EnvelopeError:
                    items = ()
                for rid, status, payload in items:
                    if rid not in waiting:
                        continue
                    if status == ev.NOT_LEADER:
                        hint = ev.LEADER_HINT.unpack(payload)[0] if len(payload) == 4 else 0
                        addr = self._by_id.get(hint) if hint else None
                        if addr is None and hint:
                            self.status()  # a peer we have not heard of: refresh the map
                            addr = self._by_id.get(hint)
                        if addr is not None and addr != target:
                            redirect = addr
                        else:
                            move_on = True
                    elif status == ev.RETRY:
                        retry = True
                    else:
                        waiting.discard(rid)
                        done[rid] = (status, payload)
                if redirect or move_on:
                    break
            if not waiting:
                self._leader_addr = target
                return done
            if redirect is not None:
                target = redirect
                misses = 0
            elif move_on:
                self._leader_addr = None
                target = self._next_after(target)
                misses += 1
                if misses >= len(self._order):
                    # Nobody leads right now (an election is running): pause, go round again.
                    misses = 0
                    time.sleep(_NO_LEADER_PAUSE)
            elif retry:
                time.sleep(_RETRY_PAUSE)
            else:
                # Unanswered within the service's wait: the peer may be cut off or paused
                # without knowing it lost the lead.  Ask the next one (it redirects back
                # if this one still leads); the resend keeps the sequence numbers.
                self._leader_addr = None
                target = self._next_after(target)

    def _call(self, stub: Any, env: bytes, target: str, deadline: float) -> Tuple[bytes, Optional[str]]:
        """One RPC to ``target``: (its answer, None), or (b"", address) when, while the
        answer was slow to come, another peer said it leads (a paused or cut-off leader
        does not know it was deposed and keeps the call open: the local client sees that
        in the status records; here the other peers are asked)."""
        left = deadline - time.monotonic()
        if len(env) <= _SMALL_REQUEST and left > _PROBE_AFTER:
            # A blocking call drives the RPC in this thread (a future hands it to another
            # one: 0.1-0.4 ms more per call).  Past _PROBE_AFTER it is cancelled and sent
            # again below, with the probes (same ids and sequence numbers: still exactly once).
            try:
                return stub(env, timeout=_PROBE_AFTER), None
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
            better = self._probe_now(target)
            if better is not None:
                return b"", better
        fut = stub.future(env, timeout=max(0.001, min(deadline - time.monotonic(), _CALL_TIMEOUT)))
        wait = _PROBE_EVERY
        probes: Dict[str, Any] = {}  # address -> Status call in flight (never waited on)
        try:
            while True:
                try:
                    return fut.result(timeout=wait), None
                except grpc.FutureTimeoutError:
                    pass
                wait = _PROBE_EVERY
                for addr, probe in list(probes.items()):
                    if not probe.done():
                        continue
                    del probes[addr]
                    try:
                        info = json.loads(probe.result())
                    except (grpc.RpcError, ValueError):
                        continue
                    st = info.get("status") or {}
                    if st.get("role") == "leader" and st.get("alive"):
                        self._learn(addr, info)
                        fut.cancel()
                        return b"", addr
                for addr in self._order:
                    if addr != target and addr not in probes:
                        probes[addr] = self._stubs(addr)[3].future(b"", timeout=_PROBE_TIMEOUT)
        finally:
            for probe in probes.values():
                probe.cancel()

    def _probe_now(self, target: str) -> Optional[str]:
        """Ask every other peer at once whether it leads (bounded by _PROBE_TIMEOUT)."""
        probes = [
            (addr, self._stubs(addr)[3].future(b"", timeout=_PROBE_TIMEOUT)) for addr in self._order if addr != target
        ]
        for addr, probe in probes:
            try:
                info = json.loads(probe.result())
            except (grpc.RpcError, ValueError):
                continue
            st = info.get("status") or {}
            if st.get("role") == "leader" and st.get("alive"):
                self._learn(addr, info)
                return addr
        return None

    def _raise_if_fatal(self, exc: Any, target: str) -> None:
        code = exc.code().name if exc.code() is not None else ""
        if code in _FATAL:
            msg = f"peer {target} refused the request: {exc.details()}"
            if code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"):
                raise ValueError(msg) from None
            if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                raise ConnectionRefusedError(msg) from None
            raise ConnectionError(msg) from None

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close every channel (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for ch, *_stubs in self._channels.values():
            ch.close()
        self._channels.clear()

    def __enter__(self) -> "RemoteClient":
        return self

    def __repr__(self) -> str:
        name = getattr(self, "name", "?")
        state = "closed" if self._closed else f"leader={self._leader_addr}"
        return f"<rsm_shm.cluster.Client.connect {name!r} {state}>"


def _describe(exc: Any) -> str:
    try:
        return f"{exc.code().name}: {exc.details()}"
    except Exception:
        return repr(exc)


def _looks_like_tls(text: str) -> bool:
    low = text.lower()
    return any(h.lower() in low for h in _TLS_HINTS)


def peer_status_from_dict(d: Dict[str, Any]) -> PeerStatus:
    """A :class:`PeerStatus` from the ``status`` object of a Status answer (unknown keys
    are ignored: a newer peer may send more)."""
    names = {f.name for f in fields(PeerStatus)}
    kw = {k: v for k, v in d.items() if k in names}
    kw["match"] = {int(k): int(v) for k, v in dict(kw.get("match") or {}).items()}
    kw["voters"] = tuple(kw.get("voters") or ())
    kw["learners"] = tuple(kw.get("learners") or ())
    return PeerStatus(**kw)


def fetch_statuses(
    addresses: Sequence[str],
    *,
    tls: Optional[TLSConfig] = None,
    timeout: float = 2.0,
    server_name: Optional[str] = None,
) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, str]]:
    """Ask every peer at ``addresses`` -- and every peer their answers name -- for its
    status.  Returns ({address: Status answer}, {address: why it did not answer})."""
    for a in addresses:
        _check_address(a)
    creds = tls.channel_credentials() if tls is not None else None
    options: List[Tuple[str, Any]] = list(_CHANNEL_OPTIONS)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    todo = list(dict.fromkeys(addresses))
    answers: Dict[str, Dict[str, Any]] = {}
    errors: Dict[str, str] = {}
    ids_seen: Set[int] = set()
    while todo:
        addr = todo.pop(0)
        if addr in answers or addr in errors:
            continue
        ch = (
            grpc.secure_channel(addr, creds, options=options) if creds else grpc.insecure_channel(addr, options=options)
        )
        try:
            info = json.loads(ch.unary_unary(METHOD_STATUS)(b"", timeout=timeout))
        except grpc.RpcError as exc:
            errors[addr] = _describe(exc)
            continue
        except ValueError as exc:
            errors[addr] = f"not an rsm_shm peer ({exc})"
            continue
        finally:
            ch.close()
        answers[addr] = info
        ids_seen.add(int(info.get("id", 0)))
        for pid, other in sorted((info.get("peers") or {}).items()):
            if int(pid) not in ids_seen and isinstance(other, str) and other not in answers:
                todo.append(other)
    # A peer reached under two addresses (the one given and the one its peers know) once.
    by_id: Dict[int, str] = {}
    for addr, info in list(answers.items()):
        pid = int(info.get("id", 0))
        if pid in by_id:
            del answers[addr]
        else:
            by_id[pid] = addr
    return answers, errors
