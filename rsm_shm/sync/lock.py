"""Lock and RLock: threading's locks, in shared memory, robust against owner death.

The algorithm (word layout, transitions, hand-off) is in csrc/lock.h and csrc/lock.c,
and each call is one C entry (csrc/fast_sync.c, which also applies threading's argument
rules); this module holds the policy those entries call back for: is an owner dead, and
telling the new holder.

Owner death: a waiter that sleeps through a slice (~50 ms) checks whether the owner
still exists -- the owner's *process*: as in threading, a thread that exits holding a
Lock or an RLock leaves it held.  If the process is gone, exactly one waiter takes the lock over (one CAS in C) and
is *told*: ``acquire()`` returns True, an :class:`OwnerDiedWarning` is issued naming the
dead process, and ``recovered`` describes it until the holder releases.  If the warning
is configured to raise, the lock is released again with the mark kept, so the next
holder is told instead — even ``with lock:`` never leaves a lock held behind an
exception raised out of ``__enter__``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

from .. import _proc
from .._errors import OwnerDiedWarning, raise_for
from .._fast import FastLock
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentHeader
from . import _base
from ._base import Policy, SharedObject, pinned

__all__ = ["Lock", "RLock", "LockStatistics", "OwnerDied"]


@dataclass(frozen=True)
class OwnerDied:
    """The previous owner that died holding the lock, as recorded at recovery."""

    pid: int
    tid: int


@dataclass(frozen=True)
class LockStatistics:
    """A snapshot of a lock's shared state (what ``rsm-shm inspect`` shows)."""

    locked: bool
    owner_tid: int  # the holding thread (a Linux tid), 0 when unlocked
    owner_pid: int  # its process, 0 if unknown (the thread already ended)
    owner_alive: Optional[bool]  # whether that thread exists; None when unlocked
    count: int  # recursion depth (RLock), 1 for a held Lock, 0 unlocked
    waiters: int  # threads blocked in acquire(), in any process
    tag: int  # the lock's 32-bit user payload (``lock.tag``)
    policy: str  # "barging", "fifo" or "lifo" (see Policy)
    owner_died: bool  # the lock word carries the owner-died mark
    recovered: Optional[OwnerDied]  # the dead owner the current holder took over from

    def __str__(self) -> str:
        if not self.locked:
            s = "unlocked"
        else:
            alive = {True: "alive", False: "dead", None: "?"}[self.owner_alive]
            s = f"locked by {self.owner_pid}/{self.owner_tid} ({alive})"
            if self.count > 1:
                s += f" x{self.count}"
        if self.waiters:
            s += f", {self.waiters} waiting"
        if self.owner_died:
            s += ", previous owner died"
        if self.tag:
            s += f", tag={self.tag:#x}"
        return s


def _lock_body_size(header: SegmentHeader) -> int:
    return int(lib.rsm_lock_size(_base.check_nslots(header)))


def _check_policy(header: SegmentHeader) -> None:
    Policy.from_code(header.params[1] if len(header.params) > 1 else -1)


def lock_statistics(ptr: Any) -> LockStatistics:
    """Decode an rsm_lock (shared with Condition/Barrier internals and the CLI)."""
    word = ptr.word
    tid = word & lib.RSM_TID_MASK
    dead_tid = ptr.dead_tid
    return LockStatistics(
        locked=tid != 0,
        owner_tid=tid,
        owner_pid=(ptr.owner_pid or _base.pid_of(tid)) if tid else 0,
        owner_alive=(not _base.owner_is_dead(tid)) if tid else None,
        count=max(ptr.count, 1) if tid else 0,
        waiters=ptr.wq.nwaiters + ptr.wq.noverflow,
        tag=ptr.tag,
        policy=Policy.from_code(ptr.policy).value,
        owner_died=bool(word & lib.RSM_LOCK_OWNER_DIED),
        recovered=OwnerDied(ptr.dead_pid, dead_tid) if dead_tid else None,
    )


