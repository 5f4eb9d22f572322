"""Membership changes, snapshot installation and leadership transfer (thesis §4, §5.3,
§3.10).  Mixed into :class:`rsm_shm.raft.protocol.Raft`.

Configuration changes take effect when the application *applies* the CONF_CHANGE entry
and calls ``apply_conf_change`` (etcd's model), so all nodes switch at the same log
position.  Safety rules enforced at proposal time (leader side):

* at most one conf change is pending (proposed but not applied) at a time;
* a new leader accepts a conf change only after its own no-op entry of the current
  term is applied: this is the fix of the single-server change bug found after the
  thesis (Ongaro, raft-dev 2015: "a leader may not append a new configuration entry
  until it has committed an entry from its current term");
* a joint configuration must be left before another change enters one, and an empty
  "leave" change is only valid in a joint configuration.
"""

from __future__ import annotations

from typing import Dict, Tuple


from .codec import encode_conf_change
from .confchange import Changer, ConfChangeError, enter_joint_mode, restore as restore_config
from .errors import ProposalDroppedError
from .types import NONE, ConfChange, ConfState, Entry, EntryType, Message, MessageType, Role, Snapshot
from .state import RaftState
from .tracker import Progress, TrackerConfig

__all__ = ["MembershipMixin"]


class MembershipMixin(RaftState):
    # ------------------------------------------------------------------ conf changes
    def compute_conf_change(self, cc: ConfChange) -> Tuple[TrackerConfig, Dict[int, Progress]]:
        """(TrackerConfig, progress) that ``cc`` would produce; raises ConfChangeError."""
        changer = Changer(self.trk, self.raft_log.last_index())
        if not cc.changes and cc.transition == 0:
            return changer.leave_joint()
        auto_leave, joint = enter_joint_mode(cc)
        if joint:
            return changer.enter_joint(auto_leave, cc.changes)
        return changer.simple(cc.changes)

    def check_conf_change_proposal(self, cc: ConfChange) -> None:
        """Leader-side admission of a conf change proposal; raises ProposalDroppedError."""
        if self.pending_conf_index > self.raft_log.applied:
            raise ProposalDroppedError(
                f"possible unapplied conf change at index {self.pending_conf_index} "
                f"(applied to {self.raft_log.applied})"
            )
        joint = self.trk.config.joint()
        if joint and cc.changes:
            raise ProposalDroppedError("must transition out of joint config first")
        if not joint and not cc.changes:
            raise ProposalDroppedError("not in joint state; refusing empty conf change")
        try:
            self.compute_conf_change(cc)
        except ConfChangeError as e:
            raise ProposalDroppedError(f"invalid conf change: {e}") from None

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Switch to the configuration ``cc`` produces.  Every node applies the same
        sequence of changes, so an invalid change is ignored identically everywhere
        (the configuration stays as it is).

        A node that has no configuration at all (built with no voters and no
        snapshot) ignores changes: it cannot know the configuration they modify, and
        guessing (e.g. "ADD_NODE self" on an empty set = a cluster of one) would split
        the cluster.  Start a joining node with the voters it joins, or from a
        snapshot."""
        if not self.trk.config.voters():
            return self.trk.conf_state()
        try:
            cfg, prs = self.compute_conf_change(cc)
        except ConfChangeError:
            return self.trk.conf_state()
        return self.switch_to_config(cfg, prs)

    def switch_to_config(self, cfg: TrackerConfig, prs: Dict[int, Progress]) -> ConfState:
        self.trk.config = cfg
        self.trk.progress = prs
        cs = self.trk.conf_state()
        pr = prs.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if (pr is None or self.is_learner) and self.role == Role.LEADER:
            # A leader removed (or demoted) by a committed change steps down (thesis
            # §4.2.2); it kept managing the cluster until the change committed.
            if self.cfg.step_down_on_removal:
                self.become_follower(self.term, NONE)
            return cs
        if self.role != Role.LEADER or not cs.voters:
            return cs
        # The quorum changed: the commit index may move, new members need entries.
        if self.maybe_commit():
            self.release_pending_read_index_messages()
            self.bcast_append()
        else:
            for i, _ in self.trk.visit():
                if i != self.id:
                    self.maybe_send_append(i, False)
        if self.lead_transferee != NONE and not self.trk.is_voter(self.lead_transferee):
            self.abort_leader_transfer()
        return cs

    def maybe_auto_leave_joint(self) -> None:
        """A leader in an auto-leave joint config proposes the leave-joint change once
        the change that entered it is applied (thesis §4.3: C(new) is appended once
        C(old,new) is committed)."""
        if (
            self.role == Role.LEADER
            and self.trk.config.auto_leave
            and self.trk.config.joint()
            and self.raft_log.applied >= self.pending_conf_index
            and self.lead_transferee == NONE
        ):
            ent = Entry(term=0, index=0, type=EntryType.CONF_CHANGE, data=encode_conf_change(ConfChange()))
            if self.append_entry([ent]):
                self.pending_conf_index = self.raft_log.last_index()
                self.bcast_append()

    # ------------------------------------------------------------------ snapshots
    def restore(self, s: Snapshot) -> bool:
        """Install a leader's snapshot: True if the log was replaced, False if it was
        stale (then we may fast-forward our commit index)."""
        if s.meta.index <= self.raft_log.committed:
            return False
        if self.role != Role.FOLLOWER:
            # Only a follower receives snapshots; defensive.
            self.become_follower(self.term + 1, NONE)
            return False
        cs = s.meta.conf_state
        if self.id not in cs.voters and self.id not in cs.learners and self.id not in cs.voters_outgoing:
            # A snapshot for a configuration that does not contain us: ignore it.
            return False
        if self.raft_log.match_term(s.meta.index, s.meta.term):
            # We have the entry the snapshot ends with, hence the whole prefix (Log
            # Matching): just fast-forward the commit index.
            self.raft_log.commit_to(s.meta.index)
            return False
        self.raft_log.restore(s)
        cfg, prs = restore_config(cs, self.trk, self.raft_log.last_index())
        self.switch_to_config(cfg, prs)
        return True

    # ------------------------------------------------------------------ transfer
    def handle_transfer_leader(self, target: int) -> None:
        """Leader: start transferring leadership to ``target`` (thesis §3.10)."""
        pr = self.trk.progress.get(target)
        if pr is None or pr.is_learner:
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == target:
                return
            self.abort_leader_transfer()
        if target == self.id:
            return
        # The transfer must finish within an election timeout or it is aborted
        # (tick_heartbeat), so the cluster is not left without proposals for long.
        self.election_elapsed = 0
        self.lead_transferee = target
        if pr.match == self.raft_log.last_index():
            self.send_timeout_now(target)
        else:
            self.send_append(target)

    def send_timeout_now(self, to: int) -> None:
        self.send(Message(MessageType.TIMEOUT_NOW, to=to, frm=self.id, term=self.term))

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE
