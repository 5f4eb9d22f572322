"""The inbox: a :class:`rsm_shm.ring.Ring` per incarnation, named ``<name>.inbox.<generation>``.

Everything the automaton package knows about rings is in this module, so a change in the
ring's API touches one place.  A supervisor restart starts a new generation with a fresh
ring (the old one is closed when its incarnation dies), so posters can tell an inbox that
was closed by a drain or a death from the inbox of the restarted automaton.
"""
from __future__ import annotations

import glob
import os
from typing import Optional

from ..segment import PREFIX, SHM_DIR

__all__ = ["inbox_name", "open_inbox", "remove_inboxes", "unlink_generation", "release", "ring_closed_errors"]


def _ring_module():
    from .. import ring  # imported late: the ring layer is optional until first use

    return ring


def inbox_name(name: str, generation: int) -> str:
    return f"{name}.inbox.{generation}"


def open_inbox(name: str, generation: int, capacity: int, *, create: Optional[bool]):
    """Open (create=False), create (True) or open-or-create (None) one generation's ring."""
    ring = _ring_module()
    # One consumer (the host thread), any number of producers: the ring's lock-free
    # consumer path.  Each generation is a new ring, so a restarted host never competes
    # with the role of the one before it.
    return ring.Ring(inbox_name(name, generation), capacity=capacity, consumers=1, create=create)


def ring_closed_errors() -> tuple:
    """The exceptions a Ring raises for 'closed' (put) and 'closed and empty' (get)."""
    return (_ring_module().Closed,)  # EndOfStream (get on a closed, drained ring) is a Closed


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


def release(ring) -> None:
    """Unmap a ring handle in this process without closing the ring for its other users."""
    ring.detach()
