"""Membership of served peers: addresses that travel with the conf changes, the Members
service, and :func:`add_peer` / :func:`remove_peer` for operators.

Addresses.  A conf change that adds a served peer carries its address in the change's
context (``{"address": "HOST:PORT"}``, as etcd carries peer URLs in its ConfChange
context), so every peer learns it from the replicated log when it applies the change:
it opens a stream to the new peer and accepts the new peer's streams.  A change that
removes a peer closes its stream and refuses it from then on.  Each peer keeps what it
learned in ``DATA/members.json`` (:class:`AddressBook`), so a restart knows the peers
that joined after its command line was written.  A peer that was removed stops by
itself once it applies its own removal or, when it does not learn of it, once another
peer's status shows it (see ``Membership._watch_removal``).

Joining.  A new peer starts with ``--join HOST:PORT,...`` (``Peer(join=[...])``): it asks
those peers for the members' addresses (the Status RPC), starts with no configuration
and waits to be admitted.  :func:`add_peer` (``rsm-shm cluster add-peer``) admits it the
way :meth:`LocalCluster.add_peer <rsm_shm.cluster.LocalCluster.add_peer>` does: as a
learner first, then -- once it applied everything the leader had committed when it was
added (it catches up from a snapshot) -- promoted to voter.

The Members service (``/rsm_shm.cluster.Members/Change``, JSON in and out) runs on every
served peer's gRPC server: it hands an ADMIN envelope to its own peer, which proposes
the change if it leads and otherwise answers with the leader's id.  With mutual TLS only
a certificate that names this cluster (a peer's or a client's identity, see
:mod:`rsm_shm.cluster.net.tls`) may change the membership.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import grpc

from ... import _proc
from ...raft.codec import decode_conf_change
from ...raft.types import ConfChangeType, ConfState, Entry
from ...ring import Ring
from .. import envelope as ev
from ..control import PEER_ABSENT, PEER_REMOVED, ControlBlock, set_slot
from ..layout import REPLY_CAPACITY, RING_SHUTDOWN, inbox_name, reply_ring_prefix
from ..status import MAX_PEER_ID
from .client_service import METHOD_STATUS
from .server import grpc_options, parse_address
from .tls import URI_SCHEME, TLSConfig, certificate_uris

__all__ = [
    "AddressBook",
    "MembersService",
    "address_context",
    "add_peer",
    "remove_peer",
    "fetch_addresses",
    "discover",
    "SERVICE",
    "METHOD_CHANGE",
]

log = logging.getLogger("rsm_shm.cluster.net")

SERVICE = "rsm_shm.cluster.Members"
METHOD_CHANGE = f"/{SERVICE}/Change"
MEMBERS_FILE = "members.json"
LOCAL = "local"
_OPS = {"add_learner": ev.ADMIN_ADD_LEARNER, "promote": ev.ADMIN_PROMOTE, "remove": ev.ADMIN_REMOVE}
_CHANGE_WAIT = 10.0  # seconds a Change RPC waits for its peer's answer (the change applied)
_POLL = 0.05


def address_context(address: str) -> bytes:
    """The conf change context that tells every peer where a joining peer listens."""
    return json.dumps({"address": address}, separators=(",", ":")).encode()


def _context_address(context: bytes) -> Optional[str]:
    if not context:
        return None
    try:
        addr = json.loads(context.decode()).get("address")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return addr if isinstance(addr, str) and (addr == LOCAL or ":" in addr) else None


def _members(cs: ConfState) -> Set[int]:
    return set(cs.voters) | set(cs.learners) | set(cs.voters_outgoing) | set(cs.learners_next)


class AddressBook:
    """Peer id -> ``"HOST:PORT"`` (or ``"local"``) of the other peers, persisted in
    ``DATA/members.json`` with the ids removed from the cluster.  Read by gRPC threads
    (which peer may open a stream), written by the peer's loop: a lock."""

    def __init__(self, data_dir: str, me: int) -> None:
        self._path = os.path.join(data_dir, MEMBERS_FILE)
        self._me = me
        self._lock = threading.Lock()
        self._addresses: Dict[int, str] = {}
        self._removed: Set[int] = set()
        try:
            with open(self._path) as f:
                doc = json.load(f)
            self._addresses = {int(k): str(v) for k, v in dict(doc.get("addresses") or {}).items()}
            self._removed = {int(i) for i in doc.get("removed") or ()}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{self._path} is not a members file of rsm_shm: {e}") from None
        self._addresses.pop(me, None)

    def merge(self, given: Mapping[int, str]) -> None:
        """Addresses given at start (command line, --join): they win over learned ones,
        except for peers that were removed from the cluster."""
        with self._lock:
            for pid, addr in given.items():
                if pid != self._me and pid not in self._removed:
                    self._addresses[int(pid)] = addr
        self._save()

    def ids(self) -> Set[int]:
        with self._lock:
            return set(self._addresses)

    def addresses(self) -> Dict[int, str]:
        with self._lock:
            return dict(self._addresses)

    def learned(self, pid: int, address: str) -> None:
        with self._lock:
            self._addresses[pid] = address
            self._removed.discard(pid)
        self._save()

    def removed(self, pid: int) -> None:
        with self._lock:
            self._addresses.pop(pid, None)
            self._removed.add(pid)
        self._save()

    def _save(self) -> None:
        with self._lock:
            doc = {
                "addresses": {str(k): v for k, v in sorted(self._addresses.items())},
                "removed": sorted(self._removed),
            }
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)


