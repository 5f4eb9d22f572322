"""Barrier: threading.Barrier's algorithm with its state in shared memory.

As multiprocessing.synchronize.Barrier does, we reuse threading's proven state machine
(filling -> draining -> filling, with resetting and broken) and only move its fields into
the segment (csrc/barrier.h); it runs under the barrier's own robust lock, waiting on a
condition queue with exact, FIFO wake-ups.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from .._describe import plain, waitq_record
from .._errors import BrokenBarrierError
from .._native import ffi, lib
from ..segment import Kind, SegmentError, SegmentHeader
from . import _base
from ._base import SharedObject
from .condition import _align64, wait_on
from .lock import Lock

__all__ = ["Barrier", "BarrierStatistics", "BrokenBarrierError"]

FILLING = lib.RSM_BARRIER_FILLING
DRAINING = lib.RSM_BARRIER_DRAINING
RESETTING = lib.RSM_BARRIER_RESETTING
BROKEN = lib.RSM_BARRIER_BROKEN
_BARRIER_FIELDS = 64


def _layout(nslots: int) -> tuple[int, int, int]:
    lock_off = _BARRIER_FIELDS
    q_off = _align64(lock_off + lib.rsm_lock_size(nslots))
    return lock_off, q_off, q_off + lib.rsm_wq_size(nslots)


class Barrier(SharedObject):
    """A barrier for ``parties`` threads or processes, like ``threading.Barrier``.

    ``Barrier(name=None, *, parties=3, action=None, timeout=None, create=None)``.
    ``wait(timeout=None)`` returns an index in ``range(parties)``, distinct per caller in
    a cycle; the last to arrive runs ``action`` (the callable given to *its* process's
    constructor) before anyone is released.  A timeout, an exception in the action,
    ``abort()`` or ``reset()`` while threads wait break the barrier: waiters raise
    ``threading.BrokenBarrierError``.  ``parties`` must not exceed ``max_waiters``.
    Limit: a party killed while inside ``wait()`` leaves its seat taken; the others then
    wait until their timeout breaks the barrier (give ``timeout`` when parties may die).
    """

    _kind = Kind.BARRIER

    def __init__(self, name: Optional[str] = None, *, parties: int = 3, action: Optional[Callable[[], object]] = None,
                 timeout: Optional[float] = None, create: Optional[bool] = None, mode: int = 0o600,
                 max_waiters: int = _base.DEFAULT_MAX_WAITERS) -> None:
        if not isinstance(parties, int) or parties < 1:
            raise ValueError("parties must be >= 1")
        nslots = _base.validate_max_waiters(max(max_waiters, parties))
        lock_off, q_off, size = _layout(nslots)

        def init(seg):
            b = seg.body("rsm_barrier *")
            b.state, b.count, b.parties = FILLING, 0, parties
            lib.rsm_lock_init(seg.body("rsm_lock *", lock_off), lib.RSM_LOCK_BARGING, nslots)
            lib.rsm_wq_init(seg.body("rsm_waitq *", q_off), nslots)

        def body_size_of(h: SegmentHeader) -> int:
            return _layout(_base.check_nslots(h))[2]

        hdr = self._open_segment(name, create, mode, size, (nslots, parties), init, body_size_of)
        lock_off, q_off, _ = _layout(hdr.params[0])
        self._b = self._seg.body("rsm_barrier *")
        if self._b.parties != hdr.params[1] or not 1 <= self._b.parties <= hdr.params[0]:
            self.close()
            raise SegmentError(f"segment {self.name!r} has a corrupt barrier")
        self._lock = Lock._embedded(self._seg, self._seg.body("rsm_lock *", lock_off))
        self._q = self._seg.body("rsm_waitq *", q_off)
        self._check_queues(self._q, ffi.addressof(self._lock._ptr, "wq"))
        self._action = action
        self._timeout = timeout

    def _cond_wait(self, timeout: Optional[float]) -> bool:
        return wait_on(self._q, self._lock, timeout, self._lock._is_owned, self._seg)

    def _notify_all(self) -> None:
        lib.rsm_wq_notify(self._q, 0x7FFFFFFF, lib.RSM_WAKE_FIFO, lib.RSM_KIND_ANY)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait until all parties called wait(); returns this caller's arrival index."""
        self._check_open()
        if timeout is None:
            timeout = self._timeout
        b = self._b
        with self._lock:
            self._enter()
            index = b.count
            b.count += 1
            try:
                if index + 1 == b.parties:
                    self._release()
                else:
                    self._wait(timeout)
                return index
            finally:
                b.count -= 1
                self._exit()

    def _enter(self) -> None:
        while self._b.state in (RESETTING, DRAINING):
            self._cond_wait(None)
        if self._b.state < 0:
            raise BrokenBarrierError
        if self._b.state != FILLING:
            raise SegmentError(f"Barrier {self.name!r}: corrupt state {self._b.state}")

    def _release(self) -> None:
        try:
            if self._action:
                self._action()
            self._b.state = DRAINING
            self._b.generation += 1
            self._notify_all()
        except BaseException:
            self._break()
            raise

    def _wait(self, timeout: Optional[float]) -> None:
        b = self._b
        deadline = None if timeout is None else time.monotonic() + timeout
        while b.state == FILLING:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._break()
                raise BrokenBarrierError
            self._cond_wait(remaining)
        if b.state < 0:
            raise BrokenBarrierError

    def _exit(self) -> None:
        if self._b.count == 0 and self._b.state in (RESETTING, DRAINING):
            self._b.state = FILLING
            self._notify_all()

    def reset(self) -> None:
        """Return to the empty state; current waiters get BrokenBarrierError."""
        self._check_open()
        with self._lock:
            if self._b.count > 0:
                if self._b.state in (FILLING, BROKEN):
                    self._b.state = RESETTING
            else:
                self._b.state = FILLING
            self._notify_all()

    def abort(self) -> None:
        """Break the barrier: current and future waiters get BrokenBarrierError."""
        self._check_open()
        with self._lock:
            self._break()

    def _break(self) -> None:
        self._b.state = BROKEN
        self._notify_all()

    @property
    def parties(self) -> int:
        self._check_open()
        return self._b.parties

    @property
    def n_waiting(self) -> int:
        self._check_open()
        return self._b.count if self._b.state == FILLING else 0

    @property
    def broken(self) -> bool:
        self._check_open()
        return self._b.state == BROKEN

    def describe(self) -> dict:
        """As :meth:`SharedObject.describe`, with the embedded lock's snapshot under ``"lock"``."""
        self._check_open()
        self._check_queues(self._q)
        detail = plain(self.statistics())
        detail["queue"] = waitq_record(self._q, self._seg.header.params[0])
        detail["lock"] = self._lock.describe()
        return detail

    def statistics(self) -> "BarrierStatistics":
        self._check_open()
        names = {FILLING: "filling", DRAINING: "draining", RESETTING: "resetting", BROKEN: "broken"}
        b = self._b
        return BarrierStatistics(state=names.get(b.state, f"unknown({b.state})"), waiting=b.count,
                                 parties=b.parties, generation=b.generation)


@dataclass(frozen=True)
class BarrierStatistics:
    state: str        # filling, draining, resetting or broken
    waiting: int      # threads inside wait()
    parties: int
    generation: int   # completed cycles

    def __str__(self) -> str:
        return f"{self.state}, {self.waiting}/{self.parties} waiting, generation {self.generation}"
