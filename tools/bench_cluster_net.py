"""The gRPC side of ``tools/bench_cluster.py --transport grpc`` (imported by it).

rsm_shm's peers run as served peers (``rsm_shm.cluster.serve.Peer``: one process each,
Raft between them over gRPC on 127.0.0.1 ports) and the load generators are separate
processes using ``Client.connect([...])`` -- every command crosses gRPC twice more
(client -> leader -> client) than PySyncObj's, whose load runs inside its leader.

Same figures as the ring transport (pipelined commits/s, sequential commit p50/p99,
linearizable read p50, failover), plus a breakdown of where a sequential command's time
goes: a bare gRPC round trip (an empty request the client service answers without
touching the peer), the envelope work per command (encode, the service's decode and
re-encode, the reply's decode), the same command through a local ``Client(name)``
(shared-memory rings to the same served peers: Raft + gRPC between peers + apply), a
round trip between two processes over rsm_shm's own peer streams alone (``GrpcTransport``
into ``PeerStreamService`` into an inbox ring, and back: what Raft's append and its
acknowledgement cost in transport; ``tools/bench_grpc_stream.py`` compares it with plain
grpc and grpc.aio streams), and the leader's mean fsync.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import bench_cluster as bc
import bench_grpc_stream

KV_SM = bc.KV_SM


def _connect_pipelined_client(addrs: list, n: int, batch: int, start, out) -> None:
    from rsm_shm.cluster import Client

    with Client.connect(addrs, timeout=30) as c:
        c.propose(bc._kv_put(0), timeout=30)
        start.wait(60)
        t0 = time.monotonic()
        done = 0
        while done < n:
            k = min(batch, n - done)
            c.propose_many([bc._kv_put(done + j) for j in range(k)], timeout=60)
            done += k
        out.put((t0, time.monotonic(), done))


def _sequential(c, n: int, read: bool) -> dict:
    c.propose(bc._kv_put(0), timeout=30)
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        if read:
            c.read(bc._kv_get(i), timeout=10)
        else:
            c.propose(bc._kv_put(i), timeout=10)
        lat.append(time.perf_counter() - t0)
    return {"p50_ms": bc._pct(lat, 50) * 1e3, "p99_ms": bc._pct(lat, 99) * 1e3}


def _connect_sequential_client(addrs: list, n: int, read: bool, out) -> None:
    from rsm_shm.cluster import Client

    with Client.connect(addrs, timeout=30) as c:
        out.put(_sequential(c, n, read))


def _local_sequential_client(name: str, n: int, read: bool, out) -> None:
    from rsm_shm.cluster import Client

    with Client(name) as c:
        out.put(_sequential(c, n, read))


def _grpc_round_trip_client(addrs: list, n: int, out) -> None:
    """p50 of an empty Propose at the leader: gRPC + HTTP/2 + the service's header check."""
    import grpc

    from rsm_shm.cluster import Client
    from rsm_shm.cluster import envelope as ev
    from rsm_shm.cluster.net.client_service import METHOD_PROPOSE

    with Client.connect(addrs, timeout=30) as c:
        c.propose(bc._kv_put(0), timeout=30)
        leader = c.peers()[c.leader()]
        empty = ev.encode_propose(ev.encode_header(ev.KIND_PROPOSE, 0, c._cluster_id), "", [])
    with grpc.insecure_channel(leader) as ch:
        call = ch.unary_unary(METHOD_PROPOSE)
        for _ in range(50):
            call(empty, timeout=5)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            call(empty, timeout=5)
            lat.append(time.perf_counter() - t0)
    out.put({"p50_ms": bc._pct(lat, 50) * 1e3})


def _connect_failover_writer(addrs: list, ready, acks_out, stop) -> None:
    from rsm_shm.cluster import Client

    pairs = []
    with Client.connect(addrs, timeout=30) as c:
        c.propose(bc._kv_put(0), timeout=30)
        ready.set()
        i = 0
        while not stop.is_set():
            i += 1
            invoked = time.monotonic()
            try:
                c.propose(bc._kv_put(i), timeout=30)
            except TimeoutError:
                continue
            pairs.append((invoked, time.monotonic()))
    acks_out.put(pairs)


