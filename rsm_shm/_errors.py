"""Exceptions and warnings of rsm_shm, and the one place C status codes become them."""
from __future__ import annotations

import queue
import threading

__all__ = [
    "RsmError",
    "SegmentError",
    "ShutDown",
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


# queue.ShutDown exists from Python 3.13 on; subclass it there so that code written for
# queue.Queue.shutdown() catches ours too.
_QUEUE_SHUTDOWN: tuple = (queue.ShutDown,) if hasattr(queue, "ShutDown") else ()


class ShutDown(RsmError, *_QUEUE_SHUTDOWN):  # type: ignore[misc]
    """The ring or queue was shut down (``shutdown()``, in any process).

    As with ``queue.Queue.shutdown()`` (Python 3.13): ``put`` raises it at once,
    ``get`` raises it once every message put before the shutdown has been taken.  A
    subclass of ``queue.ShutDown`` where that exists (3.13+).
    """


class DisabledError(RsmError, RuntimeError):
    """The semaphore was disabled (``disable()``): waiters are woken and later waits fail."""


class OwnerDiedWarning(RuntimeWarning):
    """The caller acquired a lock (or took over a Once) whose previous owner died holding it.

    The protected state may be inconsistent.  The warning names the dead process; the
    holder can also read ``recovered`` on the object.  If the warning is turned into an
    exception (``-W error``), the lock is released again *with* its owner-died mark kept,
    so the next holder is told instead: a recovery is never silent.
    """
