"""State machines: the user's application, ``KVStore``, and the exactly-once session layer.

:class:`StateMachine` is what a user writes: ``apply(command) -> result`` for committed
commands, ``query(query) -> result`` for linearizable reads, ``snapshot()`` /
``restore(data)``.  It must be **deterministic**: every peer applies the same commands
in the same order and must reach the same state and results (no clocks, randomness,
I/O, or iteration over unordered containers whose order depends on the process).
Peers build it from an import path ``"package.module:Class"`` with no arguments.  Those
four methods are the contract; ``apply_batch(commands)`` is an optional hook (the new
commands of one log entry at once) whose default calls ``apply`` for each.

Errors are outcomes, too.  If ``apply`` raises an ``Exception``, the command counts as
applied with the result ``repr(exception)`` flagged as an error: every peer records the
same outcome, so replicas never diverge, and the client's ``propose`` raises
:class:`CommandError` with that text.  The state machine must leave its state as it was
when it raises (or at least change it deterministically).  An ``apply`` that returns
something other than bytes is treated the same way (a TypeError).  ``query`` errors
reach the client the same way but change nothing.

Exactly once.  Clients tag each command with ``(session, seq)`` and retry with the same
tag after a timeout or a leader change.  :class:`Sessions` wraps the state machine and
keeps, per session, the last sequence number applied and the results the client has
not acknowledged yet (``acked``: the client holds every result up to it), so a retried
command returns the recorded result instead of applying again (Raft thesis §6.3).  The
table is replicated (it changes only in ``apply``) and travels in snapshots.  It is
bounded: at most ``max_sessions`` sessions; registering one more evicts the session
least recently used (by log index, ties by id), deterministically on every peer.  A
command of an evicted or unknown session is answered ``SESSION_EXPIRED`` (its outcome is
unknown to the client).  Sequence numbers may skip (a command the client gave up on was
never applied); a command that arrives after a later one of its session was applied is
answered ``STALE`` and never applied, which tells the client it may send it again under
a new sequence number.  At most 65536 unacknowledged results are kept per session.
"""

from __future__ import annotations

import importlib
import json
import struct
from collections import OrderedDict
from itertools import accumulate
from typing import Any, Dict, List, Tuple, Union

from . import envelope as ev

__all__ = [
    "StateMachine",
    "KVStore",
    "CommandError",
    "load_state_machine",
    "Sessions",
    "encode_batch",
    "decode_batch",
    "decode_runs",
    "NewerBatchError",
]


def _outcome_of(sm: "StateMachine", result: object) -> Tuple[int, bytes]:
    """A state machine's outcome that is not exactly bytes, as a (status, payload)."""
    if isinstance(result, bytes):  # a subclass of bytes: taken as it is, as from apply
        return ev.OK, result
    if not isinstance(result, Exception):
        result = TypeError(f"{type(sm).__name__}.apply_batch gave {type(result).__name__}, not bytes or an exception")
    return ev.ERROR, repr(result).encode("utf-8", "replace")


class CommandError(RuntimeError):
    """The state machine raised while applying (or querying) this command; the message
    is the exception's repr as recorded identically by every peer."""


