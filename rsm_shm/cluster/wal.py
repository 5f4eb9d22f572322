"""The write-ahead log: CRC-framed records in append-only segment files.

A log is a directory of segment files ``0000000000000001.wal``, ``...02.wal`` ... with
consecutive sequence numbers; only the newest (the *active* segment) is written, always
at its end.  What the records mean is :mod:`rsm_shm.cluster.storage`'s business; this
module frames, writes, syncs, reads back and recovers them.

Record framing (little endian), a 16-byte header then the payload::

    u32 length    payload bytes
    u8  type      RecordType
    3 bytes       zero
    u32 hcrc      CRC-32 of the 8 bytes above
    u32 crc       CRC-32 of the payload

The header has its own CRC so that a damaged length is recognised as damage, rather
than taken for a record that runs past the end of the file (which would look like a
torn write and be cut off, losing everything after it).

Every segment starts with a ``HEADER`` record (magic, format, sequence number) followed
by whatever the caller passes to :meth:`WAL.roll` (the storage writes a checkpoint of its
state, so a segment never depends on the records of the segments before it except for
log entries).  A new segment is written to a temporary file, synced, renamed into place
and the directory synced, so a segment that exists is complete from its start; before
moving to a new segment the previous one is synced, so only the active segment can end
in a torn write.

Recovery (:meth:`WAL.recover`) reads every segment in order and hands each record to the
caller.  A defect (a short header or payload, a checksum mismatch) at offset ``p`` of
the active segment, after its initial records, is a *torn tail* -- the remains of a
write a crash cut short, which was never synced so never acknowledged -- when no intact
record (both checksums right) follows it anywhere in the file: a torn write leaves a
prefix of its bytes, zeros or stale bytes, never a later record.  A torn tail is cut off
(the file truncated at ``p``) and reported in :attr:`WAL.truncated`.  A defect followed
by an intact record, and any defect in an older segment, raises :class:`CorruptLogError`
naming the file and offset: the log is refused rather than silently shortened, since
what follows may be committed entries.  The one ambiguous case is damage inside the very
last record: it cannot be told from a torn write, and like etcd the log is cut there.

Not thread-safe: one peer loop owns a log.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

__all__ = [
    "FORMAT",
    "RecordType",
    "CorruptLogError",
    "LogFailedError",
    "TornTail",
    "WAL",
    "frame",
    "fsync_dir",
    "HEADER_SIZE",
]

FORMAT = 1  # version of the segment and record layout; a newer one is refused
MAGIC = b"RSMSHMWAL\x00"
HEADER = struct.Struct("<IB3xII")  # length, type, hcrc, crc
HEADER_SIZE = HEADER.size
_LEN_TYPE = struct.Struct("<IB3x")  # the 8 bytes covered by hcrc
_SEG_HEADER = struct.Struct("<10sHQQ")  # magic, format, sequence number, end of initial records
MAX_PAYLOAD = (1 << 32) - 1
# A position is (segment sequence << OFFSET_BITS) | byte offset: one int per entry.
OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
SUFFIX = ".wal"


class RecordType(enum.IntEnum):
    HEADER = 1  # segment header: magic, format, sequence number
    STATE = 2  # checkpoint of the storage's state, at the start of each segment
    HARD_STATE = 3  # term, vote, commit
    ENTRIES = 4  # consecutive log entries
    SNAPSHOT = 5  # a snapshot was recorded (its data is in a snapshot file)
    COMPACT = 6  # the log prefix up to an index was discarded


class CorruptLogError(Exception):
    """The log is damaged before its tail; it is refused rather than shortened.

    ``path`` and ``offset`` locate the damage.  Do not delete the file to get going: it
    may hold committed entries.  Replace the peer's data directory instead (a peer
    whose data is lost rejoins as a new member and catches up from the others).
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(
            f"write-ahead log {path} is corrupt at offset {offset}: {reason}; refusing to "
            f"open it (records after this point may be committed entries)"
        )
        self.path = path
        self.offset = offset
        self.reason = reason


class LogFailedError(OSError):
    """A write or sync of the log failed and the file could not be restored to a known
    state (after a failed fsync the kernel may have dropped the dirty pages); the log
    accepts nothing more.  Close it and reopen: recovery rereads what is on disk."""