def envelope_cost_us(batch: int = 1) -> float:
    """Microseconds of envelope work per command (this process, no I/O): the client's
    encode, the service's decode and re-encode, the peer's decode, the reply's encode and
    the client's decode."""
    from rsm_shm.cluster import envelope as ev

    hdr = ev.encode_header(ev.KIND_PROPOSE, 0, 7)
    rhdr = ev.encode_header(ev.KIND_REPLY, 1, 7)
    cmds = [bc._kv_put(i) for i in range(batch)]
    rounds = max(1, 20000 // batch)
    t0 = time.perf_counter()
    for _ in range(rounds):
        env = ev.encode_propose(hdr, "", [(ev.OP_COMMAND, i + 1, 5, i + 1, 0, c) for i, c in enumerate(cmds)])
        _r, reqs = ev.decode_propose(env)
        env2 = ev.encode_propose(
            hdr, "bench.cffff.abcdef01", [(op, rid + 100, s, q, a, d) for op, rid, s, q, a, d in reqs]
        )
        ev.decode_propose(env2)
        rep = ev.encode_reply(rhdr, [(rid, 0, b'{"ok": true}') for _op, rid, *_x in reqs])
        ev.decode_reply(rep)
    return (time.perf_counter() - t0) / (rounds * batch) * 1e6


class GrpcCluster:
    """3 served peers (``rsm_shm.cluster.serve.Peer``), gRPC between them and to clients."""

    label = "rsm_shm gRPC"
    _count = 0

    def __init__(self, fsync: bool, peers: int = 3, **timing):
        from rsm_shm.cluster.serve import Peer

        GrpcCluster._count += 1
        self.dir = tempfile.mkdtemp(prefix="bench_net_")
        bc.KILLER.dirs.append(self.dir)
        self.name = f"bnet{os.getpid()}.{GrpcCluster._count}"
        ports = bc._free_ports(peers)
        self.addresses = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
        self.peers = {}
        for i, addr in self.addresses.items():
            others = {j: a for j, a in self.addresses.items() if j != i}
            self.peers[i] = Peer(
                self.name,
                i,
                listen=addr,
                peers=others,
                state_machine=KV_SM,
                data_dir=os.path.join(self.dir, f"p{i}"),
                fsync=fsync,
                **timing,
            )
        for p in self.peers.values():
            p.start()
        self.wait_leader()

    def addrs(self) -> list:
        return [self.addresses[i] for i in sorted(self.addresses) if self.peers[i].alive]

    def statuses(self) -> dict:
        from rsm_shm.cluster.net.client import fetch_statuses

        answers, _errors = fetch_statuses(self.addrs(), timeout=1.0)
        return {int(info["id"]): info["status"] for info in answers.values()}

    def leader(self):
        st = self.statuses()
        leaders = [(s["term"], i) for i, s in st.items() if s["role"] == "leader" and s["alive"]]
        return max(leaders)[1] if leaders else None

    def wait_leader(self, timeout: float = 30, other_than=None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead is not None and lead != other_than:
                return lead
            time.sleep(0.01)
        raise TimeoutError(f"served cluster {self.name} elected no leader in {timeout} s")

    def pipelined(self, n: int, inflight: int, clients: int = 2) -> float:
        start, q = bc._CTX.Event(), bc._CTX.Queue()
        per = n // clients
        procs = [
            bc.KILLER.add(
                bc._CTX.Process(
                    target=_connect_pipelined_client,
                    args=(self.addrs(), per, max(1, inflight // clients), start, q),
                    daemon=True,
                )
            )
            for _ in range(clients)
        ]
        for p in procs:
            p.start()
        time.sleep(1.0)  # every client connected and registered its session
        start.set()
        res = [q.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(10)
        return sum(r[2] for r in res) / (max(r[1] for r in res) - min(r[0] for r in res))

    def sequential(self, n: int, read: bool) -> dict:
        return bc._run_in(_connect_sequential_client, self.addrs(), n, read)

    def destroy(self) -> None:
        for p in self.peers.values():
            p.stop()


def net_round(args) -> dict:
    out = {}
    for fsync in (False, True):
        c = GrpcCluster(fsync=fsync)
        try:
            suffix = "_fsync" if fsync else ""
            out["pipelined" + suffix] = c.pipelined(args.ops, args.inflight)
            out["latency" + suffix] = c.sequential(args.seq, False)
            if not fsync:
                out["read"] = c.sequential(args.seq, True)
                out["local_client_latency"] = bc._run_in(_local_sequential_client, c.name, args.seq, False)
                out["grpc_round_trip"] = bc._run_in(_grpc_round_trip_client, c.addrs(), args.seq)
                out["peer_stream_round_trip"] = bench_grpc_stream.run_peers("peer-sync", args.seq)
            else:
                lead = c.leader()
                st = c.statuses().get(lead, {})
                if st.get("fsyncs"):
                    out["fsync_mean_ms"] = st["fsync_seconds"] / st["fsyncs"] * 1e3
        finally:
            c.destroy()
    out["envelope_us_per_cmd"] = envelope_cost_us(1)
    out["envelope_us_per_cmd_batched"] = envelope_cost_us(1000)
    return out


def net_failover(args) -> float | None:
    c = GrpcCluster(fsync=True)
    try:
        ready, stop, q = bc._CTX.Event(), bc._CTX.Event(), bc._CTX.Queue()
        p = bc.KILLER.add(
            bc._CTX.Process(target=_connect_failover_writer, args=(c.addrs(), ready, q, stop), daemon=True)
        )
        p.start()
        if not ready.wait(60):
            raise TimeoutError("gRPC writer did not start")
        time.sleep(0.3)
        leader = c.leader()
        t_kill = time.monotonic()
        c.peers[leader].kill()
        c.wait_leader(other_than=leader)
        time.sleep(0.3)
        stop.set()
        pairs = q.get(timeout=60)
        p.join(10)
        after = [ack for invoked, ack in pairs if invoked >= t_kill]
        return min(after) - t_kill if after else None
    finally:
        c.destroy()


def summary_extra(rounds: list) -> dict:
    def med(path):
        vals = [v for v in (path(r) for r in rounds) if v is not None]
        return statistics.median(vals) if vals else float("nan")

    return {
        "local_client_p50_ms": med(lambda r: r.get("local_client_latency", {}).get("p50_ms")),
        "grpc_round_trip_p50_ms": med(lambda r: r.get("grpc_round_trip", {}).get("p50_ms")),
        "peer_stream_round_trip_p50_ms": med(lambda r: r.get("peer_stream_round_trip", {}).get("p50_ms")),
        "envelope_us_per_cmd": med(lambda r: r.get("envelope_us_per_cmd")),
        "envelope_us_per_cmd_batched": med(lambda r: r.get("envelope_us_per_cmd_batched")),
        "fsync_mean_ms": med(lambda r: r.get("fsync_mean_ms")),
    }


def print_targets(summary: dict) -> None:
    rsm, pso = summary.get("rsm", {}), summary.get("pysyncobj", {})
    if rsm:
        print()
        print("where a sequential command's time goes (gRPC transport, fsync=False):")
        print(f"  through Client.connect (gRPC client + peers)     p50 {rsm['latency_p50_ms']:.3f} ms")
        print(
            f"  through a local Client(name) (rings to the leader) p50 {rsm['local_client_p50_ms']:.3f} ms"
            "  <- Raft over gRPC between peers + apply"
        )
        print(f"  bare gRPC round trip to the client service       p50 {rsm['grpc_round_trip_p50_ms']:.3f} ms")
        print(
            f"  peer stream round trip (transport only)          p50 {rsm['peer_stream_round_trip_p50_ms']:.3f} ms"
            "  <- a Raft append and its acknowledgement, without Raft"
        )
        print(
            f"  envelope encode/decode per command: {rsm['envelope_us_per_cmd']:.1f} us alone, "
            f"{rsm['envelope_us_per_cmd_batched']:.2f} us in a batch of 1000"
        )
        print(f"  leader's mean fsync (fsync=True run): {rsm['fsync_mean_ms']:.3f} ms")
    if rsm and pso:
        print()
        print("targets (issue 13, gRPC transport), ratios from this run:")

        r = rsm["pipelined_ops_s"] / pso["pipelined_ops_s"]
        bc.target_line("pipelined fsync=False >= 1.5x PySyncObj's best", f"{r:.2f}x", r >= 1.5)
        r = rsm["latency_p50_ms"] / pso["latency_p50_ms"]
        bc.target_line("sequential commit p50 fsync=False <= 0.5x PySyncObj", f"{r:.2f}x", r <= 0.5)
        r = rsm["failover_s"] / pso["failover_s"]
        bc.target_line("failover <= 0.25x PySyncObj", f"{r:.2f}x", r <= 0.25)
