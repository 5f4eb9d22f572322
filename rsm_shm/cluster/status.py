"""Peer status records: what each peer publishes in shared memory, and :class:`PeerStatus`.

Every peer of a cluster owns one ``RAFT_STATUS`` segment named ``<cluster>.s<id>``
whose body is the seqlocked ``rsm_raft_status`` record of ``csrc/raft_status.h``.  The
peer rewrites it after every loop turn that changed something (one C call: the seqlock
makes a half-written record invisible); clients read it to find the leader without a
round trip, and ``LocalCluster.status()``, ``rsm-shm ls/inspect`` and ``rsm-shm cluster
status`` read it without asking the peer anything.

Failure modes: a record is only as fresh as its peer: a killed or paused peer's record
keeps its last values, so :class:`PeerStatus` says ``alive`` (its process exists, checked
by pid and start time) and ``age`` (seconds since the last publication).  A writer that
died in the middle of a publication leaves the record unreadable until its successor
publishes; readers get ``None`` instead of garbage.  Values read are untrusted and are
clamped or validated before use.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from .. import _proc
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentError, SegmentHeader

__all__ = [
    "PeerStatus",
    "StatusRecord",
    "LeaderWatch",
    "status_segment_name",
    "ROLE_NAMES",
    "RECORD_PEER",
    "RECORD_CONTROL",
]

RECORD_PEER = lib.RSM_RAFT_REC_PEER
RECORD_CONTROL = lib.RSM_RAFT_REC_CONTROL
VERSION = lib.RSM_RAFT_STATUS_VERSION
MAX_PEER_ID = lib.RSM_RAFT_MAX_PEER_ID
MATCH_MAX = lib.RSM_RAFT_MATCH_MAX
_LOAD_TRIES = 1000

ROLE_NAMES = {
    lib.RSM_RAFT_ROLE_FOLLOWER: "follower",
    lib.RSM_RAFT_ROLE_PRE_CANDIDATE: "pre_candidate",
    lib.RSM_RAFT_ROLE_CANDIDATE: "candidate",
    lib.RSM_RAFT_ROLE_LEADER: "leader",
    lib.RSM_RAFT_ROLE_STOPPED: "stopped",
}
ROLE_LEADER = lib.RSM_RAFT_ROLE_LEADER
ROLE_STOPPED = lib.RSM_RAFT_ROLE_STOPPED


#: A loaded ``rsm_raft_status`` record (a cffi struct: cffi values carry no static type).
RawStatus = Any


def status_segment_name(cluster: str, peer_id: int) -> str:
    """The segment holding peer ``peer_id``'s status record."""
    return f"{cluster}.s{peer_id}"


def ids_of_mask(mask: int) -> Tuple[int, ...]:
    return tuple(i + 1 for i in range(MAX_PEER_ID) if mask >> i & 1)


