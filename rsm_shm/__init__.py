"""rsm_shm: building systems out of cooperating processes on one machine.

Synchronization primitives that live in shared memory (``Lock``, ``RLock``, ``RWLock``,
``Semaphore``, ``BoundedSemaphore``, ``Event``, ``AutoResetEvent``, ``Condition``,
``Barrier``, ``Gate``, ``Once``, ``Countdown``) with ``threading``'s semantics, usable
between threads and between unrelated processes; shared-memory rings (``Ring``,
``Queue``); automata (``rsm_shm.fsm``); and a Raft implementation (``rsm_shm.raft``).
Every object is named: pass the name (or the object itself — it pickles as its name) to
another process to attach to it.

The names below are imported on first use (PEP 562), so ``import rsm_shm.raft`` — a pure
protocol core — neither needs nor loads the native layer.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(
        ["BrokenBarrierError", "DisabledError", "OwnerDiedWarning", "RsmError", "SegmentError", "ShutDown"],
        "._errors"),
    **dict.fromkeys(
        ["AutoResetEvent", "Barrier", "BoundedSemaphore", "Condition", "Countdown", "Event", "Gate", "Lock",
         "Once", "OwnerDied", "Policy", "RLock", "RWLock", "Semaphore"], ".sync"),
    **dict.fromkeys(["Queue", "Ring"], ".ring"),  # issue 4: shared-memory rings
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rsm_shm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static view for type checkers and IDEs
    from ._errors import BrokenBarrierError, DisabledError, OwnerDiedWarning, RsmError, SegmentError, ShutDown
    from .ring import Queue, Ring
    from .sync import (AutoResetEvent, Barrier, BoundedSemaphore, Condition, Countdown, Event, Gate, Lock, Once,
                       OwnerDied, Policy, RLock, RWLock, Semaphore)