@dataclass(frozen=True)
class TornTail:
    """A torn tail cut off by recovery: ``path`` truncated at ``offset``, ``dropped``
    bytes removed."""

    path: str
    offset: int
    dropped: int
    reason: str


def frame(rtype: int, payload: bytes) -> bytes:
    """One record: header and ``payload``."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"WAL record of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    lt = _LEN_TYPE.pack(n, rtype)
    return HEADER.pack(n, rtype, zlib.crc32(lt), zlib.crc32(payload)) + payload


def fsync_dir(path: str) -> None:
    """Make the directory entries of ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def segment_name(seq: int) -> str:
    return f"{seq:016d}{SUFFIX}"


def _find_record(mv: memoryview, start: int, size: int) -> Optional[int]:
    """Offset of the first intact record (both checksums right) at or after ``start``,
    or None.  Only called on a defect, to tell a torn tail from damage in the middle."""
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    q = start
    while q + HEADER_SIZE <= size:
        if not any(mv[q : q + HEADER_SIZE]):
            # an all-zero window is never a header (the CRC of zeros is not zero): skip
            # the zero run in C, a chunk at a time
            chunk = mv[q : q + 65536].tobytes()
            skip = len(chunk) - len(chunk.lstrip(b"\0"))
            if skip == len(chunk) and q + len(chunk) >= size:
                return None  # zeros to the end of the file
            # a header may start up to HEADER_SIZE - 1 bytes before the first non-zero
            q += max(1, skip - HEADER_SIZE + 1)
            continue
        n, _rtype, hcrc, crc = unpack(mv, q)
        if crc32(mv[q : q + 8]) == hcrc and q + HEADER_SIZE + n <= size:
            if crc32(mv[q + HEADER_SIZE : q + HEADER_SIZE + n]) == crc:
                return q
        q += 1
    return None


# Handler of recovered records: (segment sequence, payload offset in the file, type, payload).
RecordHandler = Callable[[int, int, int, memoryview], None]


