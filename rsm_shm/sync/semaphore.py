"""Semaphore, BoundedSemaphore and AutoResetEvent (the algorithm: csrc/sem.c).

Permits are unowned, as with POSIX and threading semaphores: any process may release,
and a process killed while holding permits does not give them back.  ``robust=True``
(opt-in, the SysV ``SEM_UNDO`` idea) records every permit taken in the taker's holder
cell, in the same atomic step that takes it, so the permits of a holder that died are
given back exactly: by a waiter that sleeps past a slice (~50 ms), or by a non-blocking
attempt that would fail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from .. import _proc
from .._fast import FastSem
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentError, SegmentHeader
from . import _base
from ._base import Policy, SharedObject, pinned

__all__ = ["Semaphore", "BoundedSemaphore", "AutoResetEvent", "SemaphoreStatistics"]


@dataclass(frozen=True)
class SemaphoreStatistics:
    value: int
    max_value: Optional[int]
    waiters: int
    disabled: bool
    policy: str
    robust: bool = False
    holders: tuple[tuple[int, int], ...] = ()  # robust: (pid, permits) per holder cell with permits
    untracked: int = 0  # robust: permits held without a cell (every cell was busy): not returned on death

    def __str__(self) -> str:
        s = f"value={self.value}"
        if self.max_value is not None:
            s += f"/{self.max_value}"
        if self.holders:
            s += ", held by " + ", ".join(f"{pid} x{n}" for pid, n in self.holders)
        if self.waiters:
            s += f", {self.waiters} waiting"
        if self.disabled:
            s += ", disabled"
        return s


def _flags(header: SegmentHeader) -> int:
    return header.params[4] if len(header.params) > 4 else 0


def _check_layout(header: SegmentHeader) -> None:
    """The semaphore kinds' own layout version (params[5]; older segments lack it)."""
    version = header.params[5] if len(header.params) > 5 else 1
    if version != lib.RSM_SEM_LAYOUT:
        raise SegmentError(
            f"segment {header.name!r} has semaphore layout version {version}; this rsm_shm reads version "
            f"{lib.RSM_SEM_LAYOUT} (it was made by another rsm_shm version: recreate it)"
        )
    Policy.from_code(header.params[1])


def _body_size(header: SegmentHeader) -> int:
    _check_layout(header)  # first: an older layout has other sizes, and this error says why
    return int(lib.rsm_sem_size(_base.check_nslots(header), _flags(header)))


def _holder_cells(p: Any) -> list[tuple[int, int, int, int]]:
    """(state, pid, start, permits) of each holder cell of robust semaphore p."""
    pid, start, count = ffi.new("int32_t *"), ffi.new("uint64_t *"), ffi.new("uint32_t *")
    cells = []
    for i in range(lib.rsm_sem_nholders(p)):
        state = lib.rsm_sem_holder_info(p, i, pid, start, count)
        cells.append((int(state), int(pid[0]), int(start[0]), int(count[0])))
    return cells