class Membership:
    """A served peer's side of membership changes: :meth:`on_conf_change` is the peer
    loop's ``on_conf_change`` hook (see :class:`rsm_shm.cluster.peer.Peer`)."""

    def __init__(self, served: Any, book: AddressBook) -> None:
        self._served = served
        self._book = book
        self._me = int(served.spec.id)
        self._warned: Set[int] = set()
        # Members whose address this peer does not know (it restored a snapshot that
        # already held their admission: the entry with the address is compacted away).
        # A thread asks the other peers for them.
        self._missing: Set[int] = set()
        self._missing_lock = threading.Lock()
        self._resolver: Optional[threading.Thread] = None
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch_removal, name="rsm-members-watch", daemon=True)
        self._watcher.start()

    def close(self, timeout: float = 5.0) -> None:
        self._closed.set()
        for thread in (self._resolver, self._watcher):
            if thread is not None and thread.is_alive():
                thread.join(timeout)

    def _watch_removal(self) -> None:
        """Stop this peer once another peer shows that it was removed.

        A removed follower seldom applies its own removal: the leader stops talking to
        it, so it never learns that the change committed.  When nothing reached it for
        three election timeouts, it asks the peers it knows for their status; one that
        applied at least as far as this peer, in a configuration without it, proves the
        removal (both applied the same log: the configuration that holds this peer at
        its applied index was followed by one that does not)."""
        served, me = self._served, self._me
        node = served.node
        quiet = max(1.0, 3 * node.timing.tick * node.timing.election_tick)
        while not self._closed.wait(quiet / 2):
            if time.monotonic_ns() - getattr(node, "_last_contact_ns", 0) < quiet * 1e9:
                continue
            applied, cs = node.applied, node.conf_state
            if me not in _members(cs):
                continue  # joining: not admitted yet
            for addr in sorted({a for a in self._book.addresses().values() if a != LOCAL}):
                try:
                    info = _status_of(addr, served.server.tls, served.spec.cluster_id)
                except (grpc.RpcError, ValueError, KeyError):
                    continue
                st = info.get("status") or {}
                members = _ids(st, "voters", "learners")
                if members and me not in members and int(st.get("applied") or 0) >= applied:
                    log.warning(
                        "peer %d was removed from the cluster (peer %s at %s applied index %s without it): stopping",
                        me,
                        info.get("id"),
                        addr,
                        st.get("applied"),
                    )
                    served.stop()
                    return

    def on_conf_change(self, entry: Optional[Entry], cs: ConfState) -> None:
        served, book, me = self._served, self._book, self._me
        if entry is not None:
            cc = decode_conf_change(entry.data)
            address = _context_address(cc.context)
            for kind, pid in cc.changes:
                if pid == me:
                    if kind == ConfChangeType.REMOVE_NODE:
                        log.warning("peer %d was removed from the cluster: stopping", me)
                        served.stop()
                    continue
                if kind in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER) and address is not None:
                    if book.addresses().get(pid) != address:
                        log.info("peer %d joins at %s", pid, address)
                        book.learned(pid, address)
                    self._address_changed(pid, address)
                elif kind == ConfChangeType.REMOVE_NODE:
                    log.info("peer %d left the cluster", pid)
                    book.removed(pid)
                    self._address_changed(pid, None)
        # Streams to every member whose address is known (a joining peer opens its
        # streams only now that it is admitted: before, the others would refuse them).
        known = book.addresses()
        for pid in sorted(_members(cs) - {me}):
            if pid in known:
                self._address_changed(pid, known[pid])
        missing = _members(cs) - set(known) - {me}
        if missing:
            with self._missing_lock:
                self._missing |= missing
            if self._resolver is None or not self._resolver.is_alive():
                self._resolver = threading.Thread(target=self._resolve, name="rsm-members", daemon=True)
                self._resolver.start()

    def _resolve(self) -> None:
        """Ask the peers this one knows for the addresses of the members it does not know
        (their Status answers map every peer they know), until it knows them all."""
        book, served = self._book, self._served
        while not self._closed.is_set():
            with self._missing_lock:
                want = self._missing - book.ids()
                self._missing = set(want)
            if not want:
                return
            for addr in sorted({a for a in book.addresses().values() if a != LOCAL}):
                try:
                    _c, _cid, found = fetch_addresses([addr], tls=served.server.tls, timeout=1.0)
                except (ConnectionError, ValueError):
                    continue
                for pid in sorted(want & set(found)):
                    log.info("peer %d is at %s (from the peer at %s)", pid, found[pid], addr)
                    book.learned(pid, found[pid])
                    if found[pid] != LOCAL:
                        served.transport.set_address(pid, found[pid])
                    want.discard(pid)
            for pid in sorted(want - self._warned):
                self._warned.add(pid)
                log.warning(
                    "peer %d is a member but no peer told its address yet: give it with --peer %d=HOST:PORT", pid, pid
                )
            self._closed.wait(1.0)

    def _address_changed(self, pid: int, address: Optional[str]) -> None:
        """Reach ``pid`` at ``address`` (None: it left the cluster), and show it in this
        host's control block (so ``rsm-shm cluster status/partition`` know the id)."""
        served = self._served
        transport = served.transport
        if transport is None:
            return
        if address is None or address == LOCAL:
            transport.forget(pid)  # a peer on this host is reached through its inbox ring
        else:
            transport.set_address(pid, address)
        ctl = served.ctl
        if ctl is None or ctl.closed or not 1 <= pid <= MAX_PEER_ID:
            return

        def mark(rec: Any) -> None:
            _st, p, s = ControlBlock.slots_of(rec).get(pid, (PEER_ABSENT, 0, 0))
            if address is None:
                if not (p and _proc.process_alive(p, s)):
                    set_slot(rec, pid, PEER_REMOVED)
            elif rec.peers[pid - 1].id == 0:
                set_slot(rec, pid, PEER_ABSENT)
                rec.next_peer_id = max(int(rec.next_peer_id), pid + 1)

        ctl.update(mark)


