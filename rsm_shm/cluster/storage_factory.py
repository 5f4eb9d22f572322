"""Where a peer keeps its log: the one place that picks the storage implementation.

``open_storage(path, cluster=..., node_id=..., fsync=...)`` returns a small adapter with
``storage`` (the :class:`~rsm_shm.cluster.storage.DiskStorage` the core reads),
``save(ready)`` (persist a Ready's snapshot, entries and hard state in one write, with
one fsync when the Ready says it must: group commit), ``close()``, and the ``fsyncs`` /
``fsync_ns`` counters published in the status record.
"""
from __future__ import annotations

import warnings

from ..raft.types import Ready
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

    def save(self, rd: Ready) -> None:
        if rd.snapshot is None and not rd.entries and rd.hard_state is None:
            return
        self.storage.save(rd.hard_state, rd.entries, rd.snapshot, sync=rd.must_sync)

    @property
    def fsyncs(self) -> int:
        return self.storage.stats.fsyncs

    @property
    def fsync_ns(self) -> int:
        return int(self.storage.stats.fsync_seconds * 1e9)

    def close(self) -> None:
        self.storage.close()


def open_storage(path: str, *, cluster: str, node_id: int, fsync: bool) -> _DiskStore:
    return _DiskStore(path, cluster, node_id, fsync)
