"""Condition: threading.Condition across processes, with exact notify(n) and FIFO wake-up.

Each waiter holds its own slot in the condition's wait queue (csrc/waitq.c), enqueued
while it still holds the lock; ``notify(n)`` wakes exactly the n oldest waiters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union

from .._describe import plain_record, waitq_record
from .._errors import raise_for
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentError, SegmentHeader
from . import _base
from ._base import SharedObject, pinned
from .lock import Lock, LockStatistics, RLock

__all__ = ["Condition", "ConditionStatistics"]

T = TypeVar("T")
_EMBEDDED, _EXTERNAL_LOCK, _EXTERNAL_RLOCK = 0, 1, 2


def _align64(n: int) -> int:
    return (n + 63) & ~63


def wait_on(
    q: Any,
    lock: Union[Lock, RLock],
    deadline: int,
    owner_check: Callable[[], bool],
    seg: Segment,
    closed_ok: bool = False,
) -> bool:
    """The Condition.wait protocol over any rsm_waitq and rsm_shm lock (Barrier uses it too).

    ``deadline`` comes from ``_base.deadline``; the caller holds a pin on ``seg``.  The
    waiter enqueues while it still holds the lock (notify() cannot miss it), releases the
    lock, waits in the common slice loop, and re-acquires the lock on every way out.
    ``closed_ok``: an internal wait (Barrier) that keeps waiting after a close()."""
    if not owner_check():
        raise RuntimeError("cannot wait on un-acquired lock")
    if deadline == _base.DEADLINE_TOO_LARGE:
        raise _base.too_large()  # a condition wait always waits (threading raises too)
    w = _base.new_waiter()
    lib.rsm_wq_enqueue(q, w, 0)  # before releasing the lock: notify() cannot miss us
    if w.slot == lib.RSM_WAITER_OVERFLOW:
        lib.rsm_wq_cancel(q, w)
        raise RuntimeError("too many threads waiting on this condition; create it with a larger max_waiters")
    saved = lock._release_save()

    def abandon(w: Any) -> None:
        if lib.rsm_wq_cancel(q, w) == 1:
            lib.rsm_wq_notify(q, 1, lib.RSM_WAKE_FIFO, lib.RSM_KIND_ANY)  # pass the notification on

    try:
        r = _base.run_blocking(
            lambda w, d: lib.rsm_wq_wait(q, w, d), abandon, deadline, queue=q, seg=seg, waiter=w, closed_ok=closed_ok
        )
        if r == lib.RSM_OK:
            return True
        if r == lib.RSM_TIMEOUT:
            return bool(lib.rsm_wq_cancel(q, w) == 1)
        raise_for(r, lock)  # no other status is possible: a corrupt segment
    finally:
        lock._acquire_restore(saved)


class Condition(SharedObject):
    """A condition variable shared between threads and processes, like ``threading.Condition``.

    ``Condition(name=None, lock=None, *, create=None, mode=0o600, max_waiters=64)``.
    With ``lock=None`` the condition carries its own RLock inside its segment; otherwise
    pass an :class:`rsm_shm.Lock` or :class:`rsm_shm.RLock` (its name is recorded, so
    ``Condition(name)`` in another process finds it).

    ``wait(timeout=None) -> bool`` (False on timeout), ``wait_for(predicate, timeout)``,
    ``notify(n=1)`` and ``notify_all()`` have threading's semantics, including
    RuntimeError when called without holding the lock.  ``notify(n)`` wakes exactly the
    n longest-waiting threads (FIFO).  At most ``max_waiters`` threads may wait at once.
    """

    _kind = Kind.CONDITION

    def __init__(
        self,
        name: Optional[str] = None,
        lock: Union[Lock, RLock, None] = None,
        *,
        create: Optional[bool] = None,
        mode: int = 0o600,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        self._owns_lock = False
        if lock is not None and not isinstance(lock, (Lock, RLock)):
            raise TypeError(f"lock must be an rsm_shm Lock or RLock, not {type(lock).__name__}")
        nslots = _base.validate_max_waiters(max_waiters)
        lock_off = _align64(lib.rsm_wq_size(nslots))
        if lock is None:
            how, ref, body = _EMBEDDED, "", lock_off + lib.rsm_lock_size(nslots)
        else:
            how = _EXTERNAL_RLOCK if isinstance(lock, RLock) else _EXTERNAL_LOCK
            ref, body = lock.name, lock_off

        def init(seg: Segment) -> None:
            lib.rsm_wq_init(seg.body("rsm_waitq *"), nslots)
            if how == _EMBEDDED:
                lib.rsm_lock_init(seg.body("rsm_lock *", lock_off), lib.RSM_LOCK_BARGING, nslots)

        def body_size_of(h: SegmentHeader) -> int:
            n = _base.check_nslots(h)
            off = _align64(lib.rsm_wq_size(n))
            return off + (lib.rsm_lock_size(n) if h.params[1] == _EMBEDDED else 0)

        hdr = self._open_segment(name, create, mode, body, (nslots, how), init, body_size_of, ref_name=ref)
        self._q = self._seg.body("rsm_waitq *")
        self._check_queues(self._q)
        how = hdr.params[1]
        self._lock: Union[Lock, RLock]
        if how == _EMBEDDED:
            if lock is not None:
                self.close()
                raise ValueError(f"Condition {self.name!r} exists with its own lock; do not pass one")
            self._lock = RLock._embedded(
                self._seg, self._seg.body("rsm_lock *", _align64(lib.rsm_wq_size(hdr.params[0])))
            )
            self._check_queues(ffi.addressof(self._lock._ptr, "wq"))
        elif how in (_EXTERNAL_LOCK, _EXTERNAL_RLOCK):
            if lock is None:
                cls = RLock if how == _EXTERNAL_RLOCK else Lock
                lock = cls(hdr.ref_name, create=False)
                self._owns_lock = True
            elif lock.name != hdr.ref_name:
                self.close()
                raise ValueError(f"Condition {self.name!r} uses lock {hdr.ref_name!r}, not {lock.name!r}")
            self._lock = lock
        else:
            self.close()
            raise SegmentError(f"segment {self.name!r} has a corrupt condition header")
        if how == _EMBEDDED:
            # The embedded lock shares our pins: close() cuts it off too, so these are
            # its C entry points themselves (no Python layer on the hot path).
            self.acquire = self._lock.acquire  # type: ignore[method-assign]
            self.release = self._lock.release  # type: ignore[method-assign]

    @property
    def lock(self) -> Union[Lock, RLock]:
        return self._lock

    # With an external lock these check that *this* handle is open, then delegate.
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self._check_open()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._check_open()
        self._lock.release()

    def __enter__(self) -> bool:
        self._check_open()
        return self._lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        # No check of this handle: leaving a with-block releases the lock it entered with
        # (an external lock's own handle decides; the embedded one is cut off by close()).
        self._lock.release()

    @pinned
    def wait(self, timeout: Optional[float] = None) -> bool:
        """As threading.Condition.wait: release the lock, wait for a notify or the
        timeout (None: forever; <= 0: not at all), re-acquire; False on timeout."""
        return wait_on(self._q, self._lock, _base.deadline(timeout, _base.RULE_WAIT), self._lock._is_owned, self._seg)

    @pinned
    def wait_for(self, predicate: Callable[[], T], timeout: Optional[float] = None) -> T:
        """Wait until ``predicate()`` is true; returns its last value (falsy on timeout)."""
        result = predicate()
        if result:
            return result
        deadline = _base.deadline(timeout, _base.RULE_WAIT)  # one deadline for every wait below
        while not result:
            if deadline == _base.DEADLINE_TRY or (deadline > 0 and time.monotonic_ns() >= deadline):
                break
            wait_on(self._q, self._lock, deadline, self._lock._is_owned, self._seg)
            result = predicate()
        return result

    @pinned
    def notify(self, n: int = 1) -> None:
        """Wake exactly min(n, waiting) of the longest-waiting threads."""
        if not self._lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        if n > 0:
            lib.rsm_wq_notify(self._q, min(n, 0x7FFFFFFF), lib.RSM_WAKE_FIFO, lib.RSM_KIND_ANY)

    def notify_all(self) -> None:
        self.notify(0x7FFFFFFF)

    @property
    @pinned
    def waiters(self) -> int:
        return int(self._q.nwaiters)

    @pinned
    def statistics(self) -> "ConditionStatistics":
        return ConditionStatistics(waiters=self._q.nwaiters, lock=self._lock.statistics())

    @pinned
    def describe(self) -> dict[str, Any]:
        """As :meth:`SharedObject.describe`, with the lock's own snapshot under ``"lock"``
        (``embedded``: it lives in this segment; else ``name`` is its segment)."""
        header = self._seg.header
        self._check_queues(self._q)
        embedded = len(header.params) > 1 and header.params[1] == _EMBEDDED
        detail = plain_record(self.statistics())
        detail["queue"] = waitq_record(self._q, header.params[0])
        detail["lock"] = {
            "embedded": embedded,
            "name": None if embedded else header.ref_name,
            "type": type(self._lock).__name__,
            **self._lock.describe(),
        }
        return detail

    def close(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None and self._owns_lock:
            lock.close()
        super().close()


@dataclass(frozen=True)
class ConditionStatistics:
    waiters: int  # threads in wait()
    lock: LockStatistics  # the underlying lock

    def __str__(self) -> str:
        return f"{self.waiters} waiting; lock {self.lock}"