class _SemaphoreBase(FastSem, SharedObject):
    _ptr: Any  # cffi pointer to the C struct in the segment

    def _open_sem(
        self,
        name: Optional[str],
        create: Optional[bool],
        mode: int,
        value: int,
        max_value: int,
        flags: int,
        policy: str,
        max_waiters: int,
        robust: bool = False,
    ) -> None:
        if not isinstance(value, int) or not 0 <= value <= lib.RSM_SEM_VALUE_MAX:
            raise ValueError(
                f"{type(self).__name__} value must be an int between 0 and {lib.RSM_SEM_VALUE_MAX}, not {value!r}"
            )
        if not isinstance(robust, bool):
            raise TypeError(f"robust must be True or False, not {robust!r}")
        if robust:
            flags |= lib.RSM_SEM_ROBUST
        policy = Policy(policy)
        nslots = _base.validate_max_waiters(max_waiters)

        def init(seg: Segment) -> None:
            lib.rsm_sem_init(seg.body("rsm_sem *"), value, max_value, policy.code, flags, nslots)

        hdr = self._open_segment(
            name,
            create,
            mode,
            lib.rsm_sem_size(nslots, flags),
            (nslots, policy.code, value, max_value, flags, lib.RSM_SEM_LAYOUT),
            init,
            _body_size,
            check=_check_layout,
        )
        self._ptr = self._seg.body("rsm_sem *")
        self._check_queues(ffi.addressof(self._ptr, "wq"))
        want_holders = hdr.params[0] if _flags(hdr) & lib.RSM_SEM_ROBUST else 0
        if self._ptr.flags != _flags(hdr) or self._ptr.nholders != want_holders:
            self._seg.close()
            raise SegmentError(
                f"segment {self.name!r} is corrupt: semaphore flags or holder slots disagree with its header"
            )
        # the C entry points (FastSem, csrc/fast_sync.c) and their policy for robust ones
        self._bind(int(ffi.cast("uintptr_t", self._ptr)), self._pins, type(self)._reclaim_dead_holders)
        if self._ptr.max > lib.RSM_SEM_VALUE_MAX:
            self.close()
            raise SegmentError(f"segment {self.name!r} has a corrupt semaphore bound")

    # acquire(blocking=True, timeout=None) -> bool, release(n=1), __enter__ and __exit__
    # come from FastSem (csrc/fast_sync.c): the attempt with the GIL held, then the slice
    # loop in C.  Semantics, as threading.Semaphore: acquire decrements the value, waiting
    # while it is zero; True once decremented, False on timeout (or at once when not
    # blocking); ValueError for a timeout with blocking=False.  release(n) adds n and wakes
    # up to n waiters; ValueError if n < 1.  DisabledError once disable() was called;
    # BoundedSemaphore.release beyond the initial value raises ValueError.
    acquire = FastSem.acquire
    release = FastSem.release

    @pinned
    def _reclaim_dead_holders(self) -> int:
        """Robust semaphores (the C entry points call it between slices): give back the
        permits of holders whose process died; returns how many came back."""
        p = self._ptr
        me = os.getpid()
        total = 0
        for i, (state, pid, start, _) in enumerate(_holder_cells(p)):
            if state == lib.RSM_HOLDER_IS_FREE or pid == me:
                continue
            # A cell still being claimed may not have its start time yet: judged by pid alone
            # (C never frees a live claimant's: it checks the pid in the cell's word).
            if state == lib.RSM_HOLDER_IS_CLAIMING:
                start = 0
            if not _proc.task_alive(pid, start):
                total += lib.rsm_sem_reclaim_holder(p, i, pid, start)
        return total

    @property
    @pinned
    def robust(self) -> bool:
        """True if permits are recorded per holder and a dead holder's come back."""
        return bool(self._ptr.flags & lib.RSM_SEM_ROBUST)

    @pinned
    def disable(self) -> None:
        """Disable for good: every waiter wakes with DisabledError, later acquires and
        releases fail fast.  Use it to shut a pool down without leaving anyone blocked."""
        lib.rsm_sem_disable(self._ptr)

    @property
    @pinned
    def disabled(self) -> bool:
        return bool(self._ptr.count & lib.RSM_SEM_DISABLED)

    @property
    @pinned
    def value(self) -> int:
        """The current value (a snapshot)."""
        return int(lib.rsm_sem_value(self._ptr))

    @property
    @pinned
    def pending(self) -> int:
        """How many threads are waiting right now."""
        return int(self._ptr.wq.nwaiters + self._ptr.wq.noverflow)

    @pinned
    def statistics(self) -> SemaphoreStatistics:
        p = self._ptr
        return SemaphoreStatistics(
            value=p.count & lib.RSM_SEM_VALUE_MAX,
            max_value=p.max or None,
            waiters=p.wq.nwaiters + p.wq.noverflow,
            disabled=bool(p.count & lib.RSM_SEM_DISABLED),
            policy=Policy.from_code(p.policy).value,
            robust=bool(p.flags & lib.RSM_SEM_ROBUST),
            holders=tuple((pid, n) for state, pid, _, n in _holder_cells(p) if n and state == lib.RSM_HOLDER_IS_HELD),
            untracked=int(lib.rsm_sem_untracked(p)),
        )


