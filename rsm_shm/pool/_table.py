"""The pool's shared status table (layout: ``csrc/pool.h``) and its decoded snapshots.

The owner creates it, each worker writes its own slot (one C call per state change), and
anyone may read it: the owner's collector (which job a dead worker was running), the
owner's :meth:`ProcessPool.statistics`, and ``rsm-shm inspect`` in another process.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

from .. import _proc
from .._errors import SegmentError
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentHeader
from ..sync._base import SharedObject

__all__ = ["PoolState", "WorkerState", "WorkerStatus", "PoolStatistics", "PoolTable"]

_HEAD: int = ffi.sizeof("rsm_pool")
_SLOT: int = ffi.sizeof("rsm_pool_worker")


class PoolState(enum.IntEnum):
    RUNNING = lib.RSM_POOL_RUNNING
    SHUTTING_DOWN = lib.RSM_POOL_SHUTTING_DOWN
    STOPPED = lib.RSM_POOL_STOPPED
    BROKEN = lib.RSM_POOL_BROKEN


class WorkerState(enum.IntEnum):
    EMPTY = lib.RSM_WORKER_EMPTY
    STARTING = lib.RSM_WORKER_STARTING
    IDLE = lib.RSM_WORKER_IDLE
    BUSY = lib.RSM_WORKER_BUSY
    RETIRED = lib.RSM_WORKER_RETIRED
    DIED = lib.RSM_WORKER_DIED


@dataclass(frozen=True)
class WorkerStatus:
    """One worker slot as last written (a consistent snapshot unless ``torn``)."""

    slot: int
    state: WorkerState
    pid: int
    generation: int  # how many workers this slot has had
    job: Optional[int]  # the job running (BUSY), else None
    busy_for: float  # seconds on that job (0.0 unless BUSY)
    jobs_done: int
    last_exit: int  # how the slot's previous worker ended: exit code, or -signal
    torn: bool = False  # the slot kept changing (or its writer died mid-write)

    def __str__(self) -> str:
        s = f"slot {self.slot}: {self.state.name.lower()}"
        if self.pid:
            s += f" pid {self.pid}"
        if self.state == WorkerState.BUSY:
            s += f" on job {self.job} for {self.busy_for:.3f} s"
        return s + f", {self.jobs_done} done"


@dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a pool (what ``ProcessPool.statistics()`` and ``rsm-shm inspect`` show)."""

    state: PoolState
    owner_pid: int
    owner_alive: bool
    max_workers: int
    max_retries: int
    submitted: int
    completed: int
    failed: int  # jobs failed with WorkerDiedError after max_retries
    retries: int  # runs repeated because a worker died under them
    worker_deaths: int
    workers_started: int
    pending: int  # queue depth: jobs waiting for a worker
    in_flight: int  # handed to a worker, no outcome yet
    cancelled: int
    workers: tuple[WorkerStatus, ...]  # per slot

    @property
    def alive(self) -> int:
        return sum(w.state in (WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY) for w in self.workers)

    @property
    def busy(self) -> int:
        return sum(w.state == WorkerState.BUSY for w in self.workers)

    def __str__(self) -> str:
        s = (
            f"{self.state.name.lower()}, {self.alive}/{self.max_workers} workers alive, {self.busy} busy, "
            f"{self.pending} queued, {self.in_flight} running, {self.completed}/{self.submitted} done"
        )
        if self.retries or self.failed or self.worker_deaths:
            s += f", {self.worker_deaths} worker deaths, {self.retries} retries, {self.failed} failed"
        return s


def _body_size(header: SegmentHeader) -> int:
    n: int = header.params[0] if header.params else 0
    if not 1 <= n <= lib.RSM_POOL_MAX_WORKERS:
        raise SegmentError(f"segment {header.name!r} has an invalid worker count {n}")
    return _HEAD + n * _SLOT


class PoolTable(SharedObject):
    """The status table segment (kind POOL).  ``PoolTable(name, max_workers=...)`` creates
    or attaches; the pool's rings are named after it (see ``rsm_shm.pool``)."""

    _kind = Kind.POOL

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        max_workers: int = 1,
        max_retries: int = 0,
        create: Optional[bool] = None,
        mode: int = 0o600,
    ) -> None:
        if not isinstance(max_workers, int) or not 1 <= max_workers <= lib.RSM_POOL_MAX_WORKERS:
            raise ValueError(f"max_workers must be between 1 and {lib.RSM_POOL_MAX_WORKERS}, not {max_workers!r}")

        def init(seg: Segment) -> None:
            p = seg.body("rsm_pool *")
            p.state = lib.RSM_POOL_RUNNING
            p.max_workers = max_workers
            p.owner_pid = os.getpid()
            p.owner_start = _proc.start_time(os.getpid())
            p.max_retries = max_retries

        header = self._open_segment(name, create, mode, _HEAD + max_workers * _SLOT, (max_workers,), init, _body_size)
        self._ptr = self._seg.body("rsm_pool *")
        self._n: int = header.params[0]
        claimed = self._ptr.max_workers
        if claimed != self._n:
            self._seg.close()  # unmaps: read nothing through _ptr from here on
            raise SegmentError(
                f"segment {self.name!r} is corrupt: its table claims {claimed} workers, the header {self._n}"
            )
        self._tmp = ffi.new("rsm_pool_worker *")

    @property
    def max_workers(self) -> int:
        return self._n

    @property
    def ptr(self) -> Any:
        """The table's cffi pointer (the owner writes the pool fields through it)."""
        self._check_open()
        return self._ptr

    def slot(self, i: int) -> Any:
        """Worker slot ``i``'s cffi pointer (``rsm_pool_worker *``)."""
        if not 0 <= i < self._n:
            raise IndexError(f"{self!r} has no worker slot {i}")
        return self._ptr.workers + i

    def read_slot(self, i: int) -> WorkerStatus:
        self._check_open()
        out = self._tmp
        ok = lib.rsm_pool_worker_read(self.slot(i), out)
        try:
            state = WorkerState(out.state)
        except ValueError:
            state = WorkerState.EMPTY
        busy = state == WorkerState.BUSY
        return WorkerStatus(
            slot=i,
            state=state,
            pid=out.pid,
            generation=out.generation,
            job=out.job if busy else None,
            busy_for=max(time.time_ns() - out.since_ns, 0) / 1e9 if busy else 0.0,
            jobs_done=out.jobs_done,
            last_exit=out.last_exit,
            torn=not ok,
        )

    def describe(self) -> dict[str, Any]:
        """:meth:`statistics` as plain data for ``rsm-shm inspect``, with the counts of
        workers alive and busy."""
        from .._describe import plain

        st = self.statistics()
        return {**plain(st), "alive": st.alive, "busy": st.busy}

    def statistics(self) -> PoolStatistics:
        self._check_open()
        p = self._ptr
        try:
            state = PoolState(p.state)
        except ValueError:
            state = PoolState.BROKEN
        return PoolStatistics(
            state=state,
            owner_pid=p.owner_pid,
            owner_alive=_proc.process_alive(p.owner_pid, p.owner_start),
            max_workers=self._n,
            max_retries=p.max_retries,
            submitted=p.submitted,
            completed=p.completed,
            failed=p.failed,
            retries=p.retries,
            worker_deaths=p.worker_deaths,
            workers_started=p.workers_started,
            pending=p.pending,
            in_flight=p.in_flight,
            cancelled=p.cancelled,
            workers=tuple(self.read_slot(i) for i in range(self._n)),
        )
