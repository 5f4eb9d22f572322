"""What the pool's owner and its clients share: settling a future from a result record,
and a lazy, ordered ``map`` over ``_submit``."""
from __future__ import annotations

import collections
import itertools
import time
from concurrent.futures import Future
from typing import Callable, Iterable, Iterator, Optional

from ._wire import R_ERROR, R_ERROR_TEXT, R_VALUE, RESULT_HEAD

__all__ = ["settle", "MapMixin"]


def settle(future: Future, status: int, payload, single: bool, loads) -> None:
    """Complete ``future`` from a result record (``payload``: the whole record) or, for
    status -1, from an exception object made by the owner (WorkerDiedError, ...)."""
    if status == R_VALUE:
        try:
            value = loads(payload[RESULT_HEAD.size:])
        except BaseException as e:  # noqa: BLE001 -- an outcome that cannot be rebuilt here
            future.set_exception(e)
            return
        future.set_result(value[0] if single else value)
    elif status == R_ERROR:
        try:
            exc = loads(payload[RESULT_HEAD.size:])
        except BaseException as e:  # noqa: BLE001
            exc = e
        future.set_exception(exc)
    elif status == R_ERROR_TEXT:
        future.set_exception(RuntimeError(bytes(payload[RESULT_HEAD.size:]).decode("utf-8", "replace")))
    else:
        future.set_exception(payload)


class MapMixin:
    """``map`` for an executor with ``_submit(fn, chunk, kwargs, single) -> Future`` whose
    chunk futures resolve to lists, and ``_max_workers``."""

    _max_workers: int

    def _submit(self, fn, chunk, kwargs, single: bool) -> Future:
        raise NotImplementedError

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None, chunksize: int = 1,
            buffersize: Optional[int] = None) -> Iterator:
        """``fn`` over the iterables' items, results in order (as ``Executor.map``).

        ``chunksize`` items travel (and fail) together as one job.  The iterables are read
        lazily: at most ``buffersize`` chunks (default ``max(4 * max_workers, min(1024,
        65536 // chunksize))``) are submitted ahead of the result being waited for.  ``timeout``
        counts from this call, as in ``Executor.map``; when it expires, iterating raises
        ``TimeoutError``.  If a job raises, iterating re-raises it at that point and the jobs
        still queued are cancelled.
        """
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and (not isinstance(buffersize, int) or buffersize < 1):
            raise ValueError("buffersize must be None or > 0.")
        # Enough chunks ahead that the workers never wait for the consumer (up to 65536
        # items, at most 1024 futures), still a bounded read of the input.
        window = buffersize or max(4 * self._max_workers, min(1024, 65536 // chunksize))
        end = None if timeout is None else time.monotonic() + timeout
        args = zip(*iterables)
        islice = itertools.islice
        fs: collections.deque[Future] = collections.deque()
        for _ in range(window):  # start working at once, as Executor.map does
            chunk = list(islice(args, chunksize))
            if not chunk:
                break
            fs.append(self._submit(fn, chunk, {}, False))
        return self._results_in_order(fn, fs, args, chunksize, end)

    def _results_in_order(self, fn, fs, args, chunksize, end) -> Iterator:
        islice = itertools.islice
        try:
            while fs:
                f = fs.popleft()
                values = f.result() if end is None else f.result(end - time.monotonic())
                del f
                chunk = list(islice(args, chunksize))
                if chunk:
                    fs.append(self._submit(fn, chunk, {}, False))
                yield from values
        finally:
            for f in fs:
                f.cancel()

