#!/usr/bin/env python3
"""Background fuzzer of the Raft core: many seeds, millions of simulated steps.

Runs :func:`rsm_shm.raft.sim.fuzz.run_seed` over consecutive seeds in parallel worker
processes, cycling through the fault profiles, with Raft's safety properties checked
after every step and liveness checked at the end of every run.  Prints progress every
few seconds; on a violation it prints the seed, the profile and the violated property,
then shrinks the run's action list (delta debugging) and prints the minimal action list
and its transcript, ready to paste into a regression test::

    python tools/raft_fuzz.py --steps-total 2000000          # ~millions of steps
    python tools/raft_fuzz.py --seeds 500 --steps 3000 --profile lossy
    python tools/raft_fuzz.py --replay 1234 --profile chaos   # one seed, verbose

Ctrl-C (or SIGTERM) stops the run and still prints the summary and the reports.  Exit status: 0 when
no violation was found, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from rsm_shm.raft.sim.fuzz import PROFILES, replay, run_seed, shrink  # noqa: E402

PROGRESS_SECONDS = 5.0
TRANSCRIPT_TAIL = 400  # lines of the minimal transcript printed


def _ignore_sigint() -> None:
    # workers leave Ctrl-C to the parent, which stops them and prints what it found
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _profile_for(seed: int, name: str) -> str:
    if name != "all":
        return name
    names = sorted(PROFILES)
    return names[seed % len(names)]


def _work(job: Tuple[int, int, int, str]):
    seed, steps, nodes, pname = job
    r = run_seed(seed, steps=steps, nodes=nodes, profile=PROFILES[pname])
    err = None if r.violation is None else f"{type(r.violation).__name__}: {r.violation}"
    return seed, pname, r.steps, r.committed, err, (r.actions if err else None), r.known_issue


def _report(seed: int, pname: str, nodes: int, err: str, actions: List[tuple], budget: int) -> None:
    print(f"\n=== VIOLATION seed={seed} profile={pname} nodes={nodes}\n{err}", flush=True)
    print(f"shrinking {len(actions)} actions (budget {budget} replays)...", flush=True)
    try:
        small = shrink(actions, seed, nodes, budget=budget, profile=PROFILES[pname])
    except ValueError as e:  # did not reproduce from the action list alone
        print(f"could not shrink: {e}", flush=True)
        small = actions
    v, sim = replay(small, seed, nodes, profile=PROFILES[pname])
    print(
        f"minimal action list ({len(small)} actions), replay with "
        f"rsm_shm.raft.sim.fuzz.replay(actions, seed={seed}, nodes={nodes}, "
        f"profile=PROFILES[{pname!r}]):"
    )
    print("actions = [")
    for a in small:
        print(f"    {a!r},")
    print("]")
    print(f"replayed violation: {type(v).__name__ if v else None}: {v}")
    print(f"transcript (last {TRANSCRIPT_TAIL} lines):")
    for line in sim.out[-TRANSCRIPT_TAIL:]:
        print("  " + line)
    print("=== end of report", flush=True)


def _replay_one(seed: int, steps: int, nodes: int, pname: str) -> int:
    r = run_seed(seed, steps=steps, nodes=nodes, profile=PROFILES[pname], verbose=True)
    for line in r.transcript:
        print(line)
    print(
        f"seed={seed} profile={pname} steps={r.steps} committed={r.committed} digest={r.digest[:16]} "
        f"violation={r.violation!r}"
    )
    return 0 if r.ok else 1


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default: until --steps-total)")
    ap.add_argument("--steps", type=int, default=2000, help="random steps per seed")
    ap.add_argument("--steps-total", type=int, default=1_000_000, help="stop after this many steps overall")
    ap.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--nodes", type=int, default=3, help="initial cluster size (0 = alternate 3 and 5)")
    ap.add_argument("--profile", default="all", choices=sorted(PROFILES) + ["all"])
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shrink-budget", type=int, default=1500, help="max replays while shrinking")
    ap.add_argument("--max-violations", type=int, default=3, help="stop after reporting this many")
    ap.add_argument(
        "--report-known", action="store_true", help="treat stalls explained by known core issues as violations too"
    )
    ap.add_argument("--replay", type=int, default=None, metavar="SEED", help="run one seed verbosely")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.procs < 1:
        ap.error("--steps and --procs must be positive")

    def nodes_for(seed: int) -> int:
        return args.nodes if args.nodes else (3 if seed % 2 == 0 else 5)

    if args.replay is not None:
        return _replay_one(args.replay, args.steps, nodes_for(args.replay), _profile_for(args.replay, args.profile))

    end = args.start + args.seeds if args.seeds is not None else None

    def jobs():
        s = args.start
        while end is None or s < end:
            yield (s, args.steps, nodes_for(s), _profile_for(s, args.profile))
            s += 1

    t0 = time.monotonic()
    last = t0
    done_seeds = done_steps = committed = 0
    found = []
    known_hits: List[Tuple[int, str]] = []
    print(
        f"raft_fuzz: seeds from {args.start}, {args.steps} steps each, profile={args.profile}, {args.procs} processes",
        flush=True,
    )
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    interrupted = False
    pool = ctx.Pool(args.procs, initializer=_ignore_sigint)
    # Ctrl-C and SIGTERM both end the run with a summary (a background job started by a
    # non-interactive shell inherits SIGINT ignored, hence the explicit handlers).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for seed, pname, steps, comm, err, actions, known in pool.imap_unordered(_work, jobs(), chunksize=4):
            done_seeds += 1
            done_steps += steps
            committed += comm
            if known and not args.report_known:
                known_hits.append((seed, known))
            elif err:
                found.append((seed, pname, nodes_for(seed), err, actions))
                print(f"\nseed {seed} ({pname}): {err}", flush=True)
            now = time.monotonic()
            if now - last >= PROGRESS_SECONDS:
                last = now
                rate = done_steps / (now - t0)
                print(
                    f"[{now - t0:7.1f}s] seeds={done_seeds} steps={done_steps:,} ({rate:,.0f}/s) "
                    f"committed={committed:,} violations={len(found)} known={len(known_hits)}",
                    flush=True,
                )
            if (
                done_steps >= args.steps_total
                or len(found) >= args.max_violations
                or (args.time_limit is not None and now - t0 >= args.time_limit)
            ):
                break
    except KeyboardInterrupt:
        # Ctrl-C: stop the workers, then still print the summary and the reports
        interrupted = True
    finally:
        pool.terminate()
        pool.join()
    el = time.monotonic() - t0
    state = "interrupted" if interrupted else "done"
    print(
        f"{state}: seeds={done_seeds} steps={done_steps:,} in {el:.1f}s "
        f"({done_steps / max(el, 1e-9):,.0f} steps/s), "
        f"violations={len(found)}",
        flush=True,
    )
    if known_hits:
        print(f"seeds stalled by known core issues (not counted; --report-known to shrink them): {known_hits}")
    for seed, pname, nodes, err, actions in found:
        _report(seed, pname, nodes, err, actions, args.shrink_budget)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
