"""The Raft core's entry point: :class:`RawNode` (etcd's ``rawnode.go``).

A RawNode wraps the pure protocol automaton (:class:`~rsm_shm.raft.protocol.Raft`) and
exchanges everything with the outside through values: time arrives as :meth:`tick`,
input as :meth:`step` and the proposal methods, output as a
:class:`~rsm_shm.raft.types.Ready`.  A typical loop::

    node = RawNode(1, [1, 2, 3], storage, Config(), random.Random(seed))
    while True:
        ... node.tick() every tick; node.step(decode_message(b)) for each message ...
        if node.has_ready():
            rd = node.ready()
            if rd.snapshot: storage.apply_snapshot(rd.snapshot)
            storage.append(rd.entries)
            if rd.hard_state: storage.set_hard_state(rd.hard_state)
            send(rd.messages)                       # only after persisting
            for e in rd.committed_entries: apply(e)  # conf changes: node.apply_conf_change
            node.advance(rd)

No I/O, no clock, no threads: the same inputs (including the ``random.Random``) give
the same outputs, and a node rebuilt from the same storage after a crash carries on
safely (its term, vote and log are exactly what it promised others).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, Iterable, NamedTuple, Optional

from .codec import decode_conf_change, encode_conf_change
from .config import Config
from .errors import NotLeaderError, ProposalDroppedError
from .protocol import Raft
from .readonly import ReadOnlyOption
from .storage import Storage
from .tracker import ProgressState
from .types import (
    LOCAL_MESSAGES,
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
    SoftState,
)

__all__ = [
    "RawNode",
    "Config",
    "ReadOnlyOption",
    "NotLeaderError",
    "ProposalDroppedError",
    "Status",
    "ProgressStatus",
    "Leadership",
]


@dataclass(frozen=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    recent_active: bool = False
    is_learner: bool = False


class Leadership(NamedTuple):
    """Who leads, as a node sees it: its ``term``, its ``role`` and the ``leader`` it
    knows in that term (0: none).  What :meth:`RawNode.leadership` returns."""

    term: int
    role: Role
    leader: int


@dataclass(frozen=True)
class Status:
    """A snapshot of a node's state for tests, the CLI and status pages."""

    id: int
    term: int
    vote: int
    commit: int
    applied: int
    role: Role
    leader: int
    progress: Dict[int, ProgressStatus] = field(default_factory=dict)  # leader only
    conf_state: ConfState = field(default_factory=ConfState)
    lead_transferee: int = 0
    first_index: int = 0
    last_index: int = 0

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    @property
    def soft_state(self) -> SoftState:
        return SoftState(self.leader, self.role)


