"""The envelope every message between peers and clients travels in (never pickle).

An envelope is one ring message::

    magic b"RE" | version u8 | kind u8 | sender u32 | cluster id u64 | body

(little-endian).  ``sender`` is a peer id (0 for a client).  ``cluster id`` is the
random id of the cluster incarnation; a peer drops envelopes of another incarnation.
Bodies by kind:

* ``RAFT``: one Raft message in the core's codec (``rsm_shm.raft.codec``).
* ``PROPOSE``: ``reply ring name (u16 len + UTF-8) | count u32 | count x request`` where a
  request is ``op u8 | rid u64 | session u64 | seq u64 | acked u64 | len u32 | data``.
  ``op`` is ``OP_COMMAND`` (data: the state machine command) or ``OP_REGISTER`` (open
  the session).  ``acked``: the client holds every result up to that sequence number,
  so the peers may forget them.
* ``READ``: ``reply ring name | count u32 | count x (rid u64 | len u32 | query)``.
* ``ADMIN``: ``reply ring name | rid u64 | op u8 | arg u64 | context (u16 len + bytes)``
  (membership, transfer; the context travels with a membership change into the log,
  e.g. a served peer's address).
* ``REPLY``: ``count u32 | count x (rid u64 | status u8 | len u32 | payload)``.

Every decoder checks every length against the input and raises :class:`EnvelopeError`
(a ValueError) and nothing else on malformed input: a peer counts and drops it.
"""

from __future__ import annotations

import struct
from typing import Iterable, List, Sequence, Tuple

__all__ = [
    "EnvelopeError",
    "KIND_RAFT",
    "KIND_PROPOSE",
    "KIND_READ",
    "KIND_ADMIN",
    "KIND_REPLY",
    "encode_header",
    "decode_header",
    "HEADER_SIZE",
    "encode_propose",
    "decode_propose",
    "encode_read",
    "decode_read",
    "encode_admin",
    "decode_admin",
    "encode_reply",
    "decode_reply",
]

MAGIC = b"RE"
VERSION = 1
KIND_RAFT = 1
KIND_PROPOSE = 2
KIND_READ = 3
KIND_ADMIN = 4
KIND_REPLY = 5
_KINDS = frozenset({KIND_RAFT, KIND_PROPOSE, KIND_READ, KIND_ADMIN, KIND_REPLY})

OP_COMMAND = 1
OP_REGISTER = 2

# Reply statuses.
OK = 0
ERROR = 1  # StateMachine.apply / query raised: payload is the exception's repr
NOT_LEADER = 2  # payload: the leader hint (u32, 0 = unknown)
RETRY = 3  # dropped (transfer in progress, out-of-order sequence): send again
SESSION_EXPIRED = 4  # the session was evicted or never registered
STALE = 5  # the sequence number was already acknowledged by the client
BAD_REQUEST = 6  # payload: what was wrong

ADMIN_TRANSFER = 1
ADMIN_ADD_LEARNER = 2
ADMIN_PROMOTE = 3
ADMIN_REMOVE = 4
ADMIN_SNAPSHOT = 5

_HDR = struct.Struct("<2sBBIQ")
HEADER_SIZE = _HDR.size
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_REQ = struct.Struct("<BQQQQI")
_READ = struct.Struct("<QI")
_ADMIN = struct.Struct("<QBQ")
_REPLY = struct.Struct("<QBI")

#: One command of a PROPOSE: (op, rid, session, seq, acked, data).
ProposeRequest = Tuple[int, int, int, int, int, bytes]
#: One query of a READ: (rid, query).
ReadRequest = Tuple[int, bytes]
#: One answer of a REPLY: (rid, status, payload).
Reply = Tuple[int, int, bytes]
LEADER_HINT = _U32


class EnvelopeError(ValueError):
    """A malformed, truncated or foreign envelope."""


def encode_header(kind: int, sender: int, cluster_id: int) -> bytes:
    return _HDR.pack(MAGIC, VERSION, kind, sender, cluster_id)


def decode_header(b: bytes) -> Tuple[int, int, int]:
    """(kind, sender, cluster id); the body starts at HEADER_SIZE."""
    if len(b) < HEADER_SIZE:
        raise EnvelopeError(f"envelope of {len(b)} bytes is shorter than its header")
    magic, version, kind, sender, cid = _HDR.unpack_from(b, 0)
    if magic != MAGIC:
        raise EnvelopeError("not an rsm_shm cluster envelope (bad magic)")
    if version != VERSION:
        raise EnvelopeError(f"envelope version {version} is not supported (this rsm_shm speaks {VERSION})")
    if kind not in _KINDS:
        raise EnvelopeError(f"unknown envelope kind {kind}")
    return kind, sender, cid


def _name(name: str) -> bytes:
    raw = name.encode()
    return _U16.pack(len(raw)) + raw


