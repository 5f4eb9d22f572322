"""Benchmark replicated state machines: rsm_shm.cluster against PySyncObj, side by side.

    python tools/bench_cluster.py [--quick] [--repeat N] [--only LIST] [--json FILE]
    python tools/bench_cluster.py --long        # RSS after 1M entries, restart of a 1M-entry log
    python tools/bench_cluster.py --transport grpc   # served peers, Raft and clients over gRPC

Both systems run 3 peers, each in its own process, on this machine: rsm_shm over its
shared-memory rings, PySyncObj over loopback TCP (what a Python user picks today).  The
state machine is a tiny key-value dict; commands carry an 8-byte value.

What is measured (medians of ``--repeat`` rounds, the two systems interleaved round by
round so that noise on a shared machine hits both alike):

* ``pipelined``: commits/s with many commands in flight.  rsm_shm: fsync=False and
  fsync=True (every acknowledged write durable on a quorum).  PySyncObj has no fsync
  (its journal is an mmap that is never synced); it is run with batching on and off and
  the better is kept ("its best").
* ``latency``: one command at a time, from the call to the acknowledgement: p50 and p99.
  PySyncObj with ``appendEntriesUseBatch=False`` (with batching on, a lone command waits
  for the next 100 ms batch).
* ``read``: a linearizable read, one at a time, p50.  rsm_shm: ``Client.read`` (ReadIndex).
  PySyncObj has no linearizable read but through its log, so its figure is a replicated
  ``get`` (its local read is not linearizable: a deposed leader serves stale data).
* ``failover``: a writer keeps writing; the leader is SIGKILLed; the time from the kill
  to the next acknowledged write.  A fresh cluster per round, median of ``--failovers``.
* ``--long``: a peer's RSS after 1M commands were committed, and the time a follower
  takes from restart until it has applied the whole log again (also: until its process
  runs).  rsm_shm packs the commands of one leader turn into one log entry, so its log
  holds fewer entries than commands (printed); PySyncObj has one entry per command.

**Where the clients run.**  rsm_shm's clients are separate processes (``Client(name)``
talks to the peers through shared memory).  PySyncObj has no client protocol: commands
are method calls on a replica, so its load generator runs inside the leader's process
(and, for failover, inside a surviving follower).  This spares PySyncObj a hop, so its
figures are, if anything, flattering to it.

The PySyncObj settings are its defaults (election timeout 0.4-1.4 s) apart from the
batching switch named above.  Numbers depend on the machine and its load; the harness
prints ``uptime`` first.  Everything it starts is killed and every directory it made is
removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from typing import Callable

import _plot  # tools/_plot.py: --plot DIR

_CTX = multiprocessing.get_context("spawn")
VALUE = b"x" * 8

# -- helpers ---------------------------------------------------------------------------


def target_line(what: str, ratio: str, ok: bool) -> None:
    """One line of a run's targets summary (also used by bench_cluster_net.py)."""
    print(f"  {'PASS' if ok else 'FAIL'}  {what}: {ratio}")