def discover(spec: Any, tls: Optional[TLSConfig]) -> Dict[int, str]:
    """The members' addresses as the peers named by ``--join`` know them; ValueError if
    they belong to another cluster (name or cluster id) than ``spec`` (a served Peer)."""
    cluster, cid, found = fetch_addresses(spec.join, tls=tls)
    if cluster != spec.name or cid != spec.cluster_id:
        raise ValueError(
            f"--join {','.join(spec.join)}: that is cluster {cluster!r} (cluster id {cid}), "
            f"not {spec.name!r} (cluster id {spec.cluster_id})"
        )
    log.info("joining %r: its peers are %s", spec.name, found)
    return found


# ---------------------------------------------------------------------------- the service
class MembersService:
    """The Members service of a served peer (see the module docstring)."""

    def __init__(
        self,
        cluster: str,
        peer_id: int,
        cluster_id: int,
        *,
        tls: bool,
        conf_state: Optional[Callable[[], ConfState]] = None,
    ) -> None:
        self.cluster = cluster
        self._conf_state = conf_state
        self.peer_id = peer_id
        self.cluster_id = cluster_id
        self._tls = tls
        self._pid = os.getpid()
        self._inbox = Ring(inbox_name(cluster, peer_id), create=False)
        self._put_lock = threading.Lock()
        self._hdr = ev.encode_header(ev.KIND_ADMIN, 0, cluster_id)
        self._closed = False

    def handler(self) -> "grpc.GenericRpcHandler":
        return grpc.method_handlers_generic_handler(
            SERVICE, {"Change": grpc.unary_unary_rpc_method_handler(self._change)}
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.close()

    def _change(self, request: bytes, context: "grpc.ServicerContext") -> bytes:
        if self._tls:
            ours = URI_SCHEME + self.cluster + "/"
            if not any(u.startswith(ours) for u in certificate_uris(context)):
                log.warning(
                    "refused a membership change from %s: its certificate names no identity of %r",
                    context.peer(),
                    self.cluster,
                )
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, f"the certificate names no identity of {self.cluster!r}"
                )
        try:
            req = json.loads(request.decode())
            op = _OPS[req["op"]]
            pid = int(req["id"])
            if not 1 <= pid <= MAX_PEER_ID:
                raise ValueError(f"peer id {pid} is not in 1..{MAX_PEER_ID}")
            address = req.get("address")
            if address is not None and address != LOCAL:
                parse_address(str(address))
            if op == ev.ADMIN_ADD_LEARNER and address is None:
                raise ValueError("add_learner needs the new peer's address")
        # OverflowError: an id of 1e400 (JSON's infinity); RecursionError: deeply nested JSON.
        except (
            ValueError,
            KeyError,
            TypeError,
            UnicodeDecodeError,
            AttributeError,
            OverflowError,
            RecursionError,
        ) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed membership change: {e!r}")
            raise AssertionError("unreachable") from None
        if self._closed:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"peer {self.peer_id} is stopping")
        if op == ev.ADMIN_ADD_LEARNER and self._conf_state is not None:
            cs = self._conf_state()
            if pid in set(cs.voters) | set(cs.voters_outgoing):
                # The core would make a voter a learner again (a demotion): never asked for.
                return _answer("error", message=f"peer {pid} is a voter already")
        ctx = address_context(address) if address is not None else b""
        ring = Ring(
            f"{reply_ring_prefix(self.cluster)}{self._pid:x}.{secrets.token_hex(4)}",
            create=True,
            capacity=REPLY_CAPACITY,
        )
        try:
            rid = secrets.randbits(62)
            env = ev.encode_admin(self._hdr, ring.name, rid, op, pid, ctx)
            try:
                with self._put_lock:
                    self._inbox.put(env, timeout=1.0)
            except (queue.Full, *RING_SHUTDOWN):
                return _answer("retry", message="the peer's inbox is full or closing")
            remaining = context.time_remaining()
            end = time.monotonic() + (
                _CHANGE_WAIT if remaining is None else max(0.0, min(_CHANGE_WAIT, remaining - 0.1))
            )
            while time.monotonic() < end:
                try:
                    data = ring.get(timeout=min(_POLL, max(0.0, end - time.monotonic())))
                except queue.Empty:
                    continue
                try:
                    replies = ev.decode_reply(data)
                except ev.EnvelopeError:
                    continue
                for r_id, status, payload in replies:
                    if r_id != rid:
                        continue
                    if status == ev.OK:
                        return _answer("ok")
                    if status == ev.NOT_LEADER:
                        (leader,) = ev.LEADER_HINT.unpack(payload[: ev.LEADER_HINT.size])
                        return _answer("not_leader", leader=int(leader))
                    if status == ev.RETRY:
                        return _answer("retry", message=payload.decode("utf-8", "replace"))
                    return _answer("error", message=payload.decode("utf-8", "replace"))
            return _answer("retry", message="no answer yet from the peer (the change may still be applied)")
        finally:
            ring.unlink()
            ring.close()


