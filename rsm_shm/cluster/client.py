"""Clients of a running cluster: :class:`Client` (bytes) and :class:`KVClient` (a KVStore).

A client opens a cluster by name from any process on the machine.  It owns one reply
ring (``<cluster>.c<pid>.<random>``) that the peers answer into, and sends its requests
straight into the leader's inbox ring.  It finds the leader by reading the peers'
status records in shared memory (no round trip), remembers it, and follows leader
changes by itself: on a "not the leader" answer (with the new leader's id as a hint),
when the leader's status record shows it dead or deposed, or when no answer came for a
while (the request may have been dropped), it sends again.

Exactly once: every command carries ``(session, seq)``; a resend reuses them, and the
replicated session table returns the recorded result instead of applying the command a
second time, even when the leader died after committing it and before answering.  The
session is registered with the first command.

Outcomes of :meth:`Client.propose`: the state machine's result (bytes);
:class:`~rsm_shm.cluster.statemachine.CommandError` if the state machine raised (the
command counts as applied, identically everywhere); ``TimeoutError`` if no answer came
within ``timeout`` -- the **only** case where the outcome is unknown (the command may
or may not be applied, now or later); :class:`SessionExpiredError` if the session was
evicted (more than ``max_sessions`` clients), also an unknown outcome.

:meth:`Client.read` is linearizable: the leader serves it with ReadIndex (it confirms
its leadership with a heartbeat round, then waits until it applied the commit index it
had when the read arrived), so a read sees every write acknowledged before it started.

A client is not meant to be shared between threads at the same time (calls are
serialized by a lock); use one client per thread for parallelism, or
:meth:`Client.propose_many` to pipeline.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import threading
import time
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

from .. import _proc
from ..ring import Ring
from . import envelope as ev
from .control import PEER_ABSENT, PEER_REMOVED, ControlBlock
from .layout import MAX_COMMAND_BYTES, REPLY_CAPACITY, RING_SHUTDOWN, inbox_name, reply_ring_prefix
from .statemachine import MAX_RESULTS_PER_SESSION, CommandError
from .status import ROLE_LEADER, RawStatus, StatusRecord, status_segment_name

if TYPE_CHECKING:
    from .net.tls import TLSConfig

#: A command's or a query's outcome as a peer answered: (status, payload).
Outcome = Tuple[int, bytes]
#: Builds the envelopes to send for the request ids still waiting.
Build = Callable[[Set[int]], List[bytes]]
_C = TypeVar("_C", bound="_SessionClient")

__all__ = ["Client", "KVClient", "SessionExpiredError", "CommandError"]

_SLICE = 0.02  # between checks of the target's status while waiting
# A live leader loses no request it took (a deposed one answers "not the leader"), so
# resending to the same leader is only a last resort; a full inbox is retried soon.
_RESEND_AFTER = 3.0
_SEND_BACKOFF = 0.005
_ENVELOPE_BYTES = 1 << 20  # a pipelined batch travels in envelopes of about this size
_REQ_OVERHEAD = 37  # bytes a request adds to its command in an envelope
_NO_LEADER_POLL = 0.002
_READ_RID = 1 << 63  # read and admin request ids live above this; commands use seq


class SessionExpiredError(RuntimeError):
    """The cluster forgot this client's session (evicted: too many clients); the outcome
    of the command in flight is unknown."""


class _SessionClient:
    """What every client shares, whatever carries its envelopes: the exactly-once
    session (``(session, seq)``, registration, ``acked``), the argument checks, and the
    outcomes.  A subclass provides ``_exchange(build, rids, deadline)`` (send the
    envelopes ``build(waiting)`` makes until every request id is answered) and ``close``."""

    name: str
    _closed: bool

    def _init_session(self, cluster_id: int, reply_to: str, *, random_rids: bool = False) -> None:
        """``random_rids``: request ids start at a random offset (a command's id is the
        offset plus its sequence number), so that requests of different clients never
        share an id where one reply ring serves many clients (the network service)."""
        self._lock = threading.Lock()
        self._cluster_id = cluster_id
        self.reply_to = reply_to
        self._session = int.from_bytes(secrets.token_bytes(8), "little") or 1
        self._registered = False
        self._seq = 0
        self._acked = 0  # every result up to here is received or given up
        self._next_rid = _READ_RID
        self._rid_base = 0
        if random_rids:
            self._rid_base = int.from_bytes(secrets.token_bytes(8), "little") >> 3  # commands: base + seq < 2**62
            self._next_rid = _READ_RID + (int.from_bytes(secrets.token_bytes(8), "little") >> 2)
        self._hdr = {k: ev.encode_header(k, 0, cluster_id) for k in (ev.KIND_PROPOSE, ev.KIND_READ, ev.KIND_ADMIN)}

    # ------------------------------------------------------------------ public API
    def propose(self, command: bytes, timeout: float = 5.0) -> bytes:
        """Replicate ``command``; return the state machine's result once it is committed
        and applied.  Exactly once, even across leader changes and resends."""
        return self.propose_many([command], timeout)[0]

    def propose_many(self, commands: Sequence[bytes], timeout: float = 5.0) -> List[bytes]:
        """Pipeline several commands (applied in this order, each exactly once); return
        their results in order.  Raises as :meth:`propose` for the first command that
        failed; ``TimeoutError`` if not all were answered within ``timeout``."""
        cmds: List[bytes] = list(commands)
        if len(cmds) < _MANY or not _BYTES_ONLY.issuperset(map(type, cmds)):
            cmds = [self._check_bytes(c, "command") for c in cmds]
        if len(cmds) > MAX_RESULTS_PER_SESSION:
            raise ValueError(f"at most {MAX_RESULTS_PER_SESSION} commands per propose_many call, not {len(cmds)}")
        for c in cmds if len(cmds) < _MANY or max(map(len, cmds)) > MAX_COMMAND_BYTES else ():
            if len(c) > MAX_COMMAND_BYTES:
                raise ValueError(f"a {len(c)}-byte command exceeds the limit of {MAX_COMMAND_BYTES} bytes")
        with self._lock:
            self._check_open()
            deadline = time.monotonic() + self._check_timeout(timeout)
            first = self._seq + 1
            self._seq += len(cmds)
            try:
                results = self._run_proposals(cmds, first, deadline)
            finally:
                # Whatever happened, these sequence numbers are settled for us: answered
                # or given up (a late application can no longer be reported to anyone).
                self._acked = self._seq
            if len(results) >= _MANY:
                statuses = set(map(_first, results))
                if statuses == _ALL_OK:
                    return list(map(_second, results))
                expired = ev.SESSION_EXPIRED in statuses
            else:
                expired = any(status == ev.SESSION_EXPIRED for status, _p in results)
            if expired:
                # The cluster forgot this session: start a new one for the next call.
                self._session = int.from_bytes(secrets.token_bytes(8), "little") or 1
                self._registered = False
                self._seq = self._acked = 0
            return [self._outcome(status, payload) for status, payload in results]

    def read(self, query: bytes, timeout: float = 5.0) -> bytes:
        """Answer ``query`` from a state that includes every write acknowledged before
        this call (linearizable: ReadIndex at the leader)."""
        q = self._check_bytes(query, "query")
        with self._lock:
            self._check_open()
            deadline = time.monotonic() + self._check_timeout(timeout)
            rid = self._new_rid()
            res = self._exchange(
                lambda waiting: [ev.encode_read(self._hdr[ev.KIND_READ], self.reply_to, [(rid, q)])], {rid}, deadline
            )
            return self._outcome(*res[rid])

    def close(self) -> None:
        raise NotImplementedError

    def _exchange(self, build: Build, rids: Set[int], deadline: float) -> Dict[int, Outcome]:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"client of cluster {self.name!r} is closed")

    @staticmethod
    def _check_bytes(b: object, what: str) -> bytes:
        if isinstance(b, (bytearray, memoryview)):
            return bytes(b)
        if not isinstance(b, bytes):
            raise TypeError(f"{what} must be bytes, not {type(b).__name__}")
        return b

    @staticmethod
    def _check_timeout(timeout: object) -> float:
        if timeout is None or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"timeout must be a non-negative number of seconds, not {timeout!r}")
        return float(timeout)

    def _new_rid(self) -> int:
        self._next_rid += 1
        return self._next_rid

    @staticmethod
    def _outcome(status: int, payload: bytes) -> bytes:
        if status == ev.OK:
            return payload
        if status == ev.ERROR:
            raise CommandError(payload.decode("utf-8", "replace"))
        if status == ev.SESSION_EXPIRED:
            raise SessionExpiredError(payload.decode("utf-8", "replace"))
        if status == ev.BAD_REQUEST:
            raise ValueError(payload.decode("utf-8", "replace"))
        raise RuntimeError(f"unexpected reply status {status}: {payload!r}")

    def _run_proposals(self, cmds: List[bytes], first: int, deadline: float) -> List[Outcome]:
        n = len(cmds)
        results: List[Optional[Outcome]] = [None] * n
        todo = {first + i: i for i in range(n)}  # seq -> position in cmds
        session = self._session
        base = self._rid_base
        first_round = True
        while todo:
            acked = self._acked
            batch = todo

            def build(waiting: Set[int], batch: Dict[int, int] = batch) -> List[bytes]:
                # Envelopes of at most _ENVELOPE_BYTES, in sequence order (the leader
                # takes an inbox in order, so the commands are applied in this order).
                hdr = self._hdr[ev.KIND_PROPOSE]
                reqs: List[ev.ProposeRequest] = []
                if not self._registered:
                    reqs.append((ev.OP_REGISTER, 0, session, 0, acked, b""))
                if len(waiting) == len(batch) >= _MANY:  # all of many (the first send): in C loops
                    data = list(map(cmds.__getitem__, batch.values()))
                    if sum(map(len, data)) + _REQ_OVERHEAD * len(data) <= _ENVELOPE_BYTES:
                        reqs += zip(
                            repeat(ev.OP_COMMAND), map(base.__add__, batch), repeat(session), batch, repeat(acked), data
                        )
                        return [ev.encode_propose(hdr, self.reply_to, reqs)]
                out: List[bytes] = []
                size = 0
                for seq, pos in batch.items():
                    if base + seq not in waiting:
                        continue
                    c = cmds[pos]
                    if reqs and size + len(c) + _REQ_OVERHEAD > _ENVELOPE_BYTES:
                        out.append(ev.encode_propose(hdr, self.reply_to, reqs))
                        reqs, size = [], 0
                    reqs.append((ev.OP_COMMAND, base + seq, session, seq, acked, c))
                    size += len(c) + _REQ_OVERHEAD
                out.append(ev.encode_propose(hdr, self.reply_to, reqs))
                return out

            got = self._exchange(build, {base + seq for seq in batch}, deadline)
            self._registered = True
            if first_round and n >= _MANY:
                # The first round (batch is every command, in order): the usual outcome
                # is no STALE answer at all, taken in C loops.
                outs = list(map(got.__getitem__, map(base.__add__, batch)))
                if ev.STALE not in set(map(_first, outs)):
                    return outs
            first_round = False
            todo = {}
            for rid, (status, payload) in got.items():
                seq = rid - base
                if status == ev.STALE:
                    # Never applied and never will be (a later command of this session
                    # was): send it again under a new sequence number.
                    self._seq += 1
                    todo[self._seq] = batch[seq]
                else:
                    results[batch[seq]] = (status, payload)
        return results  # type: ignore[return-value]


# C-level accessors: of an outcome (status, payload) or a reply item (rid, status, payload).
_first = itemgetter(0)
_second = itemgetter(1)
_ALL_OK = {ev.OK}
# Below this many commands or replies, plain loops cost less than setting up C loops.
_MANY = 32
_BYTES_ONLY = {bytes}
_NOT_FINAL = frozenset({ev.NOT_LEADER, ev.RETRY})  # answers that are not a request's outcome
_STATUS_PAYLOAD = itemgetter(1, 2)


class Client(_SessionClient):
    """A connection to cluster ``name`` (see the module docstring).

    ``Client(name)`` raises FileNotFoundError if no cluster of that name runs.  Use it as
    a context manager or call :meth:`close`.

    ``Client.connect(["host:port", ...])`` reaches a cluster whose peers serve clients
    over the network (``rsm-shm cluster serve``) from any machine instead; the client it
    returns has the same contract.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._closed = True
        try:
            self._ctl = ControlBlock(name)
        except FileNotFoundError:
            raise FileNotFoundError(f"no running cluster named {name!r} (no control segment)") from None
        try:
            rec = self._ctl.load()
            cluster_id = int(rec.cluster_id)
            ring_name = f"{reply_ring_prefix(name)}{os.getpid():x}.{secrets.token_hex(4)}"
            self._reply = Ring(ring_name, create=True, capacity=REPLY_CAPACITY)
        except BaseException:
            self._ctl.close()
            raise
        self._closed = False
        self._init_session(cluster_id, ring_name)
        self._inboxes: Dict[int, Ring] = {}
        self._statuses: Dict[int, StatusRecord] = {}
        self._leader: Optional[int] = None

    @classmethod
    def connect(
        cls,
        addresses: Sequence[str],
        *,
        tls: Optional[TLSConfig] = None,
        timeout: float = 5.0,
        server_name: Optional[str] = None,
    ) -> _SessionClient:
        """A client of the cluster whose peers listen at ``addresses`` (``"host:port"``
        strings; one reachable peer is enough, it tells the others' addresses), over
        gRPC.  Same contract as ``Client(name)``: :meth:`propose`, :meth:`propose_many`,
        :meth:`read`, :meth:`close`, exactly-once sessions.  ``tls``: a
        :class:`rsm_shm.cluster.net.tls.TLSConfig` (mutual TLS), None for plaintext;
        ``server_name``: the name the peers' certificates carry, if not the dialed host.
        Needs the ``[net]`` extra (``pip install rsm_shm[net]``).  Raises
        ConnectionError if no peer answers within ``timeout`` seconds."""
        from .net.client import RemoteClient

        return RemoteClient(addresses, tls=tls, timeout=timeout, server_name=server_name)

    def leader(self) -> Optional[int]:
        """The leader as the status records show it now (None: none known)."""
        with self._lock:
            self._check_open()
            return self._discover_once()

    def close(self) -> None:
        """Remove this client's reply ring and unmap everything (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for r in self._inboxes.values():
            r.close()
        for s in self._statuses.values():
            s.close()
        self._inboxes.clear()
        self._statuses.clear()
        try:
            self._reply.unlink()
        finally:
            self._reply.close()
            self._ctl.close()

    def __enter__(self) -> "Client":
        return self

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"leader={self._leader}"
        return f"<rsm_shm.cluster.Client {self.name!r} {state}>"

    # ------------------------------------------------------------------ admin (LocalCluster)
    def _admin(self, op: int, arg: int, timeout: float) -> None:
        with self._lock:
            self._check_open()
            deadline = time.monotonic() + timeout
            rid = self._new_rid()
            res = self._exchange(
                lambda waiting: [ev.encode_admin(self._hdr[ev.KIND_ADMIN], self.reply_to, rid, op, arg)],
                {rid},
                deadline,
            )
            self._outcome(*res[rid])

    # ------------------------------------------------------------------ internals
    def _exchange(self, build: Build, rids: Set[int], deadline: float) -> Dict[int, Outcome]:
        """Send the envelopes ``build(waiting)`` makes (for the request ids still
        waiting) to the leader until every rid is answered (other than 'not the leader' /
        'retry'); send again after leader changes.  Envelopes that did not fit in a full
        inbox are put later, without sending the others again."""
        done: Dict[int, Outcome] = {}
        waiting = set(rids)
        target = self._leader if self._leader is not None else self._discover(deadline)
        unsent = self._send(target, build(waiting))
        now = time.monotonic()
        retry_at = now + (_SEND_BACKOFF if unsent else _RESEND_AFTER)
        last_check = now
        reply = self._reply
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                self._leader = None
                raise TimeoutError(
                    f"cluster {self.name!r}: no answer within the timeout (outcome unknown; {len(waiting)} pending)"
                )
            try:
                data = reply.get(timeout=min(remaining, _SLICE))
            except queue.Empty:
                data = None
            resend = False
            if data is not None:
                try:
                    kind, _sender, cid = ev.decode_header(data)
                    items = ev.decode_reply(data) if kind == ev.KIND_REPLY and cid == self._cluster_id else ()
                except ev.EnvelopeError:
                    items = ()
                answered = list(map(_first, items)) if len(items) >= _MANY else []
                if (
                    len(items) >= _MANY
                    and _NOT_FINAL.isdisjoint(map(_second, items))
                    and waiting.issuperset(answered)
                    and len(set(answered)) == len(answered)
                ):
                    # The usual reply: final outcomes of requests still waiting (C loops).
                    waiting.difference_update(answered)
                    done.update(zip(answered, map(_STATUS_PAYLOAD, items)))
                    items = ()
                for rid, status, payload in items:
                    if rid not in waiting:
                        continue
                    if status == ev.NOT_LEADER:
                        hint = ev.LEADER_HINT.unpack(payload)[0] if len(payload) == 4 else 0
                        if hint and hint != target:
                            self._leader = target = hint
                        else:
                            self._leader = None
                        resend = True
                    elif status == ev.RETRY:
                        unsent = []  # send everything still waiting again, shortly
                        retry_at = min(retry_at, time.monotonic() + _SEND_BACKOFF)
                    else:
                        waiting.discard(rid)
                        done[rid] = (status, payload)
                if not waiting:
                    self._leader = target
                    return done
            now = time.monotonic()
            if not resend and now - last_check >= _SLICE:
                last_check = now
                best = self._discover_once()
                if best != target:
                    # Deposed, dead, or a leader of a later term exists (the target may be
                    # paused and not know it lost): go to the best one.
                    self._leader = best
                    resend = True
            if not resend and now >= retry_at:
                if unsent:  # the inbox was full: put the rest
                    unsent = self._send(target, unsent)
                    retry_at = time.monotonic() + (_SEND_BACKOFF if unsent else _RESEND_AFTER)
                else:
                    resend = True
            if resend:
                if self._leader is None:
                    time.sleep(_NO_LEADER_POLL)
                    target = self._discover(deadline)
                else:
                    target = self._leader
                unsent = self._send(target, build(waiting))
                retry_at = time.monotonic() + (_SEND_BACKOFF if unsent else _RESEND_AFTER)

    def _send(self, target: int, envelopes: List[bytes]) -> List[bytes]:
        """Put into ``target``'s inbox without blocking; returns the envelopes that did
        not fit (the wait loop puts them shortly)."""
        ring = self._inboxes.get(target)
        i = 0
        try:
            if ring is None:
                ring = self._inboxes[target] = Ring(inbox_name(self.name, target), create=False)
            for data in envelopes:
                ring.put_nowait(data)
                i += 1
            return []
        except queue.Full:
            return envelopes[i:]  # the leader is busy
        except (FileNotFoundError, *RING_SHUTDOWN):
            bad = self._inboxes.pop(target, None)
            if bad is not None:
                bad.close()
            return envelopes[i:]

    def _status_of(self, peer_id: int) -> Optional[RawStatus]:
        rec = self._statuses.get(peer_id)
        if rec is None:
            try:
                rec = self._statuses[peer_id] = StatusRecord(status_segment_name(self.name, peer_id), create=False)
            except (FileNotFoundError, ValueError):
                return None
        return rec.load()

    def _discover_once(self) -> Optional[int]:
        try:
            slots = ControlBlock.slots_of(self._ctl.load())
        except Exception:
            return None
        best = None
        for pid in sorted(slots):
            if slots[pid][0] in (PEER_ABSENT, PEER_REMOVED):
                continue
            raw = self._status_of(pid)
            if raw is None or raw.role != ROLE_LEADER or raw.cluster_id != self._cluster_id:
                continue
            if not _proc.process_alive(int(raw.pid), int(raw.start_time)):
                continue
            if best is None or raw.term > best[0]:
                best = (int(raw.term), pid)
        return None if best is None else best[1]

    def _discover(self, deadline: float) -> int:
        while True:
            found = self._discover_once()
            if found is not None:
                self._leader = found
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"cluster {self.name!r}: no leader within the timeout")
            time.sleep(_NO_LEADER_POLL)


class KVClient:
    """A typed client of a :class:`~rsm_shm.cluster.KVStore` cluster: ``KVClient(name)``
    on the machine, ``KVClient.connect(["host:port", ...])`` from anywhere.

    Values are any JSON value; ``None`` stands for "absent" in :meth:`get` and
    :meth:`cas`.  Each method takes ``timeout`` (seconds) and raises like
    :meth:`Client.propose` / :meth:`Client.read`.
    """

    def __init__(self, name: str) -> None:
        self.client: _SessionClient = Client(name)

    @classmethod
    def connect(
        cls,
        addresses: Sequence[str],
        *,
        tls: Optional[TLSConfig] = None,
        timeout: float = 5.0,
        server_name: Optional[str] = None,
    ) -> "KVClient":
        """A KVClient over the network (see :meth:`Client.connect`)."""
        kv = cls.__new__(cls)
        kv.client = Client.connect(addresses, tls=tls, timeout=timeout, server_name=server_name)
        return kv

    def put(self, key: str, value: Any, timeout: float = 5.0) -> None:
        self.client.propose(_kv({"op": "put", "key": key, "value": value}), timeout)

    def get(self, key: str, timeout: float = 5.0) -> Any:
        return json.loads(self.client.read(_kv({"op": "get", "key": key}), timeout))["value"]

    def delete(self, key: str, timeout: float = 5.0) -> bool:
        return bool(json.loads(self.client.propose(_kv({"op": "delete", "key": key}), timeout))["deleted"])

    def cas(self, key: str, expected: Any, new: Any, timeout: float = 5.0) -> bool:
        """Set ``key`` to ``new`` if its value is ``expected`` (None: absent); True if set."""
        cmd = {"op": "cas", "key": key, "expected": expected, "new": new}
        return bool(json.loads(self.client.propose(_kv(cmd), timeout))["ok"])

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "KVClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kv(obj: Dict[str, Any]) -> bytes:
    if not isinstance(obj.get("key"), str):
        raise TypeError(f"key must be a str, not {type(obj.get('key')).__name__}")
    return json.dumps(obj, separators=(",", ":")).encode()
