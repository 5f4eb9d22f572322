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

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(
        ["BrokenBarrierError", "DisabledError", "OwnerDiedWarning", "RsmError", "SegmentError", "ShutDown"], "._errors"
    ),
    **dict.fromkeys(
        [
            "AutoResetEvent",
            "Barrier",
            "BoundedSemaphore",
            "Condition",
            "Countdown",
            "Event",
            "Gate",
            "Lock",
            "Once",
            "OwnerDied",
            "Policy",
            "RLock",
            "RWLock",
            "Semaphore",
        ],
        ".sync",
    ),
    **dict.fromkeys(["Queue", "Ring"], ".ring"),  # issue 4: shared-memory rings
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # static view for type checkers and IDEs ("X as X": re-exported)
    from ._errors import BrokenBarrierError as BrokenBarrierError
    from ._errors import DisabledError as DisabledError
    from ._errors import OwnerDiedWarning as OwnerDiedWarning
    from ._errors import RsmError as RsmError
    from ._errors import SegmentError as SegmentError
    from ._errors import ShutDown as ShutDown
    from .ring import Queue as Queue
    from .ring import Ring as Ring
    from .sync import AutoResetEvent as AutoResetEvent
    from .sync import Barrier as Barrier
    from .sync import BoundedSemaphore as BoundedSemaphore
    from .sync import Condition as Condition
    from .sync import Countdown as Countdown
    from .sync import Event as Event
    from .sync import Gate as Gate
    from .sync import Lock as Lock
    from .sync import Once as Once
    from .sync import OwnerDied as OwnerDied
    from .sync import Policy as Policy
    from .sync import RLock as RLock
    from .sync import RWLock as RWLock
    from .sync import Semaphore as Semaphore
