"""Exceptions and warnings of rsm_shm, and the one place C status codes become them.

Every C entry point returns a status code (``RSM_*`` in ``csrc/rsm_common.h``).  A
caller handles the codes that are results for it (``RSM_OK``, a ``RSM_TIMEOUT`` that
means "return False", ``RSM_SLICE``) and passes every other one to :func:`raise_for`,
which alone decides the exception and its message.  The C fast paths (``csrc/fast_*.c``)
call it too.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, NoReturn

__all__ = [
    "RsmError",
    "SegmentError",
    "ShutDown",
    "OwnerDiedWarning",
    "DisabledError",
    "BrokenBarrierError",
    "raise_for",
]

BrokenBarrierError = threading.BrokenBarrierError


class RsmError(Exception):
    """Base class of rsm_shm's own errors."""


class SegmentError(RsmError, ValueError):
    """A segment that exists but cannot be used: not ours, another kind or layout version,
    a corrupt or truncated header, or one whose creator died before finishing it."""


# queue.ShutDown exists from Python 3.13 on; subclass it there so that code written for
# queue.Queue.shutdown() catches ours too.
_QUEUE_SHUTDOWN: tuple[type[Exception], ...] = (queue.ShutDown,) if hasattr(queue, "ShutDown") else ()


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


_late: Any = None  # (lib, Kind) once imported; see _late_imports()


def _late_imports() -> Any:
    """The C layer's constants and the segment kinds, imported on first use only: the
    segment module imports this one, and ``import rsm_shm.raft`` must not load the C layer.
    Cached, because a polling consumer meets queue.Empty here on every miss."""
    global _late
    if _late is None:
        from ._native import lib
        from .segment import Kind

        _late = (lib, Kind)
    return _late


def _label(obj: Any) -> str:
    """``Lock 'jobs'``: how messages name the object."""
    Kind = _late_imports()[1]
    kind = getattr(obj, "_kind", None)
    cls = "Queue" if kind == Kind.QUEUE else type(obj).__name__  # a Queue's ring is its Queue
    return f"{cls} {getattr(obj, 'name', '?')!r}"


def raise_for(code: int, obj: Any, op: str = "", detail: str = "") -> NoReturn:
    """Raise the exception that status ``code`` of a C call on ``obj`` means.

    ``op`` names the call where a code means different things for different calls of one
    kind (a ring's ``"put"`` or ``"get"``; ``"release_read"``...); ``detail`` is appended
    to the message.  Codes with no meaning for the call (a corrupt segment, a bug) raise
    RuntimeError naming the object and the code.
    """
    lib, Kind = _late_imports()
    if (code == lib.RSM_TIMEOUT or code == lib.RSM_WOULDBLOCK) and (op == "get" or op == "put"):
        # The common case first, with nothing to format: a ring's non-blocking miss.
        if op == "get":
            raise queue.Empty(detail) if detail else queue.Empty()
        raise queue.Full(detail) if detail else queue.Full()
    kind = getattr(obj, "_kind", None)
    ring = kind in (Kind.RING, Kind.QUEUE)
    what = _label(obj)
    tail = f" ({detail})" if detail else ""
    exc: BaseException
    if code == lib.RSM_CLOSED:
        if ring:  # the C ring calls its end of stream "closed": it is our shutdown()
            exc = ShutDown(f"{what} is shut down{' and drained' if op == 'get' else ''}{tail}")
        else:  # the C fast paths of an unmapped handle
            exc = ValueError(f"{what} is closed{tail}")
    elif code == lib.RSM_TIMEOUT or code == lib.RSM_WOULDBLOCK:
        exc = TimeoutError(f"{what}: {op or 'the call'} timed out{tail}")
    elif code == lib.RSM_NOT_OWNER:
        # A lock's plain release keeps threading's own wording ("release unlocked lock").
        own = None if op else getattr(obj, "_not_owner_message", None)
        exc = RuntimeError(own or f"{what}: {op or 'release'}() by a thread that does not hold it{tail}")
    elif code == lib.RSM_OVERFLOW:
        if kind in (Kind.SEMAPHORE, Kind.BOUNDED_SEMAPHORE):
            exc = ValueError("Semaphore released too many times")  # threading's wording
        elif kind == Kind.RLOCK:
            exc = OverflowError(f"{what}: recursion too deep{tail}")
        else:
            exc = OverflowError(f"{what}: a counter would exceed its bound{tail}")
    elif code == lib.RSM_DISABLED:
        exc = DisabledError(f"{what} is disabled{tail}")
    elif code == lib.RSM_BROKEN:
        exc = BrokenBarrierError()
    elif code == lib.RSM_NO_SLOT:
        exc = RuntimeError(f"too many threads waiting on {what}; create it with a larger max_waiters")
    elif code == lib.RSM_CORRUPT:
        exc = SegmentError(f"{what} is corrupt: its shared state is not one a correct writer leaves{tail}")
    elif code == lib.RSM_INVAL:
        if ring:
            exc = ValueError(f"message too large for {what}, or the ring is corrupt{tail}")
        elif kind == Kind.ONCE:
            exc = RuntimeError(f"{what}: called again from inside its own callable")
        else:
            exc = ValueError(f"{what}: invalid argument or corrupt shared state{tail}")
    else:
        exc = RuntimeError(f"{what}: internal error {code} (corrupt shared state?){tail}")
    raise exc
