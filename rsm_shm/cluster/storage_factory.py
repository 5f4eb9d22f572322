"""Where a peer keeps its log: the one place that picks the storage implementation.

``open_storage(path, fsync=...)`` returns a small adapter with ``storage`` (the Raft
``Storage`` the core reads), ``save(ready)`` (persist a Ready's snapshot, entries and
hard state, with one sync when the Ready says it must), ``close()``, and the ``fsyncs``
/ ``fsync_ns`` counters published in the status record.
"""
from __future__ import annotations


from ..raft.storage import MemoryStorage

__all__ = ["open_storage"]


class _MemoryStore:
    """MemoryStorage: nothing survives the process (used until the disk log is wired in)."""

    def __init__(self, path: str, fsync: bool) -> None:
        self.storage = MemoryStorage()
        self.fsyncs = 0
        self.fsync_ns = 0

    def save(self, rd) -> None:
        st = self.storage
        snap = rd.snapshot
        if snap is not None and not snap.is_empty():
            st.apply_snapshot(snap)
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)

    def close(self) -> None:
        pass


def open_storage(path: str, *, fsync: bool):
    return _MemoryStore(path, fsync)
