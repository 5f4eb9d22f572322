"""Benchmark the automata: commands/s between two process-hosted automata, and timer lateness.

    python tools/bench_fsm.py [--quick] [--commands N] [--rounds N] [--timers N] [--json]

Measures, each in fresh spawned processes:

* stream:    automaton A (process) posts N commands to automaton B (process) as fast as its
             inbox allows; B counts them.  Rate = N / (B's last command - A's first post).
             Once with post() per command, once with post_many() in batches of 64.
* ping-pong: A and B (processes) bounce a counter N times; round trips/s and the mean
             round-trip time.
* the same two patterns between two plain processes over multiprocessing.Queue (the
  peer), for the ratio;
* timer lateness: K timers on one TimerService, due at random times spread over
  K * 0.5 ms (at least 50 ms) starting 0.3 s after they are scheduled.  "fire" is measured
  on the timer thread (``call_later``); "delivered" in the handler of a process-hosted
  automaton (timer -> post -> inbox -> handler), as now - deadline on the shared
  CLOCK_MONOTONIC.  Median, p99 and max.  "sleep" is the floor under the same load: one
  plain thread time.sleep()ing to each deadline in turn (no timer service at all).

Timestamps cross processes through CLOCK_MONOTONIC (time.monotonic_ns), which is
system-wide on Linux.  Numbers depend on the machine and its load; run it on an idle box.
"""

from __future__ import annotations

import argparse
import ast
import json
import multiprocessing
import os
import random
import statistics
import struct
import sys
import threading
import time

from rsm_shm.fsm import Automaton, Opcode, TimerService, current, post, wait_all
from rsm_shm.ring import Ring

_TS = struct.Struct("<q")


# -- automata ------------------------------------------------------------------------------


def streamer(state, op):
    """State: (peer, n).  On START posts n commands to peer (the first carries the start
    time), then drains the peer and itself."""
    peer, n = state
    if op.code is Opcode.START:
        p = Automaton(peer, create=False)
        p.post(_TS.pack(time.monotonic_ns()))
        payload = b"x" * 8
        for _ in range(n - 1):
            p.post(payload)
        p.drain()
        current().drain()
    return state


#: Commands per post_many() call in the batched stream run.
POST_BATCH = 64


def batch_streamer(state, op):
    """As streamer, with post_many() in batches of POST_BATCH."""
    peer, n = state
    if op.code is Opcode.START:
        p = Automaton(peer, create=False)
        p.post(_TS.pack(time.monotonic_ns()))
        batch = [b"x" * 8] * POST_BATCH
        left = n - 1
        while left > 0:
            p.post_many(batch[:left])
            left -= min(left, POST_BATCH)
        p.drain()
        current().drain()
    return state


def counter(state, op):
    """State: (count, first post ns, last command ns)."""
    if op.code is Opcode.CMD:
        count, first, _ = state
        if count == 0:
            first = _TS.unpack(op.payload)[0]
        return (count + 1, first, time.monotonic_ns())
    return state


def pinger(state, op):
    """State: (peer, rounds, t0, t1, n).  Bounces b"<n>" until rounds, then drains both."""
    peer, rounds, t0, t1, n = state
    if op.code is Opcode.START and t0 == -1:
        t0 = time.monotonic_ns()
        post(peer, b"0")
        return (peer, rounds, t0, t1, 0)
    if op.code is Opcode.CMD:
        n = int(op.payload)
        if n >= rounds:
            t1 = time.monotonic_ns()
            Automaton(peer, create=False).drain()
            current().drain()
        else:
            post(peer, b"%d" % (n + 1))
        return (peer, rounds, t0, t1, n)
    return state


_rings: dict = {}


def lateness_reporter(ring_name, op):
    """On CMD (a deadline), puts now - deadline (ns) on the ring ``ring_name``."""
    if op.code is Opcode.CMD:
        late = time.monotonic_ns() - _TS.unpack(op.payload)[0]
        ring = _rings.get(ring_name)
        if ring is None:
            ring = _rings[ring_name] = Ring(ring_name, create=False)
        ring.put(_TS.pack(late))
    return ring_name


# -- the runs ------------------------------------------------------------------------------


