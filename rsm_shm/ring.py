"""Shared-memory rings: ``Ring`` (byte messages) and ``Queue`` (Python objects).

A ring is a bounded queue of variable-length byte messages in one named segment, usable
by threads and by unrelated processes.  The algorithm and the shared layout (record
headers, positions, the reservation lock, crash recovery) are specified in
``csrc/ring.h``; this module holds the policy: arguments, timeouts, judging whether a
stuck peer is dead, and mapping outcomes to exceptions.

Semantics in short:

* ``put`` blocks while the ring has no room, ``get`` while it is empty; ``timeout=None``
  waits forever, ``timeout=0`` tries once, otherwise up to ``timeout`` seconds
  (CLOCK_MONOTONIC), then ``queue.Full`` / ``queue.Empty``.  A wait runs in C (one call,
  no Python frame per message) and looks around at least every ~50 ms: signal handlers
  run, so Ctrl-C interrupts it with KeyboardInterrupt and leaves the ring consistent (the
  interrupted call did not happen), and dead peers are judged.
* Delivery is exactly-once and in order: messages leave in the order their puts reserved
  space; with several consumers each message goes to exactly one of them.
* ``shutdown()`` ends the stream for every process, as ``queue.Queue.shutdown()``: puts
  fail with :class:`~rsm_shm.ShutDown` at once, gets return what is left and then raise
  ``ShutDown``; blocked callers wake up.  ``close()`` only unmaps this handle.
* Crash safety: a producer killed in the middle of a put leaves no torn message (its
  record is skipped once its death is seen, after one ~50 ms slice); a consumer killed in
  the middle of a get never handed the message to Python, so another consumer gets it.
* ``producers=1`` / ``consumers=1`` at creation select lock-free single-producer /
  single-consumer paths; the first thread that puts (gets) then holds that role until it
  exits or calls :meth:`Ring.close`.  Another live thread trying is a RuntimeError.
* Waiting costs nothing to the other side unless someone sleeps: a consumer that finds
  the ring empty first polls for ~3 us (producer on another CPU) or yields a few times
  (producer on its CPU), then sleeps on a futex; a put wakes a sleeper only if there is
  one.  Blocked producers are woken once ``min(capacity/8, 64 KiB)`` is free (one wake-up
  per many gets when producers outrun consumers); one whose message fits earlier finds
  the room at its next ~50 ms slice.
* Liveness of a stuck peer is judged by pid (records keep 22 bits of it, no start time):
  if a dead producer's pid is reused by a new live process before the check, consumers
  keep waiting for that record until the new process exits.
"""

from __future__ import annotations

import pickle
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Tuple

from . import _proc
from ._describe import plain, waitq_record
from ._errors import SegmentError, ShutDown, raise_for
from ._fast import FastRing
from ._native import ffi, lib
from .segment import Kind, Segment, SegmentHeader
from .sync import _base
from .sync._base import SharedObject, pinned

__all__ = ["Ring", "Queue", "RingStatistics", "ShutDown", "DEFAULT_CAPACITY"]

#: Default data-area size: 1 MiB.
DEFAULT_CAPACITY = 1 << 20
#: Per-thread receive buffer to start with; grown when a larger message arrives.
_INITIAL_BUFFER = 1 << 16
#: Seconds to wait before judging a role-holding thread alive a second time.
_ROLE_RECHECK = 0.05
#: How many stuck claims of dead consumers one slice looks at.
_MAX_CLAIMS = 16
#: Bytes a record takes beyond its payload (header, alignment): see csrc/ring.h.
RECORD_HEADER: int = lib.RSM_REC_HEADER
RECORD_ALIGN: int = lib.RSM_REC_ALIGN

_OK = lib.RSM_OK
_WOULDBLOCK = lib.RSM_WOULDBLOCK
_TIMEOUT = lib.RSM_TIMEOUT
_CLOSED = lib.RSM_CLOSED
_OVERFLOW = lib.RSM_OVERFLOW
_RETRY = lib.RSM_RETRY
_unpack: Callable[[Any, int], bytes] = ffi.unpack


