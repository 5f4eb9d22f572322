"""PoolClient: submit jobs to a named ProcessPool that another process owns."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Optional

from .. import _proc
from .._errors import ShutDown
from .._native import lib
from ..ring import Ring
from ._base import MapMixin, settle
from ._table import PoolTable
from ._wire import (
    C_BYE,
    C_CANCEL,
    C_JOB,
    C_MAP,
    CLIENT_HEAD,
    JOB_CHUNK,
    JOB_MAP,
    R_CANCEL,
    R_WAKE,
    RESULT_HEAD,
    dumps_pickle,
)

__all__ = ["PoolClient"]

#: How often a client waiting for outcomes checks that the pool's owner still lives.
OWNER_CHECK_S = 0.5
#: The longest ``cancel()`` waits for the owner's answer (then: not cancelled).
CANCEL_WAIT_S = 5.0


class _CancelRequest:
    """A cancel() waiting for the owner's answer."""

    __slots__ = ("_event", "cancelled")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.cancelled = False

    def answer(self, cancelled: bool) -> None:
        self.cancelled = cancelled
        self._event.set()

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)


class ClientFuture(Future):  # type: ignore[type-arg]
    """The Future of a job sent by a :class:`PoolClient`: ``cancel()`` asks the pool's
    owner (see the class)."""

    def __init__(self, client: "PoolClient", cid: int) -> None:
        super().__init__()
        self._client = client
        self._cid = cid

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        if not self._client._cancel([self._cid]):
            return False
        return self.cancel_locally()

    def cancel_locally(self) -> bool:
        """Mark it cancelled (the owner dropped the job)."""
        return super().cancel()


