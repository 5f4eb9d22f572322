"""Synchronization primitives in shared memory (one module per primitive family).

The algorithms live in csrc/ (one C file per family); these modules hold the policy:
argument rules, timeouts, owner-death detection, and how failures are reported.
"""

from ._base import Policy
from .barrier import Barrier
from .condition import Condition
from .event import Countdown, Event, Gate
from .lock import Lock, LockStatistics, OwnerDied, RLock
from .once import Once
from .rwlock import RWLock
from .semaphore import AutoResetEvent, BoundedSemaphore, Semaphore

__all__ = [
    "AutoResetEvent",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Countdown",
    "Event",
    "Gate",
    "Lock",
    "LockStatistics",
    "Once",
    "OwnerDied",
    "Policy",
    "RLock",
    "RWLock",
    "Semaphore",
]