@dataclass(frozen=True)
class RingStatistics:
    """A snapshot of a ring's shared state (what ``rsm-shm inspect`` shows)."""

    capacity: int  # data-area bytes
    max_message: int  # the largest payload that can ever be put
    used_bytes: int  # tail - head: records not yet freed, headers included
    messages: int  # put and not yet taken (approximate while others run)
    head: int  # byte positions, growing forever (see csrc/ring.h)
    read: int
    tail: int
    is_shutdown: bool
    blocked_producers: int
    blocked_consumers: int
    single_producer: bool
    single_consumer: bool
    repairs: int  # leftovers of dead processes repaired so far (see csrc/ring.h)

    @property
    def fill(self) -> float:
        """Percent of the data area in use (``used_bytes / capacity``)."""
        return 100.0 * self.used_bytes / self.capacity if self.capacity else 0.0

    def __str__(self) -> str:
        # "37% full, N->1, 12 messages, 4096/65536 bytes, 2 producers blocked, shut down"
        mode = ("1" if self.single_producer else "N") + "->" + ("1" if self.single_consumer else "N")
        s = f"{self.fill:.0f}% full, {mode}, {self.messages} messages, {self.used_bytes}/{self.capacity} bytes"
        if self.blocked_producers:
            s += f", {self.blocked_producers} producers blocked"
        if self.blocked_consumers:
            s += f", {self.blocked_consumers} consumers blocked"
        if self.repairs:
            s += f", {self.repairs} repairs"
        if self.is_shutdown:
            s += ", shut down"
        return s


def _role_holder_alive(tid: int) -> bool:
    """Whether a role-holding thread lives.  A thread that just ended may still show in
    /proc for a moment, so a live verdict is confirmed once more after a short pause."""
    if not _proc.task_alive(tid):
        return False
    time.sleep(_ROLE_RECHECK)
    return _proc.task_alive(tid)


def _status(n: int) -> int:
    """rsm_ring_get's result (a length, or minus a status) as a status."""
    return _OK if n >= 0 else -n


def _validate_timeout(timeout: Optional[float]) -> int:
    """queue.Queue's rules -> deadline (the one converter, csrc/fast_deadline.c; docs/blocking.md)."""
    return _base.deadline(timeout, _base.RULE_QUEUE)


def record_size(payload: int) -> int:
    """Bytes of the data area one message of ``payload`` bytes occupies."""
    return (RECORD_HEADER + payload + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)


def _body_size(header: SegmentHeader) -> int:
    nslots = _base.check_nslots(header, 0)
    capacity = header.params[1] if len(header.params) > 1 else 0
    if not lib.RSM_RING_MIN_CAPACITY <= capacity <= lib.RSM_RING_MAX_CAPACITY or capacity & (capacity - 1):
        raise SegmentError(f"segment {header.name!r} has an invalid ring capacity {capacity}")
    return int(lib.rsm_ring_size(capacity, nslots))