def _answer(status: str, **kw: Any) -> bytes:
    return json.dumps(dict(kw, status=status)).encode()


# ---------------------------------------------------------------------------- operators
class _Peers:
    """Channels to a served cluster's peers for the membership operations."""

    def __init__(self, addresses: Sequence[str], tls: Optional[TLSConfig], server_name: Optional[str] = None) -> None:
        for a in addresses:
            parse_address(a)
        if not addresses:
            raise ValueError("give at least one HOST:PORT of a peer of the cluster")
        self._given = list(addresses)
        self._creds = tls.channel_credentials() if tls is not None else None
        self._options: List[Tuple[str, Any]] = list(grpc_options())
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._channels: Dict[str, Any] = {}
        self.addresses: Dict[int, str] = {}

    def channel(self, address: str) -> Any:
        ch = self._channels.get(address)
        if ch is None:
            opts = self._options
            ch = (
                grpc.secure_channel(address, self._creds, options=opts)
                if self._creds is not None
                else grpc.insecure_channel(address, options=opts)
            )
            self._channels[address] = ch
        return ch

    def status(self, address: str, timeout: float = 2.0) -> Dict[str, Any]:
        info: Dict[str, Any] = json.loads(self.channel(address).unary_unary(METHOD_STATUS)(b"", timeout=timeout))
        for k, v in dict(info.get("peers") or {}).items():
            self.addresses.setdefault(int(k), str(v))
        return info

    def leader(self, deadline: float) -> Tuple[int, str, Dict[str, Any]]:
        """(leader id, its address, its status answer), asking the given addresses and
        then every peer they name."""
        last = "no peer answered"
        while True:
            for addr in list(dict.fromkeys(self._given + list(self.addresses.values()))):
                if addr == LOCAL:
                    continue
                try:
                    info = self.status(addr)
                except (grpc.RpcError, ValueError) as e:
                    last = f"{addr}: {e.code().name if isinstance(e, grpc.Call) else e}"
                    continue
                st = info.get("status") or {}
                if st.get("role") == "leader":
                    return int(info["id"]), addr, info
                last = f"{addr} (peer {info.get('id')}) does not lead; leader {st.get('leader') or 'unknown'}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no leader found: {last}")
            time.sleep(0.1)

    def change(
        self, op: str, pid: int, address: Optional[str], deadline: float, done: Callable[[Dict[str, Any]], bool]
    ) -> None:
        """Have the leader make the change, unless (or until) ``done(leader status)``:
        a change resent after an unanswered call, or run again after a timeout, may have
        been made already."""
        req = json.dumps({"op": op, "id": pid, "address": address}).encode()
        _lid, target, info = self.leader(deadline)
        while True:
            if done(info.get("status") or {}):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"membership change {op} {pid}: no answer in time (it may still be applied)")
            try:
                ans = json.loads(
                    self.channel(target).unary_unary(METHOD_CHANGE)(req, timeout=min(left, _CHANGE_WAIT + 1))
                )
            except grpc.RpcError as e:
                code = e.code() if isinstance(e, grpc.Call) else None
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    raise PermissionError(f"{target} refused {op} {pid}: {e.details()}") from None
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(f"{target} refused {op} {pid}: {e.details()}") from None
                ans = {"status": "retry", "message": str(code)}
            status = ans.get("status")
            if status == "ok":
                return
            if status == "error":
                _lid, target, info = self.leader(deadline)
                if done(info.get("status") or {}):
                    return
                raise ValueError(f"membership change {op} {pid} refused: {ans.get('message')}")
            time.sleep(0.1)
            _lid, target, info = self.leader(deadline)

    def wait(self, cond: Any, deadline: float, what: str) -> None:
        while True:
            try:
                if cond():
                    return
            except (grpc.RpcError, ValueError, KeyError):
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(_POLL * 2)

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


