"""Event, Gate and Countdown: flags and counters that release every waiter at once.

The algorithms are in csrc/event.c; each wait is a slice loop in Python (Ctrl-C works).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .. import _proc
from .._errors import raise_for
from .._fast import FastEvent
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentHeader
from . import _base
from ._base import SharedObject, pinned

__all__ = ["Event", "Gate", "Countdown", "EventStatistics"]


@dataclass(frozen=True)
class EventStatistics:
    """Snapshot of an Event, Gate or Countdown."""

    kind: str  # "event", "gate" or "countdown"
    is_set: bool  # Event: set; Gate: open; Countdown: done
    count: int  # Gate: entries since opened; Countdown: remaining; Event: 0
    waiters: int  # threads blocked in wait(), in any process
    generation: int  # bumped by Gate.open(), Countdown.reset(), and an Event's set()
    # that found it clear (modulo 2**31)

    def __str__(self) -> str:
        if self.kind == "event":
            s = "set" if self.is_set else "clear"
        elif self.kind == "gate":
            s = f"{'open' if self.is_set else 'shut'}, {self.count} entered"
        else:
            s = "done" if self.is_set else f"{self.count} remaining"
        if self.waiters:
            s += f", {self.waiters} waiting"
        return s


def _body_size(header: SegmentHeader) -> int:
    return int(lib.rsm_event_size(_base.check_nslots(header)))


class _EventBase(SharedObject):
    _ptr: Any  # cffi pointer to the C struct in the segment
    _stat_kind = "event"

    def _open_event(
        self,
        name: Optional[str],
        create: Optional[bool],
        mode: int,
        word: int,
        aux: int,
        max_waiters: int,
        extra_params: Sequence[int] = (),
    ) -> None:
        nslots = _base.validate_max_waiters(max_waiters)

        def init(seg: Segment) -> None:
            lib.rsm_event_init(seg.body("rsm_event *"), word, aux, nslots)

        self._open_segment(
            name, create, mode, lib.rsm_event_size(nslots), (nslots, aux, *extra_params), init, _body_size
        )
        self._ptr = self._seg.body("rsm_event *")
        self._check_queues(ffi.addressof(self._ptr, "wq"))

    @pinned
    def _wait(
        self,
        step: Callable[[Any, int], int],
        timeout: Optional[float],
        on_slice: Optional[Callable[[Any], Optional[int]]] = None,
    ) -> bool:
        ptr = self._ptr
        r = _base.run_blocking(
            step,
            lambda w: lib.rsm_event_abandon(ptr, w),
            _base.deadline(timeout, _base.RULE_WAIT),
            queue=ffi.addressof(ptr, "wq"),
            seg=self._seg,
            on_slice=on_slice,
        )
        if r in (lib.RSM_OK, lib.RSM_TIMEOUT):
            return bool(r == lib.RSM_OK)
        raise_for(r, self)

    @property
    @pinned
    def pending(self) -> int:
        return int(self._ptr.wq.nwaiters + self._ptr.wq.noverflow)

    def _is_set(self) -> bool:
        raise NotImplementedError

    @pinned
    def statistics(self) -> EventStatistics:
        p = self._ptr
        word = p.word
        event = self._stat_kind == "event"  # its word counts its sets (csrc/event.h)
        return EventStatistics(
            kind=self._stat_kind,
            is_set=self._is_set(),
            count=0 if event else word & lib.RSM_COUNT_MASK,
            waiters=p.wq.nwaiters + p.wq.noverflow,
            generation=word >> 1 if event else p.generation,
        )


class Event(FastEvent, _EventBase):
    """A flag shared between threads and processes, like ``threading.Event``.

    ``set()`` wakes every waiter; ``wait(timeout=None) -> bool`` returns True as soon as
    the flag is set (at once if it already is) and False on timeout.  A waiter woken by
    ``set()`` returns True even if ``clear()`` follows immediately.
    """

    _kind = Kind.EVENT

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        create: Optional[bool] = None,
        mode: int = 0o600,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        self._open_event(name, create, mode, 0, 0, max_waiters)
        self._bind(int(ffi.cast("uintptr_t", self._ptr)), self._pins)

    # wait(timeout=None) -> bool, set(), clear(), is_set() come from FastEvent
    # (csrc/fast_sync.c): the check with the GIL held, then the slice loop in C.
    wait = FastEvent.wait
    set = FastEvent.set
    clear = FastEvent.clear
    is_set = FastEvent.is_set
    _is_set = FastEvent.is_set


class Gate(_EventBase):
    """A gate: shut until opened; ``wait()`` passes once it is open and counts the entry.

    ``Gate(name=None, *, create=None, auto_shut=0)``: with ``auto_shut=N`` the N-th entry
    after an ``open()`` shuts the gate again in the same atomic step (exactly N pass).
    ``shut()`` shuts it by hand; ``close()``, as on every handle, only unmaps this handle.
    ``entries`` counts entries since the gate last opened.  ``wait(timeout=None) -> bool``.
    """

    _kind = Kind.GATE
    _stat_kind = "gate"

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        auto_shut: int = 0,
        create: Optional[bool] = None,
        mode: int = 0o600,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        if not isinstance(auto_shut, int) or not 0 <= auto_shut <= lib.RSM_COUNT_MASK:
            raise ValueError(f"auto_shut must be between 0 and {lib.RSM_COUNT_MASK}, not {auto_shut!r}")
        self._open_event(name, create, mode, 0, auto_shut, max_waiters)

    @pinned
    def open(self) -> None:
        """Open the gate (resetting the entry count) and wake every waiter."""
        lib.rsm_gate_open(self._ptr)

    @pinned
    def shut(self) -> None:
        """Shut the gate; later waiters block until the next open()."""
        lib.rsm_gate_close(self._ptr)

    @pinned
    def is_open(self) -> bool:
        return bool(self._ptr.word & lib.RSM_GATE_OPEN)

    _is_set = is_open

    @property
    @pinned
    def entries(self) -> int:
        return int(self._ptr.word & lib.RSM_COUNT_MASK)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Pass through the gate: True once passed, False if it stayed shut until timeout."""
        ptr = self._ptr
        return self._wait(lambda w, d: lib.rsm_gate_enter(ptr, w, d), timeout)

    enter = wait


