"""Helpers for the ``describe()`` method of every kind: JSON-ready snapshots of shared state.

``describe()`` on a handle returns what ``rsm-shm inspect`` shows for its segment: the
kind's ``statistics()`` as plain data plus the occupied slots of its wait queues.  A new
segment kind plugs into the command line by giving its class a ``describe()`` (and
naming the class in :data:`rsm_shm.segment.KIND_CLASSES`); see ``rsm_shm.inspect``.

Everything read here is shared memory that other processes change while we read, and
that a crashed or hostile process may have corrupted: a snapshot may be inconsistent
between fields, and every walk is bounded by the sizes the validated header gives.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from . import _proc
from ._native import lib

__all__ = ["plain", "plain_record", "waitq_record"]

_SLOT_PHASES = {
    lib.RSM_SLOT_FREE: "free",
    lib.RSM_SLOT_CLAIMED: "claimed",
    lib.RSM_SLOT_WAITING: "waiting",
    lib.RSM_SLOT_SLEEPING: "sleeping",
    lib.RSM_SLOT_WOKEN: "woken",
    lib.RSM_SLOT_HANDING: "handing",
}
# The slot state word (csrc/waitq.h): phase in bits 0-3, waiter kind in 4-7, token in 8-15.
_SLOT_PHASE_MASK = 0xF
_SLOT_KIND_SHIFT, _SLOT_KIND_MASK = 4, 0xF
_SLOT_TOKEN_SHIFT, _SLOT_TOKEN_MASK = 8, 0xFF


def plain(value: Any) -> Any:
    """A statistics record (frozen dataclass, possibly nested) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, enum.IntEnum):
        return value.name.lower()  # modes and kinds read better by name than by number
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def plain_record(record: object) -> dict[str, Any]:
    """A statistics record (a dataclass instance) as a JSON object: :func:`plain` for a
    caller that needs the dict."""
    d = plain(record)
    if not isinstance(d, dict):
        raise TypeError(f"plain_record() takes a dataclass instance, not {type(record).__name__}")
    return d


def waitq_record(q: Any, nslots_bound: int) -> dict[str, Any]:
    """A wait queue (an ``rsm_waitq *``, csrc/waitq.h): its counters and the occupied slots
    in ticket order.

    ``nslots_bound`` is the slot count the header validated against the body size; the
    queue's own ``nslots`` field is shared memory written by someone else and is only
    trusted up to that bound.
    """
    n = min(int(q.nslots), int(nslots_bound), lib.RSM_WQ_MAX_SLOTS)
    slots: list[dict[str, Any]] = []
    for i in range(max(n, 0)):
        s = q.slots[i]
        state = int(s.state)
        phase = state & _SLOT_PHASE_MASK
        if phase == lib.RSM_SLOT_FREE:
            continue
        pid = int(s.pid)
        slots.append(
            {
                "slot": i,
                "phase": _SLOT_PHASES.get(phase, f"unknown({phase})"),
                "kind": (state >> _SLOT_KIND_SHIFT) & _SLOT_KIND_MASK,
                "token": (state >> _SLOT_TOKEN_SHIFT) & _SLOT_TOKEN_MASK,
                "pid": pid,
                "tid": int(s.tid),
                "ticket": int(s.ticket),
                "alive": _proc.process_alive(pid) if pid > 0 else False,
            }
        )
    slots.sort(key=lambda d: d["ticket"])
    return {"nslots": n, "nwaiters": int(q.nwaiters), "noverflow": int(q.noverflow), "slots": slots}
