"""The stable-storage interface of the Raft core and an in-memory implementation.

The core reads stable state through :class:`Storage` and never writes it: the
application persists what a :class:`~rsm_shm.raft.types.Ready` hands it (snapshot,
entries, hard state) through the write side, :class:`StorageWriter`, and only then calls
``advance`` (see :mod:`rsm_shm.raft.driver`).  :class:`MemoryStorage` implements both
for tests and the simulator; ``rsm_shm.cluster.storage.DiskStorage`` implements both on
disk.  The error contract of the read side (as etcd's ``raft.Storage``):

* ``entries(lo, hi)`` and ``term(i)`` raise :class:`CompactedError` when the index is
  below the first available index (it was compacted into a snapshot; the core then
  sends the snapshot instead) and :class:`UnavailableError` when it is above the last
  index.  ``term(first_index() - 1)`` is the term of the snapshot and always succeeds.
* ``snapshot()`` may raise :class:`SnapshotTemporarilyUnavailable` while a snapshot is
  being made; the core retries later.
* Any other exception is a bug in the storage and propagates.
"""

from __future__ import annotations

from typing import List, Optional, Protocol, Sequence, Tuple, runtime_checkable

from .types import ConfState, Entry, HardState, Snapshot, SnapshotMeta, entry_size

__all__ = [
    "StorageError",
    "CompactedError",
    "UnavailableError",
    "SnapshotTemporarilyUnavailable",
    "SnapOutOfDateError",
    "Storage",
    "StorageWriter",
    "MemoryStorage",
    "limit_size",
    "check_snapshot_conf_state",
]


class StorageError(Exception):
    """Base class of the storage error contract."""


class CompactedError(StorageError):
    """The requested index is older than the first available index (compacted)."""


class UnavailableError(StorageError):
    """The requested index is newer than the last available index."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The snapshot is not available right now; ask again later."""


class SnapOutOfDateError(StorageError):
    """The snapshot to apply or create is older than the existing one."""


def limit_size(ents: List[Entry], max_bytes: Optional[int]) -> List[Entry]:
    """Return the longest prefix of ``ents`` whose total size is <= ``max_bytes``, but
    always at least one entry (so progress is possible with huge entries)."""
    if max_bytes is None or not ents:
        return ents
    size = entry_size(ents[0])
    n = 1
    while n < len(ents):
        size += entry_size(ents[n])
        if size > max_bytes:
            break
        n += 1
    return ents[:n]