_L = TypeVar("_L", bound="_LockCommon")


class _LockCommon(FastLock, SharedObject):
    """Segment handling, tag, pending, statistics, owner-death policy for Lock and RLock."""

    _ptr: Any  # cffi pointer to the C struct in the segment

    def _open_lock(self, name: Optional[str], create: Optional[bool], mode: int, policy: str, max_waiters: int) -> None:
        policy = Policy(policy)
        nslots = _base.validate_max_waiters(max_waiters)

        def init(seg: Segment) -> None:
            lib.rsm_lock_init(seg.body("rsm_lock *"), policy.code, nslots)

        self._open_segment(
            name,
            create,
            mode,
            lib.rsm_lock_size(nslots),
            (nslots, policy.code),
            init,
            _lock_body_size,
            check=_check_policy,
        )
        self._ptr = self._seg.body("rsm_lock *")
        self._check_queues(ffi.addressof(self._ptr, "wq"))

    # -- the seed's extras ---------------------------------------------------------------

    @property
    @pinned
    def tag(self) -> int:
        """A 32-bit payload stored with the lock, free for the application (e.g. an epoch)."""
        return int(self._ptr.tag)

    @tag.setter
    @pinned
    def tag(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ValueError(f"tag must be an unsigned 32-bit integer, not {value!r}")
        self._ptr.tag = value

    @property
    @pinned
    def pending(self) -> int:
        """How many threads (in any process) are waiting to acquire the lock right now."""
        return int(self._ptr.wq.nwaiters + self._ptr.wq.noverflow)

    @property
    @pinned
    def policy(self) -> Policy:
        return Policy.from_code(self._ptr.policy)

    @property
    @pinned
    def recovered(self) -> Optional[OwnerDied]:
        """Set while the lock is held by a thread that took it over from a dead owner."""
        if self._ptr.word & lib.RSM_LOCK_OWNER_DIED and self._ptr.dead_tid:
            return OwnerDied(self._ptr.dead_pid, self._ptr.dead_tid)
        return None

    @pinned
    def statistics(self) -> LockStatistics:
        return lock_statistics(self._ptr)

    def _is_owned(self) -> bool:
        with self._pins:
            return bool((self._ptr.word & lib.RSM_TID_MASK) == lib.rsm_gettid())

    @classmethod
    def _embedded(cls: type[_L], seg: Segment, ptr: Any, internal: bool = False) -> _L:
        """A handle on a lock living inside another object's segment (Condition, Barrier).

        It shares that segment's pins: closing the object cuts the lock off too.
        ``internal``: a private lock the object's own calls may still take and release
        while they finish after a close() (they keep the mapping pinned)."""
        self = cls.__new__(cls)
        self._seg = seg
        self._pins = seg.pins
        self._ptr = ptr
        self._bind_entries(cls._kind == Kind.RLOCK, internal)
        return self

    def _bind_entries(self, recursive: bool, internal: bool = False) -> None:
        """Point the C entry points (FastLock, csrc/fast_sync.c) at the lock and hand them
        this class's owner-death policy (the two methods below)."""
        cls = type(self)
        self._bind(
            int(ffi.cast("uintptr_t", self._ptr)),
            self._pins,
            recursive,
            internal,
            cls._owner_is_dead,
            cls._tell_owner_died,
        )

    # -- policy, handed to the C entry points by _bind_entries ----------------------------

    def _owner_is_dead(self, tid: int) -> bool:
        """Between slices of a blocked acquire: may the waiter take the lock over?

        Only if the owner's *process* died.  A thread that exits holding the lock has not
        abandoned it as far as threading is concerned: a Lock belongs to no thread (any
        other thread may release it), and a live process may still be using what an
        RLock protects, so threading leaves both held -- and so do we."""
        if not _base.owner_is_dead(tid):
            return False
        pid = self._ptr.owner_pid  # written right after the acquiring CAS
        return pid <= 0 or not _proc.process_alive(pid)

    def _tell_owner_died(self) -> None:
        """Tell a holder that took the lock over from a dead owner.  If this raises (the
        warning is configured as an error), C releases the lock again with its mark kept."""
        dead = OwnerDied(self._ptr.dead_pid, self._ptr.dead_tid)
        warnings.warn(
            OwnerDiedWarning(
                f"{type(self).__name__} {self.name!r}: the previous owner (pid {dead.pid}, tid {dead.tid}) "
                f"died holding it; the state it protects may be inconsistent"
            ),
            stacklevel=2,
        )

    # FastLock provides acquire(blocking=True, timeout=-1), release(), locked(),
    # __enter__ and __exit__, each one C call; these names document them.
    acquire = FastLock.acquire
    release = FastLock.release
    locked = FastLock.locked


class Lock(_LockCommon):
    """A primitive lock shared between threads and processes, like ``threading.Lock``.

    ``Lock(name=None, *, create=None, mode=0o600, policy="barging", max_waiters=64)``

    ``acquire(blocking=True, timeout=-1) -> bool`` and ``release()`` behave exactly as in
    ``threading.Lock``: a non-blocking call with a timeout raises ValueError, a negative
    timeout other than -1 raises ValueError, releasing an unlocked lock raises
    RuntimeError, and any thread (of any process) may release a held lock.  The owner
    recorded for owner-death recovery is the thread that acquired it, but as in
    ``threading`` a Lock belongs to no thread: one that exits holding it leaves it held
    (another thread may still release it), and later acquirers wait or time out.  Only
    the death of the holder's *process* is an owner death (recovered as below).

    Fairness: see :class:`Policy`.  An uncontended acquire/release is one atomic
    instruction each and no system call; a blocked waiter spins briefly (adaptively) and
    then sleeps on a futex, waking at least every 50 ms to run signal handlers and to check
    that the owner still lives.  If the owner was killed, one waiter takes the lock over
    within about 0.1 s and is told (see module docs and :class:`OwnerDiedWarning`).
    """

    _kind = Kind.LOCK
    _not_owner_message = "release unlocked lock"

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        create: Optional[bool] = None,
        mode: int = 0o600,
        policy: str = Policy.BARGING,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        self._open_lock(name, create, mode, policy, max_waiters)
        self._bind_entries(False)

    def _release_save(self) -> int:
        self.release()
        return 1

    def _acquire_restore(self, count: int) -> None:
        self.acquire()


class RLock(_LockCommon):
    """A reentrant lock shared between threads and processes, like ``threading.RLock``.

    The owning thread may acquire it again; each acquire needs a matching release.
    Releasing a lock this thread does not own raises RuntimeError ("cannot release
    un-acquired lock").  Fairness is that of :class:`Lock`; re-entry and the uncontended
    paths run in C with the GIL held (csrc/lock.h).

    Owner death means the owner's *process* died, as for :class:`Lock`.  A thread of a
    live process that exits holding an RLock leaves it held, as ``threading.RLock``
    does: the process may still be using what the lock protects, and only the owner
    could release it, so later acquirers wait or time out (a program bug, reported by
    ``statistics()`` as an owner that is not alive).
    """

    _kind = Kind.RLOCK
    _not_owner_message = "cannot release un-acquired lock"

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        create: Optional[bool] = None,
        mode: int = 0o600,
        policy: str = Policy.BARGING,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        self._open_lock(name, create, mode, policy, max_waiters)
        self._bind_entries(True)

    def _release_save(self) -> int:
        """Condition support: release every level; returns the depth to restore."""
        count = ffi.new("uint32_t *")
        with self._pins:
            r = lib.rsm_rlock_release_all(self._ptr, count, 1)
        if r != lib.RSM_OK:
            raise_for(r, self)
        return int(count[0])

    def _acquire_restore(self, count: int) -> None:
        self.acquire()
        with self._pins:
            self._ptr.count = count