def _status_of(address: str, tls: Optional[TLSConfig], cluster_id: int) -> Dict[str, Any]:
    """The Status answer of the peer at ``address`` (ValueError: another cluster's)."""
    peers = _Peers([address], tls)
    try:
        info = peers.status(address, timeout=1.0)
    finally:
        peers.close()
    if int(info.get("cluster_id") or 0) != cluster_id:
        raise ValueError(f"{address} serves another cluster")
    return info


def _ids(status: Dict[str, Any], *keys: str) -> Set[int]:
    return {int(i) for k in keys for i in status.get(k) or ()}


def fetch_addresses(
    addresses: Sequence[str], *, tls: Optional[TLSConfig] = None, timeout: float = 10.0
) -> Tuple[str, int, Dict[int, str]]:
    """(cluster name, cluster id, {peer id: address}) as the first of the peers at
    ``addresses`` that answers knows them (what ``--join`` starts from)."""
    peers = _Peers(addresses, tls)
    deadline = time.monotonic() + timeout
    errors: List[str] = []
    try:
        while True:
            for addr in addresses:
                try:
                    info = peers.status(addr)
                except (grpc.RpcError, ValueError) as e:
                    errors.append(f"{addr}: {e.code().name if isinstance(e, grpc.Call) else e}")
                    continue
                found = {int(k): str(v) for k, v in dict(info.get("peers") or {}).items()}
                return str(info.get("cluster")), int(info.get("cluster_id") or 0), found
            if time.monotonic() >= deadline:
                raise ConnectionError(f"no peer to join answered: {'; '.join(errors[-len(addresses) :])}")
            time.sleep(0.2)
    finally:
        peers.close()


