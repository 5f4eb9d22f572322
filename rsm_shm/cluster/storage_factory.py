"""Where a peer keeps its log: the one place that picks the storage implementation.

``open_storage(path, cluster=..., node_id=..., fsync=...)`` returns a small adapter with
``storage`` (the :class:`~rsm_shm.cluster.storage.DiskStorage` the core reads),
``save(ready)`` (persist a Ready's snapshot, entries and hard state in one write, with
one fsync when the Ready says it must: group commit), ``close()``, and the ``fsyncs`` /
``fsync_ns`` counters published in the status record.

A hard state that only moves the commit index (the Ready does not ask for a sync) is
not written on its own: it goes to disk with the next entries or vote, or at
``close()``.  Raft's commit index is volatile state (Figure 2): a peer that restarts
with an older one applies up to it and learns the rest from the leader's next append
or heartbeat.  This spares a write on the turn where a command commits, the one a
client is waiting for.
"""

from __future__ import annotations

import warnings
from typing import Optional

from ..raft.types import HardState, Ready
from .storage import DiskStorage, NotDurableWarning

__all__ = ["open_storage"]


class _DiskStore:
    def __init__(self, path: str, cluster: str, node_id: int, fsync: bool) -> None:
        with warnings.catch_warnings():
            # The cluster said so loudly already (LocalCluster warns once); a peer's log
            # still records it below.
            warnings.simplefilter("ignore", NotDurableWarning)
            self.storage = DiskStorage(path, cluster=cluster, node_id=node_id, fsync=fsync)
        if not fsync:
            print(f"peer {node_id}: fsync=False -- this log is NOT durable across an OS crash", flush=True)

    _later: Optional[HardState] = None  # a commit-only hard state not written yet (module docstring)

    def save(self, rd: Ready) -> None:
        hs = rd.hard_state
        if rd.snapshot is None and not rd.entries:
            if hs is None:
                return
            if not rd.must_sync:
                self._later = hs
                return
        if hs is None:
            hs = self._later
        self._later = None
        self.storage.save(hs, rd.entries, rd.snapshot, sync=rd.must_sync)

    @property
    def fsyncs(self) -> int:
        return self.storage.stats.fsyncs

    @property
    def fsync_ns(self) -> int:
        return int(self.storage.stats.fsync_seconds * 1e9)

    def close(self) -> None:
        if self._later is not None and not self.storage.closed:
            try:
                self.storage.save(self._later, sync=False)
            except OSError:
                pass  # the log failed earlier (that is the error to report); a commit index is volatile
            self._later = None
        self.storage.close()


def open_storage(path: str, *, cluster: str, node_id: int, fsync: bool) -> _DiskStore:
    return _DiskStore(path, cluster, node_id, fsync)