class Semaphore(_SemaphoreBase):
    """A counting semaphore shared between threads and processes, like ``threading.Semaphore``.

    ``Semaphore(name=None, *, value=1, create=None, mode=0o600, policy="barging",
    max_waiters=64, robust=False)``.  ``value`` and ``robust`` only apply when this call
    creates the semaphore.  Wake-up order follows ``policy`` (see :class:`Policy`); with
    FIFO a released permit is handed to the oldest waiter.

    By default permits are not owned (as POSIX semaphores): a process killed while holding
    one does not give it back.  With ``robust=True`` each permit taken is recorded in the
    taking process's holder cell (pid, start time, count), and when a holder dies its
    permits come back: a waiter that sleeps past a slice (~50 ms), or a non-blocking
    ``acquire`` that would fail, looks for dead holders.  Taking a permit and recording it
    are one atomic step (docs/owner-death.md), so a holder killed at any instruction
    neither leaks a permit nor creates one.  A robust FIFO semaphore does not hand a
    released permit to the oldest waiter: it wakes that waiter, which then takes the
    permit ahead of the queue (a queued waiter whose slice ends at that moment may take it
    first).

    Accounting of a robust semaphore.  ``release()`` is legal from any thread of any
    process, as for every semaphore; it is charged first to the releasing process's own
    permits, then to untracked ones, then to another holder's (a permit released on
    someone's behalf is not returned again when that holder dies); only when nobody holds
    a recorded permit does it create a new one (``release`` without ``acquire``).  So the
    permits returned on a death never exceed what that process took and nobody released.
    Robust semaphores fit resource pools (each user acquires, then releases); in a
    signalling pattern (one side only releases, the other only acquires) the acquirers'
    counts only grow, and a dead acquirer's permits would come back although they were
    consumed: do not make those robust.  Limits: at most ``max_waiters`` processes hold
    recorded permits at once (a holder cell whose process holds nothing is freed for a
    newcomer; past that, permits are held untracked, see ``statistics()``, and are not
    returned on death); ``release(n)`` checks the bound for the whole ``n`` first, then
    gives the permits back one by one.

    Cost: a robust acquire or release is a CAS on the count word (which carries the
    operation's tag) and one on the holder cell, after a look at the cell the previous
    operation named: an uncontended acquire+release pair took 64 ns instead of 36 ns in
    ``tools/bench_sync.py --only uncontended --repeat 9`` (2 shared cores, load ~20;
    callgrind: about 1000 instructions per pair instead of 655, most of both in the
    interpreter).  The sleeping path is unchanged but for those steps; a waiter that
    sleeps past a slice also reads the holder cells and ``/proc`` for each holder.
    """

    _kind = Kind.SEMAPHORE

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        value: int = 1,
        create: Optional[bool] = None,
        mode: int = 0o600,
        policy: str = Policy.BARGING,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
        robust: bool = False,
    ) -> None:
        self._open_sem(name, create, mode, value, 0, 0, policy, max_waiters, robust)


class BoundedSemaphore(_SemaphoreBase):
    """A semaphore whose value may not exceed its initial value: ``release()`` beyond it
    raises ValueError, as ``threading.BoundedSemaphore``.  ``robust=True`` as for
    :class:`Semaphore`; a dead holder's permits come back without ever exceeding the bound."""

    _kind = Kind.BOUNDED_SEMAPHORE

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        value: int = 1,
        create: Optional[bool] = None,
        mode: int = 0o600,
        policy: str = Policy.BARGING,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
        robust: bool = False,
    ) -> None:
        self._open_sem(name, create, mode, value, value, 0, policy, max_waiters, robust)


class AutoResetEvent(_SemaphoreBase):
    """The seed's Event: ``set()`` lets exactly one ``wait()`` through, then resets itself.

    A semaphore capped at 1: setting an already set event does nothing; ``wait(timeout)``
    consumes the signal and returns True, or returns False on timeout.
    """

    _kind = Kind.AUTO_RESET_EVENT

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        create: Optional[bool] = None,
        mode: int = 0o600,
        policy: str = Policy.FIFO,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        self._open_sem(name, create, mode, 0, 1, lib.RSM_SEM_SATURATE, policy, max_waiters)

    #: set(): signal: wake one waiter (or let the next wait() through at once).
    set = FastSem.release
    #: wait(timeout=None) -> bool: wait for a signal and consume it; False on timeout.
    wait = FastSem._wait

    def is_set(self) -> bool:
        return self.value > 0

    def clear(self) -> None:
        self.acquire(False)