def _read_name(b: bytes, off: int) -> Tuple[str, int]:
    if off + 2 > len(b):
        raise EnvelopeError("truncated reply ring name")
    (n,) = _U16.unpack_from(b, off)
    off += 2
    if off + n > len(b):
        raise EnvelopeError("truncated reply ring name")
    try:
        return b[off : off + n].decode(), off + n
    except UnicodeDecodeError:
        raise EnvelopeError("reply ring name is not UTF-8") from None


def _count(b: bytes, off: int) -> Tuple[int, int]:
    if off + 4 > len(b):
        raise EnvelopeError("truncated count")
    return _U32.unpack_from(b, off)[0], off + 4


def encode_propose(header: bytes, reply_to: str, requests: Iterable[ProposeRequest]) -> bytes:
    """``requests``: iterable of (op, rid, session, seq, acked, data)."""
    parts = [header, _name(reply_to), b""]
    n = 0
    pack = _REQ.pack
    for op, rid, session, seq, acked, data in requests:
        parts.append(pack(op, rid, session, seq, acked, len(data)))
        parts.append(data)
        n += 1
    parts[2] = _U32.pack(n)
    return b"".join(parts)


def decode_propose(b: bytes) -> Tuple[str, List[ProposeRequest]]:
    reply_to, off = _read_name(b, HEADER_SIZE)
    n, off = _count(b, off)
    out = []
    size = _REQ.size
    end = len(b)
    unpack = _REQ.unpack_from
    for _ in range(n):
        if off + size > end:
            raise EnvelopeError("truncated proposal")
        op, rid, session, seq, acked, ln = unpack(b, off)
        off += size
        if off + ln > end:
            raise EnvelopeError("truncated proposal data")
        if op not in (OP_COMMAND, OP_REGISTER):
            raise EnvelopeError(f"unknown proposal op {op}")
        out.append((op, rid, session, seq, acked, b[off : off + ln]))
        off += ln
    if off != end:
        raise EnvelopeError("trailing bytes after the proposals")
    return reply_to, out


def encode_read(header: bytes, reply_to: str, requests: Iterable[ReadRequest]) -> bytes:
    """``requests``: iterable of (rid, query)."""
    parts = [header, _name(reply_to), b""]
    n = 0
    for rid, q in requests:
        parts.append(_READ.pack(rid, len(q)))
        parts.append(q)
        n += 1
    parts[2] = _U32.pack(n)
    return b"".join(parts)


def decode_read(b: bytes) -> Tuple[str, List[ReadRequest]]:
    reply_to, off = _read_name(b, HEADER_SIZE)
    n, off = _count(b, off)
    out = []
    end = len(b)
    for _ in range(n):
        if off + _READ.size > end:
            raise EnvelopeError("truncated read")
        rid, ln = _READ.unpack_from(b, off)
        off += _READ.size
        if off + ln > end:
            raise EnvelopeError("truncated read query")
        out.append((rid, b[off : off + ln]))
        off += ln
    if off != end:
        raise EnvelopeError("trailing bytes after the reads")
    return reply_to, out


def encode_admin(header: bytes, reply_to: str, rid: int, op: int, arg: int, context: bytes = b"") -> bytes:
    if len(context) > 0xFFFF:
        raise ValueError(f"admin context is {len(context)} bytes; the limit is 65535")
    return header + _name(reply_to) + _ADMIN.pack(rid, op, arg) + _U16.pack(len(context)) + context


def decode_admin(b: bytes) -> Tuple[str, int, int, int, bytes]:
    """(reply ring, rid, op, arg, context)."""
    reply_to, off = _read_name(b, HEADER_SIZE)
    if off + _ADMIN.size + 2 > len(b):
        raise EnvelopeError("malformed admin request")
    rid, op, arg = _ADMIN.unpack_from(b, off)
    off += _ADMIN.size
    (n,) = _U16.unpack_from(b, off)
    off += 2
    if off + n != len(b):
        raise EnvelopeError("malformed admin request context")
    return reply_to, rid, op, arg, b[off:]


def encode_reply(header: bytes, replies: Sequence[Reply]) -> bytes:
    """``replies``: list of (rid, status, payload)."""
    parts = [header, _U32.pack(len(replies))]
    pack = _REPLY.pack
    for rid, status, payload in replies:
        parts.append(pack(rid, status, len(payload)))
        parts.append(payload)
    return b"".join(parts)


def decode_reply(b: bytes) -> List[Reply]:
    n, off = _count(b, HEADER_SIZE)
    out = []
    end = len(b)
    size = _REPLY.size
    for _ in range(n):
        if off + size > end:
            raise EnvelopeError("truncated reply")
        rid, status, ln = _REPLY.unpack_from(b, off)
        off += size
        if off + ln > end:
            raise EnvelopeError("truncated reply payload")
        out.append((rid, status, b[off : off + ln]))
        off += ln
    if off != end:
        raise EnvelopeError("trailing bytes after the replies")
    return out
