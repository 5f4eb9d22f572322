"""The timer service: post a command (or drain) to an automaton after a delay.

One :class:`TimerService` is one thread holding a heap of deadlines; any number of
automata share it (every process has a lazily started default one, ``default_timer()``,
which handlers reach through ``current().after(...)``).  Deadlines are CLOCK_MONOTONIC;
the thread sleeps on a condition variable until the earliest one, so a timer fires within
the scheduling latency of one thread wake-up (tens of microseconds on an idle machine; see
tools/bench_fsm.py for measured lateness).  A timer fires in the process that scheduled it,
but its target can be an automaton hosted anywhere: firing is a post() by name.

A timer whose post fails (the target drained or died meanwhile, or its inbox is full) is
not retried: the failure is counted in ``statistics()`` and passed to ``on_error`` (by
default logged as a warning on the ``rsm_shm.fsm`` logger).  Posting from the timer thread
never blocks: a full inbox is a failure, so one slow automaton cannot delay the others.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .errors import AutomatonShutDown

if TYPE_CHECKING:
    from .automaton import Automaton

__all__ = ["TimerService", "TimerHandle", "TimerStatistics", "default_timer", "stop_default_timer"]

log = logging.getLogger("rsm_shm.fsm")

_PENDING, _FIRED, _CANCELLED = "pending", "fired", "cancelled"
#: The heap is rebuilt without cancelled entries once there are more than this many and
#: they are the majority.
COMPACT_MIN = 64


class TimerHandle:
    """One scheduled timer: ``cancel()`` it, or read ``deadline`` (time.monotonic seconds,
    the next one for a periodic timer), ``state`` ("pending", "fired", "cancelled"; a
    periodic timer stays pending until cancelled) and ``fired`` (how many times)."""

    __slots__ = ("id", "deadline_ns", "interval_ns", "state", "fired", "_service", "_action", "_target", "_payload")

    def __init__(
        self,
        service: "TimerService",
        id: int,
        deadline_ns: int,
        action: str,
        target: Any,
        payload: Any,
        interval_ns: int = 0,
    ) -> None:
        self.id = id
        self.deadline_ns = deadline_ns
        self.interval_ns = interval_ns
        self.state = _PENDING
        self.fired = 0
        self._service = service
        self._action = action
        self._target = target
        self._payload = payload

    @property
    def deadline(self) -> float:
        return self.deadline_ns / 1e9

    def cancel(self) -> bool:
        """Cancel it; True if it had not fired yet (it never will), False otherwise."""
        return self._service.cancel(self)

    def __lt__(self, other: "TimerHandle") -> bool:  # heap order: deadline, then schedule order
        return (self.deadline_ns, self.id) < (other.deadline_ns, other.id)

    def __repr__(self) -> str:
        return f"<TimerHandle {self.id} {self._action} {self.state} at {self.deadline:.6f}>"


@dataclass(frozen=True)
class TimerStatistics:
    pending: int  # timers waiting for their deadline
    fired: int  # timers that fired (each tick of a periodic timer counts)
    cancelled: int  # cancelled before firing, or by stop()
    failed: int  # fired, but the post (or the callable) raised (see on_error)
    max_lateness: float  # seconds, the worst lateness seen when firing


class TimerService:
    """A timer thread shared by any number of automata.

    ``schedule(delay, target, payload)`` posts ``payload`` to ``target`` (an Automaton or
    its name) ``delay`` seconds from now; ``schedule_drain(delay, target)`` drains it;
    ``schedule_every(interval, target, payload)`` posts it periodically (ticks);
    ``call_later(delay, fn)`` runs ``fn()`` on the timer thread (keep it short).  All return
    a TimerHandle.  ``stop()`` stops the thread; pending timers are cancelled.
    """

    def __init__(
        self, name: str = "rsm_shm timer", on_error: Optional[Callable[[TimerHandle, BaseException], None]] = None
    ) -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[TimerHandle] = []
        self._ids = itertools.count(1)
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self._on_error = on_error
        self._handles: dict[str, Automaton] = {}
        self._fired = self._cancelled = self._failed = 0
        self._dead_in_heap = 0  # cancelled entries still in the heap
        self._max_late_ns = 0

    # -- scheduling ----------------------------------------------------------------------

    def _add(self, delay: float, action: str, target: Any, payload: Any, interval: float = 0.0) -> TimerHandle:
        if not isinstance(delay, (int, float)) or delay != delay or delay < 0:
            raise ValueError(f"timer delay must be a non-negative number of seconds, not {delay!r}")
        deadline = time.monotonic_ns() + int(delay * 1e9)
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"{self._name} is stopped")
            h = TimerHandle(self, next(self._ids), deadline, action, target, payload, int(interval * 1e9))
            heapq.heappush(self._heap, h)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if self._heap[0] is h:
                self._cond.notify()  # a new earliest deadline: the thread must re-arm
        return h

    def schedule(self, delay: float, target: Any, payload: Union[bytes, bytearray, memoryview]) -> TimerHandle:
        """Post ``payload`` (bytes) to ``target`` (Automaton or name) after ``delay`` seconds."""
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"a timer's command must be bytes, not {type(payload).__name__}")
        return self._add(delay, "post", _target_name(target), bytes(payload))

    def schedule_every(
        self, interval: float, target: Any, payload: Union[bytes, bytearray, memoryview], first: Optional[float] = None
    ) -> TimerHandle:
        """Post ``payload`` to ``target`` every ``interval`` seconds (the first time after
        ``first``, default ``interval``) until cancelled -- a tick.  Deadlines do not drift
        (each is the previous one plus ``interval``); ticks missed while the timer thread
        was held up are skipped, not bunched.  The timer cancels itself when its target
        stops accepting commands (drained, dead or removed)."""
        if not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f"a periodic timer needs a positive interval, not {interval!r}")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"a timer's command must be bytes, not {type(payload).__name__}")
        return self._add(interval if first is None else first, "post", _target_name(target), bytes(payload), interval)

    def schedule_drain(self, delay: float, target: Any) -> TimerHandle:
        """drain() ``target`` (Automaton or name) after ``delay`` seconds."""
        return self._add(delay, "drain", _target_name(target), None)

    def call_later(self, delay: float, fn: Callable[[], Any]) -> TimerHandle:
        """Run ``fn()`` on the timer thread after ``delay`` seconds (it must not block)."""
        if not callable(fn):
            raise TypeError("call_later needs a callable")
        return self._add(delay, "call", fn, None)

    def cancel(self, handle: TimerHandle) -> bool:
        """Cancel a pending timer; True if it was pending (it will not fire)."""
        with self._cond:
            if handle.state != _PENDING:
                return False
            handle.state = _CANCELLED
            self._cancelled += 1
            # Left in the heap (removal is O(n)); the thread skips it when it comes up.  When
            # most of the heap is dead entries (timeouts re-armed over and over), rebuild it.
            self._dead_in_heap += 1
            if self._dead_in_heap > COMPACT_MIN and self._dead_in_heap * 2 > len(self._heap):
                self._heap = [h for h in self._heap if h.state == _PENDING]
                heapq.heapify(self._heap)
                self._dead_in_heap = 0
            return True

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while True:
                    if self._stopped:
                        return
                    heap = self._heap
                    while heap and heap[0].state != _PENDING:
                        heapq.heappop(heap)
                        self._dead_in_heap -= 1
                    if not heap:
                        cond.wait()
                        continue
                    wait_ns = heap[0].deadline_ns - time.monotonic_ns()
                    if wait_ns > 0:
                        cond.wait(wait_ns / 1e9)
                        continue
                    h = heapq.heappop(heap)
                    h.fired += 1
                    self._fired += 1
                    late = -wait_ns
                    if late > self._max_late_ns:
                        self._max_late_ns = late
                    if h.interval_ns:
                        # Periodic: re-arm before firing (a cancel() from here on sticks).
                        # The next deadline after now on the grid deadline + k * interval:
                        # no drift, and ticks missed while we were held up are skipped.
                        h.deadline_ns += (late // h.interval_ns + 1) * h.interval_ns
                        heapq.heappush(heap, h)
                    else:
                        h.state = _FIRED
                    break
            self._fire(h)  # outside the lock: a post may take a moment

    def _resolve(self, name: str) -> Automaton:
        # Always this thread's own handle, opened by name (schedule() keeps names only): a
        # handle passed in belongs to another thread (a host closes its handle when it
        # ends), and using a handle while its owner unmaps it would touch unmapped memory.
        from .automaton import Automaton

        a = self._handles.get(name)
        if a is None or a.closed:
            a = self._handles[name] = Automaton(name, create=False)
        return a

    def _fire(self, h: TimerHandle) -> None:
        from .automaton import _replaced

        try:
            if h._action == "call":
                h._target()
            elif h._action == "drain":
                self._resolve(h._target).drain()
            else:
                a = self._resolve(h._target)
                try:
                    a.post_nowait(h._payload)
                except AutomatonShutDown:
                    fresh = _replaced(a)  # removed and created again under the same name?
                    if fresh is None:
                        raise
                    a.close()
                    self._handles[h._target] = fresh
                    fresh.post_nowait(h._payload)
        except Exception as e:
            with self._cond:
                self._failed += 1
            if h.interval_ns and isinstance(e, (AutomatonShutDown, FileNotFoundError)):
                self.cancel(h)  # its target is gone for good: stop ticking
            if self._on_error is not None:
                try:
                    self._on_error(h, e)
                except Exception:
                    log.exception("%s: on_error callback raised", self._name)
            else:
                log.warning(
                    "%s: timer %d (%s to %r) failed: %s",
                    self._name,
                    h.id,
                    h._action,
                    getattr(h._target, "name", h._target),
                    e,
                )

    # -- introspection and lifetime ------------------------------------------------------

    def statistics(self) -> TimerStatistics:
        with self._cond:
            pending = sum(1 for h in self._heap if h.state == _PENDING)
            return TimerStatistics(
                pending=pending,
                fired=self._fired,
                cancelled=self._cancelled,
                failed=self._failed,
                max_lateness=self._max_late_ns / 1e9,
            )

    def stop(self, timeout: Optional[float] = 5.0) -> None:
        """Stop the thread (idempotent); pending timers are cancelled and never fire."""
        with self._cond:
            self._stopped = True
            for h in self._heap:
                if h.state == _PENDING:
                    h.state = _CANCELLED
                    self._cancelled += 1
            self._heap.clear()
            self._dead_in_heap = 0
            self._cond.notify_all()
            t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        for a in self._handles.values():
            a.close()
        self._handles.clear()

    def __enter__(self) -> "TimerService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<rsm_shm.fsm.TimerService {self._name!r} {self.statistics()}>"


def _target_name(target: Any) -> str:
    """An Automaton or a name -> the (validated) name; timers keep names, not handles."""
    from ..segment import validate_name

    return validate_name(getattr(target, "name", target))


_default: Optional[TimerService] = None
_default_lock = threading.Lock()


def default_timer() -> TimerService:
    """This process's shared timer service (started on first use, rebuilt after fork)."""
    global _default
    t = _default
    if t is None:
        with _default_lock:
            if _default is None:
                _default = TimerService("rsm_shm default timer")
            t = _default
    return t


def stop_default_timer() -> None:
    """Stop this process's shared timer service, if it was started, and forget it (the next
    default_timer() starts a new one).  For code that must be single-threaded again, e.g.
    before a fork; pending timers of the old service are dropped with it."""
    global _default
    with _default_lock:
        service, _default = _default, None
    if service is not None:
        service.stop()


def _reset_after_fork() -> None:
    global _default, _default_lock
    # The timer thread does not exist in a fork child, and its lock may be held.
    _default = None
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
