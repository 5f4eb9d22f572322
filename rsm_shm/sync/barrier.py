"""Barrier: threading.Barrier's algorithm with its state in shared memory.

As multiprocessing.synchronize.Barrier does, we reuse threading's proven state machine
(filling -> draining -> filling, with resetting and broken) and only move its fields into
the segment (csrc/barrier.h); it runs under the barrier's own robust lock, waiting on a
condition queue with exact, FIFO wake-ups.

Process death: each party inside ``wait()`` holds a seat naming its process.  Waiters
wake every ``LIVENESS_CHECK_S``; one of them per interval looks at the seats, and a dead
party's seat is freed and the barrier broken, so the others raise BrokenBarrierError
instead of waiting forever.  A party killed while holding the barrier's lock is found
when the lock is taken over: the count is rebuilt from the seats and the barrier broken.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from .. import _proc
from .._describe import plain_record, waitq_record
from .._errors import BrokenBarrierError
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentError, SegmentHeader
from . import _base
from ._base import SharedObject, pinned
from .condition import _align64, wait_on
from .lock import Lock

__all__ = ["Barrier", "BarrierStatistics", "BrokenBarrierError"]

FILLING = lib.RSM_BARRIER_FILLING
DRAINING = lib.RSM_BARRIER_DRAINING
RESETTING = lib.RSM_BARRIER_RESETTING
BROKEN = lib.RSM_BARRIER_BROKEN
_BARRIER_FIELDS = 64
#: How often (seconds) waiting parties look for a party that died inside wait().
LIVENESS_CHECK_S = 0.05
_CHECK_NS = int(LIVENESS_CHECK_S * 1e9)


def _layout(nslots: int, parties: int) -> tuple[int, int, int, int]:
    """Offsets of the lock, the condition queue and the seats, and the body size."""
    lock_off = _BARRIER_FIELDS
    q_off = _align64(lock_off + lib.rsm_lock_size(nslots))
    seats_off = _align64(q_off + lib.rsm_wq_size(nslots))
    return lock_off, q_off, seats_off, seats_off + parties * ffi.sizeof("rsm_barrier_seat")


class _BarrierLock(Lock):
    """The barrier's own lock: a dead holder is not reported to the user as a warning
    but repaired by the barrier (it breaks), which is what threading users expect."""

    holder_died = False

    def _tell_owner_died(self) -> None:
        self.holder_died = True


class Barrier(SharedObject):
    """A barrier for ``parties`` threads or processes, like ``threading.Barrier``.

    ``Barrier(name=None, *, parties=3, action=None, timeout=None, create=None)``.
    ``wait(timeout=None)`` returns an index in ``range(parties)``, distinct per caller in
    a cycle; the last to arrive runs ``action`` (the callable given to *its* process's
    constructor) before anyone is released.  A timeout, an exception in the action,
    ``abort()`` or ``reset()`` while threads wait break the barrier: waiters raise
    ``threading.BrokenBarrierError``.  ``parties`` is at most 4096 (the wait queue's
    slot limit); ``max_waiters`` grows to ``parties`` if smaller.  Closing this handle
    while one of its threads waits makes that thread leave its seat and raise ValueError.

    A party whose process is killed inside ``wait()`` breaks the barrier: the parties
    waiting get BrokenBarrierError within about ``2 * LIVENESS_CHECK_S`` (0.1 s), and its
    place is freed so ``reset()`` makes the barrier usable again.  (Death is judged per
    process: a thread of a live process cannot die inside ``wait()``.)
    """

    _kind = Kind.BARRIER

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        parties: int = 3,
        action: Optional[Callable[[], object]] = None,
        timeout: Optional[float] = None,
        create: Optional[bool] = None,
        mode: int = 0o600,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        if not isinstance(parties, int) or not 1 <= parties <= lib.RSM_WQ_MAX_SLOTS:
            raise ValueError(f"Barrier parties must be an int between 1 and {lib.RSM_WQ_MAX_SLOTS}, not {parties!r}")
        if timeout is not None:
            _base.deadline(timeout, _base.RULE_WAIT)  # a bad default timeout fails here, not in wait()
        nslots = _base.validate_max_waiters(max(max_waiters, parties))
        lock_off, q_off, seats_off, size = _layout(nslots, parties)

        def init(seg: Segment) -> None:
            b = seg.body("rsm_barrier *")
            b.state, b.count, b.parties = FILLING, 0, parties
            lib.rsm_lock_init(seg.body("rsm_lock *", lock_off), lib.RSM_LOCK_BARGING, nslots)
            lib.rsm_wq_init(seg.body("rsm_waitq *", q_off), nslots)

        def body_size_of(h: SegmentHeader) -> int:
            n = _base.check_nslots(h)
            if not 1 <= h.params[1] <= n:
                raise SegmentError(f"segment {h.name!r} has a corrupt barrier ({h.params[1]} parties)")
            return _layout(n, h.params[1])[3]

        hdr = self._open_segment(name, create, mode, size, (nslots, parties), init, body_size_of)
        lock_off, q_off, seats_off, _ = _layout(hdr.params[0], hdr.params[1])
        self._b = self._seg.body("rsm_barrier *")
        if self._b.parties != hdr.params[1] or not 1 <= self._b.parties <= hdr.params[0]:
            self.close()
            raise SegmentError(f"segment {self.name!r} has a corrupt barrier")
        # internal: a wait() that a close() interrupts still restores the shared state
        # (its seat, the count, the lock) before it raises ValueError
        self._lock = _BarrierLock._embedded(self._seg, self._seg.body("rsm_lock *", lock_off), internal=True)
        self._q = self._seg.body("rsm_waitq *", q_off)
        self._seats = self._seg.body("rsm_barrier_seat *", seats_off)
        self._check_queues(self._q, ffi.addressof(self._lock._ptr, "wq"))
        self._action = action
        self._timeout = timeout

    def _cond_wait(self, deadline: int) -> bool:
        """One wait for a notify, never past ``deadline`` (from _base.deadline) nor longer
        than the liveness interval: a dead party must be noticed."""
        check = time.monotonic_ns() + _CHECK_NS
        if deadline != _base.DEADLINE_TRY and (deadline < 0 or deadline > check):
            deadline = check
        notified = wait_on(self._q, self._lock, deadline, self._lock._is_owned, self._seg)
        self._check_parties()
        return notified

    def _notify_all(self) -> None:
        lib.rsm_wq_notify(self._q, 0x7FFFFFFF, lib.RSM_WAKE_FIFO, lib.RSM_KIND_ANY)

    @pinned
    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait until all parties called wait(); returns this caller's arrival index.

        ``timeout`` (default: the constructor's) follows threading.Barrier.wait: None
        waits forever, a timeout that passes (or is <= 0) breaks the barrier."""
        if timeout is None:
            timeout = self._timeout
        deadline: Union[int, Exception]
        try:
            deadline = _base.deadline(timeout, _base.RULE_WAIT)
        except (TypeError, ValueError) as e:
            deadline = e  # threading judges the timeout only if this party must wait
        b = self._b
        with self._lock:
            self._check_parties()
            self._enter()
            index = b.count
            seat = self._take_seat()
            b.count += 1
            try:
                if index + 1 == b.parties:
                    self._release()
                else:
                    self._wait(deadline)
                return int(index)
            finally:
                b.count -= 1
                self._leave_seat(seat)
                self._exit()

    # -- seats: who is inside wait() ------------------------------------------------------

    def _take_seat(self) -> int:
        for i in range(self._b.parties):
            if self._seats[i].pid == 0:
                seat = self._seats[i]
                seat.pid, seat.tid, seat.start = os.getpid(), lib.rsm_gettid(), lib.rsm_self_start()
                return i
        return -1  # cannot happen while count <= parties; the party just goes untracked

    def _leave_seat(self, i: int) -> None:
        if i >= 0 and self._seats[i].pid == os.getpid():
            self._seats[i].pid = 0

    def _check_parties(self) -> None:
        """Under the lock: after a takeover of the lock, or once per interval, free the
        seats of dead parties; a death mid-cycle breaks the barrier."""
        b = self._b
        repair = self._lock.holder_died
        now = time.monotonic_ns()
        if not repair and now - b.checked_ns < _CHECK_NS:
            return
        self._lock.holder_died = False
        b.checked_ns = now
        me = os.getpid()
        freed = 0
        for i in range(b.parties):
            seat = self._seats[i]
            if seat.pid and seat.pid != me and not _proc.task_alive(seat.pid, seat.start):
                seat.pid = 0
                freed += 1
        if not (freed or repair):
            return
        # The count is the taken seats: rebuilding it also undoes a half-done update by a
        # party that died holding the lock.
        b.count = sum(1 for i in range(b.parties) if self._seats[i].pid)
        if b.state == FILLING:
            self._break()
        elif b.count == 0 and b.state in (RESETTING, DRAINING):
            b.state = FILLING
            self._notify_all()

    def _enter(self) -> None:
        while self._b.state in (RESETTING, DRAINING):
            self._cond_wait(_base.DEADLINE_FOREVER)
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

    def _wait(self, deadline: Union[int, Exception]) -> None:
        b = self._b
        if isinstance(deadline, Exception):
            if b.state == FILLING:
                raise deadline
        else:
            while b.state == FILLING:
                if deadline == _base.DEADLINE_TOO_LARGE:
                    raise _base.too_large()  # it must wait: threading raises here too
                if not _base.remaining(deadline):
                    self._break()
                    raise BrokenBarrierError
                self._cond_wait(deadline)
        if b.state < 0:
            raise BrokenBarrierError

    def _exit(self) -> None:
        if self._b.count == 0 and self._b.state in (RESETTING, DRAINING):
            self._b.state = FILLING
            self._notify_all()

    @pinned
    def reset(self) -> None:
        """Return to the empty state; current waiters get BrokenBarrierError."""
        with self._lock:
            self._check_parties()
            if self._b.count > 0:
                if self._b.state in (FILLING, BROKEN):
                    self._b.state = RESETTING
            else:
                self._b.state = FILLING
            self._notify_all()

    @pinned
    def abort(self) -> None:
        """Break the barrier: current and future waiters get BrokenBarrierError."""
        with self._lock:
            self._break()

    def _break(self) -> None:
        self._b.state = BROKEN
        self._notify_all()

    @property
    @pinned
    def parties(self) -> int:
        return int(self._b.parties)

    @property
    @pinned
    def n_waiting(self) -> int:
        return self._b.count if self._b.state == FILLING else 0

    @property
    @pinned
    def broken(self) -> bool:
        return bool(self._b.state == BROKEN)

    @pinned
    def describe(self) -> dict[str, Any]:
        """As :meth:`SharedObject.describe`, with the embedded lock's snapshot under ``"lock"``."""
        self._check_queues(self._q)
        detail = plain_record(self.statistics())
        detail["queue"] = waitq_record(self._q, self._seg.header.params[0])
        detail["lock"] = self._lock.describe()
        return detail

    @pinned
    def statistics(self) -> "BarrierStatistics":
        names = {FILLING: "filling", DRAINING: "draining", RESETTING: "resetting", BROKEN: "broken"}
        b = self._b
        return BarrierStatistics(
            state=names.get(b.state, f"unknown({b.state})"), waiting=b.count, parties=b.parties, generation=b.generation
        )


@dataclass(frozen=True)
class BarrierStatistics:
    state: str  # filling, draining, resetting or broken
    waiting: int  # threads inside wait()
    parties: int
    generation: int  # completed cycles

    def __str__(self) -> str:
        return f"{self.state}, {self.waiting}/{self.parties} waiting, generation {self.generation}"
