#!/usr/bin/env python3
"""DiskStorage (rsm_shm.cluster.storage): append throughput, memory and restart time.

Measured, each in a fresh process so one figure does not inherit another's heap:

* append throughput: ``save(hard_state, entries, sync=...)`` as a peer does once per
  Ready, ``--payload``-byte entries, ``--batch`` entries per save (1 and 64 by
  default), with fsync on (one fdatasync per save: group commit) and off;
* RSS after appending ``--entries`` entries (default 1,000,000) to one storage;
* reopen time of that log (recovery: every segment scanned, CRCs checked, the index
  rebuilt), the RSS after it, and the time to read back 1000 old entries from disk.

The data directory is a temporary directory under ``--dir`` (default: the system's
temporary directory; put it on the disk you care about, tmpfs makes fsync free).
Run::

    python tools/bench_wal.py
    python tools/bench_wal.py --entries 200000 --dir /var/tmp
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from rsm_shm.cluster.storage import DiskStorage, NotDurableWarning  # noqa: E402
from rsm_shm.raft.types import Entry, HardState  # noqa: E402

warnings.simplefilter("ignore", NotDurableWarning)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_append(path: str, fsync: bool, batch: int, payload: int, seconds: float, max_entries: int) -> dict:
    data = b"x" * payload
    s = DiskStorage(path, fsync=fsync)
    idx = 0
    saves = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline and idx < max_entries:
        ents = [Entry(term=1, index=idx + k + 1, data=data) for k in range(batch)]
        idx += batch
        s.save(HardState(1, 1, idx - batch), ents, sync=True)
        saves += 1
    el = time.perf_counter() - t0
    st = s.stats
    s.close()
    return {
        "entries_per_s": idx / el,
        "saves_per_s": saves / el,
        "fsyncs": st.fsyncs,
        "fsync_ms": st.fsync_seconds / max(st.fsyncs, 1) * 1e3,
    }


def child_fill(path: str, n: int, batch: int, payload: int) -> dict:
    data = b"x" * payload
    base = rss_mb()
    s = DiskStorage(path, fsync=False)
    t0 = time.perf_counter()
    for start in range(1, n + 1, batch):
        stop = min(start + batch, n + 1)
        s.save(HardState(1, 1, start - 1), [Entry(term=1, index=i, data=data) for i in range(start, stop)], sync=False)
    s.sync()
    el = time.perf_counter() - t0
    out = {
        "entries": s.last_index(),
        "seconds": el,
        "rss_mb": rss_mb(),
        "rss_base_mb": base,
        "segments": s.stats.segments,
        "bytes": sum(os.path.getsize(os.path.join(path, "wal", f)) for f in os.listdir(os.path.join(path, "wal"))),
    }
    s.close()
    return out


def child_reopen(path: str) -> dict:
    base = rss_mb()
    t0 = time.perf_counter()
    s = DiskStorage(path, fsync=False)
    el = time.perf_counter() - t0
    rss = rss_mb()
    t1 = time.perf_counter()
    got = s.entries(1000, 2000)
    read_ms = (time.perf_counter() - t1) * 1e3
    assert len(got) == 1000 and got[0].index == 1000
    out = {"entries": s.last_index(), "seconds": el, "rss_mb": rss, "rss_base_mb": base, "read_1000_old_ms": read_ms}
    s.close()
    return out


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000, help="entries for the memory and reopen figures")
    ap.add_argument("--payload", type=int, default=64, help="bytes per entry")
    ap.add_argument("--batches", default="1,64", help="entries per save for the throughput figures")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    ap.add_argument("--dir", default=None, help="where to make the data directories")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "append":
            r = child_append(rest[0], rest[1] == "1", int(rest[2]), int(rest[3]), float(rest[4]), int(rest[5]))
        elif kind == "fill":
            r = child_fill(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
        else:
            r = child_reopen(rest[0])
        print(json.dumps(r))
        return 0
    root = tempfile.mkdtemp(prefix="bench_wal.", dir=args.dir)
    try:
        print(
            f"DiskStorage, {args.payload}-byte entries, data in {root} "
            f"(Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f})"
        )
        print(f"{'fsync':>6} {'batch':>6} {'saves/s':>10} {'entries/s':>11} {'ms/fsync':>9}")
        for fsync in (True, False):
            for b in [int(x) for x in args.batches.split(",")]:
                d = os.path.join(root, f"append-{int(fsync)}-{b}")
                r = run_child(
                    "append", d, "1" if fsync else "0", str(b), str(args.payload), str(args.seconds), str(args.entries)
                )
                ms = f"{r['fsync_ms']:.2f}" if fsync else "-"
                print(
                    f"{'on' if fsync else 'off':>6} {b:>6} {r['saves_per_s']:>10,.0f} {r['entries_per_s']:>11,.0f} {ms:>9}",
                    flush=True,
                )
                shutil.rmtree(d)
        d = os.path.join(root, "big")
        f = run_child("fill", d, str(args.entries), "100", str(args.payload))
        print(
            f"append {f['entries']:,} entries (batches of 100, fsync off): {f['seconds']:.1f} s, "
            f"{f['bytes'] / 2**20:.0f} MiB in {f['segments']} segments; "
            f"RSS {f['rss_mb']:.1f} MB (interpreter and imports alone: {f['rss_base_mb']:.1f} MB)"
        )
        r = run_child("reopen", d)
        print(
            f"reopen a {r['entries']:,}-entry log: {r['seconds']:.2f} s; RSS after {r['rss_mb']:.1f} MB "
            f"(before: {r['rss_base_mb']:.1f} MB); read 1000 old entries back: {r['read_1000_old_ms']:.1f} ms"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