def add_peer(
    addresses: Sequence[str],
    peer_id: int,
    address: str,
    *,
    tls: Optional[TLSConfig] = None,
    timeout: float = 60.0,
    server_name: Optional[str] = None,
) -> None:
    """Admit the served peer ``peer_id`` listening at ``address`` (started with ``--join``)
    into the cluster whose peers listen at ``addresses``: as a learner, then, once it
    applied everything the leader had committed when it was added, as a voter.  Returns
    when the leader counts it among the voters; TimeoutError otherwise (it may be a
    learner by then: run it again -- a step already made is skipped)."""
    parse_address(address)
    deadline = time.monotonic() + timeout
    peers = _Peers(addresses, tls, server_name)
    try:
        peers.change("add_learner", peer_id, address, deadline, lambda st: peer_id in _ids(st, "voters", "learners"))
        _lid, laddr, info = peers.leader(deadline)
        target = int((info.get("status") or {}).get("commit") or 0)
        peers.wait(
            lambda: int((peers.status(address).get("status") or {}).get("applied") or 0) >= target,
            deadline,
            f"peer {peer_id} at {address} to catch up to index {target}",
        )
        peers.change("promote", peer_id, address, deadline, lambda st: peer_id in _ids(st, "voters"))
        peers.wait(
            lambda: peer_id in _ids(peers.leader(deadline)[2].get("status") or {}, "voters"),
            deadline,
            f"peer {peer_id} to be a voter",
        )
    finally:
        peers.close()


def remove_peer(
    addresses: Sequence[str],
    peer_id: int,
    *,
    tls: Optional[TLSConfig] = None,
    timeout: float = 30.0,
    server_name: Optional[str] = None,
) -> None:
    """Remove ``peer_id`` from the cluster whose peers listen at ``addresses``; returns once
    a leader other than it no longer counts it.  The removed peer stops by itself (see
    the module docstring)."""
    deadline = time.monotonic() + timeout
    peers = _Peers(addresses, tls, server_name)
    try:
        peers.change("remove", peer_id, None, deadline, lambda st: peer_id not in _ids(st, "voters", "learners"))

        def gone() -> bool:
            lid, _addr, info = peers.leader(deadline)
            st = info.get("status") or {}
            return lid != peer_id and peer_id not in list(st.get("voters", ())) + list(st.get("learners", ()))

        peers.wait(gone, deadline, f"peer {peer_id} to leave the configuration")
    finally:
        peers.close()
