"""Binary encoding of Raft messages and conf changes (never pickle: bytes may come from
the network and are treated as hostile).

Message format, version 1 (all integers big-endian)::

    magic      2 bytes  b"RM"
    version    u8       1
    type       u8       MessageType
    flags      u8       bit0 reject, bit1 has snapshot
    to, frm, term, log_term, index, commit, reject_hint, snap_offset, snap_total
               9 x u64
    context    u32 length + bytes
    entries    u32 count, then per entry: term u64, index u64, type u8, data (u32 len + bytes)
    snapshot   (if flag) index u64, term u64, conf state, data (u32 len + bytes)
    conf state voters, learners, voters_outgoing, learners_next: each u32 count + u64 ids;
               auto_leave u8

A decoded u64 field holds 0..2**63-1 only: terms, indexes and ids are signed 64-bit
integers where they are kept (the log's index arrays), so a larger value from the
network would pass the decoder and crash the peer that saves it.  Encoding takes the
whole u64 range (what the core makes never comes near 2**63; checking it would cost
the hot path), so only values below 2**63 round-trip.

Decoding checks every length against the remaining input, rejects unknown versions,
kinds and flags, out-of-range integers and any trailing byte, and raises
:class:`DecodeError` (and nothing else) for any malformed input.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, List, Tuple, TypeVar

from .types import (
    ConfChange,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "DecodeError",
    "encode_message",
    "decode_message",
    "encode_conf_change",
    "decode_conf_change",
    "encode_entry",
    "decode_entry",
    "encode_conf_state",
    "decode_conf_state",
    "FORMAT_VERSION",
]

MAGIC = b"RM"
CC_MAGIC = b"RC"
FORMAT_VERSION = 1

_FLAG_REJECT = 0x01
_FLAG_SNAPSHOT = 0x02
_FLAGS_KNOWN = _FLAG_REJECT | _FLAG_SNAPSHOT

_HDR = struct.Struct(">2sBBB9Q")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ENT = struct.Struct(">QQB")
_ENT_LEN = struct.Struct(">QQBI")  # an entry header and its data length (the fast paths)
_SNAPHDR = struct.Struct(">QQ")
_CHANGE = struct.Struct(">BQ")  # a conf change: type, node id
_U64_MAX = (1 << 64) - 1
_DECODE_MAX = (1 << 63) - 1  # the largest value decoded into a u64 field (module docstring)
_MSG_TYPES = frozenset(int(t) for t in MessageType)
_ENTRY_TYPES = frozenset(int(t) for t in EntryType)
_CC_TYPES = frozenset(int(t) for t in ConfChangeType)
_CC_TRANSITIONS = frozenset(int(t) for t in ConfChangeTransition)
_MSG_TYPE_OF = {int(t): t for t in MessageType}
_ENTRY_TYPE_OF = {int(t): t for t in EntryType}


class DecodeError(ValueError):
    """Malformed, truncated or unsupported input to a decoder."""


# -------------------------------------------------------------------------- encoding


def _u64(name: str, v: int) -> int:
    if not isinstance(v, int) or v < 0 or v > _U64_MAX:
        raise ValueError(f"field {name}={v!r} is not an unsigned 64-bit integer")
    return v


def _put_bytes(out: List[bytes], b: bytes) -> None:
    out.append(_U32.pack(len(b)))
    out.append(bytes(b))


def _put_ids(out: List[bytes], ids: Tuple[int, ...]) -> None:
    out.append(_U32.pack(len(ids)))
    for i in ids:
        out.append(_U64.pack(_u64("node id", i)))


def _put_conf_state(out: List[bytes], cs: ConfState) -> None:
    _put_ids(out, cs.voters)
    _put_ids(out, cs.learners)
    _put_ids(out, cs.voters_outgoing)
    _put_ids(out, cs.learners_next)
    out.append(b"\x01" if cs.auto_leave else b"\x00")


def _put_entry(out: List[bytes], e: Entry) -> None:
    out.append(_ENT.pack(_u64("entry.term", e.term), _u64("entry.index", e.index), int(e.type)))
    _put_bytes(out, e.data)


def encode_message(m: Message) -> bytes:
    """Encode ``m`` (format version :data:`FORMAT_VERSION`).  Raises ValueError for a
    message whose fields do not fit the format (negative or too-large integers)."""
    flags = (_FLAG_REJECT if m.reject else 0) | (_FLAG_SNAPSHOT if m.snapshot is not None else 0)
    try:
        # The fast path: struct checks the ranges itself; only a failure is examined
        # field by field (below) to say which field does not fit.
        head = _HDR.pack(
            MAGIC,
            FORMAT_VERSION,
            m.type,
            flags,
            m.to,
            m.frm,
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.reject_hint,
            m.snap_offset,
            m.snap_total,
        )
        ctx = m.context
        out: List[bytes] = [
            head,
            _U32.pack(len(ctx)),
            ctx if type(ctx) is bytes else bytes(ctx),
            _U32.pack(len(m.entries)),
        ]
        pack = _ENT_LEN.pack
        for e in m.entries:
            d = e.data
            out.append(pack(e.term, e.index, e.type, len(d)))
            out.append(d if type(d) is bytes else bytes(d))
    except struct.error:
        out = _encode_checked(m, flags)
    if m.snapshot is not None:
        s = m.snapshot
        out.append(_SNAPHDR.pack(_u64("snapshot.index", s.meta.index), _u64("snapshot.term", s.meta.term)))
        _put_conf_state(out, s.meta.conf_state)
        _put_bytes(out, s.data)
    return b"".join(out)


def _encode_checked(m: Message, flags: int) -> List[bytes]:
    """The header, context and entries of ``m``, every field checked (ValueError names
    the one that does not fit)."""
    out: List[bytes] = [
        _HDR.pack(
            MAGIC,
            FORMAT_VERSION,
            int(m.type),
            flags,
            _u64("to", m.to),
            _u64("frm", m.frm),
            _u64("term", m.term),
            _u64("log_term", m.log_term),
            _u64("index", m.index),
            _u64("commit", m.commit),
            _u64("reject_hint", m.reject_hint),
            _u64("snap_offset", m.snap_offset),
            _u64("snap_total", m.snap_total),
        )
    ]
    _put_bytes(out, m.context)
    out.append(_U32.pack(len(m.entries)))
    for e in m.entries:
        _put_entry(out, e)
    return out


# -------------------------------------------------------------------------- decoding


def _check_range(what: str, *values: int) -> None:
    for v in values:
        if v > _DECODE_MAX:
            raise DecodeError(f"{what}: {v} is beyond 2**63-1")


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise DecodeError(f"truncated input reading {what} at offset {self.pos}")

    def unpack(self, st: struct.Struct, what: str) -> Tuple[Any, ...]:
        self.need(st.size, what)
        v = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def u8(self, what: str) -> int:
        self.need(1, what)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u32(self, what: str) -> int:
        return int(self.unpack(_U32, what)[0])

    def bytes_(self, what: str) -> bytes:
        n = self.u32(what + " length")
        self.need(n, what)
        v = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return v

    def ids(self, what: str) -> Tuple[int, ...]:
        n = self.u32(what + " count")
        self.need(n * 8, what)
        v = struct.unpack_from(f">{n}Q", self.buf, self.pos) if n else ()
        self.pos += n * 8
        _check_range(what, *v)
        return tuple(v)

    def bool_(self, what: str) -> bool:
        v = self.u8(what)
        if v > 1:
            raise DecodeError(f"invalid boolean {v} for {what}")
        return v == 1

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=self.ids("voters"),
            learners=self.ids("learners"),
            voters_outgoing=self.ids("voters_outgoing"),
            learners_next=self.ids("learners_next"),
            auto_leave=self.bool_("auto_leave"),
        )

    def entry(self) -> Entry:
        term, index, etype = self.unpack(_ENT, "entry header")
        _check_range("entry header", term, index)
        if etype not in _ENTRY_TYPES:
            raise DecodeError(f"unknown entry type {etype}")
        return Entry(term=term, index=index, type=EntryType(etype), data=self.bytes_("entry data"))

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise DecodeError(f"{len(self.buf) - self.pos} trailing bytes")


def _as_bytes(b: object) -> bytes:
    if isinstance(b, (bytes, bytearray, memoryview)):
        return bytes(b)
    raise DecodeError(f"expected bytes, got {type(b).__name__}")


_T = TypeVar("_T")


def _decode(what: str, b: object, read: Callable[[_Reader], _T]) -> _T:
    """``read`` one value from all of ``b``: the one place the contract of every decode_*
    function is kept -- malformed input of any kind raises :class:`DecodeError`, never
    anything else, and trailing bytes are malformed."""
    try:
        r = _Reader(_as_bytes(b))
        value = read(r)
        r.done()
        return value
    except DecodeError:
        raise
    except Exception as e:  # defensive: the contract is "DecodeError only"
        raise DecodeError(f"malformed {what}: {e!r}") from e


def decode_message(b: bytes) -> Message:
    """Decode bytes made by :func:`encode_message`.  Raises :class:`DecodeError` for any
    malformed input, never anything else."""
    if type(b) is bytes:
        m = _read_plain_message(b)
        if m is not None:
            return m
    return _decode("message", b, _read_message)


_HDR_SIZE = _HDR.size
_ENT_LEN_SIZE = _ENT_LEN.size


def _read_plain_message(b: bytes) -> "Message | None":
    """The fast path of :func:`decode_message`: a well-formed message without a snapshot,
    or None for anything else (then the careful reader decodes it, or says exactly what
    is wrong)."""
    n = len(b)
    if n < _HDR_SIZE + 8:
        return None
    magic, version, mtype, flags, to, frm, term, log_term, index, commit, hint, off, total = _HDR.unpack_from(b, 0)
    mt = _MSG_TYPE_OF.get(mtype)
    if magic != MAGIC or version != FORMAT_VERSION or mt is None or flags & ~_FLAG_REJECT:
        return None
    if (to | frm | term | log_term | index | commit | hint | off | total) >> 63:
        return None
    p = _HDR_SIZE
    clen = _U32.unpack_from(b, p)[0]
    p += 4
    if p + clen + 4 > n:
        return None
    context = b[p : p + clen]
    p += clen
    count = _U32.unpack_from(b, p)[0]
    p += 4
    entries: Tuple[Entry, ...] = ()
    if count:
        if p + count * _ENT_LEN_SIZE > n:
            return None
        ents = []
        unpack = _ENT_LEN.unpack_from
        for _ in range(count):
            if p + _ENT_LEN_SIZE > n:
                return None
            et, ei, ety, dlen = unpack(b, p)
            p += _ENT_LEN_SIZE
            etype = _ENTRY_TYPE_OF.get(ety)
            if etype is None or p + dlen > n or (et | ei) >> 63:
                return None
            ents.append(Entry(term=et, index=ei, type=etype, data=b[p : p + dlen]))
            p += dlen
        entries = tuple(ents)
    if p != n:
        return None
    return Message(
        type=mt,
        to=to,
        frm=frm,
        term=term,
        log_term=log_term,
        index=index,
        entries=entries,
        commit=commit,
        reject=bool(flags & _FLAG_REJECT),
        reject_hint=hint,
        snapshot=None,
        context=context,
        snap_offset=off,
        snap_total=total,
    )


def _read_message(r: _Reader) -> Message:
    (magic, version, mtype, flags, to, frm, term, log_term, index, commit, hint, off, total) = r.unpack(
        _HDR, "message header"
    )
    if magic != MAGIC:
        raise DecodeError(f"bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise DecodeError(f"unsupported message format version {version}")
    if mtype not in _MSG_TYPES:
        raise DecodeError(f"unknown message type {mtype}")
    if flags & ~_FLAGS_KNOWN:
        raise DecodeError(f"unknown flags {flags:#x}")
    _check_range("message header", to, frm, term, log_term, index, commit, hint, off, total)
    context = r.bytes_("context")
    n = r.u32("entry count")
    # every entry takes at least 21 bytes: bound the count before looping
    r.need(n * (_ENT.size + 4), "entries")
    entries = tuple(r.entry() for _ in range(n))
    snapshot = None
    if flags & _FLAG_SNAPSHOT:
        sidx, sterm = r.unpack(_SNAPHDR, "snapshot header")
        _check_range("snapshot header", sidx, sterm)
        cs = r.conf_state()
        data = r.bytes_("snapshot data")
        snapshot = Snapshot(SnapshotMeta(sidx, sterm, cs), data)
    return Message(
        type=MessageType(mtype),
        to=to,
        frm=frm,
        term=term,
        log_term=log_term,
        index=index,
        entries=entries,
        commit=commit,
        reject=bool(flags & _FLAG_REJECT),
        reject_hint=hint,
        snapshot=snapshot,
        context=context,
        snap_offset=off,
        snap_total=total,
    )


# -------------------------------------------------------------------------- others


def encode_conf_change(cc: ConfChange) -> bytes:
    """Encode a ConfChange for the data of a CONF_CHANGE entry::

    b"RC" version u8, transition u8, u32 count, (type u8, node u64)*, context
    """
    out: List[bytes] = [CC_MAGIC, bytes([FORMAT_VERSION, int(cc.transition)]), _U32.pack(len(cc.changes))]
    for t, node in cc.changes:
        out.append(_CHANGE.pack(int(t), _u64("node id", node)))
    _put_bytes(out, cc.context)
    return b"".join(out)


def decode_conf_change(b: bytes) -> ConfChange:
    """Inverse of :func:`encode_conf_change`; raises :class:`DecodeError` only."""
    return _decode("conf change", b, _read_conf_change)


def _read_conf_change(r: _Reader) -> ConfChange:
    r.need(4, "conf change header")
    if r.buf[:2] != CC_MAGIC:
        raise DecodeError("bad conf change magic")
    r.pos = 2
    version = r.u8("version")
    if version != FORMAT_VERSION:
        raise DecodeError(f"unsupported conf change version {version}")
    transition = r.u8("transition")
    if transition not in _CC_TRANSITIONS:
        raise DecodeError(f"unknown conf change transition {transition}")
    n = r.u32("change count")
    r.need(n * 9, "changes")
    changes = []
    for _ in range(n):
        t, node = r.unpack(_CHANGE, "change")
        if t not in _CC_TYPES:
            raise DecodeError(f"unknown conf change type {t}")
        _check_range("conf change node id", node)
        changes.append((ConfChangeType(t), node))
    ctx = r.bytes_("context")
    return ConfChange(tuple(changes), ctx, ConfChangeTransition(transition))


def encode_entry(e: Entry) -> bytes:
    out: List[bytes] = []
    _put_entry(out, e)
    return b"".join(out)


def decode_entry(b: bytes) -> Entry:
    """Inverse of :func:`encode_entry`; raises :class:`DecodeError` only."""
    return _decode("entry", b, _Reader.entry)


def encode_conf_state(cs: ConfState) -> bytes:
    out: List[bytes] = []
    _put_conf_state(out, cs)
    return b"".join(out)


def decode_conf_state(b: bytes) -> ConfState:
    """Inverse of :func:`encode_conf_state`; raises :class:`DecodeError` only."""
    return _decode("conf state", b, _Reader.conf_state)
