"""What travels through the pool's rings: job and result records, and remote exceptions.

A job record is ``JOB_HEAD`` (job number, kind) followed by the serialized payload; a
result record is ``RESULT_HEAD`` (job number, status, worker slot, run time in
microseconds) followed by its payload.  The results ring also carries the owner's own
control records (a worker died, wake up), so its collector thread sees every event in
one ordered stream: a worker's results always precede the record of its death.
"""

from __future__ import annotations

import concurrent.futures.process as _cf_process
import pickle
import struct
import traceback
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union

__all__ = ["RemoteTraceback", "WorkerDiedError"]

JOB_HEAD = struct.Struct("<QB7x")  # job, kind
RESULT_HEAD = struct.Struct("<QBxHI")  # job, status, slot, run time (us, saturated)

# Job kinds
JOB_CHUNK = 1  # payload: (fn, [args tuple, ...], kwargs) -> [fn(*args, **kwargs) ...]
JOB_MAP = 2  # payload: MAP_HEAD, fn serialized, [item, ...] serialized -> [fn(item) ...]
# (map over one iterable: no argument tuples; fn serialized once per map, and a worker
# deserializes it again only when it changes)
MAP_HEAD = struct.Struct("<I")  # length of the serialized fn

# Result statuses (and control records)
R_VALUE = 1  # payload: the serialized result
R_ERROR = 2  # payload: the serialized exception (with its remote traceback as __cause__)
R_ERROR_TEXT = 3  # payload: UTF-8 text; the serializer could not carry the exception
R_INIT_FAILED = 4  # the initializer raised (payload: UTF-8 traceback); the pool is broken
R_DIED = 5  # control: a worker process ended (payload: DIED_BODY)
R_WAKE = 6  # control: look at the pool's state (shutdown, submit)
R_CANCEL = 7  # to a client: the answer to its C_CANCEL (slot field: 1 cancelled, 0 not)
DIED_BODY = struct.Struct("<Iii")  # generation, pid, exit code (negative: -signal)

# A named pool's submit ring carries clients' records: CLIENT_HEAD (the client's job
# number, kind, length of the reply ring's name), the reply ring's name, then (for a job)
# the serialized (fn, chunk, kwargs), exactly as a job record's payload.
CLIENT_HEAD = struct.Struct("<QBxH4x")
C_JOB = 1  # payload: as JOB_CHUNK's
C_BYE = 2  # the client leaves: the owner forgets its reply ring
C_MAP = 3  # payload: as JOB_MAP's
C_CANCEL = 4  # the client cancels its job (CLIENT_HEAD's job number) if not handed out yet


def submit_ring_capacity(ring_capacity: int) -> int:
    """A named pool's submit ring: room for one largest job plus a client header."""
    return ring_capacity * 2


MAX_US = (1 << 32) - 1


# ProcessPoolExecutor's own class, when this Python has it, so code that recognises its
# remote tracebacks recognises ours too.
if TYPE_CHECKING:
    _RemoteTracebackBase = Exception
else:
    _RemoteTracebackBase = getattr(_cf_process, "_RemoteTraceback", Exception)


class RemoteTraceback(_RemoteTracebackBase):
    """The formatted traceback of an exception raised in a worker.

    Set as the ``__cause__`` of the exception a future raises, so the worker's stack
    appears after the local one, as ``ProcessPoolExecutor`` does (this is a subclass of
    its ``_RemoteTraceback``).
    """

    def __init__(self, tb: str) -> None:
        Exception.__init__(self, tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _rebuild(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(tb)
    return exc


class ExceptionWithTraceback:
    """Pickles an exception together with its formatted traceback (which itself cannot be
    pickled); unpickles as the exception, with a :class:`RemoteTraceback` as cause."""

    def __init__(self, exc: BaseException, tb: Optional[TracebackType] = None) -> None:
        lines = traceback.format_exception(type(exc), exc, tb if tb is not None else exc.__traceback__)
        self.exc = exc
        # Drop the traceback objects (not picklable; they would keep frames alive too).
        self.exc.__traceback__ = None
        self.tb = '\n"""\n' + "".join(lines) + '"""'

    def __reduce__(self) -> tuple[Callable[[BaseException, str], BaseException], tuple[BaseException, str]]:
        return _rebuild, (self.exc, self.tb)


class WorkerDiedError(RuntimeError):
    """A job's worker process died while running it, ``max_retries + 1`` times in a row.

    Attributes: ``job`` (the pool's job number), ``pid`` (the last worker that died on
    it), ``signal`` (the signal that killed it, a ``signal.Signals``, or None if it exited),
    ``exitcode`` (as ``multiprocessing.Process.exitcode``: negative for a signal) and
    ``attempts`` (how many times it was started).  Only this job fails; the pool replaces
    the worker and keeps serving.
    """

    def __init__(self, job: int, pid: int, exitcode: int, attempts: int) -> None:
        import signal as _signal

        sig: Union[_signal.Signals, int, None] = None
        if exitcode is not None and exitcode < 0:
            try:
                sig = _signal.Signals(-exitcode)
            except ValueError:
                sig = -exitcode
        how = (
            f"killed by {sig.name if isinstance(sig, _signal.Signals) else f'signal {sig}'}"
            if sig is not None
            else f"exited with code {exitcode}"
        )
        super().__init__(
            f"job {job}: its worker (pid {pid}) died while running it, {how}; "
            f"{attempts} attempt{'s' if attempts != 1 else ''}, no retries left"
        )
        self.job, self.pid, self.signal, self.exitcode, self.attempts = job, pid, sig, exitcode, attempts

    def __reduce__(self) -> tuple[type[WorkerDiedError], tuple[int, int, int, int]]:
        return type(self), (self.job, self.pid, self.exitcode, self.attempts)


#: A serializer's two halves (``loads`` takes bytes or a memoryview).
Dumps = Callable[[Any], bytes]
Loads = Callable[[Any], Any]


class Serializer(Protocol):
    """What ``ProcessPool(serializer=...)`` takes: anything with these two."""

    def dumps(self, obj: Any, /) -> bytes: ...

    def loads(self, data: Any, /) -> Any: ...


def map_payload(fn_bytes: bytes, items_bytes: bytes) -> bytes:
    """A JOB_MAP job's payload from its serialized fn and items."""
    return MAP_HEAD.pack(len(fn_bytes)) + fn_bytes + items_bytes


def dumps_pickle(obj: Any) -> bytes:
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
