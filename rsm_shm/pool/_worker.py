"""The worker process: take jobs from this worker's inbox ring, run them, put the
outcomes on the results ring, and keep this worker's slot of the status table current."""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time
import traceback
from itertools import starmap
from typing import Any, Callable, Optional

from .. import _proc
from .._errors import ShutDown
from .._native import lib
from ..ring import Ring
from ._table import PoolTable
from ._wire import (
    JOB_HEAD,
    JOB_MAP,
    MAP_HEAD,
    MAX_US,
    R_ERROR,
    R_ERROR_TEXT,
    R_INIT_FAILED,
    R_VALUE,
    RESULT_HEAD,
    Dumps,
    ExceptionWithTraceback,
    Loads,
    Serializer,
    dumps_pickle,
)

#: Outcomes are flushed to the results ring at the end of each batch of jobs, or sooner
#: once the oldest unsent one has waited this long (a batch of slow jobs).
FLUSH_AFTER_NS = 1_000_000
#: How often a worker checks that the pool's owner still lives.
OWNER_CHECK_S = 0.5

_BUSY = lib.RSM_WORKER_BUSY
_IDLE = lib.RSM_WORKER_IDLE


def _encode_error(exc: BaseException, dumps: Dumps, max_message: int) -> tuple[int, bytes]:
    """An exception raised by a job (or by sending its outcome) as a result payload."""
    try:
        data = dumps(ExceptionWithTraceback(exc))
        if len(data) <= max_message:
            return R_ERROR, data
        exc = ValueError(
            f"the exception's serialized form ({len(data)} bytes) exceeds the results ring's "
            f"largest message ({max_message} bytes): {exc!r:.200}"
        )
    except BaseException as e:  # noqa: BLE001 -- the serializer may raise anything
        exc = type(e)(f"cannot serialize the job's exception {exc!r:.500}: {e}") if isinstance(e, Exception) else e
        try:
            return R_ERROR, dumps(ExceptionWithTraceback(exc))
        except BaseException:  # noqa: BLE001
            pass
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return R_ERROR_TEXT, text.encode("utf-8", "replace")[:max_message]