def _names(tag: str, *labels: str) -> list:
    base = f"bench_fsm.{os.getpid()}.{tag}.{time.monotonic_ns() % 10**9}"
    return [f"{base}.{label}" for label in labels]


def _cleanup(autos) -> None:
    for a in autos:
        a.unlink()
        a.close()


def bench_stream(n: int, batched: bool = False) -> float:
    na, nb = _names("stream", "a", "b")
    b = Automaton(nb, counter, (0, 0, 0), create=True)
    a = Automaton(na, batch_streamer if batched else streamer, (nb, n), create=True)
    try:
        b.start("process")
        a.start("process")
        wait_all([a, b], timeout=600)
        count, first, last = ast.literal_eval(b.statistics().state)
        if count != n:
            raise RuntimeError(f"the stream lost commands: {count} of {n} arrived")
        return n / ((last - first) / 1e9)
    finally:
        _cleanup([a, b])


def bench_ping_pong(rounds: int) -> float:
    na, nb = _names("pingpong", "a", "b")
    a = Automaton(na, pinger, (nb, rounds, -1, 0, 0), create=True)
    b = Automaton(nb, pinger, (na, rounds, -2, 0, 0), create=True)
    try:
        b.start("process")
        a.start("process")
        wait_all([a, b], timeout=600)
        states = [ast.literal_eval(x.statistics().state) for x in (a, b)]
        t0 = states[0][2]
        t1 = max(s[3] for s in states)
        return (rounds / 2) / ((t1 - t0) / 1e9)  # a round trip is two commands
    finally:
        _cleanup([a, b])


def _mpq_stream_producer(q, n):
    q.put(_TS.pack(time.monotonic_ns()))
    payload = b"x" * 8
    for _ in range(n - 1):
        q.put(payload)
    q.put(None)


def _mpq_stream_consumer(q, out):
    first = _TS.unpack(q.get())[0]
    count = 1
    while q.get() is not None:
        count += 1
    out.put((count, first, time.monotonic_ns()))


def bench_mpq_stream(n: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    q, out = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_mpq_stream_consumer, args=(q, out)),
        ctx.Process(target=_mpq_stream_producer, args=(q, n)),
    ]
    for p in procs:
        p.start()
    count, first, last = out.get(timeout=600)
    for p in procs:
        p.join()
    return count / ((last - first) / 1e9)


def _mpq_pinger(inq, outq, rounds, result, serve):
    t0 = time.monotonic_ns()
    if serve:
        outq.put(0)
    while True:
        n = inq.get()
        if n is None or n >= rounds:
            outq.put(None)
            if serve or n is not None:
                result.put((t0, time.monotonic_ns()))
            return
        outq.put(n + 1)