@dataclass(frozen=True)
class PeerStatus:
    """One peer as it last described itself (plus whether its process still lives).

    ``role`` is ``"leader"``, ``"follower"``, ``"candidate"``, ``"pre_candidate"``,
    ``"stopped"`` (it exited cleanly) or ``"unknown"`` (never published, or unreadable).
    ``match`` maps follower ids to their match index (leader only).  ``last_contact`` is
    seconds since it last received a message from another peer (None: never); ``age``
    seconds since it last published.  Counters cover the current process only (a
    restart starts them at zero).
    """

    id: int
    pid: int = 0
    alive: bool = False
    role: str = "unknown"
    term: int = 0
    leader: int = 0
    commit: int = 0
    applied: int = 0
    first_index: int = 0
    last_index: int = 0
    match: Dict[int, int] = field(default_factory=dict)
    last_contact: Optional[float] = None
    age: Optional[float] = None
    voters: Tuple[int, ...] = ()
    learners: Tuple[int, ...] = ()
    msgs_in: int = 0
    msgs_out: int = 0
    msgs_dropped: int = 0
    msgs_bad: int = 0
    fsyncs: int = 0
    fsync_seconds: float = 0.0
    snapshots_sent: int = 0
    snapshots_received: int = 0
    proposals: int = 0
    reads: int = 0
    control_seq: int = 0  # the control block version (links, drop rate) the peer applies
    state: str = ""  # what the cluster's manager last did to it: running, killed, paused...
    restarts: int = 0  # automatic restarts by the cluster's manager (LocalCluster(restart_failed=...))

    @property
    def is_leader(self) -> bool:
        return self.alive and self.role == "leader"

    def as_dict(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        d["match"] = {str(k): v for k, v in self.match.items()}
        d["voters"], d["learners"] = list(self.voters), list(self.learners)
        return d


def decode_status(
    raw: RawStatus, *, now_ns: Optional[int] = None, state: str = "", check_alive: bool = True, restarts: int = 0
) -> PeerStatus:
    """A :class:`PeerStatus` from a loaded ``rsm_raft_status`` (untrusted values)."""
    now_ns = time.monotonic_ns() if now_ns is None else now_ns
    pid = int(raw.pid)
    alive = check_alive and 0 < pid < 1 << 22 and _proc.process_alive(pid, int(raw.start_time))
    n = min(int(raw.nmatch), MATCH_MAX)
    match = {int(raw.match_id[i]): int(raw.match_index[i]) for i in range(n)}
    lc = int(raw.last_contact_ns)
    upd = int(raw.updated_ns)
    return PeerStatus(
        id=int(raw.id),
        pid=pid,
        alive=alive,
        role=ROLE_NAMES.get(int(raw.role), "unknown"),
        term=int(raw.term),
        leader=int(raw.leader),
        commit=int(raw.commit),
        applied=int(raw.applied),
        first_index=int(raw.first_index),
        last_index=int(raw.last_index),
        match=match,
        last_contact=(now_ns - lc) / 1e9 if lc else None,
        age=(now_ns - upd) / 1e9 if upd else None,
        voters=ids_of_mask(int(raw.voters)),
        learners=ids_of_mask(int(raw.learners)),
        msgs_in=int(raw.msgs_in),
        msgs_out=int(raw.msgs_out),
        msgs_dropped=int(raw.msgs_dropped),
        msgs_bad=int(raw.msgs_bad),
        fsyncs=int(raw.fsyncs),
        fsync_seconds=int(raw.fsync_ns) / 1e9,
        snapshots_sent=int(raw.snapshots_sent),
        snapshots_received=int(raw.snapshots_received),
        proposals=int(raw.proposals),
        reads=int(raw.reads),
        control_seq=int(raw.control_seq),
        state=state,
        restarts=restarts,
    )


def _check_header(header: SegmentHeader, record: int, what: str) -> None:
    params = header.params
    if len(params) < 2 or params[0] != record:
        raise SegmentError(f"segment {header.name!r} is a RAFT_STATUS segment but not a {what}")
    if params[1] != VERSION:
        raise SegmentError(
            f"segment {header.name!r} holds a {what} of version {params[1]}; this rsm_shm reads version {VERSION}"
        )


class StatusRecord:
    """A peer's status record segment: ``publish()`` (the peer) and ``load()`` (anyone).

    ``StatusRecord(name, create=None, mode=0o600)``; ``close()`` unmaps this handle,
    ``unlink()`` removes the name.
    """

    def __init__(self, name: str, *, create: Optional[bool] = None, mode: int = 0o600) -> None:
        size = ffi.sizeof("rsm_raft_status_rec")
        self._seg = Segment(
            name,
            Kind.RAFT_STATUS,
            size,
            create=create,
            mode=mode,
            params=(RECORD_PEER, VERSION),
            check=lambda h: _check_header(h, RECORD_PEER, "peer status record"),
            body_size_of=lambda h: size,
        )
        self._rec = self._seg.body("rsm_raft_status_rec *")
        self._buf = ffi.new("rsm_raft_status *")
        self.name = self._seg.name

    @property
    def closed(self) -> bool:
        return self._seg.closed

    def _check_open(self) -> None:
        if self._seg.closed:
            raise ValueError(f"status record {self.name!r} is closed")

    def new_record(self) -> RawStatus:
        """A zeroed ``rsm_raft_status`` to fill and :meth:`publish`."""
        return ffi.new("rsm_raft_status *")

    def publish(self, rec: RawStatus) -> None:
        """Publish a filled ``rsm_raft_status`` (one writer at a time: the peer)."""
        self._check_open()
        lib.rsm_raft_status_store(self._rec, rec)

    def seq(self) -> int:
        self._check_open()
        return int(lib.rsm_raft_status_seq(self._rec))

    def load(self) -> Optional[RawStatus]:
        """A consistent copy of the record (an ``rsm_raft_status``), or None if no
        consistent copy could be read (a writer died mid-publication) or it was never
        published."""
        self._check_open()
        if lib.rsm_raft_status_seq(self._rec) == 0:
            return None
        out = ffi.new("rsm_raft_status *")
        if lib.rsm_raft_status_load(self._rec, out, _LOAD_TRIES) != lib.RSM_OK:
            return None
        return out

    def read(self, *, state: str = "", peer_id: int = 0, restarts: int = 0) -> PeerStatus:
        """The record as a :class:`PeerStatus` (role "unknown" if unreadable); ``state``
        and ``restarts`` come from the control block."""
        raw = self.load()
        if raw is None:
            return PeerStatus(id=peer_id, state=state, restarts=restarts)
        return decode_status(raw, state=state, restarts=restarts)

    def close(self) -> None:
        self._seg.close()

    def unlink(self) -> None:
        self._seg.unlink()

    def __repr__(self) -> str:
        if self.closed:
            return f"<rsm_shm.cluster.StatusRecord {self.name!r} closed>"
        return f"<rsm_shm.cluster.StatusRecord {self.name!r}>"


class LeaderWatch:
    """Tells a follower that the process of the leader it follows has died.

    Peers of one machine publish their pid and its start time in their status records,
    so a follower need not wait out the election timeout to learn that its leader was
    killed: :meth:`leader_gone` reads the leader's record once per (leader, term), opens
    a pidfd on that process (after checking its start time: a reused pid is another
    process), and from then on asks the kernel with one ``poll`` of it (about 2 us; a
    pidfd becomes readable when the process exits, zombie or not).  Without pidfds
    (Linux < 5.3) each call checks ``kill(pid, 0)`` and the start time in ``/proc``
    (some 20-50 us).  The peer calls it on its ticks and when a pre-vote arrives (see
    :meth:`rsm_shm.cluster.peer.Peer.check_leader_process`).

    Only ever evidence for forgetting a leader, never for following one: a record that
    cannot be read, names another peer or cluster, or has no pid says "not gone" (the
    election timeout still applies).  A restarted leader process is a new process: the
    leadership of the term died with the old one, which is the one remembered.
    """

    def __init__(self, cluster: str, cluster_id: int) -> None:
        self.cluster = cluster
        self.cluster_id = cluster_id
        self._records: Dict[int, StatusRecord] = {}
        self._key: Tuple[int, int] = (0, 0)  # (leader, term) whose process is remembered
        self._process: Tuple[int, int] = (0, 0)  # (pid, start time) of that leader
        self._pidfd = -1  # a pidfd of that process, or -1 (none: ask /proc)
        self._poll = select.poll()

    def leader_gone(self, leader: int, term: int) -> bool:
        """True if the process that led ``term`` as peer ``leader`` is dead."""
        key = (leader, term)
        if key != self._key:
            found = self._process_of(leader)
            if found is None:
                return False
            self._key, self._process = key, found
            self._open_pidfd(*found)
        if self._pidfd >= 0:
            return bool(self._poll.poll(0))
        pid, start = self._process
        return not _proc.process_alive(pid, start)

    def _open_pidfd(self, pid: int, start: int) -> None:
        self._close_pidfd()
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # no pidfds here, or the process is gone
            return
        # Opened by pid: it is our process only if that one still lives now (else the
        # fallback check says dead, which is right whoever holds the pid today).
        if not _proc.process_alive(pid, start):
            os.close(fd)
            return
        self._pidfd = fd
        self._poll.register(fd, select.POLLIN)

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            self._poll.unregister(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def _process_of(self, peer_id: int) -> Optional[Tuple[int, int]]:
        rec = self._records.get(peer_id)
        if rec is None:
            try:
                rec = self._records[peer_id] = StatusRecord(status_segment_name(self.cluster, peer_id), create=False)
            except (FileNotFoundError, ValueError, SegmentError):
                return None
        raw = rec.load()
        if raw is None or int(raw.id) != peer_id or int(raw.cluster_id) != self.cluster_id:
            return None
        pid = int(raw.pid)
        if not 0 < pid < 1 << 22:
            return None
        return pid, int(raw.start_time)

    def close(self) -> None:
        self._close_pidfd()
        for rec in self._records.values():
            rec.close()
        self._records.clear()