def worker_main(
    table_name: str,
    slot: int,
    inbox_name: str,
    results_name: str,
    serializer: Optional[Serializer],
    initializer: Optional[Callable[..., object]],
    initargs: tuple[Any, ...],
    max_tasks: int,
    owner_pid: int,
    owner_start: int,
) -> None:
    # Ctrl-C belongs to the owner: it decides how its workers stop (cleanly, via the rings).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    table = PoolTable(table_name, create=False)
    inbox = Ring(inbox_name, create=False)
    results = Ring(results_name, create=False)
    me = table.slot(slot)
    dumps: Dumps
    loads: Loads
    if serializer is None:
        import pickle

        dumps, loads = dumps_pickle, pickle.loads
    else:
        dumps, loads = serializer.dumps, serializer.loads
    max_message = results.max_message
    now = time.time_ns
    pack_result = RESULT_HEAD.pack
    unpack_job = JOB_HEAD.unpack_from
    head_size = JOB_HEAD.size
    set_slot = lib.rsm_pool_worker_set

    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as e:  # noqa: BLE001 -- report anything, then leave
            text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            results.put(pack_result(0, R_INIT_FAILED, slot, 0) + text.encode("utf-8", "replace")[: max_message - 16])
            set_slot(me, lib.RSM_WORKER_RETIRED, 0, now(), 0)
            sys.exit(1)
    set_slot(me, _IDLE, 0, now(), 0)

    done = 0
    job = 0
    map_fn: Any = None  # the last map's fn, and its serialized form
    map_fn_bytes = b""
    unpack_map = MAP_HEAD.unpack_from
    map_head = MAP_HEAD.size
    out: list[bytes] = []  # outcomes not yet sent
    first_unsent = 0
    # A helper thread sends outcomes that waited FLUSH_AFTER_NS while this thread runs a
    # long job: they must not wait for it (the owner, or a map, may be waiting on them).
    # It is armed only while outcomes wait behind a running job (batching), so a lone
    # job's outcome costs no thread wake-up.  Idle, it checks every OWNER_CHECK_S that
    # the owner lives, and ends the inbox's stream if not: this thread's get then waits
    # with no timeout, the quickest way to wake.
    lock = threading.Lock()
    armed = threading.Event()

    def flush_locked() -> None:
        nonlocal out, first_unsent
        if len(out) == 1:
            results.put(out[0])
        elif out:
            results.put_many(out)
        out = []
        first_unsent = 0

    def helper() -> None:
        while True:
            if not armed.wait(OWNER_CHECK_S):
                if not _proc.process_alive(owner_pid, owner_start):
                    try:
                        inbox.shutdown()  # nobody will read our results: leave
                    except ValueError:
                        pass
                    return
                continue
            time.sleep(FLUSH_AFTER_NS / 1e9)
            with lock:
                if out and now() - first_unsent >= FLUSH_AFTER_NS:
                    try:
                        flush_locked()
                    except (ShutDown, ValueError):
                        return
                if not out:
                    armed.clear()

    threading.Thread(target=helper, name="rsm_shm pool worker helper", daemon=True).start()

    try:
        while not max_tasks or done < max_tasks:
            # One job at a time: jobs behind a long one stay in the inbox, where the owner
            # can take them back for another worker.  While jobs keep coming, outcomes are
            # sent in batches; the moment the inbox is empty, they go.
            try:
                if out:
                    try:
                        msg = inbox.get_nowait()
                    except queue.Empty:
                        with lock:
                            flush_locked()
                        continue
                    if not armed.is_set():
                        armed.set()  # outcomes wait behind this job: the helper watches them
                else:
                    msg = inbox.get()
            except ShutDown:
                break  # the pool stops (or its owner died): send what is done, leave
            job, kind = unpack_job(msg)
            t0 = now()
            # BUSY before anything of the job runs (even its unpickling): a job that
            # kills this process is the one charged.
            set_slot(me, _BUSY, job, t0, 0)
            try:
                if kind == JOB_MAP:
                    body = memoryview(msg)[head_size:]
                    n = unpack_map(body)[0]
                    if body[map_head : map_head + n] != map_fn_bytes:  # a new map
                        map_fn, map_fn_bytes = (
                            loads(body[map_head : map_head + n]),
                            bytes(body[map_head : map_head + n]),
                        )
                    value = list(map(map_fn, loads(body[map_head + n :])))  # the loop runs in C
                else:
                    fn, chunk, kwargs = loads(memoryview(msg)[head_size:])
                    value = [fn(*args, **kwargs) for args in chunk] if kwargs else list(starmap(fn, chunk))
                status = R_VALUE
                try:
                    data = dumps(value)
                    if len(data) > max_message - RESULT_HEAD.size:
                        raise ValueError(
                            f"the result's serialized form ({len(data)} bytes) exceeds the results "
                            f"ring's largest message ({max_message - RESULT_HEAD.size} bytes)"
                        )
                except BaseException as e:  # noqa: BLE001 -- ProcessPoolExecutor sends these back too
                    status, data = _encode_error(e, dumps, max_message - RESULT_HEAD.size)
            except BaseException as e:  # noqa: BLE001 -- as ProcessPoolExecutor: the future gets it
                status, data = _encode_error(e, dumps, max_message - RESULT_HEAD.size)
                del e
            t1 = now()
            done += 1
            set_slot(me, _IDLE, job, t1, 1)
            record = pack_result(job, status, slot, min((t1 - t0) // 1000, MAX_US)) + data
            with lock:
                out.append(record)
                if not first_unsent:
                    first_unsent = t0
                if t1 - first_unsent >= FLUSH_AFTER_NS:
                    flush_locked()
        with lock:
            flush_locked()
    except ShutDown:
        pass  # the pool was torn down under us, or its owner died
    set_slot(me, lib.RSM_WORKER_RETIRED, job, now(), 0)
    for h in (inbox, results):
        h.close()
    table.close()
    # Returning is a clean exit (code 0): with RETIRED in the slot, the owner tells a
    # retirement from a death.
