"""Membership change arithmetic (etcd's ``confchange`` package).

A :class:`Changer` computes a new (TrackerConfig, progress map) from the current one
without touching it; the caller switches to the result.  Rules:

* ``simple``: at most one voter may change (thesis §4.1, "one server at a time": any
  two majorities of configurations differing by one voter overlap).  Learners may
  change freely.
* ``enter_joint``: the incoming voters are copied to the outgoing half, then the changes
  apply to the incoming half: C(old,new) of thesis §4.3.  Decisions need both majorities.
* ``leave_joint``: drop the outgoing half, turning ``learners_next`` into learners.

A node is never a voter and a learner at once: demoting a voter while joint records it
in ``learners_next`` (it stays an outgoing voter until the joint config is left).

Invalid changes raise :class:`ConfChangeError`.
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

from .tracker import Progress, ProgressTracker, TrackerConfig
from .types import ConfChange, ConfChangeTransition, ConfChangeType, ConfState

__all__ = ["ConfChangeError", "Changer", "restore", "enter_joint_mode"]


class ConfChangeError(ValueError):
    """A membership change that cannot be applied to the current configuration."""


def enter_joint_mode(cc: ConfChange) -> Tuple[bool, bool]:
    """(auto_leave, use_joint) for a ConfChange, as etcd's ``ConfChangeV2.EnterJoint``:
    several changes, or an explicit transition, use a joint configuration."""
    if cc.transition != ConfChangeTransition.AUTO or len(cc.changes) > 1:
        auto_leave = cc.transition in (ConfChangeTransition.AUTO, ConfChangeTransition.JOINT_IMPLICIT)
        return auto_leave, True
    return False, False


class Changer:
    def __init__(self, tracker: ProgressTracker, last_index: int) -> None:
        self.tracker = tracker
        self.last_index = last_index

    # ------------------------------------------------------------------ public
    def enter_joint(
        self, auto_leave: bool, changes: Iterable[Tuple[ConfChangeType, int]]
    ) -> Tuple[TrackerConfig, Dict[int, Progress]]:
        cfg, prs = self._copy()
        if cfg.joint():
            raise ConfChangeError("config is already joint")
        if not cfg.incoming:
            # Joint consensus with an empty old config is meaningless (and the quorum of
            # an empty half is "infinite").
            raise ConfChangeError("can't make a zero-voter config joint")
        cfg.outgoing = set(cfg.incoming)
        self._apply(cfg, prs, changes)
        cfg.auto_leave = auto_leave
        return self._check(cfg, prs)

    def leave_joint(self) -> Tuple[TrackerConfig, Dict[int, Progress]]:
        cfg, prs = self._copy()
        if not cfg.joint():
            raise ConfChangeError("can't leave a non-joint config")
        for i in cfg.learners_next:
            cfg.learners.add(i)
            prs[i].is_learner = True
        cfg.learners_next = set()
        for i in cfg.outgoing:
            if i not in cfg.incoming and i not in cfg.learners:
                prs.pop(i, None)
        cfg.outgoing = set()
        cfg.auto_leave = False
        return self._check(cfg, prs)

    def simple(self, changes: Iterable[Tuple[ConfChangeType, int]]) -> Tuple[TrackerConfig, Dict[int, Progress]]:
        cfg, prs = self._copy()
        if cfg.joint():
            raise ConfChangeError("can't apply simple config change in joint config")
        old = set(cfg.incoming)
        self._apply(cfg, prs, changes)
        if len(old ^ cfg.incoming) > 1:
            raise ConfChangeError("more than one voter changed without entering joint config")
        return self._check(cfg, prs)

    # ------------------------------------------------------------------ internals
    def _copy(self) -> Tuple[TrackerConfig, Dict[int, Progress]]:
        cfg = self.tracker.config.copy()
        prs: Dict[int, Progress] = {}
        for i, pr in self.tracker.progress.items():
            # Progress objects are shallow-copied: the change must not leak into the live
            # tracker if it fails.
            c = Progress(pr.match, pr.next, pr.inflights, pr.is_learner, pr.recent_active)
            c.state = pr.state
            c.pending_snapshot = pr.pending_snapshot
            c.msg_app_flow_paused = pr.msg_app_flow_paused
            c.snap, c.snap_acked, c.snap_next, c.snap_empty_sent = (
                pr.snap,
                pr.snap_acked,
                pr.snap_next,
                pr.snap_empty_sent,
            )
            prs[i] = c
        return cfg, prs

    def _apply(
        self, cfg: TrackerConfig, prs: Dict[int, Progress], changes: Iterable[Tuple[ConfChangeType, int]]
    ) -> None:
        for typ, node in changes:
            if node <= 0:
                continue  # etcd ignores "None"
            if typ == ConfChangeType.ADD_NODE:
                self._make_voter(cfg, prs, node)
            elif typ == ConfChangeType.ADD_LEARNER:
                self._make_learner(cfg, prs, node)
            elif typ == ConfChangeType.REMOVE_NODE:
                self._remove(cfg, prs, node)
            else:
                raise ConfChangeError(f"unknown conf change type {typ!r}")
        if not cfg.incoming:
            raise ConfChangeError("removed all voters")

    def _init_progress(self, cfg: TrackerConfig, prs: Dict[int, Progress], node: int, is_learner: bool) -> None:
        if is_learner:
            cfg.learners.add(node)
        else:
            cfg.incoming.add(node)
        # Probe the new member from the leader's last index; recent_active so that a
        # check-quorum right after the change does not count it as dead.
        prs[node] = Progress(0, max(self.last_index, 1), self.tracker.new_inflights(), is_learner, True)

    def _make_voter(self, cfg: TrackerConfig, prs: Dict[int, Progress], node: int) -> None:
        pr = prs.get(node)
        if pr is None:
            self._init_progress(cfg, prs, node, False)
            return
        pr.is_learner = False
        cfg.learners.discard(node)
        cfg.learners_next.discard(node)
        cfg.incoming.add(node)

    def _make_learner(self, cfg: TrackerConfig, prs: Dict[int, Progress], node: int) -> None:
        pr = prs.get(node)
        if pr is None:
            self._init_progress(cfg, prs, node, True)
            return
        if pr.is_learner:
            return
        self._remove(cfg, prs, node)
        prs[node] = pr
        # A voter of the outgoing config stays a voter there until the joint config is
        # left; only then does it become a learner.
        if node in cfg.outgoing:
            cfg.learners_next.add(node)
        else:
            pr.is_learner = True
            cfg.learners.add(node)

    def _remove(self, cfg: TrackerConfig, prs: Dict[int, Progress], node: int) -> None:
        if node not in prs:
            return
        cfg.incoming.discard(node)
        cfg.learners.discard(node)
        cfg.learners_next.discard(node)
        if node not in cfg.outgoing:
            del prs[node]

    def _check(self, cfg: TrackerConfig, prs: Dict[int, Progress]) -> Tuple[TrackerConfig, Dict[int, Progress]]:
        for i in cfg.voters() | cfg.learners | cfg.learners_next:
            if i not in prs:
                raise ConfChangeError(f"no progress for {i}")
        for i in cfg.learners_next:
            if i not in cfg.outgoing:
                raise ConfChangeError(f"{i} is in learners_next but not outgoing")
            if prs[i].is_learner:
                raise ConfChangeError(f"{i} is in learners_next but is already a learner")
        for i in cfg.learners:
            if i in cfg.incoming or i in cfg.outgoing:
                raise ConfChangeError(f"{i} is both a learner and a voter")
            if not prs[i].is_learner:
                raise ConfChangeError(f"{i} is a learner but its progress says voter")
        if not cfg.joint():
            if cfg.learners_next:
                raise ConfChangeError("learners_next must be empty when not joint")
            if cfg.auto_leave:
                raise ConfChangeError("auto_leave must be false when not joint")
        return cfg, prs


def restore(cs: ConfState, tracker: ProgressTracker, last_index: int) -> Tuple[TrackerConfig, Dict[int, Progress]]:
    """Build (TrackerConfig, progress map) for the configuration ``cs`` (from a snapshot
    or from storage at start-up).  Progresses start at ``next = last_index + 1``."""
    cfg = TrackerConfig()
    cfg.incoming = set(cs.voters)
    cfg.outgoing = set(cs.voters_outgoing)
    cfg.learners = set(cs.learners)
    cfg.learners_next = set(cs.learners_next)
    cfg.auto_leave = cs.auto_leave and bool(cs.voters_outgoing)
    prs: Dict[int, Progress] = {}
    for i in cfg.voters() | cfg.learners | cfg.learners_next:
        prs[i] = Progress(0, last_index + 1, tracker.new_inflights(), i in cfg.learners, True)
    if cfg.voters() or cfg.learners:
        return Changer(tracker, last_index)._check(cfg, prs)
    return cfg, prs
