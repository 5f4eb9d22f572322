"""What the pool's owner and its clients share: settling a future from a result record,
and a lazy, ordered ``map`` over ``_submit``."""

from __future__ import annotations

import collections
import itertools
import time
from concurrent.futures import Future
from typing import Any, Callable, Generator, Iterable, Iterator, Optional, Protocol, Tuple, TypeVar, cast

from ._wire import JOB_CHUNK, JOB_MAP, R_ERROR, R_ERROR_TEXT, R_VALUE, RESULT_HEAD, Dumps, Loads, map_payload

__all__ = ["settle", "MapMixin", "MapResults", "Settleable", "JobSpec"]

T = TypeVar("T")


class Settleable(Protocol):
    """A Future, or anything completed like one (``ChunkHandle``)."""

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


#: A job as ``map`` hands it to ``_submit_many``: its JOB_* kind and the object to
#: serialize (for JOB_MAP: the payload, serialized already).
JobSpec = Tuple[int, Any]


def settle(future: Settleable, status: int, payload: Any, single: bool, loads: Loads) -> None:
    """Complete ``future`` from a result record (``payload``: the whole record) or, for
    status -1, from an exception object made by the owner (WorkerDiedError, ...)."""
    if status == R_VALUE:
        try:
            value = loads(payload[RESULT_HEAD.size :])
        except BaseException as e:  # noqa: BLE001 -- an outcome that cannot be rebuilt here
            future.set_exception(e)
            return
        future.set_result(value[0] if single else value)
    elif status == R_ERROR:
        try:
            exc = loads(payload[RESULT_HEAD.size :])
        except BaseException as e:  # noqa: BLE001
            exc = e
        future.set_exception(exc)
    elif status == R_ERROR_TEXT:
        future.set_exception(RuntimeError(bytes(payload[RESULT_HEAD.size :]).decode("utf-8", "replace")))
    else:
        future.set_exception(payload)


class MapMixin:
    """``map`` for an executor with ``_submit(job, kind, single) -> Future`` (``job``: the
    object serialized into the job record, or a JOB_MAP payload, serialized already;
    ``kind`` its JOB_* kind) whose map futures resolve to lists, ``_dumps`` and
    ``_max_workers``."""

    _max_workers: int
    _dumps: Dumps

    def _submit(self, job: Any, kind: int, single: bool) -> Future[Any]:
        raise NotImplementedError

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
        buffersize: Optional[int] = None,
    ) -> Iterator[T]:
        """``fn`` over the iterables' items, results in order (as ``Executor.map``).

        ``chunksize`` items travel (and fail) together as one job.  The iterables are read
        lazily: at most ``buffersize`` chunks (default ``max(4 * max_workers, min(1024,
        65536 // chunksize))``) are submitted ahead of the result being waited for.  ``timeout``
        counts from this call, as in ``Executor.map``; when it expires, iterating raises
        ``concurrent.futures.TimeoutError`` (the builtin ``TimeoutError`` since Python 3.11).
        If a job raises, iterating re-raises it at that point and the jobs still queued are
        cancelled.
        """
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and (not isinstance(buffersize, int) or buffersize < 1):
            raise ValueError("buffersize must be None or > 0.")
        # Enough chunks ahead that the workers never wait for the consumer (up to 65536
        # items, at most 1024 futures), still a bounded read of the input.
        window = buffersize or max(4 * self._max_workers, min(1024, 65536 // chunksize))
        end = None if timeout is None else time.monotonic() + timeout
        islice = itertools.islice
        fn_bytes = None
        if len(iterables) == 1:
            try:
                fn_bytes = self._dumps(fn)  # once per map
            except Exception:  # noqa: BLE001 -- the general path below lets each chunk's outcome carry it
                pass
        if fn_bytes is not None:
            # One iterable: a chunk is the list of its items (no argument tuples to build,
            # pickle and unpack: a third of the cost of a chunk of tiny items).
            items = iter(iterables[0])
            dumps, fn_once = self._dumps, fn_bytes

            def next_job() -> Optional[JobSpec]:
                chunk = list(islice(items, chunksize))
                return (JOB_MAP, map_payload(fn_once, dumps(chunk))) if chunk else None
        else:
            args = zip(*iterables)

            def next_job() -> Optional[JobSpec]:
                chunk = list(islice(args, chunksize))
                return (JOB_CHUNK, (fn, chunk, {})) if chunk else None

        # Submitted in groups (one hand-out for several chunks), an eighth of the window;
        # the first fill at once, as Executor.map does, the first group small so the
        # workers start while the rest is serialized.
        group = max(1, window // 8)
        fs: collections.deque[Future[Any]] = collections.deque()
        jobs: list[JobSpec] = []
        size = min(group, self._max_workers)
        for _ in range(window):
            job = next_job()
            if job is None:
                break
            jobs.append(job)
            if len(jobs) >= size:
                fs.extend(self._submit_many(jobs, False, True))
                jobs, size = [], group
        if jobs:
            fs.extend(self._submit_many(jobs, False, True))
        current: list[Iterator[Any]] = [iter(())]
        chunks = self._chunks_in_order(fs, next_job, end, group, current)
        results = cast("MapResults[T]", MapResults.from_iterable(chunks))
        results._chunks, results._current, results._queued, results._cancel_all = chunks, current, fs, self._cancel_all
        return results

    def _submit_many(self, jobs: list[JobSpec], single: bool = False, chunks: bool = False) -> list[Any]:
        """Several ``_submit``; ``chunks``: the caller needs only ``result(timeout)`` and
        ``cancel()`` of what is returned (a lighter handle than a Future will do)."""
        return [self._submit(job, kind, single) for kind, job in jobs]

    def _chunks_in_order(
        self,
        fs: "collections.deque[Future[Any]]",
        next_job: Callable[[], Optional[JobSpec]],
        end: Optional[float],
        group: int,
        current: list[Iterator[Any]],
    ) -> Generator[Iterator[Any], None, None]:
        submit_many = self._submit_many
        owed = 0
        try:
            while fs:
                f = fs.popleft()
                values = f.result() if end is None else f.result(end - time.monotonic())
                del f
                owed += 1
                if owed >= group or not fs:
                    jobs = []
                    for _ in range(owed):
                        job = next_job()
                        if job is None:
                            break
                        jobs.append(job)
                    owed = 0
                    if jobs:
                        fs.extend(submit_many(jobs, False, True))
                current[0] = it = iter(values)
                del values
                yield it
        finally:
            self._cancel_all(fs)

    def _cancel_all(self, futures: Iterable[Any]) -> None:
        """Cancel what can be (``map`` ends early: the queued chunks are not needed)."""
        for f in futures:
            f.cancel()


class MapResults(itertools.chain[T]):
    """What ``map`` returns: an iterator over the results, flattening the chunks' result
    lists in C (no Python frame per item).  ``close()`` stops it as a generator's would:
    the chunks still queued are cancelled (so does dropping it)."""

    _chunks: Generator[Iterator[Any], None, None]
    _current: list[Iterator[Any]]  # the chunk being flattened
    _queued: "collections.deque[Any]"  # the chunks submitted and not yet waited for
    _cancel_all: Callable[[Iterable[Any]], None]

    def close(self) -> None:
        self._chunks.close()  # cancels the queued chunks, if it started
        self._cancel_all(self._queued)  # (if it had not)
        self._queued.clear()
        collections.deque(self._current[0], maxlen=0)  # the rest of this chunk goes too