@runtime_checkable
class Storage(Protocol):
    """Read access to the persisted Raft log, hard state and snapshot."""

    def initial_state(self) -> Tuple[HardState, ConfState]:
        """The persisted hard state and the configuration as of the last snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: Optional[int] = None) -> List[Entry]:
        """Entries in [lo, hi), limited to ``max_bytes`` (at least one entry if any)."""
        ...

    def term(self, i: int) -> int:
        """Term of entry ``i``; valid for first_index()-1 <= i <= last_index()."""
        ...

    def first_index(self) -> int:
        """Index of the first entry that may be read (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index when the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot."""
        ...


@runtime_checkable
class StorageWriter(Protocol):
    """The write side of a Raft storage: how the application records what a Ready
    hands it and what it decides (snapshots, compaction).  A durable implementation
    makes each call durable before it returns, unless documented otherwise.

    The read side (:class:`Storage`) must reflect every call at once: after
    ``append(ents)``, ``entries`` and ``term`` see ``ents``.
    """

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` (consecutive indexes).  An existing entry at or after the
        first one's index is replaced together with everything after it (a leader
        overwrote a conflicting suffix); entries already compacted are skipped.  A gap
        after the last index is a ValueError."""
        ...

    def set_hard_state(self, hs: HardState) -> None:
        """Record the current term, vote and commit index."""
        ...

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log and the snapshot by ``snap`` (received from a leader).
        Raises :class:`SnapOutOfDateError` unless it is newer than the current one."""
        ...

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record the application's snapshot ``data`` of applied ``index``, with
        ``conf_state``, the configuration in force at that index (the one the last
        ``apply_conf_change`` at or below ``index`` returned, or the boot configuration).
        The log is kept: call :meth:`compact` to drop its prefix.  Raises
        :class:`SnapOutOfDateError` when ``index`` is not newer than the current
        snapshot, ValueError past the last index, and TypeError/ValueError for a missing
        or voterless ``conf_state`` (see :func:`check_snapshot_conf_state`)."""
        ...

    def compact(self, index: int) -> None:
        """Discard the entries before ``index``; ``index`` becomes the first one whose
        term alone is kept (``first_index() == index + 1``).  A no-op at or below the
        current point, a ValueError past the last index.  Compact only up to the
        applied index, and normally only up to the snapshot's index."""
        ...


def check_snapshot_conf_state(index: int, conf_state: object) -> ConfState:
    """The configuration to record with a snapshot at ``index``, checked: a ConfState
    with at least one voter.  There is no default: a snapshot that carried an empty (or
    stale) configuration would be refused by every follower it is sent to (it does not
    list them), and the cluster would stall on the first snapshot it needs."""
    if not isinstance(conf_state, ConfState):
        raise TypeError(
            f"create_snapshot({index}): conf_state must be the ConfState in force at index {index} "
            f"(the last apply_conf_change() result at or below it, or the boot configuration), "
            f"not {conf_state!r}"
        )
    if not conf_state.voters:
        raise ValueError(f"create_snapshot({index}): conf_state {conf_state} has no voters")
    return conf_state


class MemoryStorage:
    """A :class:`Storage` and :class:`StorageWriter` kept in memory, for tests and the simulator.

    As in etcd, ``_ents[0]`` is a dummy entry holding the index and term of the last
    snapshot (or (0, 0)), so ``term(first_index() - 1)`` is always answerable.
    Not thread-safe: the core and simulator are single-threaded.
    """

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: List[Entry] = [Entry(term=0, index=0)]

    # ---- Storage interface
    def initial_state(self) -> Tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def _offset(self) -> int:
        return self._ents[0].index

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def entries(self, lo: int, hi: int, max_bytes: Optional[int] = None) -> List[Entry]:
        off = self._offset()
        if lo <= off:
            raise CompactedError(f"entries({lo}, {hi}): compacted up to {off}")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries({lo}, {hi}): last index is {self.last_index()}")
        if lo > hi:
            raise ValueError(f"entries: invalid range lo={lo} > hi={hi}")
        return limit_size(self._ents[lo - off : hi - off], max_bytes)

    def term(self, i: int) -> int:
        off = self._offset()
        if i < off:
            raise CompactedError(f"term({i}): compacted up to {off}")
        if i - off >= len(self._ents):
            raise UnavailableError(f"term({i}): last index is {self.last_index()}")
        return self._ents[i - off].term

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # ---- mutation by the application
    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the log and state with ``snap`` (a snapshot received from a leader).
        Raises :class:`SnapOutOfDateError` if it is older than the current snapshot."""
        if snap.meta.index <= self._snapshot.meta.index:
            raise SnapOutOfDateError(
                f"snapshot at {snap.meta.index} is not newer than the current one at {self._snapshot.meta.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(term=snap.meta.term, index=snap.meta.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Make a snapshot at applied ``index`` with the application's ``data`` and
        ``conf_state``, the configuration in force at that index (required: see
        :func:`check_snapshot_conf_state`).  Call :meth:`compact` afterwards to drop the
        log prefix.  Raises :class:`SnapOutOfDateError` when ``index`` is not newer than
        the current snapshot and ValueError when it is past the last index."""
        cs = check_snapshot_conf_state(index, conf_state)
        if index <= self._snapshot.meta.index:
            raise SnapOutOfDateError(
                f"create_snapshot({index}): not newer than the current snapshot at {self._snapshot.meta.index}"
            )
        if index > self.last_index():
            raise ValueError(f"create_snapshot({index}) is out of bound, last index is {self.last_index()}")
        self._snapshot = Snapshot(SnapshotMeta(index, self.term(index), cs), bytes(data))
        return self._snapshot

    def compact(self, index: int) -> None:
        """Discard entries before ``index`` (``index`` itself becomes the dummy entry).
        Compacting at or below the current offset is a no-op; compacting past the last
        index is a ValueError.  Only compact up to the applied index."""
        off = self._offset()
        if index <= off:
            return
        if index > self.last_index():
            raise ValueError(f"compact({index}) is out of bound, last index is {self.last_index()}")
        i = index - off
        self._ents = [Entry(term=self._ents[i].term, index=self._ents[i].index)] + self._ents[i + 1 :]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, truncating any existing entries from the first one's index
        on (a conflicting suffix is replaced).  Entries already compacted are skipped."""
        if not entries:
            return
        entries = list(entries)
        first = self.first_index()
        last = entries[0].index + len(entries) - 1
        if last < first:
            return
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._offset()
        if len(self._ents) > offset:
            self._ents = self._ents[:offset] + entries
        elif len(self._ents) == offset:
            self._ents.extend(entries)
        else:
            raise ValueError(f"missing log entries: last index {self.last_index()}, appending at {entries[0].index}")

    def __repr__(self) -> str:
        return (
            f"MemoryStorage(first={self.first_index()}, last={self.last_index()}, "
            f"hard_state={self._hard_state}, snapshot_index={self._snapshot.meta.index})"
        )
