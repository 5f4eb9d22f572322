"""rsm_shm: building systems out of cooperating processes on one machine.

Synchronization primitives that live in shared memory (``Lock``, ``RLock``, ``RWLock``,
``Semaphore``, ``BoundedSemaphore``, ``Event``, ``AutoResetEvent``, ``Condition``,
``Barrier``, ``Gate``, ``Once``, ``Countdown``) with ``threading``'s semantics, usable
between threads and between unrelated processes; shared-memory rings; automata; and a
Raft implementation (``rsm_shm.raft``).  Every object is named: pass the name (or the
object itself — it pickles as its name) to another process to attach to it.
"""
from ._errors import BrokenBarrierError, DisabledError, OwnerDiedWarning, RsmError, SegmentError
from .sync import (
    AutoResetEvent,
    Barrier,
    BoundedSemaphore,
    Condition,
    Countdown,
    Event,
    Gate,
    Lock,
    Once,
    OwnerDied,
    Policy,
    RLock,
    RWLock,
    Semaphore,
)
from .ring import Queue, Ring  # noqa: E402  (issue 4: shared-memory rings)

__version__ = "0.1.0"

__all__ = [
    "AutoResetEvent", "Barrier", "BoundedSemaphore", "BrokenBarrierError", "Condition", "Countdown",
    "DisabledError", "Event", "Gate", "Lock", "Once", "OwnerDied", "OwnerDiedWarning", "Policy", "RLock",
    "RWLock", "RsmError", "SegmentError", "Semaphore",
]
__all__ += ["Queue", "Ring"]