def _pct(values: list, p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _brief(r: dict) -> str:
    def one(v):
        if isinstance(v, dict):
            return "{" + _brief(v) + "}"
        return format(v, ".4g") if isinstance(v, (int, float)) else repr(v)

    return ", ".join(f"{k}={one(v)}" for k, v in r.items() if v not in ("", None))


def _free_ports(n: int) -> list:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


class _Killer:
    """Every process the run starts, so that a failure or Ctrl-C leaves nothing behind."""

    def __init__(self):
        self.procs: list = []
        self.dirs: list = []

    def add(self, proc):
        self.procs.append(proc)
        return proc

    def cleanup(self):
        for p in self.procs:
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join(5)
        self.procs.clear()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs.clear()


KILLER = _Killer()

# -- PySyncObj -------------------------------------------------------------------------


def _pso_class():
    from pysyncobj import SyncObj, replicated

    class BenchKV(SyncObj):
        def __init__(self, self_addr, others, conf):
            super().__init__(self_addr, others, conf)
            self._data = {}

        @replicated
        def put(self, key, value):
            self._data[key] = value
            return True

        @replicated
        def get(self, key):
            return self._data.get(key)

    return BenchKV


def _pso_peer(index: int, ports: list, conf_kw: dict, conn) -> None:
    """One PySyncObj peer; its main thread serves the harness's requests over ``conn``."""
    from pysyncobj import FAIL_REASON, SyncObjConf, SyncObjException

    BenchKV = _pso_class()
    addrs = [f"127.0.0.1:{p}" for p in ports]
    obj = BenchKV(addrs[index], [a for i, a in enumerate(addrs) if i != index], SyncObjConf(**conf_kw))

    def pipelined(n: int, inflight: int) -> dict:
        sem = threading.Semaphore(inflight)
        done = threading.Event()
        state = {"count": 0, "errors": 0}

        def cb(res, err):  # runs on PySyncObj's tick thread only
            if err != FAIL_REASON.SUCCESS:
                state["errors"] += 1
            state["count"] += 1
            sem.release()
            if state["count"] == n:
                done.set()

        t0 = time.perf_counter()
        for i in range(n):
            sem.acquire()
            obj.put(i & 1023, VALUE, callback=cb)
        if not done.wait(120):
            return {"error": f"only {state['count']} of {n} completed"}
        dt = time.perf_counter() - t0
        return {"ops_s": n / dt, "errors": state["errors"]}

    def sequential(n: int, read: bool) -> dict:
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            if read:
                obj.get(i & 1023, sync=True, timeout=5)
            else:
                obj.put(i & 1023, VALUE, sync=True, timeout=5)
            lat.append(time.perf_counter() - t0)
        return {"p50_ms": _pct(lat, 50) * 1e3, "p99_ms": _pct(lat, 99) * 1e3}

    def failover_writer(conn) -> dict:
        acks: list = []
        stop = threading.Event()

        def writer(k):
            i = 0
            while not stop.is_set():
                i += 1
                invoked = time.monotonic()
                try:
                    obj.put(("f", k), i, sync=True, timeout=0.05)
                    acks.append((invoked, time.monotonic()))
                except SyncObjException:
                    pass

        threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(acks) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        conn.send(("steady", len(acks)))
        t_kill = conn.recv()
        deadline = time.monotonic() + 30
        after = None
        while time.monotonic() < deadline and after is None:
            # The first write invoked after the kill that is acknowledged (an ack of a
            # write already committed before the kill says nothing about failover).
            after = min((a for i, a in list(acks) if i >= t_kill), default=None)
            time.sleep(0.002)
        stop.set()
        for t in threads:
            t.join(1)
        return {"failover_s": None if after is None else after - t_kill}

    try:
        while True:
            req = conn.recv()
            what = req[0]
            if what == "status":
                leader = obj._getLeader()
                conn.send(
                    {
                        "leader": None if leader is None else leader.address,
                        "self": addrs[index],
                        "is_leader": obj._isLeader(),
                        "commit": obj.raftCommitIndex,
                        "applied": obj.raftLastApplied,
                        "ready": obj.isReady(),
                    }
                )
            elif what == "pipelined":
                conn.send(pipelined(*req[1:]))
            elif what == "sequential":
                conn.send(sequential(*req[1:]))
            elif what == "failover_writer":
                conn.send(failover_writer(conn))
            elif what == "stop":
                obj.destroy()
                conn.send("stopped")
                return
    except (EOFError, KeyboardInterrupt):
        pass


class PySyncObjCluster:
    """3 PySyncObj peers on loopback TCP, each in its own (spawned) process."""

    label = "PySyncObj"

    def __init__(self, peers: int = 3, per_peer=None, **conf_kw):
        self.ports = _free_ports(peers)
        self.conf_kw = conf_kw
        self.per_peer = per_peer or [{} for _ in range(peers)]
        self.procs, self.conns = [], []
        for i in range(peers):
            self._spawn(i)

    def _spawn(self, i: int) -> None:
        parent, child = _CTX.Pipe()
        p = KILLER.add(
            _CTX.Process(
                target=_pso_peer, args=(i, self.ports, {**self.conf_kw, **self.per_peer[i]}, child), daemon=True
            )
        )
        p.start()
        child.close()
        if i < len(self.procs):
            self.procs[i], self.conns[i] = p, parent
        else:
            self.procs.append(p)
            self.conns.append(parent)

    def ask(self, i: int, *req, timeout: float = 180):
        self.conns[i].send(req)
        if not self.conns[i].poll(timeout):
            raise TimeoutError(f"PySyncObj peer {i} did not answer {req[0]!r} in {timeout} s")
        return self.conns[i].recv()

    def wait_leader(self, timeout: float = 30, among=None) -> int:
        among = range(len(self.procs)) if among is None else among
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = {i: self.ask(i, "status") for i in among}
            leaders = [i for i, s in st.items() if s["is_leader"]]
            if len(leaders) == 1 and all(s["leader"] == st[leaders[0]]["self"] for s in st.values()):
                return leaders[0]
            time.sleep(0.02)
        raise TimeoutError("PySyncObj elected no leader")

    def kill(self, i: int) -> float:
        t = time.monotonic()
        os.kill(self.procs[i].pid, signal.SIGKILL)
        return t

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p.is_alive():
                try:
                    self.ask(i, "stop", timeout=5)
                except (TimeoutError, OSError, EOFError):
                    pass
            p.kill()
            p.join(5)


def pso_round(args) -> dict:
    out = {}
    for batch in (True, False):
        c = PySyncObjCluster(appendEntriesUseBatch=batch)
        try:
            leader = c.wait_leader()
            r = c.ask(leader, "pipelined", args.ops, args.inflight)
            out[f"pipelined_batch_{'on' if batch else 'off'}"] = r.get("ops_s", float("nan"))
            if not batch:
                out["latency"] = c.ask(leader, "sequential", args.seq, False)
                out["read"] = c.ask(leader, "sequential", args.seq, True)
        finally:
            c.stop()
    out["pipelined"] = max(out["pipelined_batch_on"], out["pipelined_batch_off"])
    return out


def pso_long(args) -> dict:
    """PySyncObj with its journal and dump files (its durable mode, default compaction):
    RSS of each peer after ``args.entries`` commits, and a follower's restart time."""
    d = tempfile.mkdtemp(prefix="bench_pso_")
    KILLER.dirs.append(d)
    per_peer = [dict(journalFile=os.path.join(d, f"j{i}"), fullDumpFile=os.path.join(d, f"dump{i}")) for i in range(3)]
    c = PySyncObjCluster(per_peer=per_peer)
    try:
        leader = c.wait_leader()
        t0 = time.perf_counter()
        left = args.entries
        while left > 0:
            n = min(left, 100_000)
            r = c.ask(leader, "pipelined", n, args.inflight, timeout=600)
            if "error" in r:
                raise RuntimeError(f"PySyncObj: {r['error']}")
            left -= n
        write_s = time.perf_counter() - t0
        rss = {i: _rss_mb(p.pid) for i, p in enumerate(c.procs)}
        commit = c.ask(leader, "status")["commit"]
        follower = (leader + 1) % 3
        c.kill(follower)
        c.procs[follower].join(5)
        t0 = time.monotonic()
        c._spawn(follower)
        deadline = time.monotonic() + args.restart_timeout
        restart_s, note = None, ""
        while True:
            if c.ask(follower, "status")["applied"] >= commit:
                restart_s = time.monotonic() - t0
                break
            if time.monotonic() > deadline or not c.procs[follower].is_alive():
                note = (
                    f"the restarted follower did not catch up within {args.restart_timeout:g} s (see its errors above)"
                )
                break
            time.sleep(0.05)
        return {
            "entries": args.entries,
            "write_s": write_s,
            "rss_mb_max": max(rss.values()),
            "rss_mb": rss,
            "restart_s": restart_s,
            "note": note,
        }
    finally:
        c.stop()


def pso_failover() -> float | None:
    c = PySyncObjCluster(appendEntriesUseBatch=False)
    try:
        leader = c.wait_leader()
        writer = (leader + 1) % 3
        c.conns[writer].send(("failover_writer",))
        if not c.conns[writer].poll(30):
            raise TimeoutError("PySyncObj writer did not reach a steady state")
        c.conns[writer].recv()
        t_kill = c.kill(leader)
        c.conns[writer].send(t_kill)
        if not c.conns[writer].poll(60):
            raise TimeoutError("PySyncObj writer did not report")
        return c.conns[writer].recv()["failover_s"]
    finally:
        c.stop()


# -- rsm_shm ---------------------------------------------------------------------------


def rsm_available() -> str | None:
    """None when rsm_shm.cluster is importable, else why not."""
    try:
        from rsm_shm.cluster import Client, LocalCluster  # noqa: F401
    except ImportError as exc:
        return f"rsm_shm.cluster is not available ({exc})"
    return None


KV_SM = "rsm_shm.cluster:KVStore"


def _kv_put(i: int) -> bytes:
    return b'{"op":"put","key":"k%d","value":"xxxxxxxx"}' % (i & 1023)


def _kv_get(i: int) -> bytes:
    return b'{"op":"get","key":"k%d"}' % (i & 1023)


def _rsm_pipelined_client(name: str, n: int, batch: int, start, out) -> None:
    """One client process: ``n`` puts through ``propose_many`` in batches of ``batch``
    (that many in flight from this client)."""
    from rsm_shm.cluster import Client

    with Client(name) as c:
        c.propose(_kv_put(0), timeout=30)  # session registered, leader found
        start.wait(60)
        t0 = time.monotonic()
        done = 0
        while done < n:
            k = min(batch, n - done)
            c.propose_many([_kv_put(done + j) for j in range(k)], timeout=60)
            done += k
        out.put((t0, time.monotonic(), done))


def _rsm_sequential_client(name: str, n: int, read: bool, out) -> None:
    from rsm_shm.cluster import Client

    with Client(name) as c:
        c.propose(_kv_put(0), timeout=30)
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            if read:
                c.read(_kv_get(i), timeout=10)
            else:
                c.propose(_kv_put(i), timeout=10)
            lat.append(time.perf_counter() - t0)
        out.put({"p50_ms": _pct(lat, 50) * 1e3, "p99_ms": _pct(lat, 99) * 1e3})


def _rsm_failover_writer(name: str, ready, acks_out, stop) -> None:
    """Writes one command at a time (each call follows leader changes by itself) and
    reports (invoked, acknowledged) pairs."""
    from rsm_shm.cluster import Client

    pairs = []
    with Client(name) as c:
        c.propose(_kv_put(0), timeout=30)
        ready.set()
        i = 0
        while not stop.is_set():
            i += 1
            invoked = time.monotonic()
            try:
                c.propose(_kv_put(i), timeout=30)
            except TimeoutError:
                continue
            pairs.append((invoked, time.monotonic()))
    acks_out.put(pairs)


def _run_in(target, *args, timeout: float = 300):
    """Run ``target(*args, out)`` in a spawned process; its one result."""
    q = _CTX.Queue()
    p = KILLER.add(_CTX.Process(target=target, args=(*args, q), daemon=True))
    p.start()
    try:
        return q.get(timeout=timeout)
    finally:
        p.join(10)


class RsmCluster:
    """A LocalCluster of 3 KVStore peers in a temporary data directory."""

    label = "rsm_shm"
    _count = 0

    def __init__(self, fsync: bool, peers: int = 3, **timing):
        from rsm_shm.cluster import LocalCluster

        RsmCluster._count += 1
        self.dir = tempfile.mkdtemp(prefix="bench_rsm_")
        KILLER.dirs.append(self.dir)
        self.name = f"bench{os.getpid()}.{RsmCluster._count}"
        self.cluster = LocalCluster(
            self.name, KV_SM, peers=peers, data_dir=os.path.join(self.dir, "d"), fsync=fsync, **timing
        )
        self.cluster.start()
        self.cluster.wait_leader(timeout=30)

    def pipelined(self, n: int, inflight: int, clients: int = 2) -> float:
        start = _CTX.Event()
        q = _CTX.Queue()
        per = n // clients
        procs = [
            KILLER.add(
                _CTX.Process(
                    target=_rsm_pipelined_client,
                    args=(self.name, per, max(1, inflight // clients), start, q),
                    daemon=True,
                )
            )
            for _ in range(clients)
        ]
        for p in procs:
            p.start()
        time.sleep(0.5)  # let every client register its session
        start.set()
        res = [q.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(10)
        t0 = min(r[0] for r in res)
        t1 = max(r[1] for r in res)
        return sum(r[2] for r in res) / (t1 - t0)

    def sequential(self, n: int, read: bool) -> dict:
        return _run_in(_rsm_sequential_client, self.name, n, read)

    def destroy(self) -> None:
        self.cluster.destroy()


def rsm_round(args) -> dict:
    out = {}
    for fsync in (False, True):
        c = RsmCluster(fsync=fsync)
        try:
            suffix = "_fsync" if fsync else ""
            out["pipelined" + suffix] = c.pipelined(args.ops, args.inflight)
            out["latency" + suffix] = c.sequential(args.seq, False)
            if not fsync:
                out["read"] = c.sequential(args.seq, True)
        finally:
            c.destroy()
    return out


def rsm_failover(args) -> float | None:
    c = RsmCluster(fsync=True)
    try:
        ready, stop, q = _CTX.Event(), _CTX.Event(), _CTX.Queue()
        p = KILLER.add(_CTX.Process(target=_rsm_failover_writer, args=(c.name, ready, q, stop), daemon=True))
        p.start()
        if not ready.wait(60):
            raise TimeoutError("rsm_shm writer did not start")
        time.sleep(0.3)  # steady state
        leader = c.cluster.leader()
        t_kill = time.monotonic()
        c.cluster.kill(leader)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = [s for s in c.cluster.status() if s.alive and s.role == "leader" and s.id != leader]
            if st:
                break
            time.sleep(0.005)
        time.sleep(0.3)  # a few writes by the new leader
        stop.set()
        pairs = q.get(timeout=60)
        p.join(10)
        after = [ack for invoked, ack in pairs if invoked >= t_kill]
        return min(after) - t_kill if after else None
    finally:
        c.destroy()


def rsm_long(args) -> dict:
    """RSS of each peer after ``args.entries`` commands were committed and a follower's
    restart time, with the default compaction and with compaction off (the whole log on
    disk).  The leader packs the commands that arrive in one loop turn into one log
    entry, so the log holds fewer entries than commands: the report says how many."""
    out = {}
    for label, timing in (
        ("rsm_shm (default snapshots)", {}),
        (
            "rsm_shm (no compaction: whole log kept)",
            {"snapshot_commands": 10 * args.entries, "snapshot_bytes": 1 << 50},
        ),
    ):
        c = RsmCluster(fsync=True, **timing)
        try:
            t0 = time.perf_counter()
            left = args.entries
            while left > 0:
                n = min(left, 200_000)
                c.pipelined(n, args.inflight)
                left -= n
            write_s = time.perf_counter() - t0
            st = c.cluster.status()
            rss = {s.id: _rss_mb(s.pid) for s in st if s.alive}
            leader = c.cluster.leader()
            commit = next(s.commit for s in st if s.id == leader)
            follower = next(s for s in st if s.id != leader)
            c.cluster.kill(follower.id)
            t0 = time.monotonic()
            c.cluster.restart(follower.id)  # returns once the peer process runs
            running_s = time.monotonic() - t0
            deadline = time.monotonic() + args.restart_timeout
            restart_s, note = None, ""
            while True:
                if next(s.applied for s in c.cluster.status() if s.id == follower.id) >= commit:
                    restart_s = time.monotonic() - t0
                    break
                if time.monotonic() > deadline:
                    note = f"the restarted follower did not catch up within {args.restart_timeout:g} s"
                    break
                time.sleep(0.01)
            out[label] = {
                "entries": args.entries,
                "write_s": write_s,
                "rss_mb_max": max(rss.values()),
                "rss_mb": rss,
                "log_entries": follower.last_index - follower.first_index + 1,
                "running_s": running_s,
                "restart_s": restart_s,
                "note": note,
            }
        finally:
            c.destroy()
    return out


# -- the run ---------------------------------------------------------------------------


def _median(rounds: list, path: Callable) -> float:
    vals = [v for v in (path(r) for r in rounds) if v is not None and v == v]
    return statistics.median(vals) if vals else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    ap.add_argument("--repeat", type=int, help="rounds of the steady-state figures (default 3)")
    ap.add_argument("--failovers", type=int, help="leader kills (median; default 5)")
    ap.add_argument("--ops", type=int, help="commands in the pipelined run (default 100,000)")
    ap.add_argument("--inflight", type=int, help="commands in flight, pipelined (default 20,000)")
    ap.add_argument("--seq", type=int, help="sequential commands and reads (default 2000)")
    ap.add_argument("--only", default="", help="comma list of: pysyncobj, rsm")
    ap.add_argument("--long", action="store_true", help="RSS after 1M entries and restart time")
    ap.add_argument("--entries", type=int, default=1_000_000, help="log entries of the --long run")
    ap.add_argument(
        "--restart-timeout", type=float, default=120.0, help="seconds a restarted follower gets to catch up (--long)"
    )
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument(
        "--transport",
        choices=("ring", "grpc"),
        default="ring",
        help="rsm_shm over shared-memory rings (default) or served peers and clients over gRPC "
        "(tools/bench_cluster_net.py; needs the [net] extra)",
    )
    _plot.add_argument(ap)
    args = ap.parse_args(argv)
    _plot.check_available(args.plot)
    meta = _plot.run_meta()  # the load average at the start
    net = None
    if args.transport == "grpc":
        import bench_cluster_net as net

        net.bc = sys.modules[__name__]  # one KILLER and one set of helpers, also when run as a script
    # fsync=False is measured on purpose; the table says which figures are not durable.
    warnings.filterwarnings("ignore", message=".*runs with fsync=False.*")
    # --quick shrinks every count not given explicitly.
    defaults = ((1, 3), (1, 5), (5000, 100_000), (2000, 20_000), (200, 2000))
    for name, (quick, full) in zip(("repeat", "failovers", "ops", "inflight", "seq"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    systems = [s for s in (args.only.split(",") if args.only else ["rsm", "pysyncobj"]) if s]

    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    results = {"rsm": [], "pysyncobj": []}
    failovers = {"rsm": [], "pysyncobj": []}
    why_not_rsm = rsm_available() if "rsm" in systems else None
    if why_not_rsm:
        print(f"note: {why_not_rsm}; measuring PySyncObj only")
        systems.remove("rsm")
    if "pysyncobj" in systems and importlib.util.find_spec("pysyncobj") is None:
        # Without this its peers die at import and the harness sees only a reset pipe.
        sys.exit("PySyncObj is not installed: pip install 'rsm_shm[bench]' (or --only rsm)")
    if args.long:
        return main_long(args, systems)
    try:
        for rnd in range(args.repeat):
            for s in systems:
                r = pso_round(args) if s == "pysyncobj" else (net.net_round(args) if net else rsm_round(args))
                results[s].append(r)
                print(f"round {rnd + 1} {s}: " + _brief(r), flush=True)
        for rnd in range(args.failovers):
            for s in systems:
                f = pso_failover() if s == "pysyncobj" else (net.net_failover(args) if net else rsm_failover(args))
                failovers[s].append(f)
                print(f"failover {rnd + 1} {s}: {f if f is None else round(f, 3)} s", flush=True)
    finally:
        KILLER.cleanup()

    summary = {}
    for s in systems:
        rs = results[s]
        summary[s] = {
            "pipelined_ops_s": _median(rs, lambda r: r.get("pipelined")),
            "latency_p50_ms": _median(rs, lambda r: r["latency"]["p50_ms"]),
            "latency_p99_ms": _median(rs, lambda r: r["latency"]["p99_ms"]),
            "read_p50_ms": _median(rs, lambda r: r["read"]["p50_ms"]),
            "failover_s": _median(failovers[s], lambda f: f),
        }
        if s == "rsm":
            summary[s].update(
                {
                    "pipelined_fsync_ops_s": _median(rs, lambda r: r.get("pipelined_fsync")),
                    "latency_fsync_p50_ms": _median(rs, lambda r: r["latency_fsync"]["p50_ms"]),
                    "latency_fsync_p99_ms": _median(rs, lambda r: r["latency_fsync"]["p99_ms"]),
                }
            )
            if net:
                summary[s].update(net.summary_extra(rs))
        else:
            summary[s].update(
                {
                    "pipelined_batch_on_ops_s": _median(rs, lambda r: r.get("pipelined_batch_on")),
                    "pipelined_batch_off_ops_s": _median(rs, lambda r: r.get("pipelined_batch_off")),
                }
            )
    print()
    print_table(summary, targets=net is None)
    if net:
        net.print_targets(summary)
    _plot.save(
        {"summary": summary, "rounds": results, "failovers": failovers, "meta": meta}, args.json, args.plot, plot
    )
    return 0


def main_long(args, systems) -> int:
    out = {}
    try:
        for s in systems:
            out[s] = pso_long(args) if s == "pysyncobj" else rsm_long(args)
            print(f"{s}: " + _brief(out[s]), flush=True)
    finally:
        KILLER.cleanup()
    print()
    print(
        f"{'after ' + format(args.entries, ',') + ' entries':40} {'RSS MB (max peer)':>18} "
        f"{'restart: running':>17} {'caught up':>10} {'write s':>8}"
    )
    for s, r in out.items():
        for label, row in [(s, r)] if "rss_mb_max" in r else list(r.items()):
            running = f"{row['running_s']:.2f} s" if row.get("running_s") is not None else "-"
            caught = f"{row['restart_s']:.2f} s" if row.get("restart_s") is not None else "FAILED"
            print(f"{label:40} {row['rss_mb_max']:>18.1f} {running:>17} {caught:>10} {row['write_s']:>8.1f}")
            if row.get("log_entries") is not None:
                print(f"  the restarted follower's log held {row['log_entries']:,} entries")
            if row.get("note"):
                print(f"  note: {row['note']}")
            if s == "rsm":
                ok_restart = row.get("restart_s") is not None and row["restart_s"] < 5
                print(
                    f"  {'PASS' if row['rss_mb_max'] < 100 else 'FAIL'}  RSS < 100 MB;  "
                    f"{'PASS' if ok_restart else 'FAIL'}  restart (to caught up) < 5 s"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def print_table(summary: dict, targets: bool = True) -> None:
    rows = [
        ("pipelined commits/s, fsync=False", "pipelined_ops_s", "{:,.0f}"),
        ("pipelined commits/s, fsync=True", "pipelined_fsync_ops_s", "{:,.0f}"),
        ("sequential commit p50 ms", "latency_p50_ms", "{:.3f}"),
        ("sequential commit p99 ms", "latency_p99_ms", "{:.3f}"),
        ("sequential commit p50 ms, fsync=True", "latency_fsync_p50_ms", "{:.3f}"),
        ("sequential commit p99 ms, fsync=True", "latency_fsync_p99_ms", "{:.3f}"),
        ("linearizable read p50 ms", "read_p50_ms", "{:.3f}"),
        ("failover s (median)", "failover_s", "{:.3f}"),
    ]
    rsm, pso = summary.get("rsm", {}), summary.get("pysyncobj", {})
    print(f"{'':40} {'rsm_shm':>12} {'PySyncObj':>12}")
    for label, key, fmt in rows:
        a = rsm.get(key)
        b = pso.get(key)
        print(f"{label:40} {fmt.format(a) if a is not None else '-':>12} {fmt.format(b) if b is not None else '-':>12}")
    if rsm and pso and targets:
        print()
        print("targets (issue 10), ratios from this run:")

        r = rsm["pipelined_ops_s"] / pso["pipelined_ops_s"]
        target_line("pipelined fsync=False >= 2x PySyncObj's best", f"{r:.2f}x", r >= 2)
        r = rsm["pipelined_fsync_ops_s"] / pso["pipelined_ops_s"]
        target_line("pipelined fsync=True >= 1x PySyncObj (no fsync)", f"{r:.2f}x", r >= 1)
        r = rsm["latency_p50_ms"] / pso["latency_p50_ms"]
        target_line("sequential commit p50 fsync=False <= 0.3x PySyncObj", f"{r:.2f}x", r <= 0.3)
        r = rsm["read_p50_ms"] / rsm["latency_p50_ms"]
        target_line("linearizable read p50 <= commit p50", f"{r:.2f}x of commit", r <= 1)
        r = rsm["failover_s"] / pso["failover_s"]
        target_line("failover <= 0.25x PySyncObj", f"{r:.2f}x", r <= 0.25)
    if pso:
        print(
            f"(PySyncObj pipelined: batching on {pso['pipelined_batch_on_ops_s']:,.0f}/s, "
            f"off {pso['pipelined_batch_off_ops_s']:,.0f}/s; it has no fsync)"
        )


def plot(results: dict, out_dir: str) -> list:
    """The figures of a steady-state run (its --json results) as PNG files in ``out_dir``."""
    summary = results["summary"]
    note = _plot.machine_note(results.get("meta", {}))
    names = {"rsm": "rsm_shm", "pysyncobj": "PySyncObj"}
    systems = [s for s in ("rsm", "pysyncobj") if s in summary]

    def values(keys):
        return {names[s]: [summary[s].get(k) for k in keys] for s in systems}

    paths = [
        _plot.grouped_bars(
            os.path.join(out_dir, "cluster_throughput.png"),
            "3 peers: pipelined commits (higher is better)",
            ["fsync=False", "fsync=True"],
            values(["pipelined_ops_s", "pipelined_fsync_ops_s"]),
            "commands committed per s",
            note=note,
        )
    ]
    paths.append(
        _plot.grouped_bars(
            os.path.join(out_dir, "cluster_latency.png"),
            "3 peers: one command or read at a time (lower is better)",
            ["commit p50", "commit p99", "read p50", "commit p50\nfsync=True", "commit p99\nfsync=True"],
            values(["latency_p50_ms", "latency_p99_ms", "read_p50_ms", "latency_fsync_p50_ms", "latency_fsync_p99_ms"]),
            "milliseconds",
            log=True,
            note=note,
        )
    )
    paths.append(
        _plot.hbars(
            os.path.join(out_dir, "cluster_failover.png"),
            "Leader SIGKILLed: until a new leader commits (median)",
            [names[s] for s in systems],
            [summary[s].get("failover_s") for s in systems],
            "seconds",
            note=note,
        )
    )
    return paths


if __name__ == "__main__":
    sys.exit(main())
