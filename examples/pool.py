"""A process pool that loses no job when a worker dies.

    python examples/pool.py [--workers 2] [--jobs 2000]

What happens:
  * ``ProcessPool`` is a ``concurrent.futures.Executor``: ``map`` and ``submit`` work as
    with ``ProcessPoolExecutor``;
  * while a map runs, one worker is killed with SIGKILL (as the OOM killer would): the job
    it was running runs again on another worker, the map's results still arrive complete
    and in order, and the pool starts a replacement worker;
  * a job that crashes its worker every time (a segfault) fails alone with
    ``WorkerDiedError`` after ``max_retries`` retries, naming the job, the pid and the signal;
  * ``statistics()`` shows what ``rsm-shm inspect`` shows: workers, retries, failures.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal

from rsm_shm.pool import ProcessPool, WorkerDiedError, WorkerState


def work(x: int) -> int:
    return sum(i * i for i in range(x % 100))


def crash() -> None:
    ctypes.string_at(0)  # a segfault in this worker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2000)
    args = ap.parse_args()

    with ProcessPool(args.workers, max_retries=2) as pool:
        print(f"pool {pool.name!r} with {pool.max_workers} workers")
        results = []
        killed = None
        for i, r in enumerate(pool.map(work, range(args.jobs))):
            results.append(r)
            if i == args.jobs // 2 and killed is None:
                st = pool.statistics()
                victim = next((w for w in st.workers if w.state == WorkerState.BUSY), None) or next(
                    w for w in st.workers if w.state == WorkerState.IDLE
                )
                killed = victim.pid
                os.kill(killed, signal.SIGKILL)
                print(f"  SIGKILLed worker {killed} halfway through the map")
        ok = results == [work(i) for i in range(args.jobs)]
        print(f"map: {len(results)} results, complete and in order: {ok}")

        try:
            pool.submit(crash).result()
        except WorkerDiedError as e:
            print(f"a crashing job fails alone: {e}")
        print(f"the pool still serves: work(7) = {pool.submit(work, 7).result()}")
        print(f"statistics: {pool.statistics()}")
    if not ok:
        raise SystemExit("wrong results")


if __name__ == "__main__":
    main()