class Countdown(_EventBase):
    """A countdown latch: ``count_down()`` n times releases every ``wait()``.

    ``Countdown(name=None, *, count, action=None, create=None)``.  The call that takes the
    count to zero runs ``action()`` (a callable given to that process's constructor) and
    only then are the waiters released, so they see its effects.  If that process dies in
    the action, waiters release themselves within a slice (~50 ms).  ``count_down(n)``
    below zero raises ValueError; ``reset(count)`` rearms it.
    """

    _kind = Kind.COUNTDOWN
    _stat_kind = "countdown"

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        count: int = 1,
        action: Optional[Callable[[], object]] = None,
        create: Optional[bool] = None,
        mode: int = 0o600,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        if not isinstance(count, int) or not 0 <= count <= lib.RSM_COUNT_MASK:
            raise ValueError(f"Countdown count must be an int between 0 and {lib.RSM_COUNT_MASK}, not {count!r}")
        word = count if count else lib.RSM_COUNTDOWN_DONE
        self._open_event(name, create, mode, word, 0, max_waiters, (count,))
        self._action = action

    @property
    @pinned
    def count(self) -> int:
        return int(self._ptr.word & lib.RSM_COUNT_MASK)

    @pinned
    def done(self) -> bool:
        return bool(self._ptr.word & lib.RSM_COUNTDOWN_DONE)

    _is_set = done

    @pinned
    def count_down(self, n: int = 1) -> bool:
        """Subtract ``n``; returns True if this call reached zero (and ran the action)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Countdown {self.name!r}: count_down(n) needs an int n >= 1, not {n!r}")
        reached = ffi.new("int *")
        if lib.rsm_countdown_down(self._ptr, n, reached) == lib.RSM_OVERFLOW:
            raise ValueError(f"Countdown {self.name!r}: count_down({n}) exceeds the remaining count {self.count}")
        if not reached[0]:
            return False
        try:
            if self._action is not None:
                self._action()
        finally:
            lib.rsm_countdown_finish(self._ptr)
        return True

    @pinned
    def reset(self, count: int) -> None:
        if not isinstance(count, int) or not 0 <= count <= lib.RSM_COUNT_MASK:
            raise ValueError(f"Countdown count must be an int between 0 and {lib.RSM_COUNT_MASK}, not {count!r}")
        lib.rsm_countdown_reset(self._ptr, count)

    def _finisher_died(self, w: Any) -> Optional[int]:
        p = self._ptr
        if p.word == 0 and p.finisher_pid and not _proc.process_alive(p.finisher_pid):
            lib.rsm_countdown_finish(p)
        return None

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the count reached zero and the action finished; False on timeout."""
        ptr = self._ptr
        done = lib.RSM_COUNTDOWN_DONE
        return self._wait(lambda w, d: lib.rsm_event_wait(ptr, w, done, done, d), timeout, on_slice=self._finisher_died)
