"""Round trips of small messages over gRPC between two processes: what one hop of the
served peers' transport costs, and whether grpc.aio would make it cheaper.

    python tools/bench_grpc_stream.py [--n 2000] [--repeat 2] [--only LIST]

Needs the [net] extra.  Each case runs in two fresh processes (spawn) on 127.0.0.1; one
side sends a ~50-byte message, the other answers it, ``--n`` times in a row:

* ``sync-bidi``: grpc's threaded API on both sides, a bidirectional echo stream (the
  client's requests come from a queue, as a peer's messages would);
* ``aio-bidi``: grpc.aio on both sides, the client awaiting each answer in its loop;
* ``sync-unary``: a blocking unary call per message (how ``Client.connect`` talks);
* ``peer-sync``: rsm_shm's own peer link both ways -- ``GrpcTransport`` sending,
  ``PeerStreamService`` on a ``PeerServer`` receiving into an inbox ring, each side's
  main thread blocked on its inbox as a peer loop is.  Half of this round trip is the
  one-way time of a Raft message between served peers;
* ``peer-aio``: the same shape on grpc.aio: one asyncio loop thread per process serves
  the incoming stream (into the inbox ring) and writes the outgoing one (the peer's
  thread hands each message over with ``call_soon_threadsafe``): a sketch of an aio
  transport, to see whether building one would pay.

Printed per case: round-trip p50 and p90, and the CPU time each process spent per round
trip (``time.process_time``: every thread of the process, gRPC's own included).  On a
loaded machine the latency follows the number of thread wake-ups per message more than
the CPU; compare cases within one run, and note ``uptime``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List

_CTX = multiprocessing.get_context("spawn")
_SERVICE = "bench.Echo"
_CLUSTER_ID = 77
_WARMUP = 200


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def _quiet_grpc() -> None:
    """Before a child imports grpc: no INFO lines from its core (a peer closing its
    server while the other still sends logs a GOAWAY)."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _summary(lat: List[float], cpu: float) -> Dict[str, float]:
    lat = sorted(lat)
    return {
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p90_ms": lat[int(len(lat) * 0.9)] * 1e3,
        "cpu_us": cpu / len(lat) * 1e6,
    }


# -- plain echo cases: a server process and a client process ---------------------------


