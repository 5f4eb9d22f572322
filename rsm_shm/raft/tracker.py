"""Per-follower replication progress and the configuration it is tracked under
(etcd's ``tracker`` package).

A leader keeps one :class:`Progress` per member (itself included).  A follower is in
one of three states:

* PROBE: the leader does not know where the follower's log matches; it sends one
  AppendEntries at a time (per heartbeat interval) and backs ``next`` off on rejects
  (thesis §3.5, with fast backtracking by ``reject_hint``/``log_term``).
* REPLICATE: the follower matched; the leader streams entries optimistically
  (pipelining), at most ``max_inflight_msgs`` messages unacknowledged (:class:`Inflights`).
* SNAPSHOT: the follower needs entries the leader compacted; the leader streams the
  snapshot in chunks (thesis §5.3) and waits for the follower to report it installed.

Invariant: ``match < next`` always.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Deque, Dict, Iterator, List, Optional, Set, Tuple

from .quorum import VoteResult, joint_committed, joint_vote
from .types import ConfState, Snapshot

__all__ = ["ProgressState", "Inflights", "Progress", "TrackerConfig", "ProgressTracker"]


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """A bounded window of in-flight AppendEntries, identified by their last index."""

    __slots__ = ("size", "max_bytes", "_q", "_bytes")

    def __init__(self, size: int, max_bytes: int = 0) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._q: Deque[Tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, index: int, nbytes: int) -> None:
        if self.full():
            raise RuntimeError("cannot add into a full inflights window")
        self._q.append((index, nbytes))
        self._bytes += nbytes

    def free_le(self, to: int) -> None:
        """Free every in-flight message whose last index is <= ``to`` (acknowledged)."""
        q = self._q
        while q and q[0][0] <= to:
            self._bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        if self._q:
            self._bytes -= self._q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.size or (self.max_bytes > 0 and self._bytes >= self.max_bytes)

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()
        self._bytes = 0


class Progress:
    """What the leader knows of one member's log."""

    __slots__ = (
        "match",
        "next",
        "state",
        "pending_snapshot",
        "recent_active",
        "msg_app_flow_paused",
        "inflights",
        "is_learner",
        "snap",
        "snap_acked",
        "snap_next",
        "snap_empty_sent",
    )

    def __init__(
        self, match: int, next: int, inflights: Inflights, is_learner: bool = False, recent_active: bool = False
    ):
        self.match = match
        self.next = next
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = recent_active
        self.msg_app_flow_paused = False
        self.inflights = inflights
        self.is_learner = is_learner
        # chunked snapshot transfer (SNAPSHOT state only)
        self.snap: Optional[Snapshot] = None
        self.snap_acked = 0  # bytes the follower confirmed, contiguous from 0
        self.snap_next = 0  # offset of the next chunk to send
        self.snap_empty_sent = False  # a zero-byte snapshot still needs one chunk

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()
        self.snap = None
        self.snap_acked = self.snap_next = 0
        self.snap_empty_sent = False

    def become_probe(self) -> None:
        # After a snapshot, probe from the snapshot index: the follower has it (or will
        # tell us otherwise).
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snap: Snapshot) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snap.meta.index
        self.snap = snap

    def update_on_entries_send(self, n_entries: int, nbytes: int, next_index: int) -> None:
        """Account for an AppendEntries carrying ``n_entries`` starting at ``next_index``."""
        if self.state == ProgressState.REPLICATE:
            if n_entries > 0:
                last = next_index + n_entries - 1
                self.next = last + 1  # optimistic: pipelining (thesis §10.2.2)
                self.inflights.add(last, nbytes)
            self.msg_app_flow_paused = self.inflights.full()
        elif self.state == ProgressState.PROBE:
            # one probe per heartbeat interval until the follower answers
            self.msg_app_flow_paused = True
        else:
            raise RuntimeError(f"sending entries in state {self.state.name}")

    def maybe_update(self, n: int) -> bool:
        """The follower acknowledged index ``n``; False if that is stale."""
        if n <= self.match:
            return False
        self.match = n
        self.next = max(self.next, n + 1)
        self.msg_app_flow_paused = False
        return True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected the append after ``rejected``; move ``next`` back using
        its hint.  False if the rejection is stale (out of order)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.msg_app_flow_paused = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.msg_app_flow_paused
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"learner={self.is_learner}, inflight={self.inflights.count()})"
        )


