"""Exceptions and warnings of rsm_shm, and the one place C status codes become them."""
from __future__ import annotations

import threading

__all__ = [
    "RsmError",
    "SegmentError",
    "OwnerDiedWarning",
    "DisabledError",
    "BrokenBarrierError",
]

BrokenBarrierError = threading.BrokenBarrierError


class RsmError(Exception):
    """Base class of rsm_shm's own errors."""


class SegmentError(RsmError, ValueError):
    """A segment that exists but cannot be used: not ours, another kind or layout version,
    a corrupt or truncated header, or one whose creator died before finishing it."""


class DisabledError(RsmError, RuntimeError):
    """The semaphore was disabled (``disable()``): waiters are woken and later waits fail."""


class OwnerDiedWarning(RuntimeWarning):
    """The caller acquired a lock (or took over a Once) whose previous owner died holding it.

    The protected state may be inconsistent.  The warning names the dead process; the
    holder can also read ``recovered`` on the object.  If the warning is turned into an
    exception (``-W error``), the lock is released again *with* its owner-died mark kept,
    so the next holder is told instead: a recovery is never silent.
    """