class Ring(FastRing, SharedObject):
    """A bounded multi-producer multi-consumer queue of byte messages in shared memory.

    ``Ring(name=None, *, capacity=1 MiB, producers=None, consumers=None, create=None,
    mode=0o600, max_waiters=64)``.  ``capacity`` (a power of two, >= 64) is the size of
    the data area; each message takes its length plus a 16-byte header, rounded up to 16,
    so the largest message is ``capacity - 16`` bytes (:attr:`max_message`).  Larger ones
    fail at once with ValueError.  ``producers=1`` / ``consumers=1`` select the lock-free
    single-producer / single-consumer paths (see the module docstring); the creation
    arguments only apply when this call creates the ring.  ``max_waiters`` bounds the FIFO
    wait slots per side (more waiters still work, without FIFO order).

    The ring pickles as its name.  ``shutdown()`` ends the stream for everyone;
    ``close()`` unmaps this handle only; ``unlink()`` removes the name.
    """

    _kind = Kind.RING
    _ptr: Any = None  # the rsm_ring cffi pointer; None once closed

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        capacity: int = DEFAULT_CAPACITY,
        producers: Optional[int] = None,
        consumers: Optional[int] = None,
        create: Optional[bool] = None,
        mode: int = 0o600,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        if (
            not isinstance(capacity, int)
            or capacity & (capacity - 1)
            or not (lib.RSM_RING_MIN_CAPACITY <= capacity <= lib.RSM_RING_MAX_CAPACITY)
        ):
            raise ValueError(
                f"capacity must be a power of two between {lib.RSM_RING_MIN_CAPACITY} and "
                f"{lib.RSM_RING_MAX_CAPACITY}, not {capacity!r}"
            )
        for label, n in (("producers", producers), ("consumers", consumers)):
            if n is not None and (not isinstance(n, int) or n < 1):
                raise ValueError(f"{label} must be None (any number) or a positive count, not {n!r}")
        nslots = _base.validate_max_waiters(max_waiters)
        flags = (lib.RSM_RING_SINGLE_PRODUCER if producers == 1 else 0) | (
            lib.RSM_RING_SINGLE_CONSUMER if consumers == 1 else 0
        )

        def init(seg: Segment) -> None:
            if lib.rsm_ring_init(seg.body("rsm_ring *"), capacity, flags, nslots) != _OK:
                raise ValueError("invalid ring parameters")

        self._open_segment(
            name, create, mode, lib.rsm_ring_size(capacity, nslots), (nslots, capacity, flags), init, _body_size
        )
        ptr = self._seg.body("rsm_ring *")
        if lib.rsm_ring_check(ptr, self._seg.header.body_size) != _OK or ptr.capacity != self._seg.header.params[1]:
            self._seg.close()
            raise SegmentError(f"segment {self.name!r} holds a corrupt ring control block")
        self._ptr = ptr  # dereference only while holding self._pins (see sync/_base.py)
        self._cwq = ffi.cast("rsm_waitq *", ffi.cast("char *", ptr) + ptr.cwq_offset)
        self._pwq = ffi.cast("rsm_waitq *", ffi.cast("char *", ptr) + ptr.pwq_offset)
        self._capacity: int = ptr.capacity
        self._max_message: int = lib.rsm_ring_max_message(ptr)
        self._local = threading.local()
        # put/get/put_nowait/get_nowait: one C call (csrc/fast_ring.c) that tries with the
        # GIL held and waits without it, calling _on_slice between slices; what C does not
        # handle goes to _put_slow / _get_slow.
        cls = type(self)
        self._bind(int(ffi.cast("uintptr_t", ptr)), self._pins, cls._put_slow, cls._get_slow, cls._on_slice)

    # -- properties ----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Bytes in the data area (headers included: see :func:`record_size`)."""
        return self._capacity

    @property
    def max_message(self) -> int:
        """The largest payload ``put`` accepts: ``capacity - 16``."""
        return self._max_message

    @property
    @pinned
    def is_shutdown(self) -> bool:
        """True once :meth:`shutdown` ran (in any process); as ``queue.Queue.is_shutdown``."""
        return bool(self._ptr.tail & lib.RSM_RING_TAIL_CLOSED)

    # -- put -----------------------------------------------------------------------------

    # FastRing provides put(data, timeout=None) and put_nowait(data), each one C call
    # (waits included) that falls back to _put_slow; these names document them.
    put = FastRing.put
    put_nowait = FastRing.put_nowait

    @pinned
    def _put_slow(self, data: Any, timeout: Optional[float], first: int) -> None:
        """Every put that C did not finish (``first``: its status, RETRY if it did not
        try): arguments to judge, roles, a try that meets a busy reservation lock, large
        messages, errors."""
        deadline = _validate_timeout(timeout)  # queue.Queue checks it even when there is room
        buf = data if type(data) is bytes else ffi.from_buffer(data)
        n = len(buf)
        if n > self._max_message:
            raise ValueError(
                f"a {n}-byte message can never fit in {self._describe()} (max_message is {self._max_message} bytes)"
            )
        if first == _CLOSED:
            raise_for(first, self, "put")
        if first == _WOULDBLOCK and deadline == _base.DEADLINE_TRY:
            raise_for(first, self, "put")
        ptr = self._ptr
        op = ffi.new("rsm_ring_op *")
        r = self._run(lambda w, d: lib.rsm_ring_put(ptr, w, buf, n, d, op), lib.RSM_RING_ROLE_PRODUCER, deadline, op)
        if r != _OK:
            raise_for(r, self, "put")

    @pinned
    def put_many(self, items: Iterable[Any], timeout: Optional[float] = None) -> None:
        """Append several messages in order with one C call per batch that fits.

        Blocks like :meth:`put` for whatever does not fit yet.  On timeout raises
        ``queue.Full``, on shutdown :class:`ShutDown`; either exception's ``sent`` attribute
        counts the messages that were put (a prefix of ``items``).  Raises ValueError before
        putting anything if one is too large.
        """
        deadline = _validate_timeout(timeout)  # queue.Queue's checks come first
        items = [i if type(i) is bytes else bytes(i) for i in items]
        if not items:
            return
        lens = ffi.new("uint32_t[]", [len(i) for i in items])
        biggest = max(lens)
        if biggest > self._max_message:
            raise ValueError(
                f"a {biggest}-byte message can never fit in {self._describe()} "
                f"(max_message is {self._max_message} bytes)"
            )
        data = b"".join(items)
        ptr, count = self._ptr, len(items)
        op = ffi.new("rsm_ring_op *")
        r = lib.rsm_ring_put_many(ptr, ffi.NULL, data, lens, count, 0, op)
        if (r == _TIMEOUT and deadline != _base.DEADLINE_TRY) or r == lib.RSM_NOT_OWNER:  # block, or the role
            r = self._run(
                lambda w, d: lib.rsm_ring_put_many(ptr, w, data, lens, count, d, op),
                lib.RSM_RING_ROLE_PRODUCER,
                deadline,
                op,
            )
        if r == _TIMEOUT or r == _CLOSED:
            try:
                raise_for(r, self, "put", f"{op.done} of {count} messages put")
            except (queue.Full, ShutDown) as exc:
                exc.sent = op.done  # type: ignore[union-attr]
                raise
        if r != _OK:
            raise_for(r, self, "put")

    # -- get -----------------------------------------------------------------------------

    # FastRing provides get(timeout=None) and get_nowait(), each one C call (waits
    # included) that falls back to _get_slow; these names document them.
    get = FastRing.get
    get_nowait = FastRing.get_nowait

    def _thread_state(self, need: int = 0) -> Tuple[Any, int, Any, Any]:
        """This thread's receive buffer, waiter and op (the C calls run without the GIL,
        so each thread has its own): ``(buf, size, waiter, op)``."""
        local = self._local
        st = getattr(local, "st", None)
        if st is None or st[1] < need:
            size = max(need, min(_INITIAL_BUFFER, self._max_message), 1)
            buf = ffi.new("char[]", size)
            if st is None:
                st = (buf, size, _base.new_waiter(), ffi.new("rsm_ring_op *"))
            else:
                st = (buf, size, st[2], st[3])
            local.st = st
        return st

    def _get_slow(self, timeout: Optional[float], status: int) -> bytes:
        """Every get that C did not finish (``status``: its status, RETRY if it did not
        try): arguments to judge, roles, large messages, a timeout beyond TIMEOUT_MAX."""
        with self._pins:  # ValueError once closed; keeps the mapping while C runs
            ptr = self._ptr
            buf, size, w, op = self._thread_state()
            try:  # free in 3.11 unless raised; Ctrl-C may land anywhere between C calls
                if status == _CLOSED:
                    raise_for(status, self, "get")
                deadline = _validate_timeout(timeout)
                if status == _WOULDBLOCK and deadline == _base.DEADLINE_TRY:
                    raise_for(status, self, "get")
                # the general loop below makes the attempts (and judges a too-large timeout)
                n = -lib.RSM_RETRY
                while True:
                    if n >= 0:
                        return _unpack(buf, n)
                    if n == -_OVERFLOW:
                        buf, size, w, op = self._thread_state(op.len)
                    elif n != -lib.RSM_SLICE and n != -lib.RSM_NOT_OWNER and n != -lib.RSM_RETRY:
                        raise_for(-n, self, "get")
                    b, bs = buf, size
                    r = self._run(
                        lambda w, d: _status(lib.rsm_ring_get(ptr, w, b, bs, d, op)),
                        lib.RSM_RING_ROLE_CONSUMER,
                        deadline,
                        op,
                        buf=(buf, size),
                        w=w,
                        resume=(n == -lib.RSM_SLICE),
                    )
                    if r == _OK:
                        return _unpack(b, op.len)  # op.len: set by the get or by a reclaim
                    n = -r
            except BaseException:
                lib.rsm_ring_abandon(ptr, w, lib.RSM_RING_ROLE_CONSUMER)  # idempotent; passes on a wake
                raise

    @pinned
    def get_many(self, max_items: int, timeout: Optional[float] = None) -> List[bytes]:
        """Remove and return up to ``max_items`` messages (at least one), oldest first.

        Blocks only until the first message is there (as :meth:`get`, raising
        ``queue.Empty`` on timeout and :class:`ShutDown` when shut down and drained), then
        takes whatever else is ready, up to ``max_items`` and the receive buffer's size.
        """
        if not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive int, not {max_items!r}")
        deadline = _validate_timeout(timeout)  # queue.Queue's checks come first
        ptr = self._ptr
        local = self._local
        lens = getattr(local, "lens", None)
        if lens is None or len(lens) < max_items:
            lens = local.lens = ffi.new("uint32_t[]", max_items)
        op = ffi.new("rsm_ring_op *")
        buf, size = self._thread_state()[:2]
        r = lib.rsm_ring_get_many(ptr, ffi.NULL, buf, size, lens, max_items, 0, op)
        if (r == _TIMEOUT and deadline != _base.DEADLINE_TRY) or r == lib.RSM_NOT_OWNER:  # block, or the role
            while True:
                buf, size = self._thread_state()[:2]
                r = self._run(
                    lambda w, d: lib.rsm_ring_get_many(ptr, w, buf, size, lens, max_items, d, op),
                    lib.RSM_RING_ROLE_CONSUMER,
                    deadline,
                    op,
                    buf=(buf, size),
                    many=lens,
                )
                if r != _OVERFLOW:
                    break
                self._thread_state(op.len)  # grow the buffer for the next try
        while r == _OVERFLOW:  # the non-blocking try met a message larger than the buffer
            buf, size = self._thread_state(op.len)[:2]
            r = lib.rsm_ring_get_many(ptr, ffi.NULL, buf, size, lens, max_items, 0, op)
        if r != _OK:
            raise_for(r, self, "get")
        count = op.done
        if count == 1:
            return [_unpack(buf, lens[0])]
        data = _unpack(buf, op.len)
        out = []
        off = 0
        for n in ffi.unpack(lens, count):
            out.append(data[off : off + n])
            off += n
        return out

    # -- blocking, roles and recovery ----------------------------------------------------

    def _run(
        self,
        step: Callable[[Any, int], int],
        role: int,
        deadline: int,
        op: Any,
        buf: Optional[Tuple[Any, int]] = None,
        many: Any = None,
        w: Any = None,
        resume: bool = False,
    ) -> int:
        """The common slice loop (sync._base.run_blocking) with this ring's policy: judge
        stuck peers between slices, settle single-producer/consumer roles.  ``w``: a waiter to use; ``resume``: ``w`` just
        finished a slice (judge before calling again)."""
        ptr = self._ptr
        q = self._pwq if role == lib.RSM_RING_ROLE_PRODUCER else self._cwq
        if w is None:
            w = _base.new_waiter()

        def on_slice(w: Any) -> Optional[int]:
            self._judge(op.suspect, op.suspect_pid, op.suspect_pos)
            if buf is not None and not (ptr.flags & lib.RSM_RING_SINGLE_CONSUMER):
                r = self._reclaim(op, buf)
                if r is not None:
                    lib.rsm_ring_abandon(ptr, w, role)
                    if many is not None and r == _OK:
                        many[0] = op.len
                        op.done = 1
                    return r
            return None

        def abandon(w: Any) -> None:
            lib.rsm_ring_abandon(ptr, w, role)  # passes on a wake-up we consumed

        for _ in range(3):
            stepper = step
            if resume:  # the caller's C call just ended a slice: judge before calling again
                resume = False
                first = [True]

                def slice_first(w: Any, d: int) -> int:
                    if first[0]:
                        first[0] = False
                        return int(lib.RSM_SLICE)
                    return step(w, d)

                stepper = slice_first
            r = _base.run_blocking(stepper, abandon, deadline, queue=q, on_slice=on_slice, seg=self._seg, waiter=w)
            if r != lib.RSM_NOT_OWNER:
                return r
            owner = op.suspect_pid
            if owner and not _role_holder_alive(owner):
                lib.rsm_ring_repair(ptr, lib.RSM_SUSPECT_ROLE, role, owner)
                continue
            which = "producer" if role == lib.RSM_RING_ROLE_PRODUCER else "consumer"
            raise RuntimeError(
                f"{self._describe()} is single-{which} and thread {owner} (process "
                f"{_base.pid_of(owner) or '?'}) is its {which}; create it without "
                f"{which}s=1 to share the role"
            )
        return r

    def _on_slice(self, role: int, suspect: int, pid: int, pos: int) -> Optional[bytes]:
        """Between slices of a put or get that waits in C (csrc/fast_ring.c; the waiting
        call pins the mapping): repair what a dead peer left (``suspect``, ``pid`` and
        ``pos`` from the C call's op); a get of a multi-consumer ring also takes over a
        message a dead consumer had claimed and returns it."""
        ptr = self._ptr
        self._judge(suspect, pid, pos, ptr)
        if role == lib.RSM_RING_ROLE_CONSUMER and not (ptr.flags & lib.RSM_RING_SINGLE_CONSUMER):
            buf, size, _, op = self._thread_state()
            if self._reclaim(op, (buf, size), ptr) == _OK:
                return _unpack(buf, op.len)
        return None

    def _judge(self, suspect: int, pid: int, pos: int, ptr: Any = None) -> None:
        """Between slices: if what blocks us is a dead process, repair the ring."""
        if suspect in (lib.RSM_SUSPECT_PLOCK, lib.RSM_SUSPECT_RESERVED) and pid > 0:
            if not _proc.process_alive(pid):
                lib.rsm_ring_repair(self._ptr if ptr is None else ptr, suspect, pos, pid)

    def _reclaim(self, op: Any, buf: Tuple[Any, int], ptr: Any = None) -> Optional[int]:
        """Deliver a message claimed by a consumer that died before returning it."""
        ptr = self._ptr if ptr is None else ptr
        pos = ffi.new("uint64_t[]", _MAX_CLAIMS)
        pids = ffi.new("int32_t[]", _MAX_CLAIMS)
        n = lib.rsm_ring_claims(ptr, pos, pids, _MAX_CLAIMS)
        for i in range(n):
            if pids[i] > 0 and not _proc.process_alive(pids[i]):
                b, size = buf
                r: int = lib.rsm_ring_reclaim(ptr, pos[i], pids[i], b, size, op)
                if r == _OK:
                    return r
                # OVERFLOW: the caller's buffer is too small; a later slice retries with
                # a grown one (the message stays claimed by the dead consumer until then).
                if r == _OVERFLOW:
                    self._thread_state(op.len)  # grow the buffer for the next try
        return None

    # -- state ---------------------------------------------------------------------------

    @pinned
    def qsize(self) -> int:
        """Messages put and not yet taken (a snapshot; approximate while others run)."""
        p = self._ptr
        n = p.nput - p.nget
        return n if n > 0 else 0

    @pinned
    def empty(self) -> bool:
        """True if there is nothing to get right now (a snapshot)."""
        _, read, tail = self._positions()
        return read >= tail

    @pinned
    def full(self) -> bool:
        """True if not even an empty message fits right now (a snapshot)."""
        head, _, tail = self._positions()
        return bool(tail - head + record_size(0) > self._capacity)

    def _positions(self) -> tuple[int, int, int]:
        """(head, read, tail), checked: head <= read <= tail <= head + capacity holds in any
        ring a correct writer left.  Positions move while we read them, so the check uses
        a snapshot taken while head stood still (head, read, tail, head again)."""
        p = self._ptr
        single = p.flags & lib.RSM_RING_SINGLE_CONSUMER
        for _ in range(100):
            head = p.head
            read = head if single else p.read
            tail = p.tail & ~(RECORD_ALIGN - 1)
            if p.head == head:
                break
        else:
            return head, max(read, head), max(tail, head)  # too busy to judge: report what we saw
        if not head <= read <= tail <= head + self._capacity:
            raise SegmentError(
                f"{self._describe()} is corrupt: head {head}, read {read} and tail {tail} "
                f"do not fit a {self._capacity}-byte ring"
            )
        return head, read, tail

    @pinned
    def statistics(self) -> RingStatistics:
        """A snapshot of the shared state; SegmentError if its positions are corrupt."""
        p = self._ptr
        head, read, tail = self._positions()
        return RingStatistics(
            capacity=self._capacity,
            max_message=self._max_message,
            used_bytes=tail - head,
            messages=max(p.nput - p.nget, 0),
            head=head,
            read=read,
            tail=tail,
            is_shutdown=bool(p.tail & lib.RSM_RING_TAIL_CLOSED),
            blocked_producers=self._pwq.nwaiters + self._pwq.noverflow,
            blocked_consumers=self._cwq.nwaiters + self._cwq.noverflow,
            single_producer=bool(p.flags & lib.RSM_RING_SINGLE_PRODUCER),
            single_consumer=bool(p.flags & lib.RSM_RING_SINGLE_CONSUMER),
            repairs=p.repairs,
        )

    @pinned
    def describe(self) -> dict[str, Any]:
        """A JSON-ready snapshot for ``rsm-shm inspect``: :meth:`statistics` as plain data,
        ``fill`` (percent used) and the occupied slots of the consumers' and producers'
        wait queues.  Raises SegmentError if the shared memory is corrupt."""
        nslots = self._seg.header.params[0]
        self._check_queues(self._cwq, self._pwq)
        stats = self.statistics()
        return {
            **plain(stats),
            "fill": round(stats.fill, 1),
            "consumer_queue": waitq_record(self._cwq, nslots),
            "producer_queue": waitq_record(self._pwq, nslots),
        }

    def _describe(self) -> str:
        return f"{type(self).__name__} {self.name!r}"

    # -- lifetime ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """End the stream for every process (idempotent), as ``queue.Queue.shutdown()``:
        puts raise :class:`ShutDown` from now on, gets drain what is left and then raise
        ``ShutDown``, and blocked callers wake.  The handle stays mapped; see
        :meth:`close` and :meth:`unlink`.

        Unlike ``queue.Queue.shutdown`` there is no ``immediate=True``: messages put
        before the shutdown are always delivered (a consumer that wants to discard them
        calls ``get_many`` until ``ShutDown``).
        """
        with self._pins:
            lib.rsm_ring_close(self._ptr)  # the C layer calls the end of stream "closed"

    def close(self) -> None:
        """Unmap the ring in this process (idempotent), giving up this thread's
        single-producer/consumer roles.  Other processes are unaffected: the stream
        goes on (see :meth:`shutdown`)."""
        if self._seg.closed:
            return
        with self._pins:
            lib.rsm_ring_release_roles(self._ptr)
        # Threads of this process blocked in get/put raise ValueError at their next slice;
        # the mapping goes when the last of them has left (see segment.Segment.close).
        self._seg.close()


class _ObjectRing(Ring):
    """The ring under a :class:`Queue`: a segment of kind QUEUE, so that a Queue's ring is
    never attached as a plain Ring (its messages are pickles)."""

    _kind = Kind.QUEUE

    def _open_segment(self, *args: Any, **kwargs: Any) -> SegmentHeader:
        header = super()._open_segment(*args, **kwargs)
        self._pins.label = f"Queue {self.name!r}"  # the user holds a Queue
        return header

    def _describe(self) -> str:
        return f"Queue {self.name!r}"

    def _check_open(self) -> None:
        if self._seg.closed:  # multiprocessing.Queue's wording: the user holds a Queue
            raise ValueError(f"Queue {self.name!r} is closed")


def _attach_queue(name: str, serializer: Any) -> "Queue":
    return Queue(name, create=False, serializer=pickle if serializer is None else serializer)


class Queue:
    """``multiprocessing.Queue``'s API carrying Python objects over a :class:`Ring`.

    ``Queue(name=None, maxsize=0, *, capacity=1 MiB, serializer=pickle, producers=None,
    consumers=None, create=None, mode=0o600)``.  Objects are serialized in the caller
    (``serializer.dumps`` in ``put``, ``serializer.loads`` in ``get``), so a put of an
    unpicklable object raises right there and nothing is enqueued.  The serializer is any
    object with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``.

    **Security**: pickle runs arbitrary code while loading.  Share a pickle Queue only
    between processes that trust each other completely (same user, same application).

    Bounds are in bytes (``capacity``), not items: ``maxsize`` is accepted for
    compatibility and must be 0.  ``close()`` is ``multiprocessing.Queue.close()``: this
    handle is done (it is unmapped at once; there is no feeder thread to flush) and its
    ``put``/``get`` raise ValueError; other handles and processes are unaffected.  The
    end of stream for every process is ``shutdown()``, as ``queue.Queue.shutdown()``
    (3.13): ``put`` then raises :class:`~rsm_shm.ShutDown`, ``get`` drains and then
    raises ``ShutDown``.  The queue pickles as its name (and serializer).
    """

    def __init__(
        self,
        name: Optional[str] = None,
        maxsize: int = 0,
        *,
        capacity: int = DEFAULT_CAPACITY,
        serializer: Any = pickle,
        producers: Optional[int] = None,
        consumers: Optional[int] = None,
        create: Optional[bool] = None,
        mode: int = 0o600,
    ) -> None:
        if maxsize:
            raise ValueError(
                f"rsm_shm.Queue is bounded by capacity (bytes), not maxsize: pass maxsize=0, not {maxsize!r}"
            )
        if not (callable(getattr(serializer, "dumps", None)) and callable(getattr(serializer, "loads", None))):
            raise TypeError("serializer must have dumps(obj) -> bytes and loads(bytes) -> obj")
        self._serializer = serializer
        self._dumps = serializer.dumps if serializer is not pickle else _pickle_dumps
        self._loads = serializer.loads
        self._ring = _ObjectRing(
            name, capacity=capacity, producers=producers, consumers=consumers, create=create, mode=mode
        )

    @property
    def name(self) -> str:
        return self._ring.name

    @property
    def ring(self) -> Ring:
        """The underlying ring (of kind QUEUE)."""
        return self._ring

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Serialize ``obj`` here and append it; as ``multiprocessing.Queue.put``.

        ``block=False`` (or ``timeout``) -> ``queue.Full`` when there is no room.  Raises
        whatever the serializer raises, ValueError for an object whose serialized form
        exceeds the ring's max_message, :class:`ShutDown` once shut down, ValueError once
        this handle is closed.
        """
        self._ring.put(self._dumps(obj), timeout if block else 0)

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove, deserialize and return the oldest object; as ``multiprocessing.Queue.get``.

        ``block=False`` (or ``timeout``) -> ``queue.Empty``; :class:`ShutDown` once the
        queue is shut down and drained; ValueError once this handle is closed.
        """
        return self._loads(self._ring.get(timeout if block else 0))

    def get_nowait(self) -> Any:
        return self.get(False)

    def put_many(self, objs: Iterable[Any], timeout: Optional[float] = None) -> None:
        """Serialize and append several objects in order (see :meth:`Ring.put_many`)."""
        dumps = self._dumps
        self._ring.put_many([dumps(o) for o in objs], timeout)

    def get_many(self, max_items: int, timeout: Optional[float] = None) -> List[Any]:
        """Remove and return up to ``max_items`` objects (see :meth:`Ring.get_many`)."""
        loads = self._loads
        return [loads(b) for b in self._ring.get_many(max_items, timeout)]

    def qsize(self) -> int:
        return self._ring.qsize()

    def empty(self) -> bool:
        return self._ring.empty()

    def full(self) -> bool:
        return self._ring.full()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran on this handle (never raises)."""
        return self._ring.closed

    @property
    def is_shutdown(self) -> bool:
        """True once :meth:`shutdown` ran (in any process)."""
        return self._ring.is_shutdown

    def shutdown(self) -> None:
        """End the stream for every process (see :meth:`Ring.shutdown`)."""
        self._ring.shutdown()

    def close(self) -> None:
        """As ``multiprocessing.Queue.close()``: this process puts (and gets) no more
        through this handle, which is unmapped (idempotent).  Other handles and
        processes are unaffected; see :meth:`shutdown` to end the stream for all."""
        self._ring.close()

    def join_thread(self) -> None:
        """Nothing to join: puts are synchronous (multiprocessing compatibility)."""

    def cancel_join_thread(self) -> None:
        """No feeder thread to cancel (multiprocessing compatibility)."""

    def statistics(self) -> RingStatistics:
        return self._ring.statistics()

    def describe(self) -> dict[str, Any]:
        """The ring's :meth:`Ring.describe`."""
        return self._ring.describe()

    def unlink(self) -> None:
        self._ring.unlink()

    def __reduce__(self) -> Tuple[Callable[[str, Any], Queue], Tuple[str, Any]]:
        # The pickle module itself cannot be pickled: None stands for the default.
        return (_attach_queue, (self.name, None if self._serializer is pickle else self._serializer))

    def __repr__(self) -> str:
        return repr(self._ring).replace("_ObjectRing", "Queue", 1)


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
