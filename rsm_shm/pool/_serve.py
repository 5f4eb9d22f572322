"""The owner's side of a named pool's clients (``ProcessPool.attach``): taking their jobs
from the submit ring and sending their outcomes back to their reply rings."""

from __future__ import annotations

import collections
import queue
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Iterator, Optional, Tuple

from .._errors import ShutDown
from ..ring import Ring
from ._reading import Waitable
from ._wire import (
    C_BYE,
    C_CANCEL,
    C_MAP,
    CLIENT_HEAD,
    JOB_CHUNK,
    JOB_HEAD,
    JOB_MAP,
    R_CANCEL,
    R_ERROR,
    R_ERROR_TEXT,
    RESULT_HEAD,
    Dumps,
)

__all__ = ["ServesClients", "Outcome"]

if TYPE_CHECKING:
    from ._client import PoolClient


class _Job:
    __slots__ = ("id", "future", "msg", "attempts", "worker", "started", "single", "reply")

    def __init__(self, id: int, future: Optional[Waitable], msg: bytes, single: bool) -> None:
        self.id = id
        self.future = future  # None for a client's job (its future is in the client)
        self.msg = msg
        self.attempts = 0  # times a worker died while running it
        self.worker = -1  # slot it was handed to, -1 while queued in the owner
        self.started = False  # set_running_or_notify_cancel() done
        self.single = single  # a submit(): the outcome is the chunk's only value
        self.reply: Optional[tuple[str, int]] = None  # a client's job: (its reply ring's name, its job number)


#: A finished job, its result status (or -1: the payload is an exception made here) and
#: its result record (or that exception).
Outcome = Tuple[_Job, int, Any]


class ServesClients:
    """Mixed into ProcessPool: its lock, jobs, ids, table and hand-out are the pool's."""

    _lock: threading.Lock
    _inbound: Optional[Ring]
    _replies: dict[str, Ring]
    _client_jobs: dict[tuple[str, int], int]
    _ids: Iterator[int]
    _broken: Optional[str]
    _max_job: int
    _jobs: dict[int, _Job]
    _submitted: int
    _pending: collections.deque[int]
    _counts: collections.Counter[str]
    _unmapped: bool
    _tptr: Any
    _dumps: Dumps
    _intake_done: bool

    if TYPE_CHECKING:  # the pool's (declared here only for the type checker)

        @property
        def name(self) -> str: ...

        def _deliver(self, outcomes: list[Outcome]) -> None: ...

        def _kick(self) -> None: ...

        def _wake_collector(self) -> None: ...

        def _pump(self) -> None: ...

    @staticmethod
    def attach(name: str, *, serializer: Any = None) -> "PoolClient":
        """An Executor that sends jobs to the named pool ``name`` from this process (see
        :class:`PoolClient`).  The pool's owner runs them on its workers."""
        from ._client import PoolClient

        return PoolClient(name, serializer=serializer)

    def _intake(self) -> None:
        """Take the clients' jobs from the submit ring (a named pool's third thread)."""
        ring = self._inbound
        while ring is not None:  # (a named pool's: it has one)
            try:
                batch = ring.get_many(256)
            except ShutDown:
                break
            outcomes: list[Outcome] = []
            answers: list[tuple[str, bytes]] = []
            with self._lock:
                for record in batch:
                    self._on_client_record(record, outcomes, answers)
            self._deliver(outcomes)
            for reply, answer in answers:
                self._send_reply(reply, answer)
            self._kick()  # the collector reads their outcomes (nobody in this process waits on them)
        with self._lock:
            self._intake_done = True
        self._wake_collector()

    def _on_client_record(self, record: bytes, outcomes: list[Outcome], answers: list[tuple[str, bytes]]) -> None:
        """Act on a client's record (caller holds the lock); answers to send go to
        ``answers``."""
        cid, kind, nlen = CLIENT_HEAD.unpack_from(record)
        start = CLIENT_HEAD.size + nlen
        reply = bytes(record[CLIENT_HEAD.size : start]).decode("utf-8", "replace")
        if kind == C_BYE:
            ring = self._replies.pop(reply, None)
            if ring is not None:
                ring.close()
            return
        if kind == C_CANCEL:
            answers.append((reply, RESULT_HEAD.pack(cid, R_CANCEL, int(self._cancel_client_job(reply, cid)), 0)))
            return
        if reply not in self._replies:
            try:
                self._replies[reply] = Ring(reply, create=False)
            except (OSError, ValueError):
                return  # the client is gone already
        job_id = next(self._ids)
        job = _Job(job_id, None, JOB_HEAD.pack(job_id, JOB_MAP if kind == C_MAP else JOB_CHUNK) + record[start:], True)
        job.reply = (reply, cid)
        job.started = True  # a client's future is running from its submit on
        if self._broken:
            outcomes.append((job, -1, BrokenProcessPool(self._broken)))
            return
        if len(job.msg) > self._max_job:
            outcomes.append(
                (
                    job,
                    -1,
                    ValueError(
                        f"job {job_id} serializes to {len(job.msg)} bytes, more than ProcessPool {self.name!r} carries "
                        f"in one message ({self._max_job})"
                    ),
                )
            )
            return
        self._jobs[job_id] = job
        self._client_jobs[job.reply] = job_id
        self._submitted += 1
        self._pending.append(job_id)
        self._pump()

    def _cancel_client_job(self, reply: str, cid: int) -> bool:
        """Drop a client's job if no worker was handed it yet (caller holds the lock)."""
        job_id = self._client_jobs.get((reply, cid))
        job = None if job_id is None else self._jobs.get(job_id)
        if job_id is None or job is None or job.worker != -1:
            return False
        del self._jobs[job_id]
        del self._client_jobs[(reply, cid)]
        try:
            self._pending.remove(job_id)
        except ValueError:
            pass
        self._counts["cancelled"] += 1
        if not self._unmapped:
            self._tptr.cancelled += 1
        return True

    def _forward(self, job: _Job, status: int, payload: Any) -> None:
        """Send a client's outcome to its reply ring (bounded: a client that stopped reading
        loses it after a second)."""
        if job.reply is None:  # not a client's job
            return
        reply, cid = job.reply
        with self._lock:
            self._client_jobs.pop(job.reply, None)
        if status == -1:  # an exception made here
            try:
                status, data = R_ERROR, self._dumps(payload)
            except Exception:  # noqa: BLE001 -- a serializer that cannot carry exceptions
                status, data = R_ERROR_TEXT, str(payload).encode()
        else:
            data = payload[RESULT_HEAD.size :]
        if not self._send_reply(reply, RESULT_HEAD.pack(cid, status, 0, 0) + data):
            self._counts["undeliverable"] += 1

    def _send_reply(self, reply: str, record: bytes) -> bool:
        """Put ``record`` on a client's reply ring (bounded: a client that stopped reading
        loses it after a second)."""
        deadline = time.monotonic() + 1.0
        while True:
            with self._lock:
                ring = self._replies.get(reply)
                if ring is None or self._unmapped:
                    return False
                try:
                    ring.put_nowait(record)
                    return True
                except queue.Full:
                    pass
                except (ShutDown, ValueError):
                    return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def _close_intake(self) -> None:
        """No more jobs from other processes (caller holds the lock): the intake thread
        takes what is in the submit ring, then ends."""
        if self._inbound is not None and not self._unmapped:
            try:
                self._inbound.shutdown()
            except ValueError:
                pass
