"""Worker processes coordinating through rsm_shm primitives.

    python examples/worker_pool.py [--workers 4] [--jobs 40]

What happens:
  * every worker starts and waits at a Gate until the coordinator opens it;
  * exactly one of them (whichever comes first) initialises the shared "model" under a Once;
  * at most 2 workers do the expensive part at a time (a Semaphore);
  * results are summed under a Lock (its 32-bit tag is the shared total);
  * a Countdown, counted down once per job, releases the coordinator when all jobs are done,
    and its action (run by the last worker) prints a line.
Workers are started with the "spawn" method and receive every primitive pickled by name.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import rsm_shm


def worker(worker_id, jobs, gate, once, sem, total, done):
    # Handles arrive pickled by name.  A Countdown's action is this process's own callable:
    done = rsm_shm.Countdown(
        done.name, create=False, action=lambda: print(f"  worker {worker_id} finished the last job")
    )
    gate.wait()  # everyone starts together
    once.call(print, f"  worker {worker_id} (pid {os.getpid()}) initialises the model, once")
    for job in jobs:
        with sem:  # at most `value` workers in here at once
            time.sleep(0.01)  # the expensive part
            result = job * job
        with total:  # lock-protected update of the shared total
            total.tag += result
        done.count_down()  # the last one runs the Countdown's action


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=40)
    args = ap.parse_args()

    # Anonymous objects (name=None) are removed when this process exits.
    gate = rsm_shm.Gate()
    once = rsm_shm.Once()
    sem = rsm_shm.Semaphore(value=2)
    total = rsm_shm.Lock()
    done = rsm_shm.Countdown(count=args.jobs)

    jobs = list(range(1, args.jobs + 1))
    shares = [jobs[i :: args.workers] for i in range(args.workers)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(i, shares[i], gate, once, sem, total, done)) for i in range(args.workers)]
    print(f"starting {args.workers} workers for {args.jobs} jobs")
    for p in procs:
        p.start()
    deadline = time.monotonic() + 60
    while gate.pending < args.workers:  # wait until every worker is parked at the gate
        if time.monotonic() > deadline:
            raise SystemExit("workers did not reach the gate")
        time.sleep(0.01)
    print(f"all {args.workers} workers wait at the gate: {gate!r}")
    t0 = time.monotonic()
    gate.open()
    if not done.wait(timeout=120):
        raise SystemExit("timed out waiting for the jobs")
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join(30)
    expected = sum(j * j for j in jobs)
    print(f"total = {total.tag} (expected {expected}) in {elapsed:.2f} s")
    print(f"final state: {sem!r}\n             {done!r}")
    if total.tag != expected:
        raise SystemExit("wrong total")


if __name__ == "__main__":
    main()
