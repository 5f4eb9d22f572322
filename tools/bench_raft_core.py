#!/usr/bin/env python3
"""Throughput floor of the pure Raft core: a perfect in-process network, no I/O.

For 3- and 5-node clusters, the leader is fed ``batch`` proposals at a time; then every
node's Ready is handled by ``rsm_shm.raft.driver.handle_ready`` (persist into
MemoryStorage, send, apply, advance) and every
message delivered -- encoded and decoded through the codec, as a runtime must -- until the
cluster is quiet.  Measured:

* committed entries per second (applied by the leader) over ``--entries`` entries;
* the cost of one *step*: a ``RawNode.step()`` of a delivered message or one Ready
  handled (time / steps); and messages per committed entry.

Each configuration runs ``--repeat`` times and the table shows the median (min..max of
entries/s in brackets).  Run::

    python tools/bench_raft_core.py                 # default table
    python tools/bench_raft_core.py --entries 20000 --batches 1,16,256 --repeat 5
    python tools/bench_raft_core.py --no-codec      # message objects passed as is
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections import deque
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from rsm_shm.raft.codec import decode_message, encode_message  # noqa: E402
from rsm_shm.raft.core import Config, RawNode  # noqa: E402
from rsm_shm.raft.driver import handle_ready  # noqa: E402
from rsm_shm.raft.storage import MemoryStorage  # noqa: E402
from rsm_shm.raft.types import Ready, Role  # noqa: E402

PAYLOAD = b"x" * 64  # bytes per proposed command
MAX_ELECTION_TICKS = 1000


class _BenchIO:
    """The ReadyIO of one node: MemoryStorage, the shared FIFO queue, no state machine."""

    def __init__(self, cluster: "Cluster", i: int) -> None:
        self.c = cluster
        self.i = i

    def persist(self, rd: Ready) -> None:
        st = self.c.storages[self.i]
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)

    def send(self, messages) -> Tuple[int, ...]:
        c = self.c
        for m in messages:
            c.queue.append(encode_message(m) if c.codec else m)
        c.msgs += len(messages)
        return ()

    def restore(self, snapshot) -> None:
        self.c.applied[self.i] = snapshot.meta.index

    def apply(self, entry, conf_state) -> None:
        self.c.applied[self.i] = entry.index

    def read_states(self, states) -> None:
        pass


class Cluster:
    """The leanest correct runtime: handle Ready in order, FIFO network, no faults."""

    def __init__(self, n: int, codec: bool, seed: int = 1) -> None:
        ids = list(range(1, n + 1))
        self.codec = codec
        self.storages = {i: MemoryStorage() for i in ids}
        self.nodes: Dict[int, RawNode] = {
            i: RawNode(i, ids, self.storages[i], Config(), random.Random(f"{seed}:{i}")) for i in ids
        }
        self.queue: deque = deque()
        self.steps = 0
        self.msgs = 0
        self.applied = {i: 0 for i in ids}

    def handle_ready(self, i: int) -> None:
        handle_ready(self.nodes[i], _BenchIO(self, i))
        self.steps += 1

    def pump(self) -> None:
        """Until quiet: handle Readys, deliver queued messages."""
        nodes = self.nodes
        while True:
            busy = False
            for i, node in nodes.items():
                if node.has_ready():
                    self.handle_ready(i)
                    busy = True
            q = self.queue
            while q:
                busy = True
                item = q.popleft()
                m = decode_message(item) if self.codec else item
                nodes[m.to].step(m)
                self.steps += 1
            if not busy:
                return

    def elect(self) -> int:
        self.nodes[1].campaign()
        self.pump()
        for _ in range(MAX_ELECTION_TICKS):
            for i, node in self.nodes.items():
                if node.leadership().role == Role.LEADER:
                    return i
            for node in self.nodes.values():
                node.tick()
            self.pump()
        raise RuntimeError("no leader elected")


def run_once(n: int, batch: int, entries: int, codec: bool) -> Dict[str, float]:
    c = Cluster(n, codec)
    lid = c.elect()
    leader = c.nodes[lid]
    start_applied = c.applied[lid]
    c.steps = c.msgs = 0
    target = start_applied + entries
    t0 = time.perf_counter()
    while c.applied[lid] < target:
        for _ in range(batch):
            leader.propose(PAYLOAD)
        c.pump()
    el = time.perf_counter() - t0
    done = c.applied[lid] - start_applied
    return {
        "entries_per_s": done / el,
        "us_per_step": el / max(c.steps, 1) * 1e6,
        "msgs_per_entry": c.msgs / max(done, 1),
        "steps": c.steps,
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="3,5", help="cluster sizes, comma-separated")
    ap.add_argument("--batches", default="1,16,128", help="proposals per round, comma-separated")
    ap.add_argument("--entries", type=int, default=5000, help="entries committed per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (median shown)")
    ap.add_argument("--no-codec", action="store_true", help="skip message encode/decode")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.nodes.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    if args.repeat < 1 or args.entries < 1 or min(sizes + batches) < 1:
        ap.error("counts must be positive")
    print(
        f"Raft core, perfect network, {len(PAYLOAD)}-byte commands, codec={'off' if args.no_codec else 'on'}, "
        f"{args.entries} entries per run, median of {args.repeat} (Python {sys.version.split()[0]})"
    )
    print(f"{'nodes':>5} {'batch':>6} {'entries/s':>12} {'(min..max)':>22} {'us/step':>9} {'msgs/entry':>11}")
    for n in sizes:
        for b in batches:
            runs = [run_once(n, b, args.entries, not args.no_codec) for _ in range(args.repeat)]
            eps = [r["entries_per_s"] for r in runs]
            ups = statistics.median(r["us_per_step"] for r in runs)
            mpe = statistics.median(r["msgs_per_entry"] for r in runs)
            rng = f"({min(eps):,.0f}..{max(eps):,.0f})"
            print(f"{n:>5} {b:>6} {statistics.median(eps):>12,.0f} {rng:>22} {ups:>9.1f} {mpe:>11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