class WAL:
    """The segment files of one log directory: append, sync, read back, roll, drop.

    ``fsync=False`` never syncs (a killed process loses nothing, an OS crash may).
    """

    def __init__(self, dirpath: str, *, fsync: bool = True, segment_bytes: int = 64 << 20) -> None:
        if segment_bytes < 4096:
            raise ValueError(f"WAL({dirpath!r}): segment_bytes must be >= 4096, got {segment_bytes!r}")
        self.dir = dirpath
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.segments: Dict[int, str] = {}  # sequence number -> path
        self.active_seq = 0
        self.active_size = 0
        self.truncated: Optional[TornTail] = None
        self._wfd = -1
        self._rfds: Dict[int, int] = {}
        self._failed: Optional[BaseException] = None
        self.fsyncs = 0
        self.fsync_seconds = 0.0
        self.bytes_written = 0
        os.makedirs(dirpath, exist_ok=True)

    # ------------------------------------------------------------------ recovery
    def recover(self, handler: RecordHandler) -> int:
        """Hand every record of every segment, oldest first, to ``handler`` and open the
        newest segment for appending; returns the number of segments (0: an empty log,
        start one with :meth:`roll`).  Raises CorruptLogError (see the module docstring)."""
        for name in os.listdir(self.dir):
            if name.endswith(".tmp"):
                # a segment or snapshot being created when a crash came: never renamed
                # into place, so nothing refers to it
                os.unlink(os.path.join(self.dir, name))
        seqs: List[int] = []
        for name in os.listdir(self.dir):
            if name.endswith(SUFFIX) and name[: -len(SUFFIX)].isdigit():
                seqs.append(int(name[: -len(SUFFIX)]))
        seqs.sort()
        for a, b in zip(seqs, seqs[1:]):
            if b != a + 1:
                # Only a prefix is ever removed (compaction); a hole is data loss.
                raise CorruptLogError(
                    os.path.join(self.dir, segment_name(a + 1)), 0, f"segment missing between {a} and {b}"
                )
        for k, seq in enumerate(seqs):
            path = os.path.join(self.dir, segment_name(seq))
            self.segments[seq] = path
            end = self._scan(seq, path, handler, last=(k == len(seqs) - 1))
            if k == len(seqs) - 1:
                self._open_active(seq, path, end)
        return len(seqs)

    def _scan(self, seq: int, path: str, handler: RecordHandler, last: bool) -> int:
        """Hand the records of one segment to ``handler``; returns the offset where its
        valid records end (cutting off a torn tail of the last segment)."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise CorruptLogError(path, 0, "empty segment (no header record)")
            # mapped rather than read: a 64 MiB segment costs no heap, and its pages
            # leave the process's memory with the mapping
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return self._scan_buffer(seq, path, memoryview(mm), size, handler, last)
        finally:
            try:
                mm.close()
            except BufferError:  # a handler kept a view: the mapping goes with it
                pass

    def _scan_buffer(self, seq: int, path: str, mv: memoryview, size: int, handler: RecordHandler, last: bool) -> int:
        unpack = HEADER.unpack_from
        crc32 = zlib.crc32
        p = 0
        initial_end = HEADER_SIZE  # records before it were written before the rename
        header_seen = False
        while p < size:
            defect = None
            search_from = p + 1  # where a later intact record would prove real damage
            if size - p < HEADER_SIZE:
                defect = "incomplete record header"
            else:
                n, rtype, hcrc, crc = unpack(mv, p)
                if crc32(mv[p : p + 8]) != hcrc:
                    defect = "record header checksum mismatch"
                elif p + HEADER_SIZE + n > size:
                    defect = f"record of {n} bytes runs past the end of the file"
                else:
                    payload = mv[p + HEADER_SIZE : p + HEADER_SIZE + n]
                    if crc32(payload) != crc:
                        defect = "record checksum mismatch"
                        search_from = p + HEADER_SIZE + n
                    elif not header_seen:
                        initial_end = self._check_segment_header(path, seq, rtype, payload)
                        header_seen = True
                    else:
                        if rtype not in _KNOWN_TYPES:
                            raise CorruptLogError(path, p, f"unknown record type {rtype}")
                        handler(seq, p + HEADER_SIZE, rtype, payload)
                    del payload
            if defect is None:
                p += HEADER_SIZE + n
                continue
            if last and p >= initial_end:
                later = _find_record(mv, search_from, size)
                if later is None:
                    # nothing intact follows: the remains of the write a crash cut short
                    self._cut(path, p, size - p, defect)
                    return p
                defect += f" (an intact record follows at offset {later})"
            raise CorruptLogError(path, p, defect)
        if not header_seen:
            raise CorruptLogError(path, 0, "empty segment (no header record)")
        return size

    def _check_segment_header(self, path: str, seq: int, rtype: int, payload: memoryview) -> int:
        if rtype != RecordType.HEADER or len(payload) < _SEG_HEADER.size:
            raise CorruptLogError(path, 0, "the segment does not start with a header record")
        magic, fmt, hseq, initial_end = _SEG_HEADER.unpack_from(payload)
        if magic != MAGIC:
            raise CorruptLogError(path, 0, f"not an rsm_shm write-ahead log (magic {magic!r})")
        if fmt > FORMAT:
            raise CorruptLogError(path, 0, f"written in log format {fmt}, newer than this rsm_shm reads ({FORMAT})")
        if hseq != seq:
            raise CorruptLogError(path, 0, f"segment header says sequence {hseq}, file name says {seq}")
        end: int = initial_end
        return end

    def _cut(self, path: str, offset: int, dropped: int, reason: str) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, offset)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self.truncated = TornTail(path, offset, dropped, reason)

    def _open_active(self, seq: int, path: str, size: int) -> None:
        self._wfd = os.open(path, os.O_RDWR | os.O_APPEND)
        self.active_seq = seq
        self.active_size = size

    # ------------------------------------------------------------------- writing
    def roll(self, initial: bytes) -> None:
        """Start a new segment holding ``initial`` (framed records) after its header;
        the previous segment is synced first.  Also starts the first segment."""
        self._check()
        seq = self.active_seq + 1
        if self._wfd >= 0:
            self.sync()
            # keep the old descriptor for reads
            self._rfds[self.active_seq] = self._wfd
            self._wfd = -1
        path = os.path.join(self.dir, segment_name(seq))
        tmp = path + ".tmp"
        initial_end = HEADER_SIZE + _SEG_HEADER.size + len(initial)
        body = frame(RecordType.HEADER, _SEG_HEADER.pack(MAGIC, FORMAT, seq, initial_end)) + initial
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, body)
            if self.fsync:
                self._timed_sync(os.fsync, fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        if self.fsync:
            fsync_dir(self.dir)
        self.segments[seq] = path
        self.bytes_written += len(body)
        self._open_active(seq, path, len(body))

    def write(self, buf: "bytes | bytearray") -> int:
        """Append framed records ``buf`` to the active segment (not synced); returns the
        position (see :func:`position`) where ``buf`` starts."""
        self._check()
        start = self.active_size
        try:
            _write_all(self._wfd, buf)
        except OSError as e:
            # A partial record followed by later records would read as corruption: cut
            # it off now, or refuse everything if even that fails.
            try:
                os.ftruncate(self._wfd, start)
            except OSError:
                self._failed = e
                raise LogFailedError(
                    f"write to {self.segments[self.active_seq]} failed and could not be undone: {e}"
                ) from e
            raise
        self.active_size = start + len(buf)
        self.bytes_written += len(buf)
        return (self.active_seq << OFFSET_BITS) | start

    def sync(self) -> None:
        """Make everything written so far durable (one fdatasync; nothing if fsync=False)."""
        self._check()
        if self.fsync:
            self._timed_sync(os.fdatasync, self._wfd)

    def _timed_sync(self, fn: Callable[[int], None], fd: int) -> None:
        t0 = time.perf_counter()
        try:
            fn(fd)
        except OSError as e:
            # After a failed fsync the kernel may have dropped the dirty pages and a
            # retry can report success over lost data (the "fsyncgate" lesson): stop.
            self._failed = e
            raise LogFailedError(f"fsync of the write-ahead log in {self.dir} failed: {e}") from e
        self.fsyncs += 1
        self.fsync_seconds += time.perf_counter() - t0

    @property
    def needs_roll(self) -> bool:
        return self.active_size >= self.segment_bytes

    def _check(self) -> None:
        if self._failed is not None:
            raise LogFailedError(f"the write-ahead log in {self.dir} failed earlier ({self._failed}); reopen it")

    # ------------------------------------------------------------------- reading
    def read(self, pos: int, n: int) -> bytes:
        """``n`` bytes at position ``pos`` (from :meth:`write` or recovery)."""
        seq = pos >> OFFSET_BITS
        fd = self._wfd if seq == self.active_seq else self._rfds.get(seq)
        if fd is None:
            path = self.segments.get(seq)
            if path is None:
                raise KeyError(f"WAL segment {seq} was removed")
            fd = self._rfds[seq] = os.open(path, os.O_RDONLY)
        off = pos & OFFSET_MASK
        b = os.pread(fd, n, off)
        if len(b) != n:
            raise CorruptLogError(self.segments[seq], off, f"short read ({len(b)} of {n} bytes)")
        return b

    # ------------------------------------------------------------------ removing
    def remove_before(self, seq: int) -> int:
        """Delete every segment older than ``seq`` (never the active one); returns how
        many.  The caller must have made durable whatever makes them unnecessary."""
        seq = min(seq, self.active_seq)
        gone = [s for s in self.segments if s < seq]
        for s in sorted(gone):
            fd = self._rfds.pop(s, None)
            if fd is not None:
                os.close(fd)
            os.unlink(self.segments.pop(s))
        if gone and self.fsync:
            fsync_dir(self.dir)
        return len(gone)

    def close(self) -> None:
        for fd in self._rfds.values():
            os.close(fd)
        self._rfds.clear()
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1


_KNOWN_TYPES = frozenset(int(t) for t in RecordType)


def position(seq: int, offset: int) -> int:
    return (seq << OFFSET_BITS) | offset


def split_position(pos: int) -> Tuple[int, int]:
    return pos >> OFFSET_BITS, pos & OFFSET_MASK


def _write_all(fd: int, buf: "bytes | bytearray") -> None:
    mv = memoryview(buf)
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]
