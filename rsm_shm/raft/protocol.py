"""The Raft protocol automaton (etcd's ``raft.go``): state, role transitions, ticks and
the message dispatch.  Elections, replication, membership and reads live in the mixins
of :mod:`.election`, :mod:`.replication`, :mod:`.membership` and :mod:`.readonly`.

The automaton does no I/O: messages to send accumulate in ``msgs``; the persistent
state (term, vote, log) is read back by :class:`~rsm_shm.raft.core.RawNode` into a
Ready.  Use it through RawNode.
"""

from __future__ import annotations

import random
from typing import Iterable, List, Optional

from .codec import DecodeError, decode_conf_change
from .config import Config
from .confchange import restore as restore_config
from .election import CampaignType, ElectionMixin, TRANSFER_CONTEXT
from .errors import NotLeaderError, ProposalDroppedError
from .log import RaftLog
from .membership import MembershipMixin
from .readonly import ReadMixin, ReadOnly, ReadOnlyOption
from .replication import ReplicationMixin
from .storage import Storage
from .tracker import Progress, ProgressState, ProgressTracker
from .types import (
    LOCAL_MESSAGES,
    NONE,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    SoftState,
)

__all__ = ["Raft"]

# Enum members as module constants for the per-message paths below (an attribute
# lookup on an enum class costs about as much as the comparison it feeds).
_MT_APP = MessageType.APP
_MT_APP_RESP = MessageType.APP_RESP
_MT_BEAT = MessageType.BEAT
_MT_CHECK_QUORUM = MessageType.CHECK_QUORUM
_MT_HEARTBEAT = MessageType.HEARTBEAT
_MT_HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
_MT_HUP = MessageType.HUP
_MT_PRE_VOTE = MessageType.PRE_VOTE
_MT_PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
_MT_READ_INDEX = MessageType.READ_INDEX
_MT_READ_INDEX_RESP = MessageType.READ_INDEX_RESP
_MT_SNAP = MessageType.SNAP
_MT_SNAP_RESP = MessageType.SNAP_RESP
_MT_SNAP_STATUS = MessageType.SNAP_STATUS
_MT_TIMEOUT_NOW = MessageType.TIMEOUT_NOW
_MT_TRANSFER_LEADER = MessageType.TRANSFER_LEADER
_MT_UNREACHABLE = MessageType.UNREACHABLE
_MT_VOTE = MessageType.VOTE
_PS_REPLICATE = ProgressState.REPLICATE
_R_FOLLOWER = Role.FOLLOWER
_R_LEADER = Role.LEADER

_TERMLESS = LOCAL_MESSAGES | {MessageType.READ_INDEX, MessageType.TRANSFER_LEADER}


