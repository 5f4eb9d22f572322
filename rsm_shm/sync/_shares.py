"""Per-process shares (csrc/share.h): finding the slots of dead processes.

Mechanism in C, policy here: C keeps a count per process in a slot (pid << 32 | count,
plus the pid's start time) and frees a slot in one CAS; this module decides which
processes are dead.  Used by RWLock (read locks); robust semaphores have holder cells of
their own (csrc/sem.h, rsm_shm/sync/semaphore.py).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .. import _proc

__all__ = ["reclaim_dead", "holders"]

#: The count field of a slot whose claim is in progress (csrc/share.h RSM_SHARE_CLAIMING).
_CLAIMING = 0xFFFFFFFF


def reclaim_dead(slots: Any, nslots: int, reclaim: Callable[[int, int], int]) -> int:
    """Call ``reclaim(i, word)`` for every slot whose process is dead; returns the sum of
    what it returned (the units reclaimed)."""
    me = os.getpid()
    total = 0
    for i in range(nslots):
        word = slots[i].word
        if word == 0:
            continue
        pid, count = word >> 32, word & 0xFFFFFFFF
        if pid == me:
            continue
        # A slot with units is judged by pid *and* start time (a reused pid is not its
        # process); an idle slot holds nothing, and one still being claimed may not have
        # its start time yet: those are judged by the pid alone.
        holds = count not in (0, _CLAIMING)
        if not _proc.task_alive(pid, slots[i].start if holds else 0):
            total += reclaim(i, word)
    return total


def holders(slots: Any, nslots: int) -> tuple[tuple[int, int], ...]:
    """(pid, count) of every slot with units (a process may appear more than once)."""
    words = [slots[i].word for i in range(nslots)]
    return tuple((w >> 32, w & 0xFFFFFFFF) for w in words if (w & 0xFFFFFFFF) not in (0, _CLAIMING))
