#!/usr/bin/env python3
"""Benchmark rsm_shm.Ring and Queue against their peers, side by side in one run.

Peers: multiprocessing.Queue, multiprocessing.SimpleQueue, multiprocessing.Pipe,
posix_ipc.MessageQueue, faster_fifo.Queue and pyzmq PUSH/PULL over ipc:// (each skipped,
with a note, when not installed).  Scenarios:

* throughput, 64 B and 4 KiB messages, 1->1 and 4->1, one message per call and batched
  calls (Ring/Queue/faster_fifo: put_many/get_many; pyzmq: multipart messages; peers
  without a batch API are not run batched): messages/s and MB/s;
* one-message round trip, 64 B, between two processes pinned to one shared CPU and to two
  CPUs: median and p99;
* Queue of pickled objects (64-byte payloads) against multiprocessing.Queue.

Placement: throughput runs pin the consumer to the first CPU and the producers to the
others (two free CPUs); the single-call 1->1 rows are repeated with every process on one
CPU, since some peers (posix_ipc's 10-deep queue) behave very differently there.  The
machine should be otherwise idle: other load shows up directly in these figures.

Each figure is the median of --repeats runs (fresh processes and channels each run).  The
table ends with the issue's targets as ratios measured in this same run.

    python tools/bench_ring.py            # full run (a few minutes on 2 cores)
    python tools/bench_ring.py --quick    # fewer messages and repeats
    python tools/bench_ring.py --json out.json --plot DIR   # save the figures, draw PNGs
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import rsm_shm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _plot  # noqa: E402

CTX = mp.get_context("fork")
BATCH = 64
RING_CAPACITY = 1 << 20

# -- peers ---------------------------------------------------------------------------------
# Each channel kind: setup(nprod, size) -> ctx (inherited by forked children);
# send(ctx) -> callable(payload) and send_many(ctx) -> callable(list); the same for the
# receiving side; teardown(ctx).  Endpoints are opened inside the child processes.


class Peer:
    name = "?"
    batched = False  # has a batch API
    multi_producer = True
    note = ""

    def available(self) -> Optional[str]:
        return None

    def setup(self, nprod: int, size: int):
        raise NotImplementedError

    def sender(self, ctx):
        """-> (put(payload), put_many(list) or None, close())"""
        raise NotImplementedError

    def receiver(self, ctx):
        """-> (get() -> bytes, get_many() -> list or None, close())"""
        raise NotImplementedError

    def teardown(self, ctx) -> None:
        pass


class RingPeer(Peer):
    batched = True

    def __init__(self, mpmc: bool = False):
        self.mpmc = mpmc
        self.name = "rsm Ring" + (" (MPMC)" if mpmc else "")

    def setup(self, nprod, size):
        flags = {} if self.mpmc else ({"producers": 1} if nprod == 1 else {})
        if not self.mpmc:
            flags["consumers"] = 1
        return rsm_shm.Ring(capacity=RING_CAPACITY, **flags).name

    def sender(self, name):
        r = rsm_shm.Ring(name, create=False)
        return r.put, r.put_many, r.close

    def receiver(self, name):
        r = rsm_shm.Ring(name, create=False)
        return r.get, (lambda: r.get_many(BATCH)), r.close

    def teardown(self, name):
        r = rsm_shm.Ring(name, create=False)
        r.unlink()
        r.close()


class RsmQueuePeer(Peer):
    name = "rsm Queue"
    batched = True

    def setup(self, nprod, size):
        flags = {"consumers": 1}
        if nprod == 1:
            flags["producers"] = 1
        q = rsm_shm.Queue(capacity=RING_CAPACITY, **flags)
        return q.name

    def sender(self, name):
        q = rsm_shm.Queue(name, create=False)
        return q.put, q.put_many, q.close

    def receiver(self, name):
        q = rsm_shm.Queue(name, create=False)
        return q.get, (lambda: q.get_many(BATCH)), q.close

    def teardown(self, name):
        q = rsm_shm.Queue(name, create=False)
        q.unlink()
        q.close()


class MpQueuePeer(Peer):
    name = "mp.Queue"

    def setup(self, nprod, size):
        return CTX.Queue()

    def sender(self, q):
        return q.put, None, (lambda: (q.close(), q.join_thread()))

    def receiver(self, q):
        return q.get, None, (lambda: None)


class MpSimpleQueuePeer(Peer):
    name = "mp.SimpleQueue"

    def setup(self, nprod, size):
        return CTX.SimpleQueue()

    def sender(self, q):
        return q.put, None, (lambda: None)

    def receiver(self, q):
        return q.get, None, (lambda: None)


class PipePeer(Peer):
    name = "mp.Pipe"
    multi_producer = False
    note = "mp.Pipe: one writer per connection, not run 4->1"

    def setup(self, nprod, size):
        return CTX.Pipe(duplex=False)

    def sender(self, pipe):
        return pipe[1].send_bytes, None, (lambda: None)

    def receiver(self, pipe):
        return pipe[0].recv_bytes, None, (lambda: None)


class FasterFifoPeer(Peer):
    name = "faster_fifo"
    batched = True

    def available(self):
        try:
            import faster_fifo  # noqa: F401
        except ImportError:
            return "faster_fifo not installed: skipped"
        return None

    def setup(self, nprod, size):
        import faster_fifo

        # Bytes in, bytes out (its get returns views of an internal buffer: copy like we do).
        return faster_fifo.Queue(RING_CAPACITY, dumps=_identity, loads=bytes)

    def sender(self, q):
        def put_many(items):
            q.put_many(items, timeout=60)

        return (lambda m: q.put(m, timeout=60)), put_many, (lambda: None)

    def receiver(self, q):
        return (lambda: q.get(timeout=60)), (lambda: q.get_many(timeout=60, max_messages_to_get=BATCH)), (lambda: None)


def _identity(x):
    return x


class ZmqPeer(Peer):
    name = "pyzmq PUSH/PULL"
    batched = True
    note = "pyzmq batched = one multipart message of 64 frames"

    def available(self):
        try:
            import zmq  # noqa: F401
        except ImportError:
            return "pyzmq not installed: skipped"
        return None

    def setup(self, nprod, size):
        d = tempfile.mkdtemp(prefix="bench_ring_zmq")
        return "ipc://" + os.path.join(d, "sock")

    def sender(self, addr):
        import zmq

        ctx = zmq.Context()
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.SNDHWM, 100000)
        s.connect(addr)

        def close():
            s.close(linger=-1)
            ctx.term()

        return s.send, s.send_multipart, close

    def receiver(self, addr):
        import zmq

        ctx = zmq.Context()
        s = ctx.socket(zmq.PULL)
        s.setsockopt(zmq.RCVHWM, 100000)
        s.bind(addr)
        return s.recv, s.recv_multipart, (lambda: (s.close(linger=0), ctx.term()))

    def teardown(self, addr):
        path = addr[len("ipc://") :]
        for p in (path,):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass


class PosixMqPeer(Peer):
    name = "posix_ipc MQ"
    note = "posix_ipc MQ: queue depth 10 (fs.mqueue.msg_max)"

    def available(self):
        try:
            import posix_ipc  # noqa: F401
        except ImportError:
            return "posix_ipc not installed: skipped"
        return None

    def setup(self, nprod, size):
        import posix_ipc

        name = f"/bench_ring_{os.getpid()}_{time.monotonic_ns()}"
        depth = int(open("/proc/sys/fs/mqueue/msg_max").read())
        q = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_messages=depth, max_message_size=max(size, 64))
        q.close()
        return name

    def sender(self, name):
        import posix_ipc

        q = posix_ipc.MessageQueue(name)
        return q.send, None, q.close

    def receiver(self, name):
        import posix_ipc

        q = posix_ipc.MessageQueue(name)
        return (lambda: q.receive()[0]), None, q.close

    def teardown(self, name):
        import posix_ipc

        try:
            posix_ipc.unlink_message_queue(name)
        except posix_ipc.ExistentialError:
            pass


# -- throughput ----------------------------------------------------------------------------


def _pin(cpus) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def _producer(peer: Peer, ctx, payload: bytes, n: int, batched: bool, start, done, cpus=None) -> None:
    _pin(cpus)
    put, put_many, close = peer.sender(ctx)
    start.wait()
    if batched:
        chunk = [payload] * BATCH
        for _ in range(n // BATCH):
            put_many(chunk)
        for _ in range(n % BATCH):
            put(payload)
    else:
        for _ in range(n):
            put(payload)
    done.wait()  # keep the endpoint open until the consumer has everything
    close()


def _consumer(peer: Peer, ctx, n: int, batched: bool, start, result, cpus=None) -> None:
    _pin(cpus)
    get, get_many, close = peer.receiver(ctx)
    start.wait()
    t0 = time.perf_counter()
    got = 0
    if batched:
        while got < n:
            got += len(get_many())
    else:
        for _ in range(n):
            get()
    result.send(time.perf_counter() - t0)
    close()


#: Where throughput runs place their processes: "apart" = the consumer on the first CPU and
#: the producers on the others (two free CPUs); "shared" = everyone on the first CPU.
PLACEMENTS = ("apart", "shared")


def _cpus_for(placement: str):
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "shared" or len(cpus) < 2:
        return {cpus[0]}, {cpus[0]}
    return {cpus[0]}, set(cpus[1:])


def throughput(peer: Peer, size: int, nprod: int, batched: bool, total: int, placement: str = "apart") -> float:
    """Messages per second for `total` messages from nprod producers to one consumer."""
    ccpus, pcpus = _cpus_for(placement)
    ctx = peer.setup(nprod, size)
    try:
        payload = b"x" * size
        start = CTX.Barrier(nprod + 2)
        done = CTX.Event()
        rx, tx = CTX.Pipe(duplex=False)
        per = total // nprod
        cons = CTX.Process(target=_consumer, args=(peer, ctx, per * nprod, batched, start, tx, ccpus))
        cons.start()
        time.sleep(0.05 if isinstance(peer, ZmqPeer) else 0)  # let PULL bind first
        prods = [
            CTX.Process(target=_producer, args=(peer, ctx, payload, per, batched, start, done, pcpus))
            for _ in range(nprod)
        ]
        for p in prods:
            p.start()
        start.wait()
        if not rx.poll(300):
            raise RuntimeError(f"{peer.name}: consumer did not finish")
        elapsed = rx.recv()
        done.set()
        for p in prods + [cons]:
            p.join(60)
        return per * nprod / elapsed
    finally:
        peer.teardown(ctx)


# -- round trip ----------------------------------------------------------------------------


def _echo(peer: Peer, ctx_in, ctx_out, n: int, cpu: int, start) -> None:
    os.sched_setaffinity(0, {cpu})
    get, _, close_in = peer.receiver(ctx_in)
    put, _, close_out = peer.sender(ctx_out)
    start.wait()
    for _ in range(n):
        put(get())
    close_in()
    close_out()


def round_trip(peer: Peer, n: int, cpus: Tuple[int, int]) -> Tuple[float, float]:
    """(median, p99) microseconds of a 64-byte ping-pong, client on cpus[0], echo on cpus[1]."""
    a, b = peer.setup(1, 64), peer.setup(1, 64)
    res_rx, res_tx = CTX.Pipe(duplex=False)
    start = CTX.Barrier(2)

    def client():
        os.sched_setaffinity(0, {cpus[0]})
        put, _, close_out = peer.sender(a)
        get, _, close_in = peer.receiver(b)
        start.wait()
        msg = b"p" * 64
        samples = []
        clock = time.perf_counter_ns
        for _ in range(n):
            t0 = clock()
            put(msg)
            get()
            samples.append(clock() - t0)
        res_tx.send(samples[n // 10 :])  # drop warm-up
        close_out()
        close_in()

    try:
        # The receiving end of each channel binds first (pyzmq), so start the echo first.
        echo = CTX.Process(target=_echo, args=(peer, a, b, n, cpus[1], start))
        echo.start()
        time.sleep(0.05 if isinstance(peer, ZmqPeer) else 0)
        cl = CTX.Process(target=client)
        cl.start()
        if not res_rx.poll(300):
            raise RuntimeError(f"{peer.name}: round trips did not finish")
        samples = sorted(res_rx.recv())
        cl.join(60)
        echo.join(60)
        return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000
    finally:
        peer.teardown(a)
        peer.teardown(b)


# -- driver --------------------------------------------------------------------------------


def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages and repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    _plot.add_argument(ap)
    args = ap.parse_args(argv)
    _plot.check_available(args.plot)
    meta = _plot.run_meta()  # the load average at the start
    repeats = args.repeats or (3 if args.quick else 5)
    scale = 0.25 if args.quick else 1.0

    all_peers: List[Peer] = [
        RingPeer(),
        RingPeer(mpmc=True),
        RsmQueuePeer(),
        MpQueuePeer(),
        MpSimpleQueuePeer(),
        PipePeer(),
        PosixMqPeer(),
        FasterFifoPeer(),
        ZmqPeer(),
    ]
    notes = []
    peers = []
    for p in all_peers:
        why = p.available()
        if why:
            notes.append(why)
        else:
            peers.append(p)
            if p.note:
                notes.append(p.note)

    ncpu = len(os.sched_getaffinity(0))
    print(
        f"# bench_ring: python {sys.version.split()[0]}, {ncpu} CPUs, median of {repeats} runs, "
        f"ring capacity {RING_CAPACITY} B, batch {BATCH}"
    )
    results: Dict[Tuple[str, str], float] = {}
    p99s: Dict[Tuple[str, str], float] = {}

    def counts(size: int, peer: Peer) -> int:
        base = 200_000 if size <= 64 else 40_000
        if isinstance(peer, (MpQueuePeer, MpSimpleQueuePeer)):
            base //= 2
        return max(int(base * scale) // BATCH * BATCH, BATCH * 4)

    print("# throughput: consumer pinned to the first CPU, producers to the others ('apart');")
    print("# the 'shared' rows pin every process to the first CPU")
    header = f"{'scenario':<26}{'peer':<22}{'msgs/s':>12}{'MB/s':>10}"
    print("\n" + header + "\n" + "-" * len(header))
    # One table: every (size, producers, batched, placement) scenario; the single-call 1->1
    # rows are repeated with every process on one CPU ("shared"), since placement matters a
    # lot for some peers (posix_ipc's 10-deep queue batches well there).
    scenarios = [
        (size, nprod, batched, "apart") for size in (64, 4096) for nprod in (1, 4) for batched in (False, True)
    ]
    scenarios += [(size, 1, False, "shared") for size in (64, 4096)]
    for size, nprod, batched, placement in scenarios:
        scen = f"{size}B {nprod}->1 {'batched' if batched else 'single'}" + (" shared" if placement == "shared" else "")
        for peer in peers:
            if batched and not peer.batched:
                continue
            if nprod > 1 and not peer.multi_producer:
                continue
            if isinstance(peer, RsmQueuePeer):
                continue  # objects: its own scenario below
            if isinstance(peer, RingPeer) and peer.mpmc and (nprod == 4 or placement == "shared"):
                continue  # 4->1 "rsm Ring" already runs the multi-producer path; "shared" compares defaults
            n = counts(size, peer)
            rate = median_of(repeats, lambda: throughput(peer, size, nprod, batched, n, placement))
            results[(scen, peer.name)] = rate
            print(f"{scen:<26}{peer.name:<22}{rate:>12,.0f}{rate * size / 1e6:>10.1f}", flush=True)

    # Objects: rsm Queue vs mp.Queue (and faster_fifo with pickle would be its own thing).
    obj_peers = [p for p in (RsmQueuePeer(), MpQueuePeer()) if not p.available()]
    for peer in obj_peers:
        n = counts(64, peer)
        rate = median_of(repeats, lambda: throughput_objects(peer, n))
        results[("objects 64B 1->1", peer.name)] = rate
        print(f"{'objects 64B 1->1 single':<26}{peer.name:<22}{rate:>12,.0f}{'':>10}", flush=True)

    print(f"\n{'round trip 64B':<26}{'peer':<22}{'median us':>12}{'p99 us':>10}\n" + "-" * 70)
    rt_peers = [
        p
        for p in peers
        if not isinstance(p, (RsmQueuePeer, MpSimpleQueuePeer)) and not (isinstance(p, RingPeer) and p.mpmc)
    ]
    n_rt = max(int(20_000 * scale), 2000)
    cpu_sets = [("shared CPU", (0, 0))]
    if ncpu >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        cpu_sets.append(("two CPUs", (cpus[0], cpus[1])))
    for label, cpus in cpu_sets:
        for peer in rt_peers:
            runs = [round_trip(peer, n_rt, cpus) for _ in range(repeats)]
            med = statistics.median(r[0] for r in runs)
            p99 = statistics.median(r[1] for r in runs)
            results[(f"rt {label}", peer.name)] = med
            p99s[(f"rt {label}", peer.name)] = p99
            print(f"{label:<26}{peer.name:<22}{med:>12.1f}{p99:>10.1f}", flush=True)

    print("\nTargets (ratios measured in this run; >= target is met):")

    def ratio(scen_a, peer_a, scen_b, peer_b, inverse=False):
        a, b = results.get((scen_a, peer_a)), results.get((scen_b, peer_b))
        if a is None or b is None:
            return None
        return b / a if inverse else a / b

    targets = [
        (
            "Ring 64B 1->1 single vs posix_ipc MQ",
            ratio("64B 1->1 single", "rsm Ring", "64B 1->1 single", "posix_ipc MQ"),
            1.5,
        ),
        (
            "  same, both on one CPU",
            ratio("64B 1->1 single shared", "rsm Ring", "64B 1->1 single shared", "posix_ipc MQ"),
            1.5,
        ),
        (
            "Ring 64B 1->1 single vs pyzmq",
            ratio("64B 1->1 single", "rsm Ring", "64B 1->1 single", "pyzmq PUSH/PULL"),
            2.5,
        ),
        ("Ring 64B 1->1 single vs mp.Queue", ratio("64B 1->1 single", "rsm Ring", "64B 1->1 single", "mp.Queue"), 3.0),
        (
            "Ring 64B 1->1 batched vs pyzmq",
            ratio("64B 1->1 batched", "rsm Ring", "64B 1->1 batched", "pyzmq PUSH/PULL"),
            1.5,
        ),
        (
            "Ring 4KiB 1->1 single vs posix_ipc MQ (MB/s)",
            ratio("4096B 1->1 single", "rsm Ring", "4096B 1->1 single", "posix_ipc MQ"),
            1.2,
        ),
        (
            "  same, both on one CPU",
            ratio("4096B 1->1 single shared", "rsm Ring", "4096B 1->1 single shared", "posix_ipc MQ"),
            1.2,
        ),
        (
            "Ring 64B 4->1 batched vs faster_fifo batched",
            ratio("64B 4->1 batched", "rsm Ring", "64B 4->1 batched", "faster_fifo"),
            1.5,
        ),
        (
            "RTT shared CPU: posix_ipc / Ring",
            ratio("rt shared CPU", "rsm Ring", "rt shared CPU", "posix_ipc MQ", inverse=True),
            1.0,
        ),
        (
            "RTT two CPUs: faster_fifo / Ring",
            ratio("rt two CPUs", "rsm Ring", "rt two CPUs", "faster_fifo", inverse=True),
            4.0,
        ),
        ("Queue objects 64B vs mp.Queue", ratio("objects 64B 1->1", "rsm Queue", "objects 64B 1->1", "mp.Queue"), 2.0),
    ]
    for label, value, target in targets:
        if value is None:
            print(f"  {label:<50} n/a (peer skipped)")
        else:
            print(f"  {label:<50} {value:6.2f}x  (target {target}x: {'met' if value >= target else 'NOT met'})")
    if notes:
        print("\nNotes:\n" + "\n".join(f"  - {n}" for n in notes))
    # Throughput rows are messages/s; "rt ..." rows are microseconds (median, and p99).
    doc = {
        "meta": {**meta, "repeats": repeats, "quick": args.quick},
        "rows": [
            {"scenario": s, "peer": p, "value": v, **({"p99": p99s[(s, p)]} if (s, p) in p99s else {})}
            for (s, p), v in results.items()
        ],
        "targets": [{"label": label.strip(), "ratio": value, "target": target} for label, value, target in targets],
        "notes": notes,
    }
    _plot.save(doc, args.json, args.plot, plot)
    return 0


def plot(results: Dict[str, Any], out_dir: str) -> List[str]:
    """The figures of a run (its --json results) as PNG files in ``out_dir``."""
    note = _plot.machine_note(results["meta"])
    rows = results["rows"]
    peers = list(dict.fromkeys(r["peer"] for r in rows))
    value = {(r["scenario"], r["peer"]): r["value"] for r in rows}
    paths = []
    for size, unit, scale in ((64, "messages/s", 1.0), (4096, "MB/s", 4096 / 1e6)):
        scens = [s for s in dict.fromkeys(r["scenario"] for r in rows) if s.startswith(f"{size}B ")]
        series = {
            p: [value[(s, p)] * scale if (s, p) in value else None for s in scens]
            for p in peers
            if any((s, p) in value for s in scens)
        }
        paths.append(
            _plot.grouped_bars(
                os.path.join(out_dir, f"ring_throughput_{size}.png"),
                f"{size} B messages, throughput (higher is better)",
                [s[len(f"{size}B ") :].replace(" ", "\n", 1) for s in scens],
                series,
                unit,
                log=True,
                note=note,
            )
        )
    scens = [s for s in dict.fromkeys(r["scenario"] for r in rows) if s.startswith("rt ")]
    if scens:
        series = {p: [value.get((s, p)) for s in scens] for p in peers if any((s, p) in value for s in scens)}
        paths.append(
            _plot.grouped_bars(
                os.path.join(out_dir, "ring_round_trip.png"),
                "64 B round trip between two processes (lower is better)",
                [s[3:] for s in scens],
                series,
                "microseconds (median)",
                log=True,
                note=note,
            )
        )
    return paths


def _obj_producer(peer, ctx, n, start, done, cpus=None):
    _pin(cpus)
    put, _, close = peer.sender(ctx)
    start.wait()
    obj = (1, "job", b"x" * 64)
    for _ in range(n):
        put(obj)
    done.wait()
    close()


def _obj_consumer(peer, ctx, n, start, result, cpus=None):
    _pin(cpus)
    get, _, close = peer.receiver(ctx)
    start.wait()
    t0 = time.perf_counter()
    for _ in range(n):
        get()
    result.send(time.perf_counter() - t0)
    close()


def throughput_objects(peer: Peer, n: int) -> float:
    """Objects per second: a small tuple with a 64-byte payload, 1->1, one per call."""
    ccpus, pcpus = _cpus_for("apart")
    ctx = peer.setup(1, 64)
    try:
        start = CTX.Barrier(3)
        done = CTX.Event()
        rx, tx = CTX.Pipe(duplex=False)
        cons = CTX.Process(target=_obj_consumer, args=(peer, ctx, n, start, tx, ccpus))
        prod = CTX.Process(target=_obj_producer, args=(peer, ctx, n, start, done, pcpus))
        cons.start()
        prod.start()
        start.wait()
        if not rx.poll(300):
            raise RuntimeError(f"{peer.name}: consumer did not finish")
        elapsed = rx.recv()
        done.set()
        prod.join(60)
        cons.join(60)
        return n / elapsed
    finally:
        peer.teardown(ctx)


if __name__ == "__main__":
    sys.exit(main())