class StateMachine:
    """Base class of a replicated application (see the module docstring)."""

    def apply(self, command: bytes) -> bytes:
        """Apply a committed command; return its result.  Deterministic."""
        raise NotImplementedError

    def apply_batch(self, commands: List[bytes]) -> List[Union[bytes, Exception]]:
        """Apply committed commands in order; one outcome per command: its result, or
        the exception that applying it raised (instead of raising it).

        Optional: the peers call this with the commands of one log entry that are new,
        and the default calls :meth:`apply` for each, so a subclass that only writes
        ``apply`` is complete.  Override it when a batch can be applied faster than
        command by command; it must give exactly what calling ``apply`` in order gives
        (the same state, the same results, and an exception where ``apply`` raises).
        An exception raised out of ``apply_batch`` itself becomes the outcome of every
        command of the batch."""
        out: List[Union[bytes, Exception]] = []
        append = out.append
        apply = self.apply
        for command in commands:
            try:
                result = apply(command)
                if not isinstance(result, bytes):
                    raise TypeError(f"{type(self).__name__}.apply returned {type(result).__name__}, not bytes")
                append(result)
            except Exception as e:  # an outcome, as documented above
                append(e)
        return out

    def query(self, query: bytes) -> bytes:
        """Answer a read-only query from the current state (no change)."""
        raise NotImplementedError

    def snapshot(self) -> bytes:
        """The whole state as bytes (``restore`` must rebuild it exactly)."""
        raise NotImplementedError

    def restore(self, data: bytes) -> None:
        """Replace the state with one made by ``snapshot``."""
        raise NotImplementedError


class KVStore(StateMachine):
    """A replicated dict of JSON values keyed by strings.

    Commands (UTF-8 JSON objects):

    * ``{"op": "put", "key": k, "value": v}`` -> ``{"ok": true}``
    * ``{"op": "delete", "key": k}`` -> ``{"deleted": true|false}``
    * ``{"op": "cas", "key": k, "expected": e, "new": n}`` -> ``{"ok": true|false}``: sets
      ``k`` to ``n`` if its value equals ``e`` (``null`` = absent); ``n = null`` deletes.

    Query: ``{"op": "get", "key": k}`` -> ``{"found": true|false, "value": v|null}``.
    Anything else raises ValueError (the client sees a :class:`CommandError`).
    """

    def __init__(self) -> None:
        self.data: Dict[str, object] = {}

    @staticmethod
    def _parse(raw: bytes) -> Dict[str, Any]:
        cmd = _json_loads(raw)
        if type(cmd) is not dict or type(cmd.get("key")) is not str:
            raise ValueError("a KVStore command is a JSON object with a string 'key'")
        return cmd

    def apply(self, command: bytes) -> bytes:
        return self._execute(self._parse(command))

    def apply_batch(self, commands: List[bytes]) -> List[Union[bytes, Exception]]:
        # Every peer parses every command: the common case (compact JSON, a put) is
        # parsed and applied inline; anything else -- including every malformed
        # command -- takes the path of apply, so the outcomes are exactly its.
        out: List[Union[bytes, Exception]] = []
        append = out.append
        data = self.data
        scan = _scan_json
        execute = self._execute
        for raw in commands:
            try:
                s = raw.decode()
                cmd, end = scan(s, 0)
                if end != len(s) or type(cmd) is not dict:
                    raise ValueError
                key = cmd.get("key")
                if type(key) is not str:
                    raise ValueError
            except Exception:
                try:
                    append(self.apply(raw))
                except Exception as e:
                    append(e)
                continue
            if cmd.get("op") == "put" and "value" in cmd:
                data[key] = cmd["value"]
                append(_PUT_OK)
                continue
            try:
                append(execute(cmd))
            except Exception as e:
                append(e)
        return out

    def _execute(self, cmd: Dict[str, Any]) -> bytes:
        op, key = cmd.get("op"), cmd["key"]
        if op == "put":
            if "value" not in cmd:
                raise ValueError("put needs a 'value'")
            self.data[key] = cmd["value"]
            return _PUT_OK
        if op == "delete":
            return b'{"deleted": true}' if self.data.pop(key, _MISSING) is not _MISSING else b'{"deleted": false}'
        if op == "cas":
            if "expected" not in cmd or "new" not in cmd:
                raise ValueError("cas needs 'expected' and 'new'")
            if self.data.get(key) != cmd["expected"]:
                return b'{"ok": false}'
            if cmd["new"] is None:
                self.data.pop(key, None)
            else:
                self.data[key] = cmd["new"]
            return b'{"ok": true}'
        raise ValueError(f"unknown KVStore command op {op!r}")

    def query(self, query: bytes) -> bytes:
        q = self._parse(query)
        if q.get("op") != "get":
            raise ValueError(f"unknown KVStore query op {q.get('op')!r}")
        key = q["key"]
        if key in self.data:
            return json.dumps({"found": True, "value": self.data[key]}).encode()
        return b'{"found": false, "value": null}'

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()

    def restore(self, data: bytes) -> None:
        self.data = json.loads(data) if data else {}


