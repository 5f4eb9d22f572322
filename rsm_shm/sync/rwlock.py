"""RWLock: many readers or one writer, writer-preferring by default (csrc/rwlock.c).

Both sides are robust.  The writer side is owned like :class:`Lock`: if a writer is
killed, a waiting writer takes the lock over (warned with OwnerDiedWarning) or, if only
readers wait, the readers free it and the next writer is warned.  Read locks are counted
per process in reader slots (process id, start time, count): a writer that waits past a
slice (~50 ms) reclaims the share of every reader process that died, and the next writer
to get the lock is warned, naming the dead reader.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from .._errors import OwnerDiedWarning, raise_for
from .._native import ffi, lib
from ..segment import Kind, SegmentError, SegmentHeader
from . import _base, _shares
from ._base import SharedObject, pinned
from .lock import OwnerDied

__all__ = ["RWLock", "RWLockStatistics"]

WRITER_PREFERRING = "writer"
READER_PREFERRING = "reader"


@dataclass(frozen=True)
class RWLockStatistics:
    readers: int
    writer_tid: int
    writer_pid: int
    writer_alive: Optional[bool]
    waiting_readers: int
    waiting_writers: int
    prefer: str
    owner_died: bool
    reader_pids: tuple[int, ...] = ()  # processes holding read locks in reader slots (one entry per slot)
    untracked_readers: int = 0  # read locks held without a slot (every slot was taken): not robust

    def __str__(self) -> str:
        if self.writer_tid:
            alive = {True: "alive", False: "dead", None: "?"}[self.writer_alive]
            s = f"write-locked by {self.writer_pid}/{self.writer_tid} ({alive})"
            if self.readers:
                s += f", draining {self.readers} readers"
        elif self.readers:
            s = f"read-locked by {self.readers}"
        else:
            s = "unlocked"
        if self.waiting_readers or self.waiting_writers:
            s += f", waiting: {self.waiting_readers} readers, {self.waiting_writers} writers"
        return s


def _body_size(header: SegmentHeader) -> int:
    return int(lib.rsm_rwlock_size(_base.check_nslots(header)))


class RWLock(SharedObject):
    """A reader-writer lock shared between threads and processes.

    ``RWLock(name=None, *, prefer="writer", create=None, mode=0o600, max_waiters=64)``.
    ``acquire_read/acquire_write(blocking=True, timeout=-1) -> bool`` follow
    ``threading.Lock.acquire``'s argument rules; ``release_read()``/``release_write()``
    raise RuntimeError when the caller holds no such lock.  ``read()`` and ``write()`` are
    context managers (taking an optional timeout; TimeoutError if it passes).

    prefer="writer" (default): once a writer waits, new readers wait too, and a releasing
    writer hands over to the next writer, so writers never starve (readers may).
    prefer="reader": writers wait until no reader is active.

    A read lock belongs to the process that took it (any of its threads may release it;
    another process may not: RuntimeError).  Owner death: a killed writer's lock is taken
    over as with :class:`Lock`; a killed reader's read locks are reclaimed by a waiting
    writer within about a slice (~50 ms), and the writer that gets the lock next is told
    (OwnerDiedWarning, and ``recovered`` names the dead reader with tid 0).  Reader
    processes are tracked in ``max_waiters`` reader slots; a reader that finds every slot
    taken by other processes still gets its read lock, but untracked: if it dies holding
    it, the lock stays read-locked (see ``statistics().untracked_readers``).
    """

    _kind = Kind.RWLOCK

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        prefer: str = WRITER_PREFERRING,
        create: Optional[bool] = None,
        mode: int = 0o600,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        if prefer not in (WRITER_PREFERRING, READER_PREFERRING):
            raise ValueError(f"prefer must be 'writer' or 'reader', not {prefer!r}")
        policy = lib.RSM_RW_WRITER_PREF if prefer == WRITER_PREFERRING else lib.RSM_RW_READER_PREF
        nslots = _base.validate_max_waiters(max_waiters)
        self._open_segment(
            name,
            create,
            mode,
            lib.rsm_rwlock_size(nslots),
            (nslots, policy),
            lambda seg: lib.rsm_rwlock_init(seg.body("rsm_rwlock *"), policy, nslots),
            _body_size,
        )
        self._ptr = self._seg.body("rsm_rwlock *")
        self._check_queues(ffi.addressof(self._ptr, "wq"))
        nreaders, want = int(self._ptr.nreaders), self._seg.header.params[0]
        if nreaders != want:
            self._seg.close()  # C bounds its walks by nreaders: never trust a disagreeing one
            raise SegmentError(f"segment {self.name!r} is corrupt: {nreaders} reader slots, the header says {want}")

    def _run(self, step: Callable[[Any, int], int], deadline: int, as_writer: bool) -> int:
        ptr = self._ptr

        def on_slice(w: Any) -> Optional[int]:
            if as_writer:
                self._reclaim_dead_readers()
            writer = ptr.writer & lib.RSM_TID_MASK
            if _base.owner_is_dead(writer):
                r = lib.rsm_rwlock_recover(ptr, writer, 1 if as_writer else 0, w)
                if r == lib.RSM_OK:
                    warnings.warn(
                        OwnerDiedWarning(f"RWLock {self.name!r}: writer pid {ptr.dead_pid} died holding it; freed it"),
                        stacklevel=5,
                    )
            return None

        return _base.run_blocking(
            step,
            lambda w: lib.rsm_rwlock_abandon(ptr, w),
            deadline,
            queue=ffi.addressof(ptr, "wq"),
            seg=self._seg,
            on_slice=on_slice,
        )

    def _reclaim_dead_readers(self) -> int:
        """Free the reader slots of dead processes; returns the read locks reclaimed."""
        ptr = self._ptr
        return _shares.reclaim_dead(
            lib.rsm_rwlock_readers(ptr),
            lib.rsm_rwlock_nreaders(ptr),
            lambda i, word: lib.rsm_rwlock_reclaim_reader(ptr, i, word),
        )

    @pinned
    def acquire_read(self, blocking: bool = True, timeout: float = -1) -> bool:
        ptr = self._ptr
        r = self._run(
            lambda w, d: lib.rsm_rwlock_read_acquire(ptr, w, d),
            _base.deadline(timeout, _base.RULE_LOCK, blocking),
            False,
        )
        return self._result(r, None)

    @pinned
    def release_read(self) -> None:
        r = lib.rsm_rwlock_read_release(self._ptr)
        if r != lib.RSM_OK:
            raise_for(r, self, "release_read", f"process {os.getpid()} holds no read lock")

    @pinned
    def acquire_write(self, blocking: bool = True, timeout: float = -1) -> bool:
        ptr = self._ptr
        r = self._run(
            lambda w, d: lib.rsm_rwlock_write_acquire(ptr, w, d),
            _base.deadline(timeout, _base.RULE_LOCK, blocking),
            True,
        )
        return self._result(r, lambda: lib.rsm_rwlock_write_release(ptr, 0))

    @pinned
    def release_write(self) -> None:
        r = lib.rsm_rwlock_write_release(self._ptr, 1)
        if r != lib.RSM_OK:
            raise_for(r, self, "release_write")

    def _result(self, r: int, release_untold: Optional[Callable[[], object]]) -> bool:
        if r == lib.RSM_OK:
            return True
        if r == lib.RSM_TIMEOUT:
            return False
        if r == lib.RSM_OWNER_DEAD:
            who = (
                f"the previous writer (pid {self._ptr.dead_pid}) died holding it"
                if self._ptr.dead_tid
                else f"a reader (pid {self._ptr.dead_pid}) died holding a read lock, which was reclaimed"
            )
            try:
                warnings.warn(
                    OwnerDiedWarning(f"RWLock {self.name!r}: {who}; the state it protects may be inconsistent"),
                    stacklevel=3,
                )
            except BaseException:
                if release_untold is not None:
                    release_untold()
                raise
            return True
        raise_for(r, self)

    @contextlib.contextmanager
    def read(self, timeout: float = -1) -> Iterator[None]:
        """``with rw.read():`` hold a read lock for the block (TimeoutError on timeout)."""
        if not self.acquire_read(timeout=timeout):
            raise TimeoutError(f"RWLock {self.name!r}: no read lock within {timeout} s")
        try:
            yield
        finally:
            self.release_read()

    @contextlib.contextmanager
    def write(self, timeout: float = -1) -> Iterator[None]:
        """``with rw.write():`` hold the write lock for the block (TimeoutError on timeout)."""
        if not self.acquire_write(timeout=timeout):
            raise TimeoutError(f"RWLock {self.name!r}: no write lock within {timeout} s")
        try:
            yield
        finally:
            self.release_write()

    @property
    @pinned
    def recovered(self) -> Optional[OwnerDied]:
        """Set while the write lock is held by a thread that was told of a death: a dead
        writer (its pid and tid) or a dead reader (its pid, tid 0)."""
        if self._ptr.writer & lib.RSM_LOCK_OWNER_DIED and self._ptr.dead_pid:
            return OwnerDied(self._ptr.dead_pid, self._ptr.dead_tid)
        return None

    @pinned
    def statistics(self) -> RWLockStatistics:
        p = self._ptr
        tid = p.writer & lib.RSM_TID_MASK
        q = ffi.addressof(p, "wq")
        readers = _shares.holders(lib.rsm_rwlock_readers(p), lib.rsm_rwlock_nreaders(p))
        return RWLockStatistics(
            readers=lib.rsm_rwlock_reader_count(p),
            writer_tid=tid,
            writer_pid=p.writer_pid if tid else 0,
            writer_alive=(not _base.owner_is_dead(tid)) if tid else None,
            waiting_readers=lib.rsm_wq_count(q, 1 << lib.RSM_RW_KIND_READER),
            waiting_writers=lib.rsm_wq_count(q, (1 << lib.RSM_RW_KIND_WRITER) | (1 << lib.RSM_RW_KIND_DRAIN)),
            prefer=WRITER_PREFERRING if p.policy == lib.RSM_RW_WRITER_PREF else READER_PREFERRING,
            owner_died=bool(p.writer & lib.RSM_LOCK_OWNER_DIED),
            reader_pids=tuple(pid for pid, _ in readers),
            untracked_readers=p.overflow_readers,
        )
