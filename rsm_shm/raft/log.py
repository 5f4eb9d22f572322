"""The Raft log: stable entries in :class:`~rsm_shm.raft.storage.Storage` followed by
unstable entries not yet persisted (etcd's ``log.go`` and ``log_unstable.go``).

Indexes: ``storage.first_index() - 1 <= applied <= committed <= last_index()``.
Entries at or below ``committed`` never change (State Machine Safety, Figure 3); the
unstable tail may be truncated and replaced by a leader's entries (thesis §3.5).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .storage import CompactedError, Storage, UnavailableError, limit_size
from .types import Entry, Snapshot

__all__ = ["Unstable", "RaftLog"]


class Unstable:
    """Entries (and possibly a snapshot) not yet on stable storage.

    ``entries[i]`` has index ``offset + i``; a pending snapshot covers everything up
    to ``snapshot.meta.index`` and then ``offset == snapshot.meta.index + 1``."""

    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: Optional[Snapshot] = None
        self.entries: List[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> Optional[int]:
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        return None

    def maybe_last_index(self) -> Optional[int]:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, i: int) -> Optional[int]:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == i:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to (i, t) are persisted.  Ignored if that entry was replaced in the
        meantime (a newer leader truncated the unstable tail)."""
        gt = self.maybe_term(i)
        if gt is None:
            return
        if gt == t and i >= self.offset:
            self.entries = self.entries[i + 1 - self.offset :]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == i:
            self.snapshot = None

    def restore(self, s: Snapshot) -> None:
        self.offset = s.meta.index + 1
        self.entries = []
        self.snapshot = s

    def truncate_and_append(self, ents: List[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # replace the unstable entries entirely (the log was truncated before them)
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = self.entries[: after - self.offset] + list(ents)

    def slice(self, lo: int, hi: int) -> List[Entry]:
        upper = self.offset + len(self.entries)
        if lo > hi or lo < self.offset or hi > upper:
            raise RuntimeError(f"invalid unstable.slice [{lo},{hi}) out of [{self.offset},{upper}]")
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Everything in storage up to its snapshot is committed and applied.
        self.committed = first - 1
        self.applied = first - 1
        # highest index handed to the application in a Ready but not yet advanced
        self.applying = first - 1

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # ---------------------------------------------------------------- bounds
    # first_index and last_index inline Unstable.maybe_first_index/maybe_last_index: a
    # leader's turn asks for them a few dozen times per command.
    def first_index(self) -> int:
        snap = self.unstable.snapshot
        return snap.meta.index + 1 if snap is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.meta.index
        return self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry ``i``; raises CompactedError / UnavailableError out of range.
        ``term(first_index() - 1)`` is the snapshot's term (0 for an empty log)."""
        u = self.unstable
        k = i - u.offset
        if 0 <= k < len(u.entries):  # an unstable entry: the common case of a leader
            return u.entries[k].term
        dummy = self.first_index() - 1
        if i < dummy:
            raise CompactedError(f"term({i}): compacted up to {dummy}")
        if i > self.last_index():
            raise UnavailableError(f"term({i}): last index is {self.last_index()}")
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        try:
            return self.term(i)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """Whether a log ending at (lasti, term) is at least as up-to-date as ours
        (§5.4.1 election restriction: compare last terms, then lengths)."""
        lt = self.last_term()
        return term > lt or (term == lt and lasti >= self.last_index())

    # ---------------------------------------------------------------- appending
    def maybe_append(self, index: int, log_term: int, committed: int, ents: Tuple[Entry, ...]) -> Tuple[int, bool]:
        """AppendEntries receiver (Figure 2): if our entry at ``index`` has ``log_term``,
        delete conflicting entries, append new ones and advance commit; returns
        (last new index, True).  Returns (0, False) on a mismatch."""
        if not self.match_term(index, log_term):
            return 0, False
        lastnewi = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise RuntimeError(f"entry {ci} conflicts with committed entry (committed={self.committed})")
            self.append(list(ents[ci - (index + 1) :]))
        self.commit_to(min(committed, lastnewi))
        return lastnewi, True

    def append(self, ents: List[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise RuntimeError(f"after({after}) is out of range [committed({self.committed})]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """Index of the first entry of ``ents`` that is new or conflicts, 0 if none."""
        last = self.last_index()
        for e in ents:
            # past our end is new (no need to raise and catch UnavailableError for it)
            if e.index > last or not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> Tuple[int, int]:
        """Largest (i, our term) with i <= index and our term at i <= ``term``.

        Used for fast backtracking (thesis §5.3 end / etcd): every entry after the
        returned index either is missing or has a term greater than ``term``, so it
        cannot match an entry of the other log whose term is <= ``term``."""
        while index > 0:
            try:
                our = self.term(index)
            except (CompactedError, UnavailableError):
                return index, 0
            if our <= term:
                return index, our
            index -= 1
        return 0, 0

    # ---------------------------------------------------------------- reading
    def unstable_entries(self) -> List[Entry]:
        return list(self.unstable.entries)

    def entries(self, i: int, max_size: Optional[int] = None) -> List[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: Optional[int] = None) -> List[Entry]:
        """Entries [lo, hi) limited to ``max_size`` bytes (at least one entry).  Raises
        CompactedError if ``lo`` was compacted."""
        fi = self.first_index()
        if lo > hi:
            raise RuntimeError(f"invalid slice {lo} > {hi}")
        if lo < fi:
            raise CompactedError(f"slice({lo}): compacted up to {fi - 1}")
        last = self.last_index()
        if hi > last + 1:
            raise RuntimeError(f"slice[{lo},{hi}) out of bound [{fi},{last}]")
        if lo == hi:
            return []
        u = self.unstable
        uoff = u.offset
        if lo >= uoff:  # all unstable (a leader sending what it just appended)
            ents = u.entries[lo - uoff : hi - uoff]
            return ents if len(ents) <= 1 else limit_size(ents, max_size)
        ents = []
        stored = self.storage.entries(lo, min(hi, uoff), max_size)
        if len(stored) < min(hi, uoff) - lo:
            return stored  # size-limited by storage
        ents = list(stored)
        if hi > uoff:
            ents.extend(u.slice(uoff, hi))
        return limit_size(ents, max_size)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    # ---------------------------------------------------------------- commit/apply
    def commit_to(self, tocommit: int) -> None:
        # never decrease commit
        if self.committed < tocommit:
            if self.last_index() < tocommit:
                raise RuntimeError(
                    f"tocommit({tocommit}) is out of range [last_index({self.last_index()})]; "
                    "was the raft log corrupted, truncated, or lost?"
                )
            self.committed = tocommit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to ``max_index`` only if that entry is of the current ``term``:
        a leader never commits entries of earlier terms by counting replicas
        (§5.4.2, Figure 8); they are committed indirectly."""
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def has_next_committed_ents(self) -> bool:
        if self.unstable.snapshot is not None:
            return False
        committed = self.committed
        return committed > self.applying and committed >= self.storage.first_index()

    def next_committed_ents(self, max_size: Optional[int] = None) -> List[Entry]:
        """Committed entries not yet handed to the application.  None while a snapshot
        is pending (the application installs it first)."""
        if self.unstable.snapshot is not None:
            return []
        hi = self.committed + 1
        lo = self.applying + 1
        if lo >= hi:
            return []
        fi = self.storage.first_index()
        if lo < fi:
            lo = fi
            if lo >= hi:
                return []
        return self.slice(lo, hi, max_size)

    def accept_applying(self, i: int) -> None:
        self.applying = max(self.applying, i)

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise RuntimeError(
                f"applied({i}) is out of range [prev_applied({self.applied}), committed({self.committed})]"
            )
        self.applied = i
        self.applying = max(self.applying, i)

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, s: Snapshot) -> None:
        """Install a leader's snapshot: the whole log is replaced by it."""
        self.committed = s.meta.index
        self.unstable.restore(s)
