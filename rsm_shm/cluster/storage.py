"""DiskStorage: one peer's Raft log, hard state and snapshot, durable on disk.

:class:`DiskStorage` implements the core's read side
(:class:`~rsm_shm.raft.storage.Storage`) and the write side
(:class:`~rsm_shm.raft.storage.StorageWriter`) over a write-ahead log of its own
(:mod:`rsm_shm.cluster.wal`), plus :meth:`DiskStorage.save`, which writes everything a
Ready asks to persist with a single sync (group commit: one fsync per Ready, however
many entries it carries).

A data directory holds::

    META     JSON: data format, cluster name, node id -- checked at every open, so a
             directory of another cluster or of a newer rsm_shm is refused
    LOCK     locked (flock) by the one process that has the directory open
    wal/     the log's segment files
    snap/    <index>-<term>.snap: the current snapshot (written to a temporary file,
             synced, renamed into place, directory synced)

What the log records: ``ENTRIES`` (consecutive entries; a batch whose first index is at
or below the last index replaces the suffix from there, as ``append`` does),
``HARD_STATE``, ``SNAPSHOT`` (a snapshot was created, or received and replaced the whole
log), ``COMPACT`` (the prefix up to an index was dropped), and at the start of each
segment a ``STATE`` checkpoint (hard state, snapshot, compaction point, last index), so
that segments holding nothing but compacted entries can be deleted whole.  Recovery
replays the records in order; torn tails and corruption are handled as the ``wal``
module says (cut a torn tail, refuse anything else naming file and offset).  A log
whose replay leaves a needed entry missing (a segment deleted by hand) is refused too.

Memory does not grow with the log's content: per entry only its term, position and size
are kept (20 bytes, in arrays); entries are read back from disk when asked for, except
the most recent ones, kept in a bounded cache (the leader sends those to followers).

Durability: every method of the write side is durable when it returns (it syncs), and
:meth:`DiskStorage.save` syncs when asked to (``sync=rd.must_sync``; a snapshot always).
``fsync=False`` never syncs: a killed process loses nothing (the data is in the page
cache) but an OS crash or power loss may lose acknowledged writes; it warns with
:class:`NotDurableWarning`.  Not thread-safe: one peer loop owns a storage.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import time
import warnings
import weakref
import zlib
from array import array
from dataclasses import dataclass
from itertools import accumulate
from typing import List, Optional, Sequence, Tuple, Union

from ..raft.codec import decode_conf_state, encode_conf_state
from ..raft.storage import CompactedError, SnapOutOfDateError, UnavailableError, check_snapshot_conf_state
from ..raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta
from .wal import HEADER_SIZE, OFFSET_BITS, CorruptLogError, RecordType, TornTail, WAL, fsync_dir, frame

__all__ = [
    "DiskStorage",
    "DataDirError",
    "NotDurableWarning",
    "RecoveryInfo",
    "StorageStats",
    "CorruptLogError",
    "DATA_FORMAT",
]

log = logging.getLogger(__name__)

# The data directory's format (META), raised when an older rsm_shm could misread what this
# one writes; a newer format is refused, an older one is raised to this one on open (then
# the older rsm_shm refuses it instead of misreading it).  2: log entries hold batches of
# runs (statemachine.BATCH_VERSION 2), which a format-1 reader would skip.
DATA_FORMAT = 2
META_FILE = "META"
LOCK_FILE = "LOCK"
WAL_DIR = "wal"
SNAP_DIR = "snap"
SNAP_SUFFIX = ".snap"

_HS = struct.Struct("<QQQ")  # term, vote, commit
_ENT = struct.Struct("<QQBI")  # term, index, type, data length; then the data
_SNAPREC = struct.Struct("<QQB")  # index, term, replaces the log; then the conf state
_COMPACT = struct.Struct("<QQ")  # index, term
_STATE = struct.Struct("<QQQQQQQQ")  # hard state, offset, offset term, last, snap index, snap term; then conf state
_SNAPFILE = struct.Struct("<8sH2xQQIQI")  # magic, format, index, term, conf len, data len, crc
_SNAP_MAGIC = b"RSMSNAP\x00"
_TYPES = {int(t): t for t in EntryType}
_OFFSET_MASK = (1 << OFFSET_BITS) - 1
_MISSING = -1  # position of an entry whose record is in a deleted segment (replay only)


class DataDirError(Exception):
    """The data directory cannot be used: another cluster's, a newer format, unreadable
    metadata, or open in another process."""


class NotDurableWarning(UserWarning):
    """A DiskStorage opened with ``fsync=False``: not durable across an OS crash."""


@dataclass(frozen=True)
class RecoveryInfo:
    """What opening the data directory found: ``segments`` replayed, ``entries`` in the
    log, the torn tail cut off (if any) and the time it took."""

    segments: int
    entries: int
    truncated: Optional[TornTail]
    seconds: float


@dataclass(frozen=True)
class StorageStats:
    fsyncs: int
    fsync_seconds: float
    bytes_written: int
    segments: int
    cached_entries: int
    disk_reads: int


class DiskStorage:
    """The Raft storage of one peer in the data directory ``path`` (created if needed).

    ``cluster`` and ``node_id`` are recorded in the directory when it is created and
    must match at every later open (None: not checked), so that a peer never starts on
    another cluster's or another peer's log.  ``segment_bytes`` is the size at which the
    log moves to a new segment file (compaction deletes whole segments);
    ``cache_entries``/``cache_bytes`` bound the cache of recent entries.

    Raises :class:`DataDirError` for a directory that is not usable (see its doc) and
    :class:`~rsm_shm.cluster.wal.CorruptLogError` for a damaged log.
    """

    def __init__(
        self,
        path: str,
        *,
        cluster: Optional[str] = None,
        node_id: Optional[int] = None,
        fsync: bool = True,
        segment_bytes: int = 64 << 20,
        cache_entries: int = 4096,
        cache_bytes: int = 8 << 20,
    ) -> None:
        if cache_entries < 0 or cache_bytes < 0:
            raise ValueError(f"DiskStorage({path!r}): cache bounds must be >= 0, got {cache_entries}, {cache_bytes}")
        self.path = os.path.abspath(os.fspath(path))
        self.fsync = bool(fsync)
        if not self.fsync:
            warnings.warn(
                f"DiskStorage({self.path!r}) opened with fsync=False: nothing is synced to disk, so an "
                "OS crash or power loss can lose writes that were acknowledged.  For tests and benchmarks only.",
                NotDurableWarning,
                stacklevel=2,
            )
        self._closed = True
        self._lock_fd = -1
        self._cache_entries = cache_entries
        self._cache_bytes_max = cache_bytes
        os.makedirs(self.path, exist_ok=True)
        self._lock()
        wal: Optional[WAL] = None
        try:
            self._check_meta(cluster, node_id)
            self._snap_dir = os.path.join(self.path, SNAP_DIR)
            os.makedirs(self._snap_dir, exist_ok=True)
            wal = self._wal = WAL(os.path.join(self.path, WAL_DIR), fsync=self.fsync, segment_bytes=segment_bytes)
            self._recover()
        except BaseException:
            if wal is not None:
                wal.close()
            self._unlock()
            raise
        self._closed = False

    # ------------------------------------------------------------- opening
    def _lock(self) -> None:
        fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirError(f"data directory {self.path} is already open (locked by pid {holder})") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _check_meta(self, cluster: Optional[str], node_id: Optional[int]) -> None:
        meta_path = os.path.join(self.path, META_FILE)
        try:
            with open(meta_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            wal_dir = os.path.join(self.path, WAL_DIR)
            if os.path.isdir(wal_dir) and any(n.endswith(".wal") for n in os.listdir(wal_dir)):
                raise DataDirError(f"data directory {self.path} holds a log but no {META_FILE} file") from None
            self.meta = {"format": DATA_FORMAT, "cluster": cluster, "node_id": node_id}
            _write_durably(meta_path, json.dumps(self.meta, indent=1).encode() + b"\n")
            return
        try:
            meta = json.loads(raw)
            fmt = int(meta["format"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataDirError(f"{meta_path} is not readable rsm_shm metadata: {e}") from None
        if fmt > DATA_FORMAT:
            raise DataDirError(
                f"data directory {self.path} has format {fmt}, written by a newer rsm_shm "
                f"(this one reads formats up to {DATA_FORMAT})"
            )
        if cluster is not None and meta.get("cluster") != cluster:
            raise DataDirError(
                f"data directory {self.path} belongs to cluster {meta.get('cluster')!r}, not {cluster!r}"
            )
        if node_id is not None and meta.get("node_id") != node_id:
            raise DataDirError(f"data directory {self.path} belongs to peer {meta.get('node_id')!r}, not {node_id!r}")
        if fmt < DATA_FORMAT:
            meta["format"] = DATA_FORMAT
            _write_durably(meta_path, json.dumps(meta, indent=1).encode() + b"\n")
        self.meta = meta

    def _recover(self) -> None:
        t0 = time.perf_counter()
        self._hs = HardState()
        self._snap_meta = SnapshotMeta()
        # The snapshot's data is not kept: it is read back from its file when asked for
        # (rarely: a peer's start, a follower that needs it) and shared while a caller
        # still holds it, so a large state is never in memory twice for long.
        self._snap_ref: Optional["weakref.ReferenceType[Snapshot]"] = None
        self._offset = 0  # index of the entry before the first one (snapshot or compaction point)
        self._offset_term = 0
        self._terms = array("q")  # of entries offset+1 .. offset+len
        self._pos = array("q")  # their position in the log (wal.position)
        self._sizes = array("I")  # their encoded size (_ENT header + data)
        self._cache: List[Entry] = []  # the newest entries: cache_first .. last_index
        self._cache_first = 1
        self._cache_bytes = 0
        self._disk_reads = 0
        self._replayed = 0  # segments replayed so far
        n = self._wal.recover(self._replay)
        if n == 0:
            self._wal.roll(self._checkpoint())
        elif _MISSING in self._pos:
            k = self._pos.index(_MISSING)
            raise CorruptLogError(
                self._wal.segments[min(self._wal.segments)],
                0,
                f"entry {self._offset + 1 + k} is missing (a segment holding it was deleted), "
                f"yet the log was never compacted past it",
            )
        self._cache_first = self.last_index() + 1
        if self._snap_meta.index > 0:
            self._check_snapshot_file(self._snap_meta)
        self._remove_snapshot_files(keep=self._snap_meta)
        if self._wal.truncated is not None:
            t = self._wal.truncated
            log.warning(
                "cut a torn write of %d bytes at the end of %s (offset %d: %s)", t.dropped, t.path, t.offset, t.reason
            )
        self._recovery = RecoveryInfo(n, len(self._terms), self._wal.truncated, time.perf_counter() - t0)

    def _replay(self, seq: int, off: int, rtype: int, payload: memoryview) -> None:
        if rtype == RecordType.ENTRIES:
            self._replay_entries((seq << OFFSET_BITS) | off, payload)
        elif rtype == RecordType.HARD_STATE:
            self._hs = HardState(*_HS.unpack_from(payload))
        elif rtype == RecordType.SNAPSHOT:
            index, term, replaces = _SNAPREC.unpack_from(payload)
            cs = decode_conf_state(bytes(payload[_SNAPREC.size :]))
            self._snap_meta = SnapshotMeta(index, term, cs)
            if replaces:
                self._reset_log(index, term)
        elif rtype == RecordType.COMPACT:
            index, term = _COMPACT.unpack_from(payload)
            self._drop_prefix(index, term)
        elif rtype == RecordType.STATE:
            ht, hv, hc, offset, offset_term, last, si, st = _STATE.unpack_from(payload)
            cs = decode_conf_state(bytes(payload[_STATE.size :]))
            if self._replayed == 0:
                # the oldest segment left: what came before it is only known from here;
                # entries still live then sit in deleted segments (compacted later, or
                # the log is incomplete: checked at the end)
                self._hs = HardState(ht, hv, hc)
                self._snap_meta = SnapshotMeta(si, st, cs)
                self._reset_log(offset, offset_term)
                n = last - offset
                self._terms = array("q", [0]) * n
                self._pos = array("q", [_MISSING]) * n
                self._sizes = array("I", [0]) * n
            elif (offset, offset_term, last) != (self._offset, self._offset_term, self.last_index()):
                raise CorruptLogError(
                    self._wal.segments[seq],
                    off - HEADER_SIZE,
                    f"checkpoint (log {offset + 1}..{last}) disagrees with the segments before it "
                    f"(log {self._offset + 1}..{self.last_index()})",
                )
            self._replayed += 1

    def _replay_entries(self, pos: int, payload: memoryview) -> None:
        unpack = _ENT.unpack_from
        hsize = _ENT.size
        end = len(payload)
        terms: List[int] = []
        sizes: List[int] = []
        offsets: List[int] = []
        k = 0
        first = expect = unpack(payload, 0)[1]
        while k < end:
            term, index, _t, n = unpack(payload, k)
            if index != expect:
                raise CorruptLogError(
                    self._wal.segments[pos >> OFFSET_BITS],
                    (pos & _OFFSET_MASK) - HEADER_SIZE,
                    f"entries record holds index {index} where {expect} was expected",
                )
            terms.append(term)
            offsets.append(pos + k)
            sizes.append(hsize + n)
            k += hsize + n
            expect += 1
        skip = self._offset + 1 - first  # entries at or below the offset are compacted
        if skip >= len(terms):
            return
        if skip > 0:
            first += skip
            del terms[:skip], offsets[:skip], sizes[:skip]
        self._cut_for_append(first, where=pos)
        self._terms.extend(terms)
        self._pos.extend(offsets)
        self._sizes.extend(sizes)

    # ------------------------------------------------------- Storage: reads
    def initial_state(self) -> Tuple[HardState, ConfState]:
        self._check_open()
        return self._hs, self._snap_meta.conf_state

    @property
    def hard_state(self) -> HardState:
        return self._hs

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._offset + len(self._terms)

    def term(self, i: int) -> int:
        off = self._offset
        if i < off:
            raise CompactedError(f"term({i}): compacted up to {off}")
        if i == off:
            return self._offset_term
        k = i - off - 1
        if k >= len(self._terms):
            raise UnavailableError(f"term({i}): last index is {self.last_index()}")
        return self._terms[k]

    def entries(self, lo: int, hi: int, max_bytes: Optional[int] = None) -> List[Entry]:
        self._check_open()
        off = self._offset
        if lo <= off:
            raise CompactedError(f"entries({lo}, {hi}): compacted up to {off}")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries({lo}, {hi}): last index is {self.last_index()}")
        if lo > hi:
            raise ValueError(f"entries: invalid range lo={lo} > hi={hi}")
        if lo == hi:
            return []
        if max_bytes is not None:
            # the size limit of rsm_shm.raft.storage.limit_size, computed from the index
            sizes = self._sizes
            k = lo - off - 1
            total = sizes[k] - _ENT.size + 24
            stop = lo + 1
            while stop < hi:
                total += sizes[k + stop - lo] - _ENT.size + 24
                if total > max_bytes:
                    break
                stop += 1
            hi = stop
        out: List[Entry] = []
        if lo < self._cache_first:
            out = self._read(lo, min(hi, self._cache_first))
        if hi > self._cache_first:
            c0 = self._cache_first
            out.extend(self._cache[max(lo, c0) - c0 : hi - c0])
        return out

    def _read(self, lo: int, hi: int) -> List[Entry]:
        """Entries [lo, hi) from disk, one read per run of adjacent entries."""
        off = self._offset
        pos, sizes = self._pos, self._sizes
        out: List[Entry] = []
        unpack = _ENT.unpack_from
        hsize = _ENT.size
        k, kend = lo - off - 1, hi - off - 1
        while k < kend:
            run_end = k + 1
            nbytes = sizes[k]
            while run_end < kend and pos[run_end] == pos[run_end - 1] + sizes[run_end - 1]:
                nbytes += sizes[run_end]
                run_end += 1
            buf = self._wal.read(pos[k], nbytes)
            self._disk_reads += 1
            p = 0
            for want in range(off + 1 + k, off + 1 + run_end):
                term, index, t, n = unpack(buf, p)
                if index != want or term != self._terms[want - off - 1]:
                    raise CorruptLogError(
                        self._wal.segments.get(pos[want - off - 1] >> OFFSET_BITS, "?"),
                        pos[want - off - 1] & _OFFSET_MASK,
                        f"entry {want} reads back as {index} (term {term}): the file changed under us",
                    )
                out.append(Entry(term=term, index=index, type=_TYPES[t], data=buf[p + hsize : p + hsize + n]))
                p += hsize + n
            k = run_end
        return out

    def snapshot(self) -> Snapshot:
        """The current snapshot, read back from its file (its data is not kept in
        memory between calls; the same object is returned while a caller holds it)."""
        self._check_open()
        if self._snap_meta.index == 0:
            return Snapshot()
        snap = self._snap_ref() if self._snap_ref is not None else None
        if snap is None or snap.meta != self._snap_meta:
            snap = self._load_snapshot(self._snap_meta)
            self._snap_ref = weakref.ref(snap)
        return snap

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        """Index, term and configuration of the current snapshot (no file read)."""
        return self._snap_meta

    def entries_size(self, lo: int, hi: int) -> int:
        """Bytes the entries ``[lo, hi)`` take in the log (record framing included);
        ``lo`` and ``hi`` are clamped to the entries held."""
        off = self._offset
        a = max(lo - off - 1, 0)
        b = min(hi - off - 1, len(self._sizes))
        return sum(self._sizes[a:b]) if a < b else 0

    # ----------------------------------------------------- StorageWriter
    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` (see StorageWriter.append); durable on return."""
        self.save(entries=entries, sync=True)

    def set_hard_state(self, hs: HardState) -> None:
        """Record ``hs``; durable on return."""
        self.save(hard_state=hs, sync=True)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the log and the snapshot by ``snap``; durable on return."""
        self.save(snapshot=snap, sync=True)

    def save(
        self,
        hard_state: Optional[HardState] = None,
        entries: Sequence[Entry] = (),
        snapshot: Optional[Snapshot] = None,
        *,
        sync: bool = True,
    ) -> None:
        """Persist what a Ready hands over -- ``snapshot``, then ``entries``, then
        ``hard_state`` (each optional) -- in one write and, if ``sync``, one fsync
        (pass ``sync=rd.must_sync``).  A non-empty snapshot is always synced (its file
        is written durably first, and the previous one is deleted after)."""
        self._check_open()
        buf = bytearray()
        snap = snapshot if snapshot is not None and not snapshot.is_empty() else None
        if snap is not None:
            meta = snap.meta
            if meta.index <= self._snap_meta.index:
                raise SnapOutOfDateError(
                    f"snapshot at {meta.index} is not newer than the current one at {self._snap_meta.index}"
                )
            self._write_snapshot_file(snap)
            buf += frame(
                RecordType.SNAPSHOT, _SNAPREC.pack(meta.index, meta.term, 1) + encode_conf_state(meta.conf_state)
            )
            offset, last = meta.index, meta.index
        else:
            offset, last = self._offset, self.last_index()
        ents = _checked_run(entries, offset, last)
        ent_at = -1
        if ents:
            ent_at = len(buf) + HEADER_SIZE
            pack = _ENT.pack
            parts = []
            for e in ents:
                d = e.data
                parts.append(pack(e.term, e.index, e.type, len(d)))
                parts.append(d)
            buf += frame(RecordType.ENTRIES, b"".join(parts))
        if hard_state is not None:
            buf += frame(RecordType.HARD_STATE, _HS.pack(hard_state.term, hard_state.vote, hard_state.commit))
        if not buf:
            return
        start = self._wal.write(buf)
        # the write succeeded: now the in-memory view may follow
        if snap is not None:
            self._snap_meta = snap.meta
            self._snap_ref = weakref.ref(snap)
            self._reset_log(snap.meta.index, snap.meta.term)
        if ents:
            self._index_append(ents, start + ent_at)
        if hard_state is not None:
            self._hs = hard_state
        if sync or snap is not None:
            self._wal.sync()
        if snap is not None:
            self._remove_snapshot_files(keep=snap.meta)
        self._maybe_roll()

    def sync(self) -> None:
        """Make everything saved so far durable (one fsync; nothing with fsync=False)."""
        self._check_open()
        self._wal.sync()

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of applied ``index`` (see StorageWriter.create_snapshot);
        durable on return.  The log is kept; call :meth:`compact` to drop its prefix."""
        self._check_open()
        cs = check_snapshot_conf_state(index, conf_state)
        if index <= self._snap_meta.index:
            raise SnapOutOfDateError(
                f"create_snapshot({index}): not newer than the current snapshot at {self._snap_meta.index}"
            )
        if index > self.last_index():
            raise ValueError(f"create_snapshot({index}) is out of bound, last index is {self.last_index()}")
        snap = Snapshot(SnapshotMeta(index, self.term(index), cs), data if isinstance(data, bytes) else bytes(data))
        self._write_snapshot_file(snap)
        self._wal.write(frame(RecordType.SNAPSHOT, _SNAPREC.pack(index, snap.meta.term, 0) + encode_conf_state(cs)))
        self._snap_meta, self._snap_ref = snap.meta, weakref.ref(snap)
        self._wal.sync()
        self._remove_snapshot_files(keep=snap.meta)
        self._maybe_roll()
        return snap

    def compact(self, index: int) -> None:
        """Drop the entries before ``index`` (see StorageWriter.compact) and delete the
        log segments that hold nothing else; durable on return."""
        self._check_open()
        if index <= self._offset:
            return
        if index > self.last_index():
            raise ValueError(f"compact({index}) is out of bound, last index is {self.last_index()}")
        term = self.term(index)
        self._wal.write(frame(RecordType.COMPACT, _COMPACT.pack(index, term)))
        self._drop_prefix(index, term)
        # synced before any segment goes: without this record, replay would miss entries
        self._wal.sync()
        keep_from = (self._pos[0] >> OFFSET_BITS) if self._pos else self._wal.active_seq
        self._wal.remove_before(keep_from)

    # ------------------------------------------------------ the index
    def _reset_log(self, offset: int, offset_term: int) -> None:
        self._offset, self._offset_term = offset, offset_term
        self._terms, self._pos, self._sizes = array("q"), array("q"), array("I")
        self._cache, self._cache_first, self._cache_bytes = [], offset + 1, 0

    def _drop_prefix(self, index: int, term: int) -> None:
        """The entries up to ``index`` are gone, ``index`` (of ``term``) is the new offset."""
        if index <= self._offset:
            return
        k = index - self._offset
        if k > len(self._terms):  # replay: past what the kept segments hold
            self._reset_log(index, term)
            return
        del self._terms[:k], self._pos[:k], self._sizes[:k]
        self._offset, self._offset_term = index, term
        if self._cache_first <= index:
            drop = index + 1 - self._cache_first
            self._cache_bytes -= sum(len(e.data) for e in self._cache[:drop])
            del self._cache[:drop]
            self._cache_first = index + 1

    def _cut_for_append(self, first: int, where: int) -> None:
        """Make room for entries from ``first`` on: drop everything from there."""
        last = self.last_index()
        if first > last + 1:
            raise CorruptLogError(
                self._wal.segments.get(where >> OFFSET_BITS, "?"),
                (where & _OFFSET_MASK) - HEADER_SIZE,
                f"entries from {first} follow the last index {last}: entries in between are missing",
            )
        k = max(first - self._offset - 1, 0)
        if k < len(self._terms):
            del self._terms[k:], self._pos[k:], self._sizes[k:]
        if first < self._cache_first + len(self._cache):
            c = max(first - self._cache_first, 0)
            self._cache_bytes -= sum(len(e.data) for e in self._cache[c:])
            del self._cache[c:]
            if not self._cache:
                self._cache_first = max(first, self._offset + 1)

    def _index_append(self, ents: List[Entry], payload_pos: int) -> None:
        self._cut_for_append(ents[0].index, payload_pos)
        hsize = _ENT.size
        sizes = [hsize + len(e.data) for e in ents]
        self._terms.extend([e.term for e in ents])
        self._pos.extend(accumulate(sizes[:-1], initial=payload_pos))
        self._sizes.extend(sizes)
        if self._cache_entries == 0 or self._cache_bytes_max == 0:
            self._cache_first = self.last_index() + 1
            return
        c = self._cache
        if not c:
            self._cache_first = ents[0].index
        c.extend(ents)
        self._cache_bytes += sum(sizes) - hsize * len(sizes)
        if len(c) > self._cache_entries or self._cache_bytes > self._cache_bytes_max:
            # trim to 7/8 of the bounds, so the list is not shifted on every append
            drop = max(len(c) - self._cache_entries * 7 // 8, 0)
            b = self._cache_bytes - sum(len(e.data) for e in c[:drop])
            keep_b = self._cache_bytes_max * 7 // 8
            while drop < len(c) and b > keep_b:
                b -= len(c[drop].data)
                drop += 1
            del c[:drop]
            self._cache_bytes = b
            self._cache_first += drop

    def _checkpoint(self) -> bytes:
        """The STATE record that starts a new segment."""
        hs, sm = self._hs, self._snap_meta
        return frame(
            RecordType.STATE,
            _STATE.pack(
                hs.term, hs.vote, hs.commit, self._offset, self._offset_term, self.last_index(), sm.index, sm.term
            )
            + encode_conf_state(sm.conf_state),
        )

    def _maybe_roll(self) -> None:
        if self._wal.needs_roll:
            self._wal.roll(self._checkpoint())

    # ------------------------------------------------------ snapshot files
    def _snap_path(self, meta: SnapshotMeta) -> str:
        return os.path.join(self._snap_dir, f"{meta.index:020d}-{meta.term:020d}{SNAP_SUFFIX}")

    def _write_snapshot_file(self, snap: Snapshot) -> None:
        cs = encode_conf_state(snap.meta.conf_state)
        data = snap.data
        crc = zlib.crc32(data, zlib.crc32(cs))
        head = _SNAPFILE.pack(_SNAP_MAGIC, DATA_FORMAT, snap.meta.index, snap.meta.term, len(cs), len(data), crc)
        # written in parts: the data (the whole state) is not copied once more
        _write_durably(self._snap_path(snap.meta), (head + cs, data), sync=self.fsync)
        self._wal.bytes_written += len(head) + len(cs) + len(data)

    def _check_snapshot_file(self, meta: SnapshotMeta) -> None:
        path = self._snap_path(meta)
        try:
            with open(path, "rb") as f:
                head = f.read(_SNAPFILE.size)
        except FileNotFoundError:
            raise CorruptLogError(
                path, 0, f"the log refers to snapshot {meta.index} (term {meta.term}), whose file is missing"
            ) from None
        self._parse_snapshot_head(path, head, meta)

    def _parse_snapshot_head(self, path: str, head: bytes, meta: SnapshotMeta) -> Tuple[int, int, int]:
        if len(head) < _SNAPFILE.size:
            raise CorruptLogError(path, 0, "snapshot file too short")
        magic, fmt, index, term, cs_len, data_len, crc = _SNAPFILE.unpack_from(head)
        if magic != _SNAP_MAGIC or fmt > DATA_FORMAT or (index, term) != (meta.index, meta.term):
            raise CorruptLogError(path, 0, f"not snapshot {meta.index} (term {meta.term}) of format <= {DATA_FORMAT}")
        return cs_len, data_len, crc

    def _load_snapshot(self, meta: SnapshotMeta) -> Snapshot:
        path = self._snap_path(meta)
        with open(path, "rb") as f:
            cs_len, data_len, crc = self._parse_snapshot_head(path, f.read(_SNAPFILE.size), meta)
            cs_raw = f.read(cs_len)
            data = f.read(data_len)  # the data read once, straight into its bytes object
            extra = f.read(1)
        if len(cs_raw) != cs_len or len(data) != data_len or extra or zlib.crc32(data, zlib.crc32(cs_raw)) != crc:
            raise CorruptLogError(path, _SNAPFILE.size, "snapshot file checksum mismatch or wrong length")
        cs = decode_conf_state(cs_raw)
        if cs != meta.conf_state:
            raise CorruptLogError(path, _SNAPFILE.size, "snapshot configuration differs from the log's record of it")
        return Snapshot(meta, data)

    def _remove_snapshot_files(self, keep: SnapshotMeta) -> None:
        keep_name = os.path.basename(self._snap_path(keep)) if keep.index > 0 else None
        removed = False
        for name in os.listdir(self._snap_dir):
            if name != keep_name and (name.endswith(SNAP_SUFFIX) or name.endswith(".tmp")):
                os.unlink(os.path.join(self._snap_dir, name))
                removed = True
        if removed and self.fsync:
            fsync_dir(self._snap_dir)

    # ------------------------------------------------------ lifecycle
    @property
    def recovery(self) -> RecoveryInfo:
        """What opening the directory found (segments, entries, a torn tail cut off)."""
        return self._recovery

    @property
    def stats(self) -> StorageStats:
        """Counters since open: fsyncs and their total time, bytes written, segments,
        cached entries, disk reads (for a peer's status)."""
        w = self._wal
        return StorageStats(
            w.fsyncs, w.fsync_seconds, w.bytes_written, len(w.segments), len(self._cache), self._disk_reads
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the files and release the directory (nothing is lost: every save was
        written).  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wal.close()
        self._unlock()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self!r} is closed")

    def __enter__(self) -> "DiskStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"DiskStorage({self.path!r}, closed)"
        return (
            f"DiskStorage({self.path!r}, first={self.first_index()}, last={self.last_index()}, "
            f"hard_state={self._hs}, snapshot_index={self._snap_meta.index})"
        )


def _checked_run(entries: Sequence[Entry], offset: int, last: int) -> List[Entry]:
    """``entries`` minus those at or below ``offset``; ValueError unless consecutive and
    starting at or before ``last + 1``."""
    if not entries:
        return []
    ents = list(entries)
    for a, b in zip(ents, ents[1:]):
        if b.index != a.index + 1:
            raise ValueError(f"entries to append are not consecutive: {a.index} then {b.index}")
    if ents[-1].index <= offset:
        return []
    if ents[0].index <= offset:
        ents = ents[offset + 1 - ents[0].index :]
    if ents[0].index > last + 1:
        raise ValueError(f"missing log entries: last index {last}, appending at {ents[0].index}")
    return ents


def _write_durably(path: str, data: Union[bytes, Tuple[bytes, ...]], sync: bool = True) -> None:
    """Write ``path`` atomically: a temporary file, synced, renamed, directory synced.
    ``data``: bytes, or a tuple of bytes-like parts written one after the other."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for part in data if isinstance(data, tuple) else (data,):
            mv = memoryview(part)
            while mv:
                mv = mv[os.write(fd, mv) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if sync:
        fsync_dir(os.path.dirname(path))
