"""Leader election: timeouts, pre-vote, campaigns and vote requests (Raft §5.2, §5.4.1,
thesis §3.4, §4.2.3, §9.6).  Mixed into :class:`rsm_shm.raft.protocol.Raft`."""

from __future__ import annotations

import enum
from typing import Tuple

from .quorum import VoteResult
from .readonly import ReadOnlyOption
from .types import NONE, EntryType, Message, MessageType, Role, vote_resp_type
from .state import RaftState

__all__ = ["CampaignType", "ElectionMixin", "TRANSFER_CONTEXT"]

# Context of a VOTE sent by a leadership-transfer campaign: it bypasses the leader
# lease of the voters (thesis §3.10: the transfer target has the leader's blessing).
TRANSFER_CONTEXT = b"transfer"


class CampaignType(enum.IntEnum):
    PRE_ELECTION = 0
    ELECTION = 1
    TRANSFER = 2


class ElectionMixin(RaftState):
    # ------------------------------------------------------------------ timers
    def reset_randomized_election_timeout(self) -> None:
        # Randomized in [election_timeout, 2*election_timeout) to make split votes
        # rare (§5.2).
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def tick_election(self) -> None:
        """Tick of followers and candidates: campaign when the timer expires."""
        self.election_elapsed += 1
        if self.boot_lease_ticks:
            self.boot_lease_ticks -= 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(MessageType.HUP, to=self.id, frm=self.id))

    def promotable(self) -> bool:
        """Only voters, and no node with a snapshot still to install, may campaign."""
        pr = self.trk.progress.get(self.id)
        return pr is not None and not pr.is_learner and not self.raft_log.has_pending_snapshot()

    # ------------------------------------------------------------------ campaigning
    def hup(self, t: CampaignType) -> None:
        if self.role == Role.LEADER:
            return
        if not self.promotable():
            return
        # A node must not campaign while it has committed conf changes not yet applied:
        # it could otherwise count votes under a stale configuration.
        if self._has_unapplied_conf_change():
            return
        self.campaign(t)

    def _has_unapplied_conf_change(self) -> bool:
        lo = self.raft_log.applied + 1
        hi = self.raft_log.committed + 1
        if lo >= hi:
            return False
        try:
            ents = self.raft_log.slice(max(lo, self.raft_log.first_index()), hi)
        except Exception:  # compacted: nothing unapplied that we can see
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def campaign(self, t: CampaignType) -> None:
        if not self.promotable():
            return
        if t == CampaignType.PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = MessageType.PRE_VOTE
            # A pre-vote asks for the term we would use, without bumping ours (§9.6).
            term = self.term + 1
        else:
            self.become_candidate()
            vote_msg = MessageType.VOTE
            term = self.term
        # Our own vote first: a single-voter cluster wins at once.
        _, _, res = self.poll(self.id, vote_resp_type(vote_msg), True)
        if res == VoteResult.WON:
            if t == CampaignType.PRE_ELECTION:
                self.campaign(CampaignType.ELECTION)
            else:
                self.become_leader()
            return
        ctx = TRANSFER_CONTEXT if t == CampaignType.TRANSFER else b""
        last_index = self.raft_log.last_index()
        last_term = self.raft_log.last_term()
        for i in self.trk.voter_ids():
            if i == self.id:
                continue
            self.send(
                Message(vote_msg, to=i, frm=self.id, term=term, log_term=last_term, index=last_index, context=ctx)
            )

    def poll(self, id: int, t: MessageType, granted: bool) -> Tuple[int, int, VoteResult]:
        self.trk.record_vote(id, granted)
        return self.trk.tally_votes()

    # ------------------------------------------------------------------ voting
    def in_lease(self) -> bool:
        """Whether we heard from a leader within the election timeout (check-quorum
        only).  Such a node ignores (pre)votes: leader stickiness, thesis §4.2.3."""
        if self.boot_lease_ticks:
            return True  # restarted with lease reads on: see protocol.Raft.__init__
        return self.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout

    def forget_leader(self) -> None:
        """A follower forgets the leader of its term (etcd's ``ForgetLeader``): the
        caller has strong evidence that the leader is gone (its connection broke).

        Only the leader is forgotten: the term, the vote and the election timer stay.
        Without a known leader the node is no longer in the leader's lease
        (:meth:`in_lease`), so it grants pre-votes at once instead of waiting out the
        election timeout, and a quorum of such followers lets the first node that
        campaigns win quickly.  It is safe: a pre-vote never binds, a real vote is still
        at most one per term, and the next message from a live leader of the term makes
        the node follow it again.  A leader, a (pre-)candidate or a follower that knows
        no leader is left alone; so is every node under lease-based reads, whose
        leader counts on its followers' leases (etcd ignores it there too)."""
        if self.role != Role.FOLLOWER or self.lead == NONE:
            return
        if self.read_only.option == ReadOnlyOption.LEASE_BASED:
            return
        self.lead = NONE

    def handle_vote_request(self, m: Message) -> None:
        """Grant or reject a VOTE / PRE_VOTE whose term is >= ours (Figure 2
        RequestVote receiver; §5.4.1 election restriction)."""
        can_vote = (
            self.vote == m.frm
            # we have not voted and do not know a leader in this term
            or (self.vote == NONE and self.lead == NONE)
            # a pre-vote for a future term never binds us
            or (m.type == MessageType.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.raft_log.is_up_to_date(m.index, m.log_term):
            # Granting answers with the candidate's term: for a pre-vote our own term is
            # lower and must not make the pre-candidate step down.
            self.send(Message(vote_resp_type(m.type), to=m.frm, frm=self.id, term=m.term))
            if m.type == MessageType.VOTE:
                # Persisted with the hard state before this response leaves (Ready).
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(vote_resp_type(m.type), to=m.frm, frm=self.id, term=self.term, reject=True))

    def step_candidate(self, m: Message) -> None:
        """Step function of PRE_CANDIDATE and CANDIDATE."""
        my_resp = MessageType.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MessageType.VOTE_RESP
        t = m.type
        if t == MessageType.APP:
            self.become_follower(m.term, m.frm)  # a leader of our term exists (§5.2)
            self.handle_append_entries(m)
        elif t == MessageType.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self.handle_heartbeat(m)
        elif t == MessageType.SNAP:
            self.become_follower(m.term, m.frm)
            self.handle_snapshot_chunk(m)
        elif t == my_resp:
            _, _, res = self.poll(m.frm, t, not m.reject)
            if res == VoteResult.WON:
                if self.role == Role.PRE_CANDIDATE:
                    self.campaign(CampaignType.ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res == VoteResult.LOST:
                # a pre-vote rejected with a higher term was handled in step()
                self.become_follower(self.term, NONE)
        elif t == MessageType.READ_INDEX_RESP:
            pass  # from an older leadership; the requester will retry
        # TIMEOUT_NOW, READ_INDEX, TRANSFER_LEADER: no leader to act on them; dropped
