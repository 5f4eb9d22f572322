"""Quorum arithmetic for majority and joint configurations (etcd's ``quorum`` package).

A majority configuration is a set of voter ids; a joint configuration is a pair
(incoming, outgoing) of majority configurations, and a decision needs a majority in
*both* (thesis §4.3: "agreement requires separate majorities from both the old and new
configurations").  An empty outgoing half is ignored.
"""

from __future__ import annotations

import enum
from typing import AbstractSet, Callable, Mapping, Optional

__all__ = ["VoteResult", "INFINITE_INDEX", "majority_committed", "majority_vote", "joint_committed", "joint_vote"]

# The committed index of an empty majority config is "infinite" so that it does not
# constrain the other half of a joint config (etcd returns math.MaxUint64).
INFINITE_INDEX = (1 << 64) - 1


class VoteResult(enum.IntEnum):
    PENDING = 1
    LOST = 2
    WON = 3


def majority_committed(voters: AbstractSet[int], acked: Callable[[int], Optional[int]]) -> int:
    """The largest index acknowledged by a majority of ``voters``.

    ``acked(id)`` returns the index voter ``id`` has acknowledged (None = nothing).
    Sorting the acked indexes ascending, the element at ``n - (n//2 + 1)`` is matched by
    ``n//2 + 1`` voters (itself and every larger one)."""
    n = len(voters)
    if n == 0:
        return INFINITE_INDEX
    srt = sorted((acked(v) or 0) for v in voters)
    return srt[n - (n // 2 + 1)]


def majority_vote(voters: AbstractSet[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON when a majority granted, LOST when a majority can no longer grant."""
    if not voters:
        return VoteResult.WON  # by convention, an empty config wins every vote
    granted = rejected = 0
    for v in voters:
        r = votes.get(v)
        if r is None:
            continue
        if r:
            granted += 1
        else:
            rejected += 1
    q = len(voters) // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_committed(
    incoming: AbstractSet[int], outgoing: AbstractSet[int], acked: Callable[[int], Optional[int]]
) -> int:
    """Committed index of a joint config: the minimum over both halves."""
    a = majority_committed(incoming, acked)
    b = majority_committed(outgoing, acked)
    return a if a < b else b


def joint_vote(incoming: AbstractSet[int], outgoing: AbstractSet[int], votes: Mapping[int, bool]) -> VoteResult:
    """A joint vote is won when both halves win, lost when either loses."""
    r1 = majority_vote(incoming, votes)
    r2 = majority_vote(outgoing, votes)
    if r1 == r2:
        return r1
    if VoteResult.LOST in (r1, r2):
        return VoteResult.LOST
    return VoteResult.PENDING