class TrackerConfig:
    """The membership configuration as the tracker sees it."""

    __slots__ = ("incoming", "outgoing", "learners", "learners_next", "auto_leave")

    def __init__(self) -> None:
        self.incoming: Set[int] = set()
        self.outgoing: Set[int] = set()
        self.learners: Set[int] = set()
        # Voters of the outgoing config that become learners when the joint config is
        # left.  Needed because a node cannot be a voter and a learner at once.
        self.learners_next: Set[int] = set()
        self.auto_leave = False

    def copy(self) -> "TrackerConfig":
        c = TrackerConfig()
        c.incoming = set(self.incoming)
        c.outgoing = set(self.outgoing)
        c.learners = set(self.learners)
        c.learners_next = set(self.learners_next)
        c.auto_leave = self.auto_leave
        return c

    def joint(self) -> bool:
        return bool(self.outgoing)

    def voters(self) -> Set[int]:
        return self.incoming | self.outgoing

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=tuple(sorted(self.incoming)),
            learners=tuple(sorted(self.learners)),
            voters_outgoing=tuple(sorted(self.outgoing)),
            learners_next=tuple(sorted(self.learners_next)),
            auto_leave=self.auto_leave,
        )

    def __repr__(self) -> str:
        return f"TrackerConfig({self.conf_state()})"


class ProgressTracker:
    """The configuration, each member's Progress and the votes of the current election."""

    def __init__(self, max_inflight: int, max_inflight_bytes: int = 0) -> None:
        self.config = TrackerConfig()
        self.progress: Dict[int, Progress] = {}
        self.votes: Dict[int, bool] = {}
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes

    def new_inflights(self) -> Inflights:
        return Inflights(self.max_inflight, self.max_inflight_bytes)

    def conf_state(self) -> ConfState:
        return self.config.conf_state()

    def is_singleton(self) -> bool:
        return len(self.config.incoming) == 1 and not self.config.outgoing

    def voter_ids(self) -> List[int]:
        return sorted(self.config.voters())

    def is_voter(self, id: int) -> bool:
        return id in self.config.incoming or id in self.config.outgoing

    def committed(self) -> int:
        """Largest index replicated on a quorum (of both halves when joint)."""
        prs = self.progress
        cfg = self.config
        incoming = cfg.incoming
        if not cfg.outgoing and incoming:
            # Not joint (the steady state): quorum.majority_committed inlined, as the
            # leader asks on every acknowledgement.  The element at n - (n//2 + 1) of
            # the ascending match indexes is held by a majority.
            n = len(incoming)
            srt = sorted([prs[v].match if v in prs else 0 for v in incoming])
            return srt[n - (n // 2 + 1)]

        def acked(i: int) -> Optional[int]:
            pr = prs.get(i)
            return None if pr is None else pr.match

        return joint_committed(self.config.incoming, self.config.outgoing, acked)

    def quorum_active(self) -> bool:
        """Whether a quorum of voters was recently active (check-quorum, thesis §6.2)."""
        votes = {i: pr.recent_active for i, pr in self.progress.items() if not pr.is_learner}
        return joint_vote(self.config.incoming, self.config.outgoing, votes) == VoteResult.WON

    def visit(self) -> Iterator[Tuple[int, Progress]]:
        """Progresses in id order (deterministic)."""
        for i in sorted(self.progress):
            yield i, self.progress[i]

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, id: int, granted: bool) -> None:
        if id not in self.votes:
            self.votes[id] = granted

    def tally_votes(self) -> Tuple[int, int, VoteResult]:
        granted = rejected = 0
        for i, pr in self.progress.items():
            if pr.is_learner:
                continue
            v = self.votes.get(i)
            if v is None:
                continue
            if v:
                granted += 1
            else:
                rejected += 1
        return granted, rejected, joint_vote(self.config.incoming, self.config.outgoing, self.votes)
