"""What every primitive shares: its segment, pickling by name, deadlines, the slice loop.

Blocking calls go to C one slice (at most ~50 ms) at a time.  Between slices Python runs
signal handlers (so Ctrl-C raises KeyboardInterrupt in the waiter), applies policy (is
the owner dead?), and calls again with the same absolute CLOCK_MONOTONIC deadline, so the
remaining timeout carries over.  If anything raises between slices, the waiter leaves the
wait queue through the primitive's ``abandon`` C call, which passes on any wake-up it had
consumed: an interrupted waiter never swallows a notification.

Two rules hold for every call that touches shared memory (the C entry points in
csrc/fast_sync.c and csrc/fast_ring.c follow them too):

* it holds a pin on the segment (``with self._pins:``, or the :func:`pinned` decorator)
  for its whole duration, so a close() from another thread never unmaps under it;
* a timeout becomes a deadline only through :func:`deadline` (one converter, with the
  rules of the threading/queue method the call mirrors; docs/blocking.md).
"""

from __future__ import annotations

import enum
import functools
import time
from typing import Any, Callable, Concatenate, Optional, ParamSpec, Protocol, Sequence, Tuple, TypeVar

from .. import _proc
from .._describe import plain_record, waitq_record
from .._fast import DEADLINE_FOREVER, DEADLINE_TOO_LARGE, DEADLINE_TRY, RULE_LOCK, RULE_QUEUE, RULE_WAIT, Pins, deadline
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentError, SegmentHeader

__all__ = [
    "Policy",
    "SharedObject",
    "deadline",
    "pinned",
    "run_blocking",
    "RULE_LOCK",
    "RULE_WAIT",
    "RULE_QUEUE",
    "DEADLINE_FOREVER",
    "DEADLINE_TRY",
    "DEADLINE_TOO_LARGE",
]

#: Default number of per-waiter slots; more concurrent waiters still work, without FIFO order.
DEFAULT_MAX_WAITERS = 64
#: Every how many slices a waiter frees the slots of dead waiters.
REAP_EVERY_SLICES = 20


class Policy(str, enum.Enum):
    """Who gets a released lock or permit.

    BARGING (default): the releaser wakes the oldest waiter, but a running thread may take
    the lock first; best throughput.  FIFO: ownership is handed straight to the oldest
    live waiter and newcomers queue behind; strict fairness, one context switch per hand-off.
    LIFO: wake the newest waiter (its cache is warm); throughput over fairness.
    """

    BARGING = "barging"
    FIFO = "fifo"
    LIFO = "lifo"

    @property
    def code(self) -> int:
        code: int = {
            Policy.BARGING: lib.RSM_LOCK_BARGING,
            Policy.FIFO: lib.RSM_LOCK_FIFO,
            Policy.LIFO: lib.RSM_LOCK_LIFO,
        }[self]
        return code

    @classmethod
    def from_code(cls, code: int) -> "Policy":
        for p in cls:
            if p.code == code:
                return p
        raise SegmentError(f"unknown wake-up policy code {code}")


def too_large() -> OverflowError:
    from .._fast import TIMEOUT_MAX

    return OverflowError(f"timeout value is too large (threading.TIMEOUT_MAX is {TIMEOUT_MAX:.0f} s)")


def remaining(deadline_ns: int) -> bool:
    """Whether a deadline from :func:`deadline` still leaves time to wait."""
    return deadline_ns < 0 or (deadline_ns > 0 and time.monotonic_ns() < deadline_ns)


def new_waiter() -> Any:
    """A fresh ``rsm_waiter *`` (cffi) in no slot."""
    w = ffi.new("rsm_waiter *")
    w.slot = lib.RSM_WAITER_NONE
    return w


def run_blocking(
    step: Callable[[Any, int], int],
    abandon: Callable[[Any], None],
    deadline: int,
    queue: Any = None,
    on_slice: Optional[Callable[[Any], Optional[int]]] = None,
    seg: Optional[Segment] = None,
    waiter: Any = None,
    closed_ok: bool = False,
) -> int:
    """Call ``step(waiter, deadline)`` until it returns something other than RSM_SLICE.

    ``deadline`` comes from :func:`deadline`; DEADLINE_TOO_LARGE tries once and raises
    OverflowError only if the call would have to wait (as threading does).
    ``on_slice(waiter)`` runs between slices (policy: owner death); returning a status
    ends the loop with it.  ``queue`` (an rsm_waitq pointer) gets dead waiters reaped now
    and then.  On any exception (KeyboardInterrupt) ``abandon(waiter)`` leaves the queue.
    ``seg`` is pinned meanwhile, so close() from another thread cannot unmap under C; the
    waiter raises ValueError at its next slice instead (unless ``closed_ok``: an internal
    wait that must finish to leave shared state consistent).
    """
    w = new_waiter() if waiter is None else waiter
    if deadline == DEADLINE_TOO_LARGE:
        r = step(w, DEADLINE_TRY)
        if r == lib.RSM_TIMEOUT or r == lib.RSM_WOULDBLOCK:
            raise too_large()
        return r
    slices = 0
    # closed_ok: the caller's own pin keeps the mapping (it began before close()).
    pins = seg.pins if seg is not None and not closed_ok else None
    if pins is not None:
        pins.__enter__()
    try:
        while True:
            r = step(w, deadline)
            if r != lib.RSM_SLICE:
                return r
            slices += 1
            if pins is not None and pins.closed:
                raise ValueError(f"{pins.label} was closed while this thread waited on it")
            if queue is not None and slices % REAP_EVERY_SLICES == 0:
                lib.rsm_wq_reap(queue)
            if on_slice is not None:
                decided = on_slice(w)
                if decided is not None:
                    return decided
    except BaseException:
        abandon(w)
        raise
    finally:
        if pins is not None:
            pins.__exit__(None, None, None)


