"""Who reads the owner's results ring: the collector thread, or a thread waiting for an
outcome (``PoolFuture.result()``), which reads it directly.

Reading the ring directly spares the thread hop from the collector to the waiting thread
(a wake-up and a GIL hand-off per outcome): a lone job's round trip wakes the worker and
then the caller, nothing else, and a ``map`` consumer takes its chunks' outcomes itself.

One thread at a time reads the ring: it holds the reading turn (``_turn_lock``).  A
reader acts on every record it takes, whoever it is for (results of other futures,
workers' deaths, restarts), exactly as the collector does, so records are acted on in
ring order.  The collector holds the turn while no thread waits directly; a waiting
thread that finds the collector reading posts a wake record and the collector hands the
turn over.  The collector then stays off the ring while threads keep waiting directly,
and for ``LINGER_S`` after the last one, and it is called back at once ("kicked") by
whatever needs outcomes that nobody waits for: a done-callback, ``concurrent.futures.wait``
or ``as_completed``, ``done()`` polling, a named pool's client jobs, shutdown.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import CancelledError, Future

# Not the builtin: before Python 3.11 concurrent.futures.TimeoutError is a class of its own
# (what Future.result raises there); since 3.11 it is the builtin TimeoutError.
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, Callable, Optional, Union

from .._errors import ShutDown
from ..ring import Ring
from ._wire import R_WAKE, RESULT_HEAD

__all__ = ["PoolFuture", "ChunkHandle", "ReadsResults", "LINGER_S"]

#: How long the collector stays off the results ring after the last direct reader left
#: (it comes back sooner when kicked): long enough that a caller doing one round trip
#: after another keeps the ring, short enough that nothing waits long for it.
LINGER_S = 0.005
#: A Future's states before it is done (concurrent.futures' own names).
_WAITING = ("PENDING", "RUNNING")
#: The most records acted on per batch.
BATCH = 512
_WAKE_RECORD = RESULT_HEAD.pack(0, R_WAKE, 0, 0)
# Where concurrent.futures reports exceptions raised by done-callbacks.
_log = logging.getLogger("concurrent.futures")


class _KickingList(list):  # type: ignore[type-arg]
    """A Future's waiter list (``concurrent.futures.wait`` and ``as_completed`` append to
    it): a waiter there means someone waits without reading the ring, so the collector
    must read it."""

    __slots__ = ("_owner",)

    def __init__(self, owner: "ReadsResults") -> None:
        super().__init__()
        self._owner = owner

    def append(self, item: Any) -> None:
        super().append(item)
        self._owner._kick()


class PoolFuture(Future):  # type: ignore[type-arg]
    """The Future of a :class:`ProcessPool` job.

    A ``concurrent.futures.Future`` in every respect; waiting on it (``result()``,
    ``exception()``) reads the pool's results ring in the waiting thread when no other
    thread does, which is faster than being woken by the pool's collector thread.
    """

    def __init__(self, pool: "ReadsResults") -> None:
        super().__init__()
        self._pool = pool
        self._waiters = _KickingList(pool)

    def result(self, timeout: Optional[float] = None) -> Any:
        if self._state in _WAITING:
            timeout = self._pool._wait_for(self, timeout)
        return super().result(timeout)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        if self._state in _WAITING:
            timeout = self._pool._wait_for(self, timeout)
        return super().exception(timeout)

    def done(self) -> bool:
        if self._state in _WAITING:
            self._pool._kick()  # someone polls: the collector must read for them
            return False
        return True

    def _settled(self) -> bool:
        return self._state not in _WAITING

    def add_done_callback(self, fn: Callable[["Future[Any]"], object]) -> None:
        super().add_done_callback(fn)
        if self._state in _WAITING:
            self._pool._kick()

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            self._pool._wake_readers()  # a thread reading the ring for it must look again
        return cancelled

    def cancel_quietly(self) -> bool:
        """``cancel()`` without waking the readers (for a caller holding the pool's lock)."""
        return super().cancel()


_PENDING, _RUNNING, _CANCELLED, _DONE = range(4)


class ChunkHandle:
    """What ``map`` holds for each chunk instead of a Future: a result slot without the
    Future's condition variable (a quarter of the owner's work per chunk of tiny items).

    It has the Future methods the pool and ``map`` use.  Waiting reads the results ring
    directly, or waits on the pool's turn condition, which every delivery notifies.
    State changes happen under the pool's lock (set_running_or_notify_cancel, cancel)
    or by the one thread delivering outcomes.
    """

    __slots__ = ("_pool", "_state", "_value", "_exc")

    def __init__(self, pool: "ReadsResults") -> None:
        self._pool = pool
        self._state = _PENDING
        self._value: Any = None
        self._exc: Optional[BaseException] = None

    def done(self) -> bool:
        return self._state >= _CANCELLED

    _settled = done

    def set_running_or_notify_cancel(self) -> bool:
        if self._state == _CANCELLED:
            return False
        self._state = _RUNNING
        return True

    def set_result(self, value: Any) -> None:
        self._value = value
        self._state = _DONE

    def set_exception(self, exc: BaseException) -> None:
        self._exc = exc
        self._state = _DONE

    def cancel_quietly(self) -> bool:
        """Cancel if not handed out yet (caller holds the pool's lock)."""
        if self._state == _PENDING:
            self._state = _CANCELLED
        return self._state == _CANCELLED

    def cancel(self) -> bool:
        with self._pool._lock:
            return self.cancel_quietly()

    def result(self, timeout: Optional[float] = None) -> Any:
        if self._state < _CANCELLED:
            self._pool._wait_for(self, timeout)
            if self._state < _CANCELLED:
                raise FuturesTimeoutError()
        if self._state == _CANCELLED:
            raise CancelledError()
        if self._exc is not None:
            try:
                raise self._exc
            finally:
                self = None  # type: ignore[assignment]  # break the cycle, as Future does
        return self._value


Waitable = Union[PoolFuture, ChunkHandle]


class ReadsResults:
    """Mixed into ProcessPool: the reading turn, the collector's loop and direct waits.
    The pool provides ``_results``, ``_lock``, ``_unmapped``, ``_finished()``,
    ``_act_on(batch) -> finished`` (which sets ``_queued_behind``), ``_stuck_ns()`` and
    ``_teardown()``."""

    _results: Ring
    _lock: threading.Lock
    _unmapped: bool

    def _init_reading(self) -> None:
        self._turn_lock = threading.Lock()  # held by the thread reading the results ring
        self._reader: Optional[int] = None  # that thread's ident
        self._collector_ident: Optional[int] = None
        self._turn = threading.Condition(self._lock)  # direct waiters: turn released, or outcomes delivered
        self._turn_waiters = 0
        self._park = threading.Condition(self._lock)  # the collector, off the ring
        self._parked = False
        self._kicked = False
        self._direct = 0  # threads waiting directly (reading or for the turn)
        self._last_direct = 0.0
        self._queued_behind = False

    # -- provided by the pool ------------------------------------------------------------

    def _finished(self) -> bool:
        raise NotImplementedError

    def _act_on(self, batch: list[bytes]) -> bool:
        raise NotImplementedError

    def _stuck_ns(self) -> int:
        raise NotImplementedError

    def _teardown(self) -> None:
        raise NotImplementedError

    # -- waking --------------------------------------------------------------------------

    def _kick(self) -> None:
        """Bring the collector back to the ring now (outcomes are wanted that nobody
        reads).  Cheap when it is on the ring already."""
        # _kicked before _parked, as the collector sets _parked before reading _kicked:
        # one of the two sees the other (the GIL orders them), so no kick is lost.
        self._kicked = True
        if self._parked:
            with self._lock:
                self._park.notify()

    def _post_wake_locked(self) -> None:
        """Wake whoever reads the results ring (caller holds the lock)."""
        if self._unmapped:
            return
        try:
            self._results.put_nowait(_WAKE_RECORD)
        except Exception:  # noqa: BLE001 -- Full: the reader has records to look at anyway
            pass

    def _wake_readers(self) -> None:
        """A future completed (or was cancelled) outside the ring: whoever reads the ring,
        or waits for the turn, looks again."""
        if not self._direct:
            return
        with self._lock:
            self._post_wake_locked()
            if self._turn_waiters:
                self._turn.notify_all()

    def _delivered(self) -> None:
        """Outcomes were delivered: direct waiters without the turn look again."""
        if self._turn_waiters:
            with self._lock:
                self._turn.notify_all()

    # -- the collector -------------------------------------------------------------------

    def _collect(self) -> None:
        self._collector_ident = threading.get_ident()
        try:
            while True:
                with self._lock:
                    self._parked = True
                    while (
                        not self._kicked
                        and not self._unmapped
                        and (self._direct or time.monotonic() - self._last_direct < LINGER_S)
                    ):
                        self._park.wait(LINGER_S)
                    self._kicked = False
                    self._parked = False
                self._turn_lock.acquire()
                with self._lock:
                    self._reader = self._collector_ident
                try:
                    try:
                        finished = self._read(None, None)
                    except Exception:
                        raise  # (a failure of the pool itself: it is torn down below)
                    except BaseException:  # noqa: BLE001 -- a done-callback's SystemExit, say
                        finished = False  # (every outcome was delivered first: keep reading)
                        _log.exception("rsm_shm pool collector: a done-callback raised")
                    if finished:
                        self._teardown()  # with the turn: nobody else is in the ring
                        return
                finally:
                    self._release_turn()
        finally:
            self._teardown()

    def _release_turn(self) -> None:
        with self._lock:
            self._reader = None
            self._turn_lock.release()
            if self._turn_waiters:
                self._turn.notify_all()

    # -- direct waits --------------------------------------------------------------------

    def _wait_for(self, future: Waitable, timeout: Optional[float]) -> Optional[float]:
        """Wait for ``future`` by reading the results ring in this thread when it can (or
        for the turn to read it, or the outcome, whichever first).  Returns what is left
        of ``timeout``, for ``Future.result`` to wait on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.get_ident()
        if self._reader == me:
            # A callback this thread runs while reading waits on another future: read on.
            self._read(future, deadline)
            return _left(deadline)
        with self._lock:
            if self._unmapped:
                return _left(deadline)
            self._direct += 1
            asked = False
        try:
            while not future._settled():
                with self._lock:
                    if self._unmapped:
                        break
                    if not self._turn_lock.acquire(False):
                        if self._reader == self._collector_ident and not asked:
                            self._post_wake_locked()  # the collector hands the turn over
                            asked = True
                        left = _left(deadline)
                        if left is not None and left <= 0:
                            break
                        # Counted before looking at the future: the thread that settles it
                        # (without the lock) looks at the count after, so it notifies us.
                        self._turn_waiters += 1
                        try:
                            if future._settled():
                                break
                            self._turn.wait(left)
                        finally:
                            self._turn_waiters -= 1
                        continue
                    self._reader = me
                try:
                    self._read(future, deadline)
                finally:
                    self._release_turn()
                break
        finally:
            with self._lock:
                self._direct -= 1
                self._last_direct = time.monotonic()
        return _left(deadline)

    # -- reading -------------------------------------------------------------------------

    def _read(self, until: Optional[Waitable], deadline: Optional[float]) -> bool:
        """Take records from the results ring and act on them, until ``until`` is done or
        ``deadline`` passes (a direct waiter) or, for the collector (``until`` None), until
        a direct waiter wants the ring.  True when the pool's work is finished."""
        results = self._results
        while True:
            with self._lock:
                if self._unmapped:
                    return True
                finished = self._finished()
            if until is None:
                if finished:
                    return True
                if self._direct:
                    return False
            elif until._settled() or finished:
                return False
            timeout: Optional[float] = self._stuck_ns() / 2e9 if self._queued_behind else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                timeout = left if timeout is None else min(timeout, left)
            try:
                if timeout is None and until is not None:
                    # One message with the ring's leanest wait (a lone job's outcome), then
                    # whatever else is there.
                    batch = [results.get()]
                    if results.qsize():
                        try:
                            batch += results.get_many(BATCH - 1, 0)
                        except queue.Empty:
                            pass
                else:
                    batch = results.get_many(BATCH, timeout)
            except queue.Empty:
                batch = []
            except ShutDown:
                return True
            if self._act_on(batch):
                return until is None


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