def bench_mpq_ping_pong(rounds: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    ab, ba, result = ctx.Queue(), ctx.Queue(), ctx.Queue()
    b = ctx.Process(target=_mpq_pinger, args=(ab, ba, rounds, result, False))
    b.start()
    a = ctx.Process(target=_mpq_pinger, args=(ba, ab, rounds, result, True))
    a.start()
    times = [result.get(timeout=600)]
    a.join()
    b.join()
    t0, t1 = times[0]
    return (rounds / 2) / ((t1 - t0) / 1e9)


def _percentiles(values_ns: list) -> dict:
    v = sorted(values_ns)
    return {
        "median_ms": statistics.median(v) / 1e6,
        "p99_ms": v[min(len(v) - 1, int(len(v) * 0.99))] / 1e6,
        "max_ms": v[-1] / 1e6,
        "n": len(v),
    }


#: Timers are scheduled this long before the first one is due, so that the scheduling loop
#: (this thread holding the GIL) is over when they fire: the run measures firing.
TIMER_SETUP = 0.3
#: Timers are spread uniformly over this many seconds per timer (2 per ms).
TIMER_SPREAD_PER_TIMER = 0.0005


def _deadlines(k: int, seed: int) -> list:
    rng = random.Random(seed)
    base = time.monotonic_ns() + int(TIMER_SETUP * 1e9)
    spread = max(0.05, k * TIMER_SPREAD_PER_TIMER)
    return [base + int(rng.uniform(0, spread) * 1e9) for _ in range(k)]


def bench_sleep_baseline(k: int, seed: int = 1) -> dict:
    """The floor: one thread sleeping (time.sleep) until each of the same deadlines in turn."""
    late = []
    for dl in sorted(_deadlines(k, seed)):
        wait = dl - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        late.append(time.monotonic_ns() - dl)
    return _percentiles(late)


def bench_timers(k: int, seed: int = 1) -> dict:
    # fire: lateness on the timer thread itself
    fire: list = []
    done = threading.Event()
    with TimerService("bench timer") as t:
        for dl in _deadlines(k, seed):
            t.call_later(
                (dl - time.monotonic_ns()) / 1e9,
                lambda dl=dl: (fire.append(time.monotonic_ns() - dl), len(fire) == k and done.set()),
            )
        done.wait(60)
    # delivered: timer -> post -> process-hosted handler, which reports through a plain ring
    (nr, nout) = _names("timers", "reporter", "out")
    out = Ring(nout, capacity=1 << 20, create=True)
    reporter = Automaton(nr, lateness_reporter, nout, create=True).start("process")
    late = []
    try:
        reporter.post(_TS.pack(time.monotonic_ns()))  # warm-up: the host is up and the path is hot
        out.get(timeout=60)
        with TimerService("bench timer 2") as t:
            for dl in _deadlines(k, seed):
                t.schedule((dl - time.monotonic_ns()) / 1e9, reporter, _TS.pack(dl))
            for _ in range(k):
                late.append(_TS.unpack(out.get(timeout=60))[0])
        reporter.drain()
        reporter.join(60)
    finally:
        _cleanup([reporter])
        out.unlink()
        out.close()
    return {"sleep": bench_sleep_baseline(k, seed), "fire": _percentiles(fire), "delivered": _percentiles(late)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    ap.add_argument("--commands", type=int, default=200_000, help="commands in the stream run")
    ap.add_argument("--rounds", type=int, default=20_000, help="commands in the ping-pong run")
    ap.add_argument("--timers", type=int, default=2000, help="timers in the lateness run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.quick:
        args.commands, args.rounds, args.timers = 5000, 1000, 200
    res = {
        "stream_cmds_per_s": bench_stream(args.commands),
        "stream_batched_cmds_per_s": bench_stream(args.commands, batched=True),
        "mpq_stream_msgs_per_s": bench_mpq_stream(args.commands),
        "ping_pong_round_trips_per_s": bench_ping_pong(args.rounds),
        "mpq_ping_pong_round_trips_per_s": bench_mpq_ping_pong(args.rounds),
        "timers": bench_timers(args.timers),
        "config": {
            "commands": args.commands,
            "rounds": args.rounds,
            "timers": args.timers,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
    }
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    s, ms = res["stream_cmds_per_s"], res["mpq_stream_msgs_per_s"]
    p, mp = res["ping_pong_round_trips_per_s"], res["mpq_ping_pong_round_trips_per_s"]
    print(f"two process-hosted automata ({args.commands} streamed commands, {args.rounds} ping-pong commands):")
    print(f"  stream     {s:12,.0f} commands/s   multiprocessing.Queue {ms:12,.0f} msgs/s   ratio {s / ms:5.2f}x")
    sb = res["stream_batched_cmds_per_s"]
    print(f"  stream     {sb:12,.0f} commands/s   with post_many({POST_BATCH}){'':20s}ratio {sb / ms:5.2f}x")
    print(
        f"  ping-pong  {p:12,.0f} round trips/s ({1e6 / p:6.1f} us each)   "
        f"multiprocessing.Queue {mp:10,.0f}/s   ratio {p / mp:5.2f}x"
    )
    spread = max(0.05, args.timers * TIMER_SPREAD_PER_TIMER)
    print(f"timer lateness ({args.timers} timers spread over {spread:g} s):")
    for key in ("sleep", "fire", "delivered"):
        t = res["timers"][key]
        print(f"  {key:10s} median {t['median_ms']:7.3f} ms   p99 {t['p99_ms']:7.3f} ms   max {t['max_ms']:7.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
