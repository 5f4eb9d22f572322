"""A process pool that loses no job when a worker dies: :class:`ProcessPool`.

``ProcessPool`` is a ``concurrent.futures.Executor``: swap it for
``ProcessPoolExecutor`` (or the reverse) with a one-line change.  Jobs reach the workers
through shared-memory rings and come back through another; a killed worker's job runs
again elsewhere (``max_retries`` times), then fails alone with :class:`WorkerDiedError`.
See ``docs/`` and the class docstring for the details and the differences.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

from ._client import PoolClient
from ._executor import ProcessPool
from ._reading import PoolFuture
from ._table import PoolState, PoolStatistics, PoolTable, WorkerState, WorkerStatus
from ._wire import RemoteTraceback, WorkerDiedError

__all__ = [
    "ProcessPool",
    "PoolClient",
    "PoolFuture",
    "WorkerDiedError",
    "RemoteTraceback",
    "BrokenProcessPool",
    "PoolStatistics",
    "WorkerStatus",
    "PoolState",
    "WorkerState",
    "PoolTable",
]
