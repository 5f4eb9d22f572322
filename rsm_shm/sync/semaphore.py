"""Semaphore, BoundedSemaphore and AutoResetEvent (the algorithm: csrc/sem.c)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .._fast import FastSem
from .._native import ffi, lib
from ..segment import Kind, SegmentError, SegmentHeader
from . import _base
from ._base import Policy, SharedObject

__all__ = ["Semaphore", "BoundedSemaphore", "AutoResetEvent", "SemaphoreStatistics"]


@dataclass(frozen=True)
class SemaphoreStatistics:
    value: int
    max_value: Optional[int]
    waiters: int
    disabled: bool
    policy: str

    def __str__(self) -> str:
        s = f"value={self.value}"
        if self.max_value is not None:
            s += f"/{self.max_value}"
        if self.waiters:
            s += f", {self.waiters} waiting"
        if self.disabled:
            s += ", disabled"
        return s


def _body_size(header: SegmentHeader) -> int:
    return lib.rsm_sem_size(_base.check_nslots(header))


class _SemaphoreBase(FastSem, SharedObject):
    _ptr: Any  # cffi pointer to the C struct in the segment

    def _open_sem(self, name, create, mode, value, max_value, flags, policy, max_waiters) -> None:
        if not isinstance(value, int) or value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        if value > lib.RSM_SEM_VALUE_MAX:
            raise ValueError(f"semaphore initial value must be <= {lib.RSM_SEM_VALUE_MAX}")
        policy = Policy(policy)
        nslots = _base.validate_max_waiters(max_waiters)

        def init(seg):
            lib.rsm_sem_init(seg.body("rsm_sem *"), value, max_value, policy.code, flags, nslots)

        def check(header: SegmentHeader) -> None:
            Policy.from_code(header.params[1])

        self._open_segment(name, create, mode, lib.rsm_sem_size(nslots), (nslots, policy.code, value, max_value),
                           init, _body_size, check=check)
        self._ptr = self._seg.body("rsm_sem *")
        self._check_queues(ffi.addressof(self._ptr, "wq"))
        self._bind(int(ffi.cast("uintptr_t", self._ptr)), self._seg)
        if self._ptr.max > lib.RSM_SEM_VALUE_MAX:
            raise SegmentError(f"segment {self.name!r} has a corrupt semaphore bound")

    # acquire(blocking=True, timeout=None) -> bool, release(n=1), __enter__ and __exit__
    # come from FastSem (csrc/fastpath.c): the attempt with the GIL held, then the slice
    # loop in C.  Semantics, as threading.Semaphore: acquire decrements the value, waiting
    # while it is zero; True once decremented, False on timeout (or at once when not
    # blocking); ValueError for a timeout with blocking=False.  release(n) adds n and wakes
    # up to n waiters; ValueError if n < 1.  DisabledError once disable() was called;
    # BoundedSemaphore.release beyond the initial value raises ValueError.
    acquire = FastSem.acquire
    release = FastSem.release

    def close(self) -> None:
        self._bind(0, None)  # the C entry points must never touch an unmapped struct
        super().close()

    def disable(self) -> None:
        """Disable for good: every waiter wakes with DisabledError, later acquires and
        releases fail fast.  Use it to shut a pool down without leaving anyone blocked."""
        self._check_open()
        lib.rsm_sem_disable(self._ptr)

    @property
    def disabled(self) -> bool:
        self._check_open()
        return bool(self._ptr.count & lib.RSM_SEM_DISABLED)

    @property
    def value(self) -> int:
        """The current value (a snapshot)."""
        self._check_open()
        return lib.rsm_sem_value(self._ptr)

    @property
    def pending(self) -> int:
        """How many threads are waiting right now."""
        self._check_open()
        return self._ptr.wq.nwaiters + self._ptr.wq.noverflow

    def statistics(self) -> SemaphoreStatistics:
        self._check_open()
        p = self._ptr
        return SemaphoreStatistics(
            value=p.count & lib.RSM_SEM_VALUE_MAX, max_value=p.max or None,
            waiters=p.wq.nwaiters + p.wq.noverflow, disabled=bool(p.count & lib.RSM_SEM_DISABLED),
            policy=Policy.from_code(p.policy).value,
        )


class Semaphore(_SemaphoreBase):
    """A counting semaphore shared between threads and processes, like ``threading.Semaphore``.

    ``Semaphore(name=None, *, value=1, create=None, mode=0o600, policy="barging", max_waiters=64)``.
    ``value`` only applies when this call creates the semaphore.  Wake-up order follows
    ``policy`` (see :class:`Policy`); with FIFO a released permit is handed to the oldest
    waiter.  Permits are not owned, so a process killed while holding one does not give it
    back (use a Lock where that matters).
    """

    _kind = Kind.SEMAPHORE

    def __init__(self, name: Optional[str] = None, *, value: int = 1, create: Optional[bool] = None,
                 mode: int = 0o600, policy: str = Policy.BARGING,
                 max_waiters: int = _base.DEFAULT_MAX_WAITERS) -> None:
        self._open_sem(name, create, mode, value, 0, 0, policy, max_waiters)


class BoundedSemaphore(_SemaphoreBase):
    """A semaphore whose value may not exceed its initial value: ``release()`` beyond it
    raises ValueError, as ``threading.BoundedSemaphore``."""

    _kind = Kind.BOUNDED_SEMAPHORE

    def __init__(self, name: Optional[str] = None, *, value: int = 1, create: Optional[bool] = None,
                 mode: int = 0o600, policy: str = Policy.BARGING,
                 max_waiters: int = _base.DEFAULT_MAX_WAITERS) -> None:
        self._open_sem(name, create, mode, value, value, 0, policy, max_waiters)


class AutoResetEvent(_SemaphoreBase):
    """The seed's Event: ``set()`` lets exactly one ``wait()`` through, then resets itself.

    A semaphore capped at 1: setting an already set event does nothing; ``wait(timeout)``
    consumes the signal and returns True, or returns False on timeout.
    """

    _kind = Kind.AUTO_RESET_EVENT

    def __init__(self, name: Optional[str] = None, *, create: Optional[bool] = None, mode: int = 0o600,
                 policy: str = Policy.FIFO, max_waiters: int = _base.DEFAULT_MAX_WAITERS) -> None:
        self._open_sem(name, create, mode, 0, 1, lib.RSM_SEM_SATURATE, policy, max_waiters)

    #: set(): signal: wake one waiter (or let the next wait() through at once).
    set = FastSem.release
    #: wait(timeout=None) -> bool: wait for a signal and consume it; False on timeout.
    wait = FastSem._wait

    def is_set(self) -> bool:
        return self.value > 0

    def clear(self) -> None:
        self.acquire(False)