def _echo_server(aio: bool, port: int, ready: Any, stop: Any, out: Any) -> None:
    _quiet_grpc()
    import grpc

    def handlers(bidi: Callable[..., Any], unary: Callable[..., Any]) -> Any:
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
                "Unary": grpc.unary_unary_rpc_method_handler(unary),
            },
        )

    c0 = time.process_time()
    if not aio:
        from concurrent import futures

        def bidi(requests: Any, context: Any) -> Any:
            yield from requests

        server = grpc.server(futures.ThreadPoolExecutor(8))
        server.add_generic_rpc_handlers((handlers(bidi, lambda r, c: r),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        ready.set()
        stop.wait(300)
        out.put(time.process_time() - c0)
        server.stop(0).wait()
        return

    async def main() -> None:
        async def abidi(requests: Any, context: Any) -> Any:
            async for r in requests:
                yield r

        async def aunary(r: bytes, context: Any) -> bytes:
            return r

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handlers(abidi, aunary),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait, 300)
        out.put(time.process_time() - c0)
        await server.stop(0)

    asyncio.run(main())


def _echo_client(case: str, port: int, n: int, out: Any) -> None:
    _quiet_grpc()
    import grpc

    msg = b"m" * 50
    target = f"127.0.0.1:{port}"
    lat: List[float] = []
    if case == "aio-bidi":

        async def main() -> float:
            async with grpc.aio.insecure_channel(target) as ch:
                call = ch.stream_stream(f"/{_SERVICE}/Bidi")()
                for i in range(n + _WARMUP):
                    if i == _WARMUP:
                        c0 = time.process_time()
                    t = time.perf_counter()
                    await call.write(msg)
                    await call.read()
                    lat.append(time.perf_counter() - t)
                await call.done_writing()
                return time.process_time() - c0

        cpu = asyncio.run(main())
    else:
        with grpc.insecure_channel(target) as ch:
            if case == "sync-unary":
                unary = ch.unary_unary(f"/{_SERVICE}/Unary")
                for i in range(n + _WARMUP):
                    if i == _WARMUP:
                        c0 = time.process_time()
                    t = time.perf_counter()
                    unary(msg, timeout=10)
                    lat.append(time.perf_counter() - t)
            else:
                requests: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
                answers = iter(ch.stream_stream(f"/{_SERVICE}/Bidi")(iter(requests.get, None)))
                for i in range(n + _WARMUP):
                    if i == _WARMUP:
                        c0 = time.process_time()
                    t = time.perf_counter()
                    requests.put(msg)
                    next(answers)
                    lat.append(time.perf_counter() - t)
                requests.put(None)
            cpu = time.process_time() - c0
    out.put(_summary(lat[_WARMUP:], cpu))


def run_echo(case: str, n: int) -> Dict[str, float]:
    port = _free_port()
    ready, stop, sq, cq = _CTX.Event(), _CTX.Event(), _CTX.Queue(), _CTX.Queue()
    server = _CTX.Process(target=_echo_server, args=(case == "aio-bidi", port, ready, stop, sq), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            raise TimeoutError(f"{case}: the echo server did not start")
        client = _CTX.Process(target=_echo_client, args=(case, port, n, cq), daemon=True)
        client.start()
        res: Dict[str, float] = cq.get(timeout=300)
        client.join(30)
        stop.set()
        res["server_cpu_us"] = sq.get(timeout=60) / (n + _WARMUP) * 1e6
        return res
    finally:
        stop.set()
        server.join(10)
        if server.is_alive():
            server.kill()


# -- peer cases: two "peers", each a main thread blocked on its inbox ring ------------


class _AioPeerLink:
    """The aio sketch: one loop thread serving the incoming peer stream (into the inbox
    ring) and writing the outgoing one.  Not rsm_shm code: no refusals, no reconnects."""

    def __init__(self, me: int, inbox: Any, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.inbox = inbox
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-aio", daemon=True)
        self.thread.start()
        self.q: "collections.deque[bytes]" = collections.deque()
        self.sleeping = False
        asyncio.run_coroutine_threadsafe(self._serve(port), self.loop).result(30)

    async def _serve(self, port: int) -> None:
        import grpc

        from rsm_shm.cluster.net.transport import SERVICE, unframe

        inbox = self.inbox

        async def stream(requests: Any, context: Any) -> bytes:
            async for msg in requests:
                inbox.put_many(unframe(msg)[0], 0)
            return b""

        self.server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Stream": grpc.stream_unary_rpc_method_handler(stream)}
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()

    def connect(self, address: str) -> None:
        asyncio.run_coroutine_threadsafe(self._connect(address), self.loop).result(30)

    async def _connect(self, address: str) -> None:
        import grpc

        from rsm_shm.cluster.net.transport import STREAM_METHOD, frame

        self.channel = grpc.aio.insecure_channel(address)
        call = self.channel.stream_unary(STREAM_METHOD)()
        self.wake = asyncio.Event()
        q = self.q

        async def writer() -> None:
            while True:
                if not q:
                    self.sleeping = True
                    if not q:
                        await self.wake.wait()
                    self.sleeping = False
                    self.wake.clear()
                    continue
                batch = list(q)
                q.clear()
                await call.write(frame(batch))

        self.writer = asyncio.ensure_future(writer())

    def send(self, payload: bytes) -> bool:
        self.q.append(payload)
        if self.sleeping:
            self.sleeping = False
            self.loop.call_soon_threadsafe(self.wake.set)
        return True

    def close(self) -> None:
        async def stop() -> None:
            self.writer.cancel()
            await self.channel.close()
            await self.server.stop(0)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _peer(case: str, me: int, ports: Dict[int, int], inbox_name: str, n: int, ready: Any, go: Any, out: Any) -> None:
    _quiet_grpc()
    from rsm_shm import Ring
    from rsm_shm.cluster import envelope as ev

    other = 3 - me
    inbox = Ring(inbox_name, create=False)
    send: Callable[[bytes], bool]
    if case == "peer-sync":
        from rsm_shm.cluster.net.server import PeerServer
        from rsm_shm.cluster.net.transport import GrpcTransport, PeerStreamService

        server = PeerServer(f"127.0.0.1:{ports[me]}")
        server.add_handlers([PeerStreamService(_CLUSTER_ID, me, inbox, lambda: {1, 2}).handler()])
        server.start()
        ready.set()
        go.wait(60)
        transport = GrpcTransport(_CLUSTER_ID, me, {other: f"127.0.0.1:{ports[other]}"})
        deadline = time.monotonic() + 30
        while other not in transport.connected():
            if time.monotonic() > deadline:
                raise TimeoutError(f"peer {me}: no stream to peer {other}")
            time.sleep(0.01)

        def send(p: bytes) -> bool:
            return transport.send(other, p)

        def close() -> None:
            transport.close()
            server.stop(0)
    else:
        link = _AioPeerLink(me, inbox, ports[me])
        ready.set()
        go.wait(60)
        link.connect(f"127.0.0.1:{ports[other]}")
        send = link.send
        close = link.close
    payload = ev.encode_header(ev.KIND_RAFT, me, _CLUSTER_ID) + b"r" * 40
    lat: List[float] = []
    # Each side waited for its own outgoing stream, so nothing is dropped: peer 2 finds
    # peer 1's first message in its inbox however late its own stream came up.
    for i in range(n + _WARMUP):
        if i == _WARMUP:
            c0 = time.process_time()
        t = time.perf_counter()
        if me == 1:
            if not send(payload):
                raise RuntimeError("peer 1: a message was dropped")
            inbox.get(timeout=30)
        else:
            inbox.get(timeout=60)
            if not send(payload):
                raise RuntimeError("peer 2: a message was dropped")
        lat.append(time.perf_counter() - t)
    cpu = time.process_time() - c0
    time.sleep(0.2)  # peer 2's last answer is on its way
    close()
    inbox.close()
    out.put((me, _summary(lat[_WARMUP:], cpu)))


def run_peers(case: str, n: int) -> Dict[str, float]:
    from rsm_shm import Ring

    ports = {1: _free_port(), 2: _free_port()}
    rings = {i: Ring(f"bgs{os.getpid()}.{case}.{i}", create=True, capacity=1 << 20) for i in (1, 2)}
    out = _CTX.Queue()
    ready = {1: _CTX.Event(), 2: _CTX.Event()}
    go = _CTX.Event()
    procs = [
        _CTX.Process(target=_peer, args=(case, i, ports, rings[i].name, n, ready[i], go, out), daemon=True)
        for i in (1, 2)
    ]
    try:
        for p in procs:
            p.start()
        for i in (1, 2):
            if not ready[i].wait(60):
                raise TimeoutError(f"{case}: peer {i} did not start")
        go.set()
        got = dict(out.get(timeout=300) for _ in procs)
        for p in procs:
            p.join(30)
        res = dict(got[1])
        res["server_cpu_us"] = got[2]["cpu_us"]
        return res
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        for r in rings.values():
            r.unlink()
            r.close()


CASES: Dict[str, Callable[[str, int], Dict[str, float]]] = {
    "sync-bidi": run_echo,
    "aio-bidi": run_echo,
    "sync-unary": run_echo,
    "peer-sync": run_peers,
    "peer-aio": run_peers,
}


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="round trips per case and round (default 2000)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds, the cases interleaved (default 2)")
    ap.add_argument("--only", default="", help=f"comma list of: {', '.join(CASES)}")
    args = ap.parse_args(argv)
    cases = [c for c in args.only.split(",") if c] or list(CASES)
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r} (known: {', '.join(CASES)})")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
    print(f"{'case':12s} {'p50 ms':>8s} {'p90 ms':>8s} {'cpu/rt us (client, server)':>28s}")
    for _ in range(args.repeat):
        for c in cases:
            r = CASES[c](c, args.n)
            print(
                f"{c:12s} {r['p50_ms']:8.3f} {r['p90_ms']:8.3f} {r['cpu_us']:14.0f} {r['server_cpu_us']:12.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
