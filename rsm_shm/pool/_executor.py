"""ProcessPool: a ``concurrent.futures.Executor`` whose jobs survive their workers.

How it works (the owner is the process that created the pool):

* Each worker has its own inbox ring; the owner hands jobs out (``submit`` in the caller's
  thread, the rest by the collector thread as results come back) and remembers, for each
  worker, every job it handed that worker and has no outcome for.  One results ring
  carries every outcome back to the owner's collector thread.
* A watcher thread waits on the workers' process sentinels.  When one ends it appends a
  "died" record to the results ring, *after* every result that worker managed to put, so
  the collector sees the death only once it has all of the dead worker's results.  The
  collector then re-queues that worker's unfinished jobs at the front: the one the status
  table shows it was running is charged an attempt (and fails with WorkerDiedError once it
  has used ``max_retries`` retries); the others were never started and are not charged.
  A replacement worker is started in the same slot.
* How many jobs a worker may hold at once adapts to how long jobs take (about 2 ms of work
  queued per worker, between 2 and 512 jobs): tiny jobs go in batches, long ones are
  handed out one or two at a time so an idle worker never waits behind a busy one.  Jobs
  not yet handed out stay in the owner and can be cancelled.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import threading
import time
import weakref
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Callable, Optional

from .. import _proc
from .._errors import ShutDown
from .._native import lib
from ..ring import Ring
from ..sync._base import SharedObject
from ._base import JobSpec, MapMixin, settle
from ._reading import ChunkHandle, PoolFuture, ReadsResults, Waitable
from ._serve import Outcome, ServesClients, _Job
from ._table import PoolStatistics, PoolTable, WorkerState
from ._wire import (
    DIED_BODY,
    JOB_CHUNK,
    JOB_HEAD,
    JOB_MAP,
    R_DIED,
    R_ERROR,
    R_ERROR_TEXT,
    R_INIT_FAILED,
    R_VALUE,
    RESULT_HEAD,
    WorkerDiedError,
    dumps_pickle,
    submit_ring_capacity,
)
from ._worker import worker_main

__all__ = ["ProcessPool"]

#: Work each worker should have queued, in microseconds of measured run time.
TARGET_QUEUED_US = 2000
MIN_CREDIT = 2
MAX_CREDIT = 512
#: A worker whose job has run this long (or 3x the average job, if more) is not handed
#: more jobs, and the jobs queued behind it are taken back and handed to others.
STUCK_NS = 5_000_000
#: Consecutive workers dying before they finish starting that break the pool.
MAX_STARTUP_FAILURES = 3
#: Seconds a stopping worker gets to leave before it is terminated, then killed.
STOP_GRACE_S = 5.0
DEFAULT_RING_CAPACITY = 1 << 20

_live_pools: "weakref.WeakSet[ProcessPool]" = weakref.WeakSet()
_exit_registered = False


def _at_interpreter_exit() -> None:
    # As concurrent.futures does: finish what was submitted before the interpreter goes.
    for pool in list(_live_pools):
        try:
            pool.shutdown(wait=True)
        except BaseException:  # noqa: BLE001 -- a second Ctrl-C: leave the rest to atexit
            pool._terminate(kill=True)


def _register_exit_hook() -> None:
    global _exit_registered
    if _exit_registered:
        return
    _exit_registered = True
    try:
        threading._register_atexit(_at_interpreter_exit)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        atexit.register(_at_interpreter_exit)


def _load(c: list[Any]) -> int:
    return c[0]  # type: ignore[no-any-return]


def _job_id(job: _Job) -> int:
    return job.id


class _Worker:
    __slots__ = ("slot", "generation", "process", "inbox", "assigned", "quota", "reported", "status")

    def __init__(self, slot: int, generation: int, process: BaseProcess, inbox: Ring, quota: int, status: Any) -> None:
        self.slot = slot
        self.status = status  # its slot of the table (cffi pointer; read under the lock)
        self.generation = generation
        self.process = process
        self.inbox = inbox
        self.assigned: dict[int, None] = {}  # job ids handed out, in order, without an outcome
        self.quota = quota  # jobs it may still be handed (max_tasks_per_child)
        self.reported = False  # the watcher reported its end


class ProcessPool(ServesClients, ReadsResults, MapMixin, Executor):
    """A pool of worker processes fed through shared-memory rings; no job is lost when a
    worker dies.

    ``ProcessPool(max_workers=None, name=None, *, mp_context=None, initializer=None,
    initargs=(), max_tasks_per_child=None, max_retries=1, serializer=None,
    ring_capacity=1 MiB, mode=0o600)``

    The ``concurrent.futures.Executor`` contract: ``submit``, ``map``, ``shutdown(wait,
    cancel_futures)``, a context manager; arguments as ``ProcessPoolExecutor``'s.  Where it
    differs from ``ProcessPoolExecutor``:

    * A worker that dies (SIGKILL, segfault, OOM killer, ``os._exit``) does not break the
      pool.  The job it was running runs again on another worker, up to ``max_retries``
      times (at-least-once execution: a job may run more than once, its future completes
      once); then its future fails with :class:`WorkerDiedError` naming the job, the pid and
      the signal.  Every other job completes and the worker is replaced.
    * Workers start with ``forkserver`` by default, never ``fork`` (the owner has threads):
      a ``fork`` ``mp_context`` is a ValueError.
    * ``map`` reads its iterables lazily, keeping a bounded window of chunks in flight
      (``buffersize`` chunks, as Python 3.14's ``Executor.map``; default a few per worker),
      so a long or endless iterable is fine.  An exception raised by the iterables
      surfaces while iterating the results, not from the ``map`` call.
    * Jobs and outcomes are serialized with ``serializer`` (``dumps``/``loads``; pickle by
      default).  **Security**: pickle runs code while loading; use a pool only between
      processes that trust each other.  One serialized job or outcome must fit in a ring
      (``ring_capacity`` - 32 bytes); a larger job fails its future with ValueError, a
      larger outcome comes back as a ValueError.
    * A future is cancellable until its job is handed to a worker.  A worker is handed
      more than the job it runs only once jobs are known to be short (about 2 ms of work
      queued per worker), so most queued jobs stay cancellable.
    * Futures are :class:`PoolFuture`: waiting on one (``result()``, ``exception()``)
      reads the results ring in the waiting thread when no other thread does, so
      done-callbacks run in whichever thread read the outcome (a waiting thread, or the
      pool's collector thread), where ``ProcessPoolExecutor`` runs them in its own thread.
      A done-callback raising KeyboardInterrupt or SystemExit does so in that thread
      once every outcome read is delivered (the collector logs it and reads on).
    * ``initializer`` raising breaks the pool (``BrokenProcessPool``), as in
      ``ProcessPoolExecutor``; so do workers that keep dying before they finish starting.
    * ``name`` makes the pool's shared memory named (``rsm-shm inspect NAME`` shows it from
      any process); by default it is anonymous.  Either way :meth:`shutdown` removes it, and
      Ctrl-C inside ``with ProcessPool() as pool:`` stops the workers and removes it too.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        name: Optional[str] = None,
        *,
        mp_context: Optional[BaseContext] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: Optional[int] = None,
        max_retries: int = 1,
        serializer: Any = None,
        ring_capacity: int = DEFAULT_RING_CAPACITY,
        mode: int = 0o600,
    ) -> None:
        if max_workers is None:
            max_workers = len(os.sched_getaffinity(0)) or os.cpu_count() or 1
        elif not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError(f"max_workers must be an int or None, not {max_workers!r}")
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if mp_context is None:
            mp_context = mp.get_context("forkserver")
        if mp_context.get_start_method() == "fork":
            raise ValueError(
                "ProcessPool does not start workers with 'fork' (its own threads would be copied "
                "mid-flight): pass a 'spawn' or 'forkserver' mp_context"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative int, not {max_retries!r}")
        if serializer is not None and not (
            callable(getattr(serializer, "dumps", None)) and callable(getattr(serializer, "loads", None))
        ):
            raise TypeError("serializer must have dumps(obj) -> bytes and loads(bytes) -> obj")
        self._max_workers = max_workers
        self._ctx: Any = mp_context  # (typeshed's BaseContext does not declare Process)
        self._initializer, self._initargs = initializer, tuple(initargs)
        self._max_tasks = max_tasks_per_child or 0
        self._max_retries = max_retries
        self._serializer = serializer
        self._dumps = dumps_pickle if serializer is None else serializer.dumps
        self._loads = __import__("pickle").loads if serializer is None else serializer.loads
        self._ring_capacity = ring_capacity
        self._mode = mode
        self._name = name

        self._lock = threading.Lock()
        self._init_reading()
        self._jobs: dict[int, _Job] = {}
        self._pending: collections.deque[int] = collections.deque()
        self._ids = itertools.count(1)
        self._workers: list[Optional[_Worker]] = [None] * max_workers
        # Moving average of a job's run time; it starts optimistic (tiny jobs, big
        # batches): a long job is noticed after STUCK_NS and the jobs behind it taken back.
        self._run_us = 0.0
        self._measured = False  # an outcome came back: _run_us means something
        self._credit = MAX_CREDIT
        self._restart: list[int] = []  # slots whose worker ended, to start again after the pump
        self._startup_failures = 0
        self._shutting_down = False
        self._broken: Optional[str] = None
        self._torn_down = threading.Event()
        # Set (under the lock) when the rings and the table are unmapped: every use of them
        # outside the collector happens under the lock and checks it first, because a
        # ring's fast path reads its mapping without pinning it.
        self._unmapped = False
        self._counts: collections.Counter[str] = collections.Counter()
        self._submitted = 0

        self._table = PoolTable(
            name, max_workers=max_workers, max_retries=max_retries, create=True if name is not None else None, mode=mode
        )
        self._tptr = self._table.ptr  # raw: used under the lock, never after _unmapped
        self._made: list[SharedObject] = [self._table]
        # A named pool takes jobs from other processes too (ProcessPool.attach).
        self._inbound: Optional[Ring] = None
        self._intake_done = name is None
        self._replies: dict[str, Ring] = {}
        self._client_jobs: dict[tuple[str, int], int] = {}  # (reply ring, client's number) -> job
        try:
            # Several consumers: the collector, and threads waiting for an outcome, which
            # read it themselves (one at a time: see _reading.py).
            self._results = Ring(
                self._child_name("results"), capacity=max(4 * ring_capacity, 1 << 22), create=True, mode=mode
            )
            self._made.append(self._results)
            self._max_job = ring_capacity - 16  # an inbox's max_message
            self._owner = (os.getpid(), _proc.start_time(os.getpid()))
            self._wake_r, self._wake_w = os.pipe()
            self._watch_stop = False
            if name is not None:
                self._inbound = Ring(
                    self._child_name("submit"),
                    capacity=submit_ring_capacity(ring_capacity),
                    consumers=1,
                    create=True,
                    mode=mode,
                )
                self._made.append(self._inbound)
            for slot in range(max_workers):
                self._start_worker(slot)
        except BaseException:
            self._terminate(kill=True)
            raise
        self._collector = threading.Thread(
            target=self._collect, name=f"rsm_shm pool collector {self.name}", daemon=True
        )
        self._watcher = threading.Thread(target=self._watch, name=f"rsm_shm pool watcher {self.name}", daemon=True)
        self._collector.start()
        self._watcher.start()
        self._intake_thread = None
        if self._inbound is not None:
            self._intake_thread = threading.Thread(
                target=self._intake, name=f"rsm_shm pool intake {self.name}", daemon=True
            )
            self._intake_thread.start()
        _live_pools.add(self)
        _register_exit_hook()

    # -- names ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The status table's name (``rsm-shm inspect`` it); the rings are named after it."""
        return self._table.name

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def _child_name(self, label: str) -> Optional[str]:
        return None if self._name is None else f"{self._name}.{label}"

    # -- workers -------------------------------------------------------------------------

    def _start_worker(self, slot: int) -> None:
        old = self._workers[slot]
        generation = old.generation + 1 if old is not None else 1
        # Several consumers: the worker, and the owner taking back jobs queued behind a long one.
        inbox = Ring(
            self._child_name(f"w{slot}.{generation}"), capacity=self._ring_capacity, create=True, mode=self._mode
        )
        w = self._table.slot(slot)
        if w.seq & 1:  # the previous worker was killed inside a slot update: even it up
            w.seq += 1
        lib.rsm_pool_worker_set(w, lib.RSM_WORKER_STARTING, 0, time.time_ns(), 0)
        w.generation = generation
        w.started_ns = time.time_ns()
        w.jobs_done = 0
        w.pid = 0
        process = self._ctx.Process(
            target=worker_main,
            name=f"rsm_shm pool {self.name} worker {slot}",
            daemon=True,
            args=(
                self._table.name,
                slot,
                inbox.name,
                self._results.name,
                self._serializer,
                self._initializer,
                self._initargs,
                self._max_tasks,
                *self._owner,
            ),
        )
        try:
            process.start()
        except BaseException:
            inbox.close()
            inbox.unlink()
            raise
        w.pid = process.pid
        self._workers[slot] = _Worker(slot, generation, process, inbox, self._max_tasks or -1, w)
        self._table.ptr.workers_started += 1
        os.write(self._wake_w, b"w")  # the watcher picks up the new sentinel

    def _watch(self) -> None:
        """Turn each worker's end into a DIED record on the results ring."""
        wait = multiprocessing.connection.wait
        while True:
            with self._lock:
                if self._watch_stop:
                    return
                procs: dict[int, _Worker] = {
                    w.process.sentinel: w for w in self._workers if w is not None and not w.reported
                }
            ready = wait([self._wake_r, *procs])
            for s in ready:
                if s == self._wake_r:
                    os.read(self._wake_r, 4096)
                    continue
                if not isinstance(s, int):  # (sentinels are ints; wait() returns what it was given)
                    continue
                w = procs[s]
                w.process.join()  # already ended: reaps it and sets exitcode
                w.reported = True
                record = RESULT_HEAD.pack(0, R_DIED, w.slot, 0) + DIED_BODY.pack(
                    w.generation, w.process.pid, w.process.exitcode
                )
                while True:
                    with self._lock:
                        if self._unmapped or self._watch_stop:
                            return
                        try:
                            self._results.put_nowait(record)
                            break
                        except queue.Full:
                            pass  # the collector is behind: try again without the lock
                        except (ShutDown, ValueError):
                            return
                    time.sleep(0.001)

    # -- submitting ----------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; return its Future (as ``Executor.submit``)."""
        # (_submit_many for one job, without its loops: a lone job's round trip pays for
        # every line here)
        if self._broken:
            raise BrokenProcessPool(self._broken)
        if self._shutting_down:
            raise RuntimeError("cannot schedule new futures after shutdown")
        job_id = next(self._ids)  # one C call: atomic under the GIL
        future = PoolFuture(self)
        try:
            msg = JOB_HEAD.pack(job_id, JOB_CHUNK) + self._dumps((fn, (args,), kwargs))
            if len(msg) > self._max_job:
                raise ValueError(
                    f"job {job_id} serializes to {len(msg)} bytes, more than ProcessPool "
                    f"{self.name!r} carries in one message ({self._max_job}); raise ring_capacity"
                )
        except BaseException as e:  # noqa: BLE001 -- as ProcessPoolExecutor: the future carries it
            future.set_exception(e)
            return future
        entry = _Job(job_id, future, msg, True)
        with self._lock:
            if self._broken:  # broke while we serialized
                raise BrokenProcessPool(self._broken)
            if self._shutting_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._jobs[job_id] = entry
            self._submitted += 1
            self._pending.append(job_id)
            self._pump()
            self._publish_queue()  # so that rsm-shm inspect sees it at once
        return future

    def _submit(self, job: Any, kind: int, single: bool) -> Future[Any]:
        return self._submit_many([(kind, job)], single)[0]  # type: ignore[return-value]

    def _submit_many(self, jobs: list[JobSpec], single: bool = False, chunks: bool = False) -> list[Waitable]:
        """Queue several jobs (``(kind, job)``: see ``_wire``) with one hand-out; their
        futures, in order (``map`` submits its chunks in groups, with ``chunks``: light
        :class:`ChunkHandle` instead of Futures)."""
        if self._broken:
            raise BrokenProcessPool(self._broken)
        if self._shutting_down:
            raise RuntimeError("cannot schedule new futures after shutdown")
        futures: list[Waitable] = []
        entries: list[_Job] = []
        make = ChunkHandle if chunks else PoolFuture
        dumps, pack, ids, max_job = self._dumps, JOB_HEAD.pack, self._ids, self._max_job
        for kind, job in jobs:
            job_id = next(ids)  # one C call: atomic under the GIL
            future = make(self)
            futures.append(future)
            try:
                msg = pack(job_id, kind) + (job if kind == JOB_MAP else dumps(job))
                if len(msg) > max_job:
                    raise ValueError(
                        f"job {job_id} serializes to {len(msg)} bytes, more than ProcessPool "
                        f"{self.name!r} carries in one message ({max_job}); raise ring_capacity"
                    )
            except BaseException as e:  # noqa: BLE001 -- as ProcessPoolExecutor: the future carries it
                future.set_exception(e)
                continue
            entries.append(_Job(job_id, future, msg, single))
        if not entries:
            return futures
        with self._lock:
            if self._broken:  # broke while we serialized
                raise BrokenProcessPool(self._broken)
            if self._shutting_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            registry = self._jobs
            for entry in entries:
                registry[entry.id] = entry
            self._submitted += len(entries)
            self._pending.extend(entry.id for entry in entries)
            self._pump()
            self._publish_queue()  # so that rsm-shm inspect sees it at once
        return futures

    def _room(self) -> list[list[Any]]:
        """``[load, worker, room]`` for each worker that may be handed jobs now (caller
        holds the lock): ``load`` orders them (jobs held, a starting worker counting one
        more), ``room`` is how many more it may hold."""
        credit = self._credit
        stuck_before = 0
        # Until one job came back, how long jobs take is unknown: one job per worker, the
        # rest stay queued here (cancellable) rather than behind a job that may run long.
        queue_behind = self._measured
        out = []
        for w in self._workers:
            if w is None or w.reported or w.quota == 0:
                continue
            n = len(w.assigned)
            if n >= credit or (n and not queue_behind):
                continue
            slot = w.status
            state = slot.state
            if n and state == lib.RSM_WORKER_BUSY:  # not behind a long job
                if not stuck_before:
                    stuck_before = time.time_ns() - self._stuck_ns()
                if slot.since_ns < stuck_before:
                    continue
            room = (credit if queue_behind else 1) - n
            if w.quota > 0:
                room = min(room, w.quota)
            # at equal load, a worker that is up goes first
            out.append([n + (state == lib.RSM_WORKER_STARTING), w, room])
        return out

    def _pump(self) -> None:
        """Hand out queued jobs, in order, each to the least loaded worker with room, with
        one ring write per worker (caller holds the lock)."""
        pending, registry = self._pending, self._jobs
        if not pending:
            return
        cands = self._room()
        if not cands:
            return
        given: dict[int, list[_Job]] = {}
        while pending and cands:
            job = registry.get(pending[0])
            if job is None:  # cancelled by shutdown(cancel_futures=True)
                pending.popleft()
                continue
            c = min(cands, key=_load)
            if not job.started and job.future is not None:
                if not job.future.set_running_or_notify_cancel():
                    pending.popleft()
                    del registry[job.id]
                    self._counts["cancelled"] += 1
                    self._tptr.cancelled += 1
                    continue
                job.started = True
            pending.popleft()
            given.setdefault(id(c[1]), []).append(job)
            c[0] += 1
            c[2] -= 1
            if c[2] <= 0:
                cands.remove(c)
        by_id = {id(w): w for w in self._workers if w is not None}
        back: list[_Job] = []
        for key, batch in given.items():
            w = by_id[key]
            sent = len(batch)
            try:
                if sent == 1:
                    w.inbox.put_nowait(batch[0].msg)
                else:
                    w.inbox.put_many([j.msg for j in batch], 0)
            except Exception as e:  # noqa: BLE001 -- Full (bytes, not count) or the ring went away
                sent = getattr(e, "sent", 0)
                back.extend(batch[sent:])
            for j in batch[:sent]:
                w.assigned[j.id] = None
                j.worker = w.slot
            if w.quota > 0:
                w.quota -= sent
            if len(w.assigned) > 1:
                self._queued_behind = True  # readers look at the clock (a job may run long)
        if back:  # they go first again, in their order
            back.sort(key=_job_id)
            pending.extendleft(j.id for j in reversed(back))

    def _stuck_ns(self) -> int:
        return max(STUCK_NS, int(3000 * self._run_us))

    def _take_back(self) -> None:
        """Take back the jobs queued behind a job that runs long (caller holds the lock)."""
        stuck_before = time.time_ns() - self._stuck_ns()
        back = []
        for w in self._workers:
            if w is None or w.reported or len(w.assigned) < 2:
                continue
            slot = self._table.slot(w.slot)
            if slot.state != lib.RSM_WORKER_BUSY or slot.since_ns >= stuck_before:
                continue
            try:
                msgs = w.inbox.get_many(len(w.assigned), 0)
            except Exception:  # noqa: BLE001 -- Empty: the worker took them all meanwhile
                continue
            for m in msgs:
                job_id = JOB_HEAD.unpack_from(m)[0]
                w.assigned.pop(job_id, None)
                if w.quota >= 0:
                    w.quota += 1
                job = self._jobs.get(job_id)
                if job is not None:
                    job.worker = -1
                    back.append(job_id)
        if back:
            self._counts["taken_back"] += len(back)
            self._pending.extendleft(reversed(back))

    # -- the collector -------------------------------------------------------------------

    def _finished(self) -> bool:
        """Every job has its outcome and no more can come (caller holds the lock)."""
        return self._shutting_down and not self._jobs and self._intake_done

    def _act_on(self, batch: list[bytes]) -> bool:
        """Act on records taken from the results ring (by the collector or a direct
        waiter, holding the reading turn).  True when the pool's work is finished."""
        outcomes: list[Outcome] = []
        try:
            with self._lock:
                for record in batch:
                    self._on_record(record, outcomes)
                # With jobs waiting, feed the workers first (throughput); otherwise
                # complete the futures first (a lone job's round trip).
                feed_first = bool(self._pending or self._restart)
                if feed_first:
                    finished = self._after_batch(outcomes)
            if not feed_first:
                done, outcomes = outcomes, []
                self._deliver(done)
                with self._lock:
                    finished = self._after_batch(outcomes)
        finally:
            # Even when interrupted (a KeyboardInterrupt in the reading thread): outcomes
            # taken off the ring and not delivered would be lost for good.
            self._deliver(outcomes)
        return finished

    def _after_batch(self, outcomes: list[Outcome]) -> bool:
        """Take back, hand out, restart, publish (caller holds the lock).  Notes whether
        jobs wait behind others; returns whether the pool's work is finished."""
        if not self._broken:
            if self._queued_behind:
                self._take_back()
            if self._pending:
                self._pump()
            if self._restart:
                self._start_replacements(outcomes)
                self._pump()
        self._publish()
        queued = False
        for w in self._workers:
            if w is not None and len(w.assigned) > 1:
                queued = True
                break
        self._queued_behind = queued
        return self._finished()

    def _deliver(self, outcomes: list[Outcome]) -> None:
        """Complete the futures (or answer the clients) of finished jobs, outside the lock:
        a future's callbacks may submit more."""
        if not outcomes:
            return
        loads = self._loads
        raised: Optional[BaseException] = None
        for job, status, payload in outcomes:
            try:
                if job.future is not None:
                    settle(job.future, status, payload, job.single, loads)
                else:
                    self._forward(job, status, payload)
            except BaseException as e:  # noqa: BLE001 -- a callback's KeyboardInterrupt: deliver the rest first
                raised = raised or e
        self._delivered()
        if raised is not None:
            raise raised

    def _on_record(self, record: bytes, outcomes: list[Outcome]) -> None:
        job_id, status, slot, run_us = RESULT_HEAD.unpack_from(record)
        if status in (R_VALUE, R_ERROR, R_ERROR_TEXT):
            job = self._jobs.pop(job_id, None)
            w = self._workers[slot]
            if w is not None:
                w.assigned.pop(job_id, None)
            if job is None:
                return  # failed already (the pool broke)
            self._run_us += (run_us - self._run_us) * 0.25
            self._measured = True
            self._credit = max(MIN_CREDIT, min(MAX_CREDIT, int(TARGET_QUEUED_US / max(self._run_us, 1.0))))
            self._counts["completed"] += 1
            outcomes.append((job, status, memoryview(record)))
        elif status == R_DIED:
            generation, pid, exitcode = DIED_BODY.unpack_from(record, RESULT_HEAD.size)
            w = self._workers[slot]
            if w is not None and w.generation == generation:
                self._on_worker_end(w, pid, exitcode, outcomes)
        elif status == R_INIT_FAILED:
            text = bytes(memoryview(record)[RESULT_HEAD.size :]).decode("utf-8", "replace")
            self._break(f"a worker's initializer raised; the pool is not usable anymore:\n{text}", outcomes)

    def _on_worker_end(self, w: _Worker, pid: int, exitcode: int, outcomes: list[Outcome]) -> None:
        seen = self._table.read_slot(w.slot)
        retired = exitcode == 0 and seen.state == WorkerState.RETIRED
        requeue = []
        for job_id in w.assigned:
            job = self._jobs.get(job_id)
            if job is None:
                continue
            job.worker = -1
            if not retired and seen.state == WorkerState.BUSY and seen.job == job_id:
                job.attempts += 1
                if job.attempts > self._max_retries:
                    del self._jobs[job_id]
                    self._counts["failed"] += 1
                    outcomes.append((job, -1, WorkerDiedError(job_id, pid, exitcode, job.attempts)))
                    continue
                self._counts["retries"] += 1
            requeue.append(job_id)
        w.assigned.clear()
        self._pending.extendleft(reversed(requeue))  # they go first, in their order
        lib.rsm_pool_worker_set(
            self._table.slot(w.slot),
            lib.RSM_WORKER_RETIRED if retired else lib.RSM_WORKER_DIED,
            seen.job or 0,
            time.time_ns(),
            0,
        )
        self._table.slot(w.slot).last_exit = exitcode
        w.inbox.close()
        w.inbox.unlink()
        if not retired:
            self._counts["worker_deaths"] += 1
            if seen.state == WorkerState.STARTING:
                self._startup_failures += 1
                if self._startup_failures >= MAX_STARTUP_FAILURES:
                    self._break(
                        f"{self._startup_failures} workers in a row died while starting "
                        f"(the last, pid {pid}, with exit code {exitcode})",
                        outcomes,
                    )
                    return
            else:
                self._startup_failures = 0
        if self._broken or (self._shutting_down and not self._jobs):
            return
        # Started after the re-queued jobs went to the live workers (the collector's pump):
        # starting a process takes milliseconds, the re-queued job should not wait for it.
        self._restart.append(w.slot)

    def _start_replacements(self, outcomes: list[Outcome]) -> None:
        while self._restart and not self._broken:
            slot = self._restart.pop()
            try:
                self._start_worker(slot)
            except Exception as e:  # noqa: BLE001 -- cannot start processes any more
                self._break(f"cannot start a replacement worker: {e!r}", outcomes)

    def _break(self, reason: str, outcomes: list[Outcome]) -> None:
        """The pool cannot run jobs any more: fail every job (caller holds the lock)."""
        if self._broken or self._unmapped:
            return
        self._broken = reason
        for job in self._jobs.values():
            if not job.started and job.future is not None:
                if not job.future.set_running_or_notify_cancel():
                    continue
            outcomes.append((job, -1, BrokenProcessPool(reason)))
        self._jobs.clear()
        self._pending.clear()
        for w in self._workers:
            if w is not None:
                w.assigned.clear()
        self._table.ptr.state = lib.RSM_POOL_BROKEN
        self._shutting_down = True
        self._close_intake()

    def _publish_queue(self) -> None:
        """Write the queue counters to the table (caller holds the lock; not torn down:
        the table is unmapped only after shutdown, which refuses new jobs)."""
        p = self._tptr
        p.submitted = self._submitted
        pending = len(self._pending)
        p.pending = pending
        p.in_flight = len(self._jobs) - pending

    def _publish(self) -> None:
        self._publish_queue()
        p = self._tptr
        c = self._counts
        p.completed, p.failed, p.retries, p.worker_deaths = (
            c["completed"],
            c["failed"],
            c["retries"],
            c["worker_deaths"],
        )

    # -- shutting down -------------------------------------------------------------------

    def _wake_collector(self) -> None:
        """Bring the collector to the results ring and have whoever reads it look again."""
        with self._lock:
            self._post_wake_locked()
        self._kick()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting jobs; free the workers and the shared memory once every job
        submitted so far has its outcome (as ``Executor.shutdown``).

        ``cancel_futures=True`` first cancels the jobs not yet handed to a worker.
        ``wait=False`` returns at once (the collector finishes the work in the background).
        Ctrl-C while waiting terminates the workers (see :meth:`terminate_workers`).
        """
        with self._lock:
            if cancel_futures:
                self._cancel_pending()
            self._close_intake()
            if not self._shutting_down:
                self._shutting_down = True
                if not self._unmapped:
                    self._table.ptr.state = lib.RSM_POOL_SHUTTING_DOWN
        self._wake_collector()
        if wait and threading.get_ident() not in (self._collector_ident, self._reader):
            # (From a future's callback, which runs on the thread reading the results ring,
            # waiting would deadlock: the collector finishes the shutdown itself once that
            # callback returns.)
            try:
                self._torn_down.wait()
            except BaseException:
                self._terminate(kill=False)
                raise

    def _cancel_pending(self) -> None:
        for job_id in self._pending:
            job = self._jobs.get(job_id)
            if job is not None and not job.started and job.future is not None:
                del self._jobs[job_id]
                job.future.cancel_quietly()  # (we hold the lock; shutdown wakes the readers)
                self._counts["cancelled"] += 1
                if not self._unmapped:
                    self._table.ptr.cancelled += 1
        self._pending = collections.deque(j for j in self._pending if j in self._jobs)

    def terminate_workers(self) -> None:
        """Cancel the queued jobs and stop every worker now with SIGTERM (as Python 3.14's
        ``ProcessPoolExecutor.terminate_workers``); running jobs fail with
        ``BrokenProcessPool``.  Frees the shared memory.  The pool is shut down."""
        self._terminate(kill=False)

    def kill_workers(self) -> None:
        """As :meth:`terminate_workers`, with SIGKILL."""
        self._terminate(kill=True)

    def _terminate(self, kill: bool) -> None:
        outcomes: list[Outcome] = []
        if self._torn_down.is_set():
            return
        lock_held = self._lock.acquire(timeout=5.0)
        try:
            if not self._unmapped:
                self._cancel_pending()
                self._break("the pool's workers were terminated", outcomes)
                self._watch_stop = True
            for w in getattr(self, "_workers", ()):
                if w is not None and w.process.exitcode is None:
                    try:
                        w.process.kill() if kill else w.process.terminate()
                    except Exception:  # noqa: BLE001 -- not started, or gone
                        pass
        finally:
            if lock_held:
                self._lock.release()
        self._deliver(outcomes)
        if hasattr(self, "_collector") and self._collector.is_alive():
            self._wake_collector()
            self._torn_down.wait(STOP_GRACE_S + 5.0)
        else:
            self._teardown()

    def _teardown(self) -> None:
        """Stop the watcher and the workers, then free every segment (runs once)."""
        with self._lock:
            if self._torn_down.is_set():
                return
            self._watch_stop = True
            workers = [w for w in getattr(self, "_workers", ()) if w is not None]
        if hasattr(self, "_wake_w"):
            try:
                os.write(self._wake_w, b"s")
            except OSError:
                pass
        watcher = getattr(self, "_watcher", None)
        if watcher is not None and watcher.is_alive() and watcher is not threading.current_thread():
            watcher.join(STOP_GRACE_S)
        for w in workers:
            try:
                w.inbox.shutdown()
            except ValueError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        for w in workers:
            p = w.process
            if p.pid is None:
                continue
            p.join(max(deadline - time.monotonic(), 0))
            if p.exitcode is None:
                p.terminate()
                p.join(1.0)
            if p.exitcode is None:
                p.kill()
                p.join(1.0)
        intake = getattr(self, "_intake_thread", None)
        intake_alive = False
        if intake is not None and intake is not threading.current_thread():
            with self._lock:
                self._close_intake()
            intake.join(STOP_GRACE_S)
            intake_alive = intake.is_alive()
        with self._lock:
            self._unmapped = True
            for ring in getattr(self, "_replies", {}).values():
                ring.close()
            for w in workers:
                lib.rsm_pool_worker_set(self._table.slot(w.slot), lib.RSM_WORKER_RETIRED, 0, time.time_ns(), 0)
            self._table.ptr.state = lib.RSM_POOL_BROKEN if self._broken else lib.RSM_POOL_STOPPED
            for w in workers:
                w.inbox.close()
                w.inbox.unlink()
            for obj in reversed(getattr(self, "_made", [])):
                if not (intake_alive and obj is self._inbound):  # never unmap under a reader
                    obj.close()
                obj.unlink()
            for fd in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        _live_pools.discard(self)
        self._torn_down.set()

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc_val: Optional[BaseException], exc_tb: Optional[TracebackType]
    ) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            # Ctrl-C (or SystemExit) in the with-block: stop now rather than finish the queue.
            self._terminate(kill=False)
        else:
            self.shutdown(wait=True)

    # -- visibility ----------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool: queue depth, workers (alive, busy, on which job since
        when), retries and failures (see :class:`PoolStatistics`)."""
        with self._lock:
            if self._unmapped:
                raise ValueError(f"ProcessPool {self.name!r} is shut down")
            self._publish()  # the collector publishes after each batch; be exact here
            return self._table.statistics()

    def __repr__(self) -> str:
        name = self._table.name
        try:
            return f"<rsm_shm.ProcessPool {name!r} {self.statistics()}>"
        except ValueError:
            return f"<rsm_shm.ProcessPool {name!r} {'broken' if self._broken else 'shut down'}>"
        except Exception as e:  # noqa: BLE001 -- a repr never raises
            return f"<rsm_shm.ProcessPool {name!r} unreadable: {e}>"
