"""Errors raised to the application by the Raft core."""

from __future__ import annotations

__all__ = ["NotLeaderError", "ProposalDroppedError"]


class NotLeaderError(Exception):
    """This node is not the leader.  ``leader_hint`` is the leader it knows of (0 =
    unknown); the client may retry there."""

    def __init__(self, leader_hint: int = 0, message: str = "") -> None:
        self.leader_hint = leader_hint
        super().__init__(message or f"not the leader (leader hint: {leader_hint or 'unknown'})")


class ProposalDroppedError(Exception):
    """The leader refused the proposal (or read): a leadership transfer is in progress,
    the uncommitted-size limit is reached, a conf change is already pending, the leader
    was removed, or no leader is known to forward a read to.  Nothing was appended;
    the caller may retry later."""