_MISSING = object()
_PUT_OK = b'{"ok": true}'
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # (not in typeshed)


def _json_loads(raw: bytes) -> Any:
    """``json.loads`` for the common case in one C call (no encoding detection, no
    whitespace handling); anything unusual goes through ``json.loads`` itself, so the
    accepted language and the errors are exactly json's."""
    s = raw.decode()
    try:
        obj, end = _scan_json(s, 0)
    except StopIteration:
        return json.loads(s)
    return obj if end == len(s) else json.loads(s)


def load_state_machine(path: str) -> StateMachine:
    """Build the state machine named ``"package.module:Class"`` (no arguments).

    Raises ValueError naming the path for a malformed path, a module that does not
    import, a missing attribute, or something that is not a StateMachine class."""
    if not isinstance(path, str) or path.count(":") != 1:
        raise ValueError(f"state machine must be an import path 'package.module:Class', not {path!r}")
    mod_name, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:
        raise ValueError(f"state machine {path!r}: cannot import module {mod_name!r}: {e}") from e
    cls = getattr(mod, attr, None)
    if cls is None:
        raise ValueError(f"state machine {path!r}: module {mod_name!r} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, StateMachine)):
        raise ValueError(f"state machine {path!r} is not a subclass of rsm_shm.cluster.StateMachine")
    return cls()


# -------------------------------------------------------------------- replicated entries
# A NORMAL entry proposed by the runtime carries a batch of client operations, in runs:
#   version u8 (=2) | run count u32 | runs
#   run = op u8 | session u64 | seq u64 | acked u64 | count u32 | count x len u32 | the data
# A run holds ``count`` operations of one session with the same op and ``acked``, and
# the sequence numbers seq, seq+1, ... (a REGISTER is a run of one): what a client's
# pipelined envelope becomes, so a follower decodes and applies a run, not an op, at a
# time.  Version 1 (one header per op: op u8 | session u64 | seq u64 | acked u64 |
# len u32 | data) is what earlier releases wrote; it is still read.  An empty entry is a
# leader's no-op.  A version above BATCH_VERSION is a newer rsm_shm's entry: skipping it
# would let this peer's state drift from the newer peers', so it stops the peer
# (NewerBatchError).  Anything else malformed is applied as "no operation" and counted,
# identically everywhere (it cannot come from a correct peer).
BATCH_VERSION = 2
_BATCH_HDR = struct.Struct("<BI")
_OP = struct.Struct("<BQQQI")  # version 1: one op's header
_RUN = struct.Struct("<BQQQI")  # op, session, seq, acked, count
_U32 = struct.Struct("<I")
#: One client operation of a batch: (op, session, seq, acked, data).
BatchOp = Tuple[int, int, int, int, bytes]
#: One run of a batch: (op, session, first seq, acked, the data of each operation).
BatchRun = Tuple[int, int, int, int, List[bytes]]
#: What a run adds to a batch besides its commands' lengths and data.
RUN_HEADER = _RUN.size
#: The most one operation adds to a batch besides its data (a new run: header + length).
OP_OVERHEAD = RUN_HEADER + 4


def encode_batch(ops: List[BatchOp]) -> bytes:
    """``ops``: list of (op, session, seq, acked, data)."""
    w = BatchWriter()
    for op in ops:
        w.add(*op)
    return w.finish()


class BatchWriter:
    """Builds a batch op by op (a leader's per-command path): an op that continues the
    open run (a command of the same session, the next sequence number, the same
    ``acked``) only adds its length and data to it."""

    __slots__ = ("runs", "lens", "datas", "session", "next_seq", "acked", "count", "size")

    def __init__(self) -> None:
        self.runs: List[Tuple[int, int, int, int, List[int], List[bytes]]] = []
        self.lens: List[int] = []
        self.datas: List[bytes] = []
        self.session = self.next_seq = self.acked = -1  # the open run continues with these
        self.count = 0
        self.size = _BATCH_HDR.size  # bytes of the batch so far

    def add(self, op: int, session: int, seq: int, acked: int, data: bytes) -> None:
        if seq == self.next_seq and session == self.session and acked == self.acked and op == ev.OP_COMMAND:
            self.lens.append(len(data))
            self.datas.append(data)
            self.next_seq = seq + 1
            self.size += 4 + len(data)
        else:
            self.lens = [len(data)]
            self.datas = [data]
            self.runs.append((op, session, seq, acked, self.lens, self.datas))
            self.session, self.acked = session, acked
            self.next_seq = seq + 1 if op == ev.OP_COMMAND else -1  # only commands continue a run
            self.size += OP_OVERHEAD + len(data)
        self.count += 1

    def add_run(self, session: int, seq: int, acked: int, data: List[bytes]) -> None:
        """:meth:`add` of the commands ``seq``, ``seq+1``, ... of ``session`` (in C loops)."""
        if not (seq == self.next_seq and session == self.session and acked == self.acked):
            self.lens = []
            self.datas = []
            self.runs.append((ev.OP_COMMAND, session, seq, acked, self.lens, self.datas))
            self.session, self.acked = session, acked
            self.size += RUN_HEADER
        lens = list(map(len, data))
        self.lens += lens
        self.datas += data
        self.next_seq = seq + len(data)
        self.count += len(data)
        self.size += 4 * len(data) + sum(lens)

    def finish(self) -> bytes:
        parts = [_BATCH_HDR.pack(BATCH_VERSION, len(self.runs))]
        append = parts.append
        for op, session, seq, acked, lens, datas in self.runs:
            append(_RUN.pack(op, session, seq, acked, len(lens)))
            append(_U32.pack(lens[0]) if len(lens) == 1 else struct.pack(f"<{len(lens)}I", *lens))
            parts += datas
        return b"".join(parts)


class NewerBatchError(RuntimeError):
    """A committed entry was written by a newer rsm_shm (a batch format this one cannot
    read).  Not a ValueError on purpose: a malformed entry is skipped identically by every
    peer, but this one would be applied by the newer peers, so the reader must stop."""


def decode_runs(b: bytes) -> List[BatchRun]:
    """The runs of a batch (a version-1 batch: one run per op); raises ValueError on
    malformed input and :class:`NewerBatchError` on a batch format above
    ``BATCH_VERSION``."""
    if len(b) < _BATCH_HDR.size:
        raise ValueError("truncated batch")
    version, n = _BATCH_HDR.unpack_from(b, 0)
    if version == 1:
        return [(op, session, seq, acked, [data]) for op, session, seq, acked, data in _decode_v1(b, n)]
    if version > BATCH_VERSION:
        raise NewerBatchError(
            f"a committed entry has batch format {version}, written by a newer rsm_shm "
            f"(this one reads formats up to {BATCH_VERSION}): upgrade this peer"
        )
    if version != BATCH_VERSION:
        raise ValueError(f"batch version {version} is not supported")
    if n == 0:
        raise ValueError("a batch without operations")  # (a no-op entry is empty)
    off = _BATCH_HDR.size
    end = len(b)
    out: List[BatchRun] = []
    size = _RUN.size
    getitem = b.__getitem__
    for _ in range(n):
        if off + size > end:
            raise ValueError("truncated batch run")
        op, session, seq, acked, count = _RUN.unpack_from(b, off)
        off += size
        if count == 0 or (count > 1 and op != ev.OP_COMMAND):
            raise ValueError(f"a batch run of {count} operations of kind {op}")
        if off + 4 * count > end:
            raise ValueError("truncated batch run lengths")
        if count == 1:  # a lone command (no loops to set up)
            stop = off + 4 + _U32.unpack_from(b, off)[0]
            if stop > end:
                raise ValueError("truncated batch run data")
            out.append((op, session, seq, acked, [b[off + 4 : stop]]))
            off = stop
            continue
        lens = struct.unpack_from(f"<{count}I", b, off)
        off += 4 * count
        stop = off + sum(lens)
        if stop > end:
            raise ValueError("truncated batch run data")
        # The slices in C loops (a run holds up to thousands of commands).
        bounds = list(accumulate(lens, initial=off))
        out.append((op, session, seq, acked, list(map(getitem, map(slice, bounds, bounds[1:])))))
        off = stop
    if off != end:
        raise ValueError("trailing bytes after the batch")
    return out


def decode_batch(b: bytes) -> List[BatchOp]:
    """Every op of a batch, run by run (inverse of :func:`encode_batch`); raises
    ValueError on malformed input."""
    return [
        (op, session, seq + i if op == ev.OP_COMMAND else seq, acked, data)
        for op, session, seq, acked, datas in decode_runs(b)
        for i, data in enumerate(datas)
    ]


def _decode_v1(b: bytes, n: int) -> List[BatchOp]:
    off = _BATCH_HDR.size
    out = []
    size = _OP.size
    end = len(b)
    for _ in range(n):
        if off + size > end:
            raise ValueError("truncated batch op")
        op, session, seq, acked, ln = _OP.unpack_from(b, off)
        off += size
        if off + ln > end:
            raise ValueError("truncated batch op data")
        out.append((op, session, seq, acked, b[off : off + ln]))
        off += ln
    if off != end:
        raise ValueError("trailing bytes after the batch")
    return out


# ------------------------------------------------------------------------ sessions
SNAPSHOT_MAGIC = b"RSMS"
SNAPSHOT_VERSION = 1
_SNAP_HDR = struct.Struct("<4sBQ")  # magic, version, session count
_SESSION = struct.Struct("<QQQQQI")  # id, last_seq, last_index, forgotten, acked, result count
_RESULT = struct.Struct("<QBI")  # seq, status, len
DEFAULT_MAX_SESSIONS = 4096
MAX_RESULTS_PER_SESSION = 1 << 16


class Sessions:
    """The user's state machine plus the replicated session table (exactly-once)."""

    def __init__(self, sm: StateMachine, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.sm = sm
        self.max_sessions = max_sessions
        # session id -> [last_seq, last_index, {seq: (status, result)}, forgotten up to seq,
        #                highest acked seen]
        self.table: Dict[int, List[Any]] = {}

    def apply(self, op: int, session: int, seq: int, acked: int, data: bytes, index: int) -> Tuple[int, bytes]:
        """Apply one client operation of the entry at ``index``; (status, result)."""
        if op == ev.OP_REGISTER:
            s = self.table.get(session)
            if s is None:
                if len(self.table) >= self.max_sessions:
                    victim = min(self.table.items(), key=lambda kv: (kv[1][1], kv[0]))[0]
                    del self.table[victim]
                self.table[session] = [0, index, OrderedDict(), 0, 0]
            else:
                s[1] = index
            return ev.OK, b""
        s = self.table.get(session)
        if s is None:
            return ev.SESSION_EXPIRED, b"session expired or never registered"
        s[1] = index
        results: OrderedDict[int, Tuple[int, bytes]] = s[2]
        # Results are kept in sequence order (applied in increasing seq): forget the
        # acknowledged prefix (only when the client acknowledged more: a batch of
        # commands all carry the same ``acked``).
        if acked > s[4]:
            self._forget_acked(s, acked)
        last = s[0]
        if seq <= last:
            got = results.get(seq)
            if got is not None:
                return got
            if seq <= s[3]:
                return ev.SESSION_EXPIRED, b"result forgotten (more than %d unacknowledged)" % MAX_RESULTS_PER_SESSION
            # Never applied (its result would still be here: the client has not acked
            # it) and never will be, since a later command of the session was.
            return ev.STALE, b"not applied: a later command of this session was applied first"
        try:
            result = self.sm.apply(data)
            if not isinstance(result, bytes):
                raise TypeError(f"{type(self.sm).__name__}.apply returned {type(result).__name__}, not bytes")
            out = (ev.OK, result)
        except Exception as e:  # a documented outcome, identical on every peer
            out = (ev.ERROR, repr(e).encode("utf-8", "replace"))
        s[0] = seq
        results[seq] = out
        if len(results) > MAX_RESULTS_PER_SESSION:  # a client that never acknowledges
            s[3] = results.popitem(last=False)[0]  # its outcome can no longer be told
        return out

    def apply_batch(self, ops: List[BatchOp], index: int) -> List[Tuple[int, bytes]]:
        """:meth:`apply` for every operation of the entry at ``index``, in order; the
        outcomes (see :meth:`apply_runs`)."""
        return self.apply_runs([(op, session, seq, acked, [data]) for op, session, seq, acked, data in ops], index)

    def apply_runs(self, runs: List[BatchRun], index: int) -> List[Tuple[int, bytes]]:
        """:meth:`apply` for every operation of the runs of the entry at ``index``, in
        order; the outcomes, one per operation.  The common case -- a run of new
        commands of a known session -- is decided once per run, and consecutive such
        runs go to the state machine's ``apply_batch`` together; everything else goes
        through :meth:`apply` op by op (after the commands before it were applied), with
        the same outcomes and table as op by op."""
        out: List[Tuple[int, bytes]] = []
        table = self.table
        command = ev.OP_COMMAND
        # Common-case runs not applied yet: (session entry, first seq, count) and all
        # their data.  A session's last_seq moves as each run is taken (a duplicate
        # later in the entry is then no longer the common case).
        todo: List[Tuple[List[Any], int, int]] = []
        todo_data: List[bytes] = []
        for op, session, seq, acked, datas in runs:
            s = table.get(session)
            if op == command and s is not None:
                if acked > s[4]:  # forget acknowledged results first, as apply does
                    if todo:
                        self._apply_todo(todo, todo_data, out)
                        todo, todo_data = [], []
                    self._forget_acked(s, acked)
                if seq > s[0]:
                    s[0] = seq + len(datas) - 1
                    s[1] = index
                    todo.append((s, seq, len(datas)))
                    todo_data += datas
                    continue
            if todo:
                self._apply_todo(todo, todo_data, out)
                todo, todo_data = [], []
            for i, data in enumerate(datas):
                out.append(self.apply(op, session, seq + i, acked, data, index))
        if todo:
            self._apply_todo(todo, todo_data, out)
        return out

    @staticmethod
    def _forget_acked(s: List[Any], acked: int) -> None:
        """The client holds every result up to ``acked``: forget them (results are kept
        in sequence order)."""
        s[4] = acked
        results: OrderedDict[int, Tuple[int, bytes]] = s[2]
        if results and next(reversed(results)) <= acked:
            results.clear()  # the usual case: everything is acknowledged (one C call)
        while results and next(iter(results)) <= acked:
            results.popitem(last=False)

    def _apply_todo(
        self, todo: List[Tuple[List[Any], int, int]], data: List[bytes], out: List[Tuple[int, bytes]]
    ) -> None:
        """Apply the commands of common-case runs with one ``apply_batch`` call; record
        their outcomes in their sessions and append them to ``out``, in order (as
        :meth:`apply` would, command by command)."""
        sm = self.sm
        try:
            results = sm.apply_batch(data)
            if type(results) is not list or len(results) != len(data):
                what = f"{len(results)} outcomes" if type(results) is list else type(results).__name__
                raise TypeError(
                    f"{type(sm).__name__}.apply_batch returned {what} for {len(data)} commands"
                    " (expected a list of one outcome per command)"
                )
        except Exception as e:  # a documented outcome: every command of the batch gets it
            results = [e for _ in data]
        ok = ev.OK
        if len(results) == 1:  # a lone command (no loops to set up)
            r = results[0]
            outcome = (ok, r) if type(r) is bytes else _outcome_of(sm, r)
            s, seq, _n = todo[0]
            recorded = s[2]
            recorded[seq] = outcome
            if len(recorded) > MAX_RESULTS_PER_SESSION:  # as in apply
                s[3] = recorded.popitem(last=False)[0]
            out.append(outcome)
            return
        outcomes = [(ok, r) if type(r) is bytes else _outcome_of(sm, r) for r in results]
        pos = 0
        for s, seq, n in todo:
            recorded = s[2]
            if n == 1:
                recorded[seq] = outcomes[pos]
            else:
                recorded.update(zip(range(seq, seq + n), outcomes[pos : pos + n]))
            pos += n
            while len(recorded) > MAX_RESULTS_PER_SESSION:  # as in apply, one by one
                s[3] = recorded.popitem(last=False)[0]
        out += outcomes

    def query(self, q: bytes) -> Tuple[int, bytes]:
        try:
            result = self.sm.query(q)
            if not isinstance(result, bytes):
                raise TypeError(f"{type(self.sm).__name__}.query returned {type(result).__name__}, not bytes")
            return ev.OK, result
        except Exception as e:
            return ev.ERROR, repr(e).encode("utf-8", "replace")

    def snapshot(self) -> bytes:
        # Built in one growing buffer, not as a list of small bytes objects: a session
        # table holds up to millions of results, and that many short-lived objects
        # would leave the process's memory fragmented and larger after every snapshot.
        out = bytearray(_SNAP_HDR.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, len(self.table)))
        pack_session, pack_result = _SESSION.pack, _RESULT.pack
        for sid in sorted(self.table):
            last, idx, results, forgotten, acked = self.table[sid]
            out += pack_session(sid, last, idx, forgotten, acked, len(results))
            for seq in sorted(results):
                status, res = results[seq]
                out += pack_result(seq, status, len(res))
                out += res
        out += self.sm.snapshot()
        return bytes(out)

    def restore(self, data: bytes) -> None:
        if not data:
            self.table = {}
            self.sm.restore(b"")
            return
        if len(data) < _SNAP_HDR.size:
            raise ValueError("snapshot is truncated")
        magic, version, n = _SNAP_HDR.unpack_from(data, 0)
        if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION:
            raise ValueError(f"not a snapshot of this rsm_shm (magic {magic!r}, version {version})")
        off = _SNAP_HDR.size
        table: Dict[int, List[Any]] = {}
        shared: Dict[Tuple[int, bytes], Tuple[int, bytes]] = {}
        for _ in range(n):
            sid, last, idx, forgotten, acked, nres = _SESSION.unpack_from(data, off)
            off += _SESSION.size
            results: OrderedDict[int, Tuple[int, bytes]] = OrderedDict()
            for _ in range(nres):
                seq, status, ln = _RESULT.unpack_from(data, off)
                off += _RESULT.size
                out = (status, data[off : off + ln])
                if ln <= 64:  # results repeat (b'{"ok": true}'): one copy of each short one
                    out = shared.setdefault(out, out)
                results[seq] = out
                off += ln
            table[sid] = [last, idx, results, forgotten, acked]
        self.table = table
        self.sm.restore(data[off:])