class _Pinnable(Protocol):
    _pins: Pins


_S = TypeVar("_S", bound=_Pinnable)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def pinned(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Decorator: run ``method`` holding a pin on ``self._seg`` (ValueError if closed)."""

    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._pins:
            return method(self, *args, **kwargs)

    functools.update_wrapper(wrapper, method)
    return wrapper


def owner_is_dead(tid: int) -> bool:
    """Policy for owned primitives: the owner thread no longer exists (or is a zombie)."""
    return tid != 0 and not _proc.task_alive(tid)


_T = TypeVar("_T")


def _attach(cls: Callable[..., _T], name: str) -> _T:
    return cls(name, create=False)


class SharedObject:
    """Base of every primitive: one segment, a name, close()/unlink(), pickled as its name.

    Subclasses set ``_kind`` and call ``_open_segment`` from ``__init__``.
    """

    _kind: Kind
    _seg: Segment

    def _open_segment(
        self,
        name: Optional[str],
        create: Optional[bool],
        mode: int,
        body_size: int,
        params: Sequence[int],
        init: Callable[[Segment], None],
        body_size_of: Callable[[SegmentHeader], int],
        ref_name: str = "",
        check: Optional[Callable[[SegmentHeader], None]] = None,
    ) -> SegmentHeader:
        self._seg = Segment(
            name,
            self._kind,
            body_size,
            create=create,
            mode=mode,
            params=params,
            ref_name=ref_name,
            init=init,
            check=check,
            body_size_of=body_size_of,
        )
        self._pins = self._seg.pins
        self._pins.label = f"{type(self).__name__} {self._seg.name!r}"
        return self._seg.header

    @property
    def name(self) -> str:
        """The object's name: pass it to the constructor in another process to attach."""
        return self._seg.name

    @property
    def closed(self) -> bool:
        return self._seg.closed

    def close(self) -> None:
        """Unmap the object in this process (idempotent).  Other processes are unaffected."""
        self._seg.close()

    def unlink(self) -> None:
        """Remove the name so no new process can attach (idempotent); existing handles
        keep working until closed."""
        self._seg.unlink()

    def __reduce__(self) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
        return (_attach, (type(self), self.name))

    @pinned
    def describe(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the shared state, as ``rsm-shm inspect`` shows it:
        ``statistics()`` as plain data plus, for a kind with a wait queue, its occupied
        slots (``"queue"``).  Fields may disagree slightly while other processes use the
        object.  Raises SegmentError if the shared memory is corrupt."""
        ptr = getattr(self, "_ptr", None)
        if ptr is None or not hasattr(ptr, "wq"):
            return plain_record(self.statistics())
        q = ffi.addressof(ptr, "wq")
        self._check_queues(q)  # before statistics(): RWLock's walks the queue
        stats = plain_record(self.statistics())
        return {**stats, "queue": waitq_record(q, self._seg.header.params[0])}

    def statistics(self) -> object:
        """A frozen record of the object's shared state (each kind defines its own)."""
        raise NotImplementedError

    def _check_queues(self, *queues: Any) -> None:
        """The slot count inside each wait queue must be the one the (CRC-checked) header
        sized the segment for: C walks that many slots, so a corrupt count would read past
        the mapping.  Raises SegmentError (and closes) on mismatch."""
        want = self._seg.header.params[0]
        for q in queues:
            claimed = int(q.nslots)
            if claimed != want:
                self._seg.close()
                raise SegmentError(
                    f"segment {self.name!r} is corrupt: a wait queue claims {claimed} slots, the header {want}"
                )

    def _check_open(self) -> None:
        """For methods that touch no shared memory; the others hold a pin instead."""
        if self._seg.closed:
            raise ValueError(f"{type(self).__name__} {self.name!r} is closed")

    def __repr__(self) -> str:
        if self._seg.closed:
            return f"<rsm_shm.{type(self).__name__} {self.name!r} closed>"
        try:
            stats = self.statistics()
        except Exception as e:  # a repr must never raise (closed meanwhile, corrupt)
            stats = f"unreadable: {e}"
        return f"<rsm_shm.{type(self).__name__} {self.name!r} {stats}>"


def check_nslots(header: SegmentHeader, index: int = 0) -> int:
    n = header.params[index] if len(header.params) > index else 0
    if not 1 <= n <= lib.RSM_WQ_MAX_SLOTS:
        raise SegmentError(f"segment {header.name!r} has an invalid wait-queue size {n}")
    return n


def validate_max_waiters(max_waiters: int) -> int:
    if not isinstance(max_waiters, int) or not 1 <= max_waiters <= lib.RSM_WQ_MAX_SLOTS:
        raise ValueError(f"max_waiters must be between 1 and {lib.RSM_WQ_MAX_SLOTS}, not {max_waiters!r}")
    return max_waiters


def pid_of(tid: int) -> int:
    """The process (thread group) of a thread id, 0 if unknown."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