class RawNode:
    """A Raft node driven synchronously by its caller.

    ``voters`` configures a brand-new node; when the storage already holds a
    configuration (a restart, or a node built from a snapshot) the storage wins.
    ``rng`` draws the randomized election timeouts; pass a seeded ``random.Random``
    for reproducible runs (default: ``random.Random(id)``).

    Between :meth:`ready` and :meth:`advance` the node may still be stepped and
    ticked; the next Ready only holds what is new.  Calling :meth:`ready` twice
    without :meth:`advance` is an error.
    """

    def __init__(
        self,
        id: int,
        voters: Iterable[int],
        storage: Storage,
        config: Optional[Config] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.raft = Raft(id, voters, storage, config, rng)
        self.storage = storage
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._pending_ready: Optional[Ready] = None

    # ------------------------------------------------------------------ inputs
    @property
    def id(self) -> int:
        return self.raft.id

    def tick(self) -> None:
        """Advance logical time by one tick (election and heartbeat timers)."""
        self.raft.tick()

    def step(self, m: Message) -> None:
        """Feed a message received from another node.  Local-only kinds and messages
        not addressed to us are ignored (they cannot come from a correct peer)."""
        if m.type in LOCAL_MESSAGES or m.to != self.raft.id:
            return
        self.raft.step(m)

    def campaign(self) -> None:
        """Start an election now (with pre-vote if configured)."""
        self.raft.step(Message(MessageType.HUP, to=self.raft.id, frm=self.raft.id))

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry; returns its log index.  It is committed when
        it comes back in ``committed_entries`` (it may also be lost if leadership
        changes before that).  Raises NotLeaderError or ProposalDroppedError."""
        return self.raft.propose_entries([Entry(term=0, index=0, type=EntryType.NORMAL, data=bytes(data))])

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a membership change; returns its log index.  It takes effect when
        the application applies the entry and calls :meth:`apply_conf_change`.
        Raises NotLeaderError, or ProposalDroppedError when another change is pending,
        the leader has not applied an entry of its term yet, or the change is invalid
        for the current configuration."""
        e = Entry(term=0, index=0, type=EntryType.CONF_CHANGE, data=encode_conf_change(cc))
        return self.raft.propose_entries([e])

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change (call it when applying its entry); returns
        the new configuration, to be stored with the next snapshot."""
        return self.raft.apply_conf_change(cc)

    @staticmethod
    def decode_conf_change(e: Entry) -> ConfChange:
        """The ConfChange carried by a CONF_CHANGE entry."""
        return decode_conf_change(e.data)

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read.  A ReadState(index, ctx) arrives in a later
        Ready; serve the read once the applied index reaches ``index``.  ``ctx``
        identifies the request to the caller.  Raises ProposalDroppedError when no
        leader is known (retry later)."""
        r = self.raft
        if r.role != Role.LEADER and r.lead == NONE:
            raise ProposalDroppedError("no leader known to serve a read index")
        r.step(Message(MessageType.READ_INDEX, to=r.id, frm=NONE, context=bytes(ctx)))

    def transfer_leadership(self, to: int) -> None:
        """Ask the leader to hand leadership to ``to`` (thesis §3.10).  Best effort:
        the transfer is aborted if ``to`` does not win within an election timeout."""
        self.raft.step(Message(MessageType.TRANSFER_LEADER, to=self.raft.id, frm=self.raft.id, index=to))

    def forget_leader(self) -> None:
        """Forget the leader this follower knows (etcd's ``ForgetLeader``): call it when
        the transport has strong evidence the leader is dead (its connection broke).
        The node stays a follower in the same term and does not campaign; it merely
        stops counting the leader's lease, so it grants pre-votes at once and a quorum
        of such followers elects a new leader without waiting out the election
        timeout.  A live leader's next heartbeat makes it follow again.  A no-op on a
        leader, a (pre-)candidate, a follower that knows no leader, and under
        lease-based reads (whose safety rests on the followers' leases)."""
        self.raft.forget_leader()

    def report_unreachable(self, id: int) -> None:
        """The transport failed to reach ``id``: stop pipelining to it."""
        self.raft.step(Message(MessageType.UNREACHABLE, to=self.raft.id, frm=id))

    def report_snapshot(self, id: int, ok: bool) -> None:
        """The outcome of a snapshot transfer to ``id`` handled outside the core."""
        self.raft.step(Message(MessageType.SNAP_STATUS, to=self.raft.id, frm=id, reject=not ok))

    # ------------------------------------------------------------------ outputs
    def has_ready(self) -> bool:
        # Called after every input: compares fields rather than building the soft and
        # hard state records (this is the runtime's per-turn hot path).
        r = self.raft
        if r.append_pending:
            r.flush_appends()
        if r.msgs or r.read_states:
            return True
        ps = self._prev_soft
        if r.lead != ps.leader or r.role != ps.role:
            return True
        log = r.raft_log
        ph = self._prev_hard
        if (r.term != ph.term or r.vote != ph.vote or log.committed != ph.commit) and (
            r.term or r.vote or log.committed
        ):
            return True
        unstable = log.unstable
        if unstable.snapshot is not None or unstable.entries:
            return True
        return log.has_next_committed_ents()

    def ready(self) -> Ready:
        """What to persist, send and apply now (see :class:`Ready` for the order:
        messages must only be sent after the Ready's entries and hard state are
        persisted).  Acknowledge it with :meth:`advance`."""
        if self._pending_ready is not None:
            raise RuntimeError("ready() called again before advance()")
        r = self.raft
        r.flush_appends()
        log = r.raft_log
        rd = Ready(
            entries=log.unstable_entries(),
            committed_entries=log.next_committed_ents(),
            messages=r.msgs,
        )
        ps = self._prev_soft
        if r.lead != ps.leader or r.role != ps.role:
            rd.soft_state = self._prev_soft = r.soft_state()
        prev = self._prev_hard
        if r.term != prev.term or r.vote != prev.vote or log.committed != prev.commit:
            rd.hard_state = self._prev_hard = r.hard_state()
        if log.unstable.snapshot is not None:
            rd.snapshot = log.unstable.snapshot
        rd.read_states = r.read_states
        # As etcd's MustSync: new entries, or a new term or vote.  A commit index alone
        # need not be synced (it is learnt again from the leader after a crash).
        rd.must_sync = bool(rd.entries) or r.term != prev.term or r.vote != prev.vote
        r.msgs = []
        r.read_states = []
        if rd.committed_entries:
            log.accept_applying(rd.committed_entries[-1].index)
        self._pending_ready = rd
        return rd

    def advance(self, rd: Optional[Ready] = None) -> None:
        """The application persisted, sent and applied ``rd``: mark its entries stable
        and its committed entries applied."""
        if rd is None:
            rd = self._pending_ready
        if rd is None:
            return
        self._pending_ready = None
        r = self.raft
        log = r.raft_log
        old_applied = log.applied
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.meta.index)
            if rd.snapshot.meta.index > log.applied:
                log.applied = rd.snapshot.meta.index
                log.applying = max(log.applying, log.applied)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
            if r.role == Role.LEADER:
                r.reduce_uncommitted_size(rd.committed_entries)
        r.on_applied(old_applied)

    # ------------------------------------------------------------------ status
    def leadership(self) -> Leadership:
        """``(term, role, leader)`` now: three field reads, for callers that ask every
        step or every request (routing, a status record, a simulator's checks).
        :meth:`status` builds the full record (progress of every peer, configuration)."""
        r = self.raft
        return Leadership(r.term, r.role, r.lead)

    def status(self) -> Status:
        r = self.raft
        prs: Dict[int, ProgressStatus] = {}
        if r.role == Role.LEADER:
            for i, pr in r.trk.visit():
                prs[i] = ProgressStatus(pr.match, pr.next, pr.state, pr.recent_active, pr.is_learner)
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.raft_log.committed,
            applied=r.raft_log.applied,
            role=r.role,
            leader=r.lead,
            progress=prs,
            conf_state=r.trk.conf_state(),
            lead_transferee=r.lead_transferee,
            first_index=r.raft_log.first_index(),
            last_index=r.raft_log.last_index(),
        )

    def __repr__(self) -> str:
        return f"RawNode({self.raft!r})"
