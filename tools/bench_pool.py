#!/usr/bin/env python3
"""Benchmark rsm_shm.pool.ProcessPool against concurrent.futures.ProcessPoolExecutor,
multiprocessing.Pool and loky, side by side in one run.

Scenarios (every pool has --workers workers; ProcessPoolExecutor and multiprocessing.Pool
start theirs with forkserver, as ProcessPool does; loky uses its own spawn-like context):

1. **submit**: N tiny jobs submitted one by one (``submit(f, i)``; ``apply_async`` for
   multiprocessing.Pool), then every result gathered: jobs/s.
2. **map**: ``map(f, range(M), chunksize=C)`` (``imap`` for multiprocessing.Pool): items/s.
3. **round trip**: one job at a time, ``submit(f, i).result()``: median and p99 latency.
4. **kill -> rerun**: a job announces its start (pid, time) on a Ring and blocks; the bench
   SIGKILLs that worker and waits (bounded) for the job to start again; median time from
   the kill to the second start.  The peers do not re-run a killed job: what they do
   instead is printed (ProcessPoolExecutor breaks, loky fails the job, multiprocessing.Pool
   loses it).

Each figure is the median of --repeat rounds; the candidates run interleaved, round by
round, so that load on a shared machine hits them alike.  The run ends with the targets
of the issue checked as ratios measured in this run (PASS/FAIL).  ``--torture`` instead
maps 100k jobs while SIGKILLing a worker every 10k results and checks that every result
arrives once, in order.

    python tools/bench_pool.py              # full run, a few minutes on 2 cores
    python tools/bench_pool.py --quick      # a smoke run
    python tools/bench_pool.py --torture    # 100k jobs, 10 SIGKILLs
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import queue
import random
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import rsm_shm  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _plot  # noqa: E402  (tools/_plot.py: --plot DIR)
from rsm_shm.pool import ProcessPool, WorkerState  # noqa: E402

CTX = mp.get_context("forkserver")


# -- jobs (module level: the workers import them) -------------------------------------------


def tiny(x):
    return x + 1


def busy(x, us: int = 20):
    """Burn ``us`` microseconds of CPU, return x + 1 (a job long enough to be killed in)."""
    end = time.perf_counter_ns() + us * 1000
    while time.perf_counter_ns() < end:
        pass
    return x + 1


def announce_and_block(ring_name: str, event_name: str):
    """Tell the bench we (re)started, then block until released."""
    ring = rsm_shm.Ring(ring_name, create=False)
    ring.put(f"{os.getpid()} {time.monotonic_ns()}".encode())
    ring.close()
    ev = rsm_shm.Event(event_name, create=False)
    ev.wait(30)
    ev.close()
    return "released"


# -- candidates ----------------------------------------------------------------------------


class Candidate:
    name = "?"

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def start(self):
        raise NotImplementedError

    def submit(self, pool, fn, *args):
        return pool.submit(fn, *args)

    def results(self, futures):
        return [f.result() for f in futures]

    def map(self, pool, fn, items, chunksize):
        return pool.map(fn, items, chunksize=chunksize)

    def stop(self, pool):
        pool.shutdown(wait=True)

    def pids(self, pool):
        raise NotImplementedError


class RsmPool(Candidate):
    name = "rsm ProcessPool"

    def start(self):
        return ProcessPool(self.workers)

    def pids(self, pool):
        return [w.pid for w in pool.statistics().workers if w.state in (WorkerState.IDLE, WorkerState.BUSY)]


class PPE(Candidate):
    name = "ProcessPoolExecutor"

    def start(self):
        return cf.ProcessPoolExecutor(self.workers, mp_context=CTX)

    def pids(self, pool):
        return list(pool._processes)


class MpPool(Candidate):
    name = "multiprocessing.Pool"

    def start(self):
        return CTX.Pool(self.workers)

    def submit(self, pool, fn, *args):
        return pool.apply_async(fn, args)

    def results(self, futures):
        return [f.get() for f in futures]

    def map(self, pool, fn, items, chunksize):
        return pool.imap(fn, items, chunksize=chunksize)

    def stop(self, pool):
        pool.terminate()
        pool.join()

    def pids(self, pool):
        return [p.pid for p in pool._pool]


class Loky(Candidate):
    name = "loky"

    def start(self):
        from loky import ProcessPoolExecutor as LokyExecutor

        return LokyExecutor(self.workers)

    def pids(self, pool):
        return list(pool._processes)


def candidates(workers: int, only):
    out = []
    for cls in (RsmPool, PPE, MpPool, Loky):
        if cls is Loky:
            try:
                import loky  # noqa: F401
            except ImportError:
                print("  (loky not installed: pip install -e '.[bench]'; skipped)")
                continue
        c = cls(workers)
        if not only or any(o.lower() in c.name.lower() for o in only):
            out.append(c)
    return out


# -- scenarios -----------------------------------------------------------------------------


def meet(barrier_name: str):
    """Block until every worker runs one of these (proves all workers are up)."""
    b = rsm_shm.Barrier(barrier_name, create=False)
    b.wait(60)
    b.close()


def warm(c, pool):
    barrier = rsm_shm.Barrier(parties=c.workers)
    try:
        c.results([c.submit(pool, meet, barrier.name) for _ in range(c.workers)])
    finally:
        barrier.close()
        barrier.unlink()
    c.results([c.submit(pool, tiny, i) for i in range(4 * c.workers)])


def run_submit(c, n):
    pool = c.start()
    try:
        warm(c, pool)
        t0 = time.perf_counter()
        out = c.results([c.submit(pool, tiny, i) for i in range(n)])
        dt = time.perf_counter() - t0
        assert out == [i + 1 for i in range(n)], f"{c.name}: wrong results"
        return n / dt
    finally:
        c.stop(pool)


def run_map(c, n, chunksize):
    pool = c.start()
    try:
        warm(c, pool)
        t0 = time.perf_counter()
        total = 0
        for r in c.map(pool, tiny, range(n), chunksize):
            total += r
        dt = time.perf_counter() - t0
        assert total == n * (n + 1) // 2, f"{c.name}: wrong results"
        return n / dt
    finally:
        c.stop(pool)


def run_round_trip(c, n):
    pool = c.start()
    try:
        warm(c, pool)
        lat = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            c.results([c.submit(pool, tiny, i)])
            lat.append(time.perf_counter_ns() - t0)
        lat.sort()
        return lat[len(lat) // 2] / 1000, lat[int(len(lat) * 0.99)] / 1000
    finally:
        c.stop(pool)


def run_kill(c, timeout=2.0):
    """Seconds from SIGKILL of a job's worker to the job starting again, or a string
    saying what happened instead."""
    ring = rsm_shm.Ring(capacity=1 << 12)
    ev = rsm_shm.Event()
    pool = c.start()
    try:
        warm(c, pool)
        f = c.submit(pool, announce_and_block, ring.name, ev.name)
        pid, _ = map(int, ring.get(timeout=30).split())
        t_kill = time.monotonic_ns()
        os.kill(pid, signal.SIGKILL)
        try:
            pid2, t_start = map(int, ring.get(timeout=timeout).split())
        except queue.Empty:
            ev.set()
            try:
                (f.get if hasattr(f, "get") else f.result)(timeout=timeout)
                return "the job was not run again, yet completed?"
            except mp.TimeoutError:
                return f"job lost: its result never comes (waited {timeout:.0f} s)"
            except Exception as e:  # noqa: BLE001 -- what the peer does instead
                return f"job not re-run: {type(e).__name__}"
        ev.set()
        assert pid2 != pid
        res = (f.get if hasattr(f, "get") else f.result)(timeout=30)
        assert res == "released"
        return (t_start - t_kill) / 1e9
    finally:
        ev.set()
        try:
            c.stop(pool)
        except Exception:  # noqa: BLE001 -- a broken peer pool
            pass
        for o in (ring, ev):
            o.close()
            o.unlink()


# -- torture -------------------------------------------------------------------------------


def torture(n: int, every: int, workers: int) -> int:
    rng = random.Random(1)
    killed: set = set()
    kills = 0
    t0 = time.perf_counter()
    with ProcessPool(workers, max_retries=5) as pool:
        expected = 0
        for i, r in enumerate(pool.map(busy, range(n))):
            if r != expected + 1:
                print(f"FAIL: result {i} is {r}, expected {expected + 1}")
                return 1
            expected += 1
            if i % every == every // 2:
                st = pool.statistics()
                live = [w for w in st.workers if w.state == WorkerState.BUSY and w.pid not in killed] or [
                    w for w in st.workers if w.state == WorkerState.IDLE and w.pid not in killed
                ]
                victim = rng.choice(live).pid
                os.kill(victim, signal.SIGKILL)
                killed.add(victim)
                kills += 1
        deadline = time.monotonic() + 30  # the last death may still be on its way to the collector
        while pool.statistics().worker_deaths < kills and time.monotonic() < deadline:
            time.sleep(0.01)
        st = pool.statistics()
    dt = time.perf_counter() - t0
    ok = expected == n and st.worker_deaths == kills and st.failed == 0 and st.completed == st.submitted
    print(
        f"torture: {n} jobs in {dt:.1f} s, {kills} SIGKILLs, {st.worker_deaths} worker deaths, "
        f"{st.retries} retries, {st.failed} failed; every result once and in order: {expected == n}"
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--torture", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated candidate names (substrings)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    _plot.add_argument(ap)
    args = ap.parse_args()
    _plot.check_available(args.plot)
    meta = _plot.run_meta()  # the load average at the start
    if args.torture:
        return torture(10_000 if args.quick else 100_000, 1_000 if args.quick else 10_000, args.workers)
    rounds = args.repeat or (1 if args.quick else 5)
    n_submit = 2_000 if args.quick else 20_000
    n_map, chunk = (20_000, 100) if args.quick else (200_000, 100)
    n_rt = 100 if args.quick else 500
    n_kill = 1 if args.quick else 5
    cands = candidates(args.workers, [o for o in args.only.split(",") if o])
    print(
        f"bench_pool: {args.workers} workers, {rounds} rounds, load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    res = {c.name: {"submit": [], "map": [], "rt": [], "rt99": [], "kill": []} for c in cands}
    for rnd in range(rounds):
        for c in cands:
            print(f"  {c.name}", end="", flush=True)
            r = res[c.name]
            r["submit"].append(run_submit(c, n_submit))
            r["map"].append(run_map(c, n_map, chunk))
            med, p99 = run_round_trip(c, n_rt)
            r["rt"].append(med)
            r["rt99"].append(p99)
            if rnd < n_kill:
                r["kill"].append(run_kill(c))
            print(" ok", flush=True)
        print(f"  round {rnd + 1}/{rounds} done")

    def med(xs):
        return statistics.median(xs) if xs else float("nan")

    print(
        f"\n{'candidate':24} {'submit jobs/s':>14} {'map items/s':>12} {'rt median us':>13} {'rt p99 us':>10}  "
        f"kill -> rerun"
    )
    for c in cands:
        r = res[c.name]
        kills = [k for k in r["kill"] if isinstance(k, float)]
        kill = f"{med(kills) * 1000:.1f} ms (median of {len(kills)})" if kills else (r["kill"][0] if r["kill"] else "-")
        print(
            f"{c.name:24} {med(r['submit']):14,.0f} {med(r['map']):12,.0f} {med(r['rt']):13.0f} "
            f"{med(r['rt99']):10.0f}  {kill}"
        )

    doc = {
        "meta": {**meta, "workers": args.workers, "rounds": rounds},
        "rounds": res,
        "summary": {
            c.name: {
                "submit_jobs_s": med(res[c.name]["submit"]),
                "map_items_s": med(res[c.name]["map"]),
                "rt_median_us": med(res[c.name]["rt"]),
                "rt_p99_us": med(res[c.name]["rt99"]),
                "kill_rerun_ms": (
                    med([k for k in res[c.name]["kill"] if isinstance(k, float)]) * 1000
                    if any(isinstance(k, float) for k in res[c.name]["kill"])
                    else None
                ),
            }
            for c in cands
        },
    }
    _plot.save(doc, args.json, args.plot, plot)
    rsm = res.get(RsmPool.name)
    if rsm is None:
        return 0
    print("\ntargets (ratios measured in this run):")

    def check(label, value, target, higher_is_better=True):
        ok = value >= target if higher_is_better else value <= target
        print(
            f"  {'PASS' if ok else 'FAIL'}  {label}: {value:.2f} (target {'>=' if higher_is_better else '<='} {target})"
        )

    if PPE.name in res:
        check("submit throughput / ProcessPoolExecutor", med(rsm["submit"]) / med(res[PPE.name]["submit"]), 3.0)
        check("round trip latency / ProcessPoolExecutor", med(rsm["rt"]) / med(res[PPE.name]["rt"]), 0.3, False)
    if MpPool.name in res:
        check(
            "map(chunksize) throughput / multiprocessing.Pool.imap", med(rsm["map"]) / med(res[MpPool.name]["map"]), 1.5
        )
    kills = [k for k in rsm["kill"] if isinstance(k, float)]
    if kills:
        check("SIGKILL -> job running again, ms", med(kills) * 1000, 100, False)
    else:
        print(f"  FAIL  SIGKILL -> job running again: {rsm['kill']}")
        return 1
    return 0


def plot(results: dict, out_dir: str) -> list:
    """The figures of a run (its --json results) as PNG files in ``out_dir``."""
    summary = results["summary"]
    note = _plot.machine_note(results.get("meta", {}))
    names = list(summary)
    paths = [
        _plot.grouped_bars(
            os.path.join(out_dir, "pool_throughput.png"),
            f"{results['meta'].get('workers', '?')} workers: tiny jobs (higher is better)",
            ["submit one by one (jobs/s)", "map, chunksize=100 (items/s)"],
            {n: [summary[n]["submit_jobs_s"], summary[n]["map_items_s"]] for n in names},
            "per second",
            log=True,
            note=note,
        )
    ]
    paths.append(
        _plot.grouped_bars(
            os.path.join(out_dir, "pool_latency.png"),
            "submit(f).result() round trip (lower is better)",
            ["median", "p99"],
            {n: [summary[n]["rt_median_us"], summary[n]["rt_p99_us"]] for n in names},
            "microseconds",
            log=True,
            note=note,
        )
    )
    kills = [summary[n]["kill_rerun_ms"] for n in names]
    paths.append(
        _plot.hbars(
            os.path.join(out_dir, "pool_kill.png"),
            "Worker SIGKILLed mid-job: until the job runs again",
            names,
            kills,
            "milliseconds (median)",
            note=note,
            texts=["" if k is not None else "the job is not run again" for k in kills],
        )
    )
    return paths


if __name__ == "__main__":
    sys.exit(main())
