"""The inbox: a :class:`rsm_shm.ring.Ring` per incarnation, named ``<name>.inbox.<generation>``.

Everything the automaton package knows about rings is in this module, so a change in the
ring's API touches one place.  A supervisor restart starts a new generation with a fresh
ring (the old one is shut down when its incarnation dies), so posters can tell an inbox that
was shut down by a drain or a death from the inbox of the restarted automaton.
"""

from __future__ import annotations

import glob
import os
from typing import Optional

from ..ring import Ring, ShutDown  # ShutDown on a put, and on a get once drained
from ..segment import PREFIX, SHM_DIR

__all__ = ["inbox_name", "open_inbox", "remove_inboxes", "unlink_generation", "release", "ShutDown"]


def inbox_name(name: str, generation: int) -> str:
    return f"{name}.inbox.{generation}"


def open_inbox(name: str, generation: int, capacity: int, *, create: Optional[bool]) -> Ring:
    """Open (create=False), create (True) or open-or-create (None) one generation's ring."""
    # One consumer (the host thread), any number of producers: the ring's lock-free
    # consumer path.  Each generation is a new ring, so a restarted host never competes
    # with the role of the one before it.
    return Ring(inbox_name(name, generation), capacity=capacity, consumers=1, create=create)


def remove_inboxes(name: str) -> int:
    """Unlink every generation's ring of automaton ``name``; returns how many went."""
    n = 0
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(PREFIX + inbox_name(name, 0))[:-1] + "*")):
        suffix = path.rsplit(".", 1)[-1]
        if not suffix.isdigit():
            continue
        try:
            os.unlink(path)
            n += 1
        except FileNotFoundError:
            pass
    return n


def unlink_generation(name: str, generation: int) -> None:
    """Unlink one generation's ring (idempotent)."""
    try:
        os.unlink(os.path.join(SHM_DIR, PREFIX + inbox_name(name, generation)))
    except FileNotFoundError:
        pass


def release(ring: Ring) -> None:
    """Unmap a ring handle in this process without shutting the ring down for its other users."""
    ring.close()