class Raft(ElectionMixin, ReplicationMixin, MembershipMixin, ReadMixin):
    def __init__(
        self,
        id: int,
        voters: Iterable[int],
        storage: Storage,
        config: Optional[Config] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        if not isinstance(id, int) or id <= 0:
            raise ValueError(f"node id must be an int >= 1, got {id!r}")
        cfg = config if config is not None else Config()
        cfg.validate()
        self.cfg = cfg
        self.id = id
        self.rng = rng if rng is not None else random.Random(id)
        self.raft_log = RaftLog(storage)
        self.max_msg_size = cfg.max_size_per_msg
        self.max_uncommitted_size = cfg.max_uncommitted_size
        self.trk = ProgressTracker(cfg.max_inflight_msgs, cfg.max_inflight_bytes)
        self.election_timeout = cfg.election_tick
        self.heartbeat_timeout = cfg.heartbeat_tick
        self.check_quorum = cfg.check_quorum
        self.pre_vote = cfg.pre_vote
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.is_learner = False
        self.msgs: List[Message] = []
        self.read_states: List[ReadState] = []
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly(cfg.read_only_option)
        self.pending_read_index_messages: List[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        self.snap_buffer = None  # (key, bytearray) of a snapshot being received
        self.append_pending = False  # proposals not yet broadcast (see flush_appends)

        hs, cs = storage.initial_state()
        # Lease reads: before a crash we may have acknowledged a leader's lease; having
        # forgotten whom we followed, refuse (pre)votes for one election timeout.
        self.boot_lease_ticks = (
            self.election_timeout if cfg.read_only_option == ReadOnlyOption.LEASE_BASED and hs.term > 0 else 0
        )
        if cs.is_empty():
            # A new node: the configuration comes from the caller.  On a restart
            # the storage's configuration wins (it reflects committed changes).
            cs = ConfState(voters=tuple(sorted(set(voters))))
        cfg_, prs = restore_config(cs, self.trk, self.raft_log.last_index())
        self.trk.config, self.trk.progress = cfg_, prs
        pr = prs.get(id)
        self.is_learner = pr is not None and pr.is_learner
        if not hs.is_empty():
            self.load_state(hs)
        if cfg.applied > 0:
            self.raft_log.applied_to(min(cfg.applied, self.raft_log.committed))
        self.become_follower(self.term, NONE)

    def __repr__(self) -> str:
        return f"Raft(id={self.id}, term={self.term}, role={self.role.name}, lead={self.lead}, log={self.raft_log})"

    # ------------------------------------------------------------------ state
    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.raft_log.committed)

    def load_state(self, hs: HardState) -> None:
        if hs.commit > self.raft_log.last_index():
            raise ValueError(
                f"hard state commit {hs.commit} is past the last index {self.raft_log.last_index()}: "
                "the log was truncated or lost after the hard state was persisted"
            )
        # A commit below the snapshot index (hard state persisted before a snapshot
        # was installed) is raised to it: a snapshot only holds committed entries.
        self.raft_log.committed = max(hs.commit, self.raft_log.committed)
        self.term = hs.term
        self.vote = hs.vote

    def send(self, m: Message) -> None:
        self.msgs.append(m)

    # ------------------------------------------------------------------ roles
    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.trk.reset_votes()
        last = self.raft_log.last_index()
        for i, pr in self.trk.progress.items():
            np = Progress(0, last + 1, self.trk.new_inflights(), pr.is_learner)
            if i == self.id:
                np.match = last
            self.trk.progress[i] = np
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly(self.cfg.read_only_option)
        self.pending_read_index_messages = []

    def become_follower(self, term: int, lead: int) -> None:
        self.reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise RuntimeError("invalid transition [leader -> pre-candidate]")
        # Becoming a pre-candidate changes neither the term nor the vote (§9.6).
        self.trk.reset_votes()
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise RuntimeError("invalid transition [leader -> candidate]")
        self.reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        if self.role == Role.FOLLOWER:
            raise RuntimeError("invalid transition [follower -> leader]")
        self.reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        pr = self.trk.progress[self.id]
        pr.become_replicate()
        pr.recent_active = True
        # No conf change may be proposed until our no-op (appended next, at
        # last_index + 1) is applied: see membership.py on the single-server bug.
        self.pending_conf_index = self.raft_log.last_index() + 1
        # The no-op of thesis §6.4 / §8: committing it commits every earlier entry.
        if not self.append_entry([Entry(term=0, index=0)]):
            raise RuntimeError("empty entry was dropped")
        # The no-op does not count against max_uncommitted_size.
        self.uncommitted_size = 0

    # ------------------------------------------------------------------ ticks
    def tick(self) -> None:
        if self.role == Role.LEADER:
            self.tick_heartbeat()
        else:
            self.tick_election()

    def tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        self.read_only.tick()
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MessageType.CHECK_QUORUM, to=self.id, frm=self.id))
            # a transfer that did not finish within an election timeout is aborted
            if self.role == Role.LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()
        if self.role != Role.LEADER:
            return
        # An auto-leave that could not be proposed when the joint config was applied
        # (a leadership transfer was in progress, or the uncommitted-size limit was
        # reached) is retried here.
        self.maybe_auto_leave_joint()
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(MessageType.BEAT, to=self.id, frm=self.id))

    # ------------------------------------------------------------------ step
    def step(self, m: Message) -> None:
        """Process one message (wire or local).  Messages of lower terms are ignored
        (Figure 2 "all servers"); higher terms make us a follower first, except for
        the pre-vote and lease cases below."""
        if m.term == 0:
            # local message (or a forwarded READ_INDEX, which carries no term as in
            # etcd); any other term-0 message is malformed and dropped
            if m.type not in _TERMLESS:
                return
        elif m.term > self.term:
            if m.type in (_MT_VOTE, _MT_PRE_VOTE):
                force = m.context == TRANSFER_CONTEXT
                if not force and self.in_lease():
                    # Leader stickiness (thesis §4.2.3): we heard from a leader less
                    # than an election timeout ago; a disruptive (pre)candidate is
                    # ignored, without even updating our term.
                    return
            if m.type == _MT_PRE_VOTE:
                pass  # never change our term in response to a pre-vote
            elif m.type == _MT_PRE_VOTE_RESP and not m.reject:
                # A granted pre-vote carries the future term; the term is bumped only
                # once the pre-election is won.
                pass
            elif m.type in (_MT_APP, _MT_HEARTBEAT, _MT_SNAP):
                self.become_follower(m.term, m.frm)
            else:
                # A vote request (which we may well reject) or a response carrying a
                # higher term: we adopt the term, but this is not hearing from a leader.
                # Figure 2 restarts the election timer only on hearing from the current
                # leader or granting a vote (handle_vote_request does that); restarting it
                # here, as etcd's becomeFollower does, lets candidates with stale logs
                # keep the only up-to-date node from ever campaigning when pre-vote is
                # off (tests/testdata/raft/vote_reject_timer.txt, the no_prevote profile).
                elapsed, timeout = self.election_elapsed, self.randomized_election_timeout
                self.become_follower(m.term, NONE)
                if self.role == _R_FOLLOWER:
                    self.election_elapsed, self.randomized_election_timeout = elapsed, timeout
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (_MT_HEARTBEAT, _MT_APP):
                # A leader of an older term (maybe we advanced our term while
                # partitioned; with check-quorum our term cannot be raised by a vote
                # request): answer with our term so it steps down.
                self.send(Message(_MT_APP_RESP, to=m.frm, frm=self.id, term=self.term))
            elif m.type == _MT_PRE_VOTE:
                # Tell a lagging pre-candidate about our term, else it could be stuck
                # pre-voting forever below a quorum of higher-term nodes.
                self.send(Message(_MT_PRE_VOTE_RESP, to=m.frm, frm=self.id, term=self.term, reject=True))
            return

        t = m.type
        if t == _MT_HUP:
            if self.pre_vote:
                self.hup(CampaignType.PRE_ELECTION)
            else:
                self.hup(CampaignType.ELECTION)
        elif t in (_MT_VOTE, _MT_PRE_VOTE):
            if m.term == 0:
                return  # malformed: a vote needs a term
            self.handle_vote_request(m)
        elif self.role == _R_LEADER:
            self.step_leader(m)
        elif self.role == _R_FOLLOWER:
            self.step_follower(m)
        else:
            self.step_candidate(m)

    def step_leader(self, m: Message) -> None:
        t = m.type
        if t == _MT_BEAT:
            self.bcast_heartbeat()
            return
        if t == _MT_CHECK_QUORUM:
            if not self.trk.quorum_active():
                # thesis §6.2: a leader that cannot reach a quorum steps down
                self.become_follower(self.term, NONE)
            for i, other in self.trk.progress.items():
                if i != self.id:
                    other.recent_active = False
            return
        if t == _MT_READ_INDEX:
            self.leader_read_index(m)
            return
        if t == _MT_TRANSFER_LEADER:
            self.handle_transfer_leader(m.index)
            return
        pr = self.trk.progress.get(m.frm)
        if pr is None:
            return
        if t == _MT_APP_RESP:
            self.handle_append_response(m, pr)
        elif t == _MT_HEARTBEAT_RESP:
            self.handle_heartbeat_response(m, pr)
        elif t == _MT_SNAP_RESP:
            self.handle_snapshot_response(m, pr)
        elif t == _MT_SNAP_STATUS:
            self.handle_snapshot_status(m, pr)
        elif t == _MT_UNREACHABLE:
            # The transport failed: the pipeline assumption no longer holds.
            if pr.state == _PS_REPLICATE:
                pr.become_probe()

    def step_follower(self, m: Message) -> None:
        t = m.type
        if t == _MT_APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_append_entries(m)
        elif t == _MT_HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_heartbeat(m)
        elif t == _MT_SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_snapshot_chunk(m)
        elif t == _MT_TRANSFER_LEADER:
            if self.lead == NONE or m.frm != self.id:
                return  # only our own requests are forwarded (no forwarding loops)
            # forwarded with ourselves as sender; the target travels in ``index``
            self.send(Message(_MT_TRANSFER_LEADER, to=self.lead, frm=self.id, term=self.term, index=m.index))
        elif t == _MT_TIMEOUT_NOW:
            # Leadership transfer: campaign at once, without pre-vote (the leader
            # asked us; we are not recovering from a partition).
            self.hup(CampaignType.TRANSFER)
        elif t == _MT_READ_INDEX:
            # Forward our own (local) requests to the leader; a request another node
            # forwarded to a former leader is dropped (its sender will retry).
            if self.lead == NONE or m.frm not in (NONE, self.id):
                return
            self.send(Message(_MT_READ_INDEX, to=self.lead, frm=self.id, context=m.context))
        elif t == _MT_READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    # ------------------------------------------------------------------ proposals
    def increase_uncommitted_size(self, ents: List[Entry]) -> bool:
        s = sum(len(e.data) for e in ents)
        if self.uncommitted_size > 0 and s > 0 and self.uncommitted_size + s > self.max_uncommitted_size > 0:
            return False
        self.uncommitted_size += s
        return True

    def reduce_uncommitted_size(self, ents: List[Entry]) -> None:
        if self.uncommitted_size == 0:
            return
        s = sum(len(e.data) for e in ents)
        self.uncommitted_size = max(0, self.uncommitted_size - s)

    def append_entry(self, es: List[Entry]) -> bool:
        li = self.raft_log.last_index()
        es = [Entry(term=self.term, index=li + 1 + i, type=e.type, data=e.data) for i, e in enumerate(es)]
        if not self.increase_uncommitted_size(es):
            return False
        li = self.raft_log.append(es)
        # The leader counts its own copy right away: its entries are persisted (Ready)
        # before any message carrying them leaves, hence before any follower's ack
        # can make them committed (thesis §10.2.1).
        self.trk.progress[self.id].maybe_update(li)
        self.maybe_commit()
        return True

    def propose_entries(self, es: List[Entry]) -> int:
        """Leader: append ``es`` and replicate them; returns the last new index."""
        if self.role != Role.LEADER:
            raise NotLeaderError(self.lead)
        if self.id not in self.trk.progress:
            raise ProposalDroppedError(f"node {self.id} is not in the configuration")
        if self.lead_transferee != NONE:
            # thesis §3.10: stop accepting proposals during a transfer
            raise ProposalDroppedError(f"leadership is being transferred to {self.lead_transferee}")
        cc_at = None
        for i, e in enumerate(es):
            if e.type == EntryType.CONF_CHANGE:
                if cc_at is not None:
                    raise ProposalDroppedError("at most one conf change per proposal")
                try:
                    cc = decode_conf_change(e.data)
                except DecodeError as err:
                    raise ProposalDroppedError(f"malformed conf change: {err}") from None
                self.check_conf_change_proposal(cc)
                cc_at = i
        if not self.append_entry(es):
            raise ProposalDroppedError("max_uncommitted_size exceeded")
        last = self.raft_log.last_index()
        if cc_at is not None:
            self.pending_conf_index = last - len(es) + 1 + cc_at
        # Batching: proposals made before the next Ready are sent together (one
        # AppendEntries per follower, up to max_size_per_msg) by flush_appends().
        self.append_pending = True
        return last

    def flush_appends(self) -> None:
        """Send the entries proposed since the last Ready (called by RawNode before
        building a Ready)."""
        if not self.append_pending:
            return
        self.append_pending = False
        if self.role != Role.LEADER:
            return
        for i, _ in self.trk.visit():
            if i != self.id:
                self.maybe_send_append(i, False)

    def on_applied(self, old_applied: int) -> None:
        if self.raft_log.applied > old_applied:
            self.maybe_auto_leave_joint()