class PoolClient(MapMixin, Executor):
    """An Executor that runs its jobs on a named :class:`ProcessPool` owned by another
    process: ``ProcessPool.attach(name)``.

    ``submit``, ``map`` (lazy, ordered, ``chunksize``) and ``shutdown(wait)`` behave as the
    owner's.  Jobs go to the pool's submit ring; outcomes come back on a reply ring of this
    client (anonymous: removed when this process exits).  Several clients, in several
    processes, share one set of workers; jobs are handed out in arrival order.  A killed
    worker's job is retried by the owner exactly as its own.

    A future's ``cancel()`` asks the owner, and waits for its answer (a round trip
    through the owner's intake thread, at most ``CANCEL_WAIT_S``): it succeeds, as
    ``Future.cancel`` does, if no worker was handed the job yet.  Differences from the
    owner's executor: a client's future shows ``running()`` False until it is done (the
    owner does not report when it hands a job out), so ``cancel()`` is the way to know;
    ``cancel()`` called from a done-callback of this client returns False (the answer
    would come through the thread running that callback).  If the owner shuts down or
    dies, ``submit`` raises RuntimeError and outstanding futures fail with
    ``BrokenProcessPool``.  The serializer must be the pool's (pickle by default).
    """

    def __init__(self, name: str, *, serializer: Any = None) -> None:
        self._table = PoolTable(name, create=False)
        try:
            p = self._table.ptr
            self._owner = (p.owner_pid, p.owner_start)
            self._max_workers = self._table.max_workers
            self._submit_ring = Ring(f"{name}.submit", create=False)
        except BaseException:
            self._table.close()
            raise
        self._name = name
        self._dumps = dumps_pickle if serializer is None else serializer.dumps
        self._loads = __import__("pickle").loads if serializer is None else serializer.loads
        # As big as the pool's results ring: an outcome that fits there fits here.
        results = Ring(f"{name}.results", create=False)
        capacity = results.capacity
        results.close()
        self._replies = Ring(None, capacity=capacity, consumers=1, create=True)
        self._reply_name = self._replies.name.encode()
        self._lock = threading.Lock()
        # Held around every use of the submit ring by submitting threads, and by shutdown
        # while it unmaps the ring (a put in flight must not meet an unmapped ring).
        self._ring_guard = threading.Lock()
        self._futures: dict[int, tuple[ClientFuture, bool]] = {}
        self._cancels: dict[int, _CancelRequest] = {}  # answers awaited from the owner
        self._ids = itertools.count(1)
        self._shutdown = False
        self._broken: Optional[str] = None
        self._done = threading.Event()
        self._collector = threading.Thread(target=self._collect, name=f"rsm_shm pool client {name}", daemon=True)
        self._collector.start()

    @property
    def name(self) -> str:
        return self._name

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on the pool; return its Future."""
        return self._submit((fn, (args,), kwargs), JOB_CHUNK, True)

    def _submit(self, job: Any, kind: int, single: bool) -> Future[Any]:
        if self._broken:
            raise BrokenProcessPool(self._broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        cid = next(self._ids)
        future = ClientFuture(self, cid)
        try:
            record = (
                CLIENT_HEAD.pack(cid, C_MAP if kind == JOB_MAP else C_JOB, len(self._reply_name))
                + self._reply_name
                + (job if kind == JOB_MAP else self._dumps(job))
            )
        except BaseException as e:  # noqa: BLE001 -- as ProcessPoolExecutor: the future carries it
            future.set_exception(e)
            return future
        with self._lock:  # checked with the registration: the collector ends on (shutdown, none left)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._futures[cid] = (future, single)
        try:
            with self._ring_guard:
                if self._done.is_set():
                    raise RuntimeError("cannot schedule new futures after shutdown")
                self._submit_ring.put(record)
        except ShutDown:
            with self._lock:
                self._futures.pop(cid, None)
            raise RuntimeError(f"cannot schedule new futures: the pool {self._name!r} was shut down") from None
        except BaseException:
            with self._lock:
                self._futures.pop(cid, None)
            raise
        return future

    def _collect(self) -> None:
        loads = self._loads
        while True:
            try:
                batch = self._replies.get_many(256, OWNER_CHECK_S)
            except queue.Empty:
                batch = []
                if self._pool_gone():
                    self._fail_all("the pool's owner shut it down or died before answering")
            done = []
            with self._lock:
                for record in batch:
                    cid, status, answer = RESULT_HEAD.unpack_from(record)[:3]
                    if status == R_WAKE:
                        continue
                    if status == R_CANCEL:
                        request = self._cancels.get(cid)
                        if request is not None:
                            request.answer(bool(answer))
                        continue
                    entry = self._futures.pop(cid, None)
                    if entry is not None:
                        done.append((entry, status, record))
                finished = self._shutdown and not self._futures
            for (future, single), status, record in done:
                settle(future, status, memoryview(record), single, loads)
            if finished:
                return

    def _pool_gone(self) -> bool:
        try:
            state = self._table.ptr.state
        except ValueError:
            return True
        return state in (lib.RSM_POOL_STOPPED, lib.RSM_POOL_BROKEN) or not _proc.process_alive(*self._owner)

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            self._broken = self._broken or reason
            lost = list(self._futures.values())
            self._futures.clear()
            for request in self._cancels.values():
                request.answer(False)
        for future, _ in lost:
            future.set_exception(BrokenProcessPool(reason))

    def _cancel(self, cids: list[int]) -> list[int]:
        """Ask the owner to drop these jobs; the ones it dropped (it had not handed them to
        a worker), whose futures this client forgets."""
        if threading.current_thread() is self._collector or self._broken:
            return []  # the answers would come through this very thread; or nobody answers
        requests = {}
        with self._lock:
            for cid in cids:
                if cid in self._futures and cid not in self._cancels:
                    requests[cid] = self._cancels[cid] = _CancelRequest()
        try:
            with self._ring_guard:
                if self._done.is_set():
                    return []
                deadline = time.monotonic() + CANCEL_WAIT_S
                for cid in requests:
                    try:
                        self._submit_ring.put(
                            CLIENT_HEAD.pack(cid, C_CANCEL, len(self._reply_name)) + self._reply_name,
                            timeout=max(deadline - time.monotonic(), 0),
                        )
                    except (queue.Full, ShutDown, ValueError):
                        requests[cid].answer(False)  # the owner is gone or stuck: not cancelled
            for request in requests.values():
                request.wait(max(deadline - time.monotonic(), 0))
        finally:
            dropped = []
            with self._lock:
                for cid, request in requests.items():
                    del self._cancels[cid]
                    if request.cancelled:
                        self._futures.pop(cid, None)
                        dropped.append(cid)
                finished = self._shutdown and not self._futures
            if finished:
                self._wake()
        return dropped

    def _cancel_all(self, futures: Iterable[Any]) -> None:
        """Cancel several of this client's futures with one exchange with the owner."""
        mine = {f._cid: f for f in futures if isinstance(f, ClientFuture) and not f.done()}
        for cid in self._cancel(list(mine)):
            mine[cid].cancel_locally()

    def _wake(self) -> None:
        try:
            self._replies.put_nowait(RESULT_HEAD.pack(0, R_WAKE, 0, 0))  # the collector re-checks
        except (queue.Full, ShutDown, ValueError):
            pass

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop submitting; with ``wait``, return once every future of this client is done
        and its reply ring is removed.  ``cancel_futures`` first cancels the jobs the owner
        has not handed to a worker yet."""
        with self._lock:
            if self._shutdown:
                first = False
            else:
                self._shutdown = first = True
            queued = [future for future, _ in self._futures.values()] if cancel_futures else []
        if queued:
            self._cancel_all(queued)
        if first:
            self._wake()
        if not wait:
            return
        self._collector.join()
        with self._lock:
            if self._done.is_set():
                return
            self._done.set()
        with self._ring_guard:
            try:
                self._submit_ring.put_nowait(CLIENT_HEAD.pack(0, C_BYE, len(self._reply_name)) + self._reply_name)
            except (queue.Full, ShutDown, ValueError):
                pass  # the owner is gone or busy: it forgets the ring at its shutdown
            for obj in (self._submit_ring, self._table):
                obj.close()
        self._replies.close()
        self._replies.unlink()

    def __repr__(self) -> str:
        return f"<rsm_shm.pool.PoolClient of {self._name!r}{' shut down' if self._shutdown else ''}>"
