"""The cluster control segment: who runs where, which links are cut, how lossy the network is.

One ``RAFT_STATUS`` segment per cluster, named ``<cluster>.ctl``, holds the seqlocked
``rsm_raft_control`` record of ``csrc/raft_status.h``: the cluster's random id (its
"epoch": every envelope carries it, so messages from an earlier incarnation of a cluster
with the same name are dropped), the managing process, each peer slot (id, state, pid,
start time), the link table and the drop rate, and the data directory (where
``cluster.json`` describes the rest: state machine, timing, fsync).

Writers (the ``LocalCluster`` that made the cluster, or any process that attached to it,
such as the CLI) serialize on the cluster's lock segment ``<cluster>.lock`` and rewrite
the whole record under the seqlock; readers (peers, clients) copy it without locking.
Peers look at the sequence word once per loop turn and re-read the record only when it
moved, so fault injection costs nothing while nothing changes.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .. import _proc
from .._errors import OwnerDiedWarning
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentError
from ..sync.lock import Lock
from .status import MAX_PEER_ID, RECORD_CONTROL, VERSION, _check_header

__all__ = ["ControlBlock", "control_segment_name", "lock_segment_name", "PEER_STATES", "LinkView"]

PEER_ABSENT = lib.RSM_RAFT_PEER_ABSENT
PEER_RUNNING = lib.RSM_RAFT_PEER_RUNNING
PEER_STOPPED = lib.RSM_RAFT_PEER_STOPPED
PEER_KILLED = lib.RSM_RAFT_PEER_KILLED
PEER_PAUSED = lib.RSM_RAFT_PEER_PAUSED
PEER_REMOVED = lib.RSM_RAFT_PEER_REMOVED
PEER_CRASHED = lib.RSM_RAFT_PEER_CRASHED
PEER_FAILED = lib.RSM_RAFT_PEER_FAILED
PEER_STATES = {
    PEER_ABSENT: "absent",
    PEER_RUNNING: "running",
    PEER_STOPPED: "stopped",
    PEER_KILLED: "killed",
    PEER_PAUSED: "paused",
    PEER_REMOVED: "removed",
    PEER_CRASHED: "crashed",  # died unasked; its manager restarts it after a backoff
    PEER_FAILED: "failed",  # crashed more often than the restart policy allows
}
PPM = 1_000_000
#: A loaded ``rsm_raft_control`` record (a cffi struct: cffi values carry no static type).
RawControl = Any
_LOAD_TRIES = 1000


def control_segment_name(cluster: str) -> str:
    return f"{cluster}.ctl"


def lock_segment_name(cluster: str) -> str:
    return f"{cluster}.lock"


class ControlBlock:
    """The control record of cluster ``cluster`` (see the module docstring).

    ``ControlBlock(cluster, create=False)`` attaches; ``create=True`` makes it (and its
    lock) and fails with FileExistsError when it exists.  ``close()`` unmaps this handle,
    ``unlink()`` removes both names.
    """

    def __init__(self, cluster: str, *, create: bool = False, mode: int = 0o600) -> None:
        size = ffi.sizeof("rsm_raft_control_rec")
        self.cluster = cluster

        def segment() -> Segment:
            return Segment(
                control_segment_name(cluster),
                Kind.RAFT_STATUS,
                size,
                create=create,
                mode=mode,
                params=(RECORD_CONTROL, VERSION),
                check=lambda h: _check_header(h, RECORD_CONTROL, "cluster control block"),
                body_size_of=lambda h: size,
            )

        # The lock exists whenever the control block does (made before it, removed after
        # it): a process that finds the control block while the cluster is starting (a peer
        # joining, LocalCluster.attach) must not find its lock missing.
        if create:
            self._lock = Lock(lock_segment_name(cluster), create=None, mode=mode)
            try:
                self._seg = segment()
            except BaseException:
                self._lock.close()
                raise
        else:
            self._seg = segment()
            try:
                self._lock = Lock(lock_segment_name(cluster), create=False, mode=mode)
            except BaseException:
                self._seg.close()
                raise
        self._rec = self._seg.body("rsm_raft_control_rec *")

    @property
    def name(self) -> str:
        return self._seg.name

    @property
    def closed(self) -> bool:
        return self._seg.closed

    def _check_open(self) -> None:
        if self._seg.closed:
            raise ValueError(f"control block of cluster {self.cluster!r} is closed")

    def seq(self) -> int:
        """The seqlock word: unchanged means the record did not change."""
        self._check_open()
        return int(lib.rsm_raft_control_seq(self._rec))

    def load(self) -> RawControl:
        """A consistent copy (``rsm_raft_control``).  Raises SegmentError if none can be
        read (a writer died mid-update and nobody wrote since)."""
        self._check_open()
        out = ffi.new("rsm_raft_control *")
        if lib.rsm_raft_control_load(self._rec, out, _LOAD_TRIES) != lib.RSM_OK:
            raise SegmentError(f"control block of cluster {self.cluster!r} is being rewritten or torn")
        return out

    def update(self, change: Callable[[RawControl], None]) -> None:
        """Apply ``change(record)`` to a fresh copy under the cluster lock and publish it."""
        self._check_open()
        with warnings.catch_warnings():
            # A writer that died holding the lock published nothing half-done that we
            # keep: we rewrite the whole record.
            warnings.simplefilter("ignore", OwnerDiedWarning)
            with self._lock:
                out = ffi.new("rsm_raft_control *")
                if lib.rsm_raft_control_load(self._rec, out, _LOAD_TRIES) != lib.RSM_OK:
                    pass  # torn by a dead writer: start from what is there
                    ffi.memmove(out, ffi.cast("char *", self._rec) + 8, ffi.sizeof("rsm_raft_control"))
                change(out)
                lib.rsm_raft_control_store(self._rec, out)

    # -- decoded views ----------------------------------------------------------------

    @staticmethod
    def data_dir_of(rec: RawControl) -> str:
        raw: bytes = ffi.string(rec.data_dir, lib.RSM_RAFT_DATA_DIR_MAX)
        return raw.decode("utf-8", "replace")

    @staticmethod
    def slots_of(rec: RawControl) -> Dict[int, Tuple[int, int, int]]:
        """{peer id: (state, pid, start_time)} of the used slots."""
        out: Dict[int, Tuple[int, int, int]] = {}
        for i in range(MAX_PEER_ID):
            s = rec.peers[i]
            if s.id and 1 <= s.id <= MAX_PEER_ID:
                out[int(s.id)] = (int(s.state), int(s.pid), int(s.start_time))
        return out

    @staticmethod
    def restarts_of(rec: RawControl) -> Dict[int, int]:
        """{peer id: automatic restarts so far} of the peers restarted at least once."""
        return {i + 1: int(rec.restarts[i]) for i in range(MAX_PEER_ID) if rec.restarts[i]}

    def owner_alive(self, rec: Optional[RawControl] = None) -> bool:
        rec = rec if rec is not None else self.load()
        return _proc.process_alive(int(rec.owner_pid), int(rec.owner_start))

    def close(self) -> None:
        self._seg.close()
        self._lock.close()

    def unlink(self) -> None:
        self._seg.unlink()
        self._lock.unlink()


def set_slot(rec: RawControl, peer_id: int, state: int, pid: int = 0, start_time: int = 0) -> None:
    """Set the slot of ``peer_id`` in a control record being updated."""
    if not 1 <= peer_id <= MAX_PEER_ID:
        raise ValueError(f"peer id must be between 1 and {MAX_PEER_ID}, not {peer_id!r}")
    s = rec.peers[peer_id - 1]
    s.id, s.state, s.pid, s.start_time = peer_id, state, pid, start_time


def set_data_dir(rec: RawControl, path: str) -> None:
    raw = os.fsencode(path)
    if len(raw) >= lib.RSM_RAFT_DATA_DIR_MAX:
        raise ValueError(f"data directory path is longer than {lib.RSM_RAFT_DATA_DIR_MAX - 1} bytes: {path!r}")
    ffi.memmove(rec.data_dir, raw + b"\0" * (lib.RSM_RAFT_DATA_DIR_MAX - len(raw)), lib.RSM_RAFT_DATA_DIR_MAX)


def set_partition(rec: RawControl, groups: Sequence[Sequence[int]]) -> None:
    """Cut every link between peers of different groups, both ways (others stay as they are
    only if they were healed: callers heal first)."""
    group_of = {}
    for gi, g in enumerate(groups):
        for p in g:
            group_of[p] = gi
    for a in range(1, MAX_PEER_ID + 1):
        mask = 0
        ga = group_of.get(a)
        for b in range(1, MAX_PEER_ID + 1):
            gb = group_of.get(b)
            if a != b and ga is not None and gb is not None and ga != gb:
                mask |= 1 << (b - 1)
        rec.cut[a - 1] = mask


class LinkView:
    """What one peer needs from the control block when sending: cut links and drop rate,
    re-read only when the record changed."""

    def __init__(self, ctl: ControlBlock, me: int) -> None:
        self._ctl = ctl
        self._me = me
        self._seq = -1
        self.seq = 0  # the control version applied
        self.cut_mask = 0
        self.drop_rate = 0.0
        self.stopping = False
        self.slots: Dict[int, Tuple[int, int, int]] = {}

    def refresh(self) -> bool:
        """Re-read if changed; True if it did."""
        s = self._ctl.seq()
        if s == self._seq or s & 1:
            return False
        try:
            rec = self._ctl.load()
        except SegmentError:
            return False
        self._seq = self.seq = s
        self.cut_mask = int(rec.cut[self._me - 1])
        self.drop_rate = min(int(rec.drop_ppm), PPM) / PPM
        self.stopping = bool(rec.stopping)
        self.slots = ControlBlock.slots_of(rec)
        return True

    def is_cut(self, to: int) -> bool:
        return 1 <= to <= MAX_PEER_ID and bool(self.cut_mask >> (to - 1) & 1)
