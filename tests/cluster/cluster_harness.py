"""What the cluster fault suites share: a state machine that shows duplicates, client
processes that record what was acknowledged, and bounded waits on cluster states.

Peers import :class:`AppendLog` by its import path ``cluster_harness:AppendLog``; the
``cluster_env`` fixture puts this directory on the peers' PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import time

from rsm_shm.cluster import StateMachine

HERE = os.path.dirname(os.path.abspath(__file__))
APPEND_LOG = "cluster_harness:AppendLog"
KV = "rsm_shm.cluster:KVStore"
CTX = multiprocessing.get_context("spawn")
PAGE = 200


class AppendLog(StateMachine):
    """Appends every command to a list: a command applied twice shows up twice.

    Queries: ``b"digest"`` -> {"n", "sha"} of the whole list in order;
    ``b"page:<start>"`` -> the commands from ``start``, at most PAGE of them.
    """

    def __init__(self):
        self.log: list[bytes] = []

    def apply(self, command: bytes) -> bytes:
        self.log.append(bytes(command))
        return str(len(self.log)).encode()

    def query(self, query: bytes) -> bytes:
        if query == b"digest":
            sha = hashlib.sha256(b"\n".join(self.log)).hexdigest()
            return json.dumps({"n": len(self.log), "sha": sha}).encode()
        if query.startswith(b"page:"):
            start = int(query[5:])
            return json.dumps([c.decode() for c in self.log[start : start + PAGE]]).encode()
        raise ValueError(f"AppendLog: unknown query {query!r}")

    def snapshot(self) -> bytes:
        return json.dumps([c.decode() for c in self.log]).encode()

    def restore(self, data: bytes) -> None:
        self.log = [c.encode() for c in json.loads(data)]


# -- client processes ------------------------------------------------------------------


def open_client(cluster, kv: bool = False):
    """``cluster``: a cluster name (a local client) or a list of "host:port" addresses
    of peers that serve clients over gRPC (``Client.connect``)."""
    from rsm_shm.cluster import Client, KVClient

    if isinstance(cluster, (list, tuple)):
        return KVClient.connect(list(cluster)) if kv else Client.connect(list(cluster))
    return KVClient(cluster) if kv else Client(cluster)


def append_writer(cluster: str, client_id: int, stop, progress, out, timeout: float = 10.0) -> None:
    """Propose ``b"<client>:<seq>"`` one after another until ``stop`` is set; report
    (acknowledged, unknown) commands on ``out``.  ``progress`` counts acknowledgements."""
    from rsm_shm.cluster import SessionExpiredError

    acked, unknown = [], []
    client = open_client(cluster)
    try:
        seq = 0
        while not stop.is_set():
            seq += 1
            cmd = f"{client_id}:{seq}"
            try:
                client.propose(cmd.encode(), timeout=timeout)
            except TimeoutError:
                unknown.append(cmd)
                continue
            except SessionExpiredError:
                # The cluster forgot our session: the outcome is unknown; start afresh.
                unknown.append(cmd)
                client.close()
                client = open_client(cluster)
                continue
            acked.append(cmd)
            with progress.get_lock():
                progress.value += 1
    finally:
        client.close()
        out.put((client_id, acked, unknown))


def kv_recorder(cluster: str, client_id: int, keys: list, stop, progress, out, seed: int, timeout: float = 5.0) -> None:
    """Random put/get/cas/delete on a few keys through ``KVClient``, every operation
    recorded with its times; the history goes to ``out``."""
    from rsm_shm.cluster import SessionExpiredError
    from rsm_shm.cluster.linearizability import Recorder

    rng = random.Random(seed)
    rec = Recorder(client_id)
    kv = open_client(cluster, kv=True)
    try:
        last_seen: dict = {}
        i = 0
        while not stop.is_set():
            i += 1
            key = rng.choice(keys)
            value = f"{client_id}.{i}"
            r = rng.random()
            try:
                step(rec, kv, r, key, value, last_seen, timeout)
            except SessionExpiredError:
                # Recorded as an unknown outcome; the cluster forgot the session.
                kv.close()
                kv = open_client(cluster, kv=True)
            with progress.get_lock():
                progress.value += 1
    finally:
        kv.close()
        out.put(rec.ops)


def step(rec, kv, r, key, value, last_seen, timeout):
    """One random KV operation (chosen by ``r``), recorded in ``rec``."""
    from rsm_shm.cluster.linearizability import UNKNOWN

    if r < 0.35:
        rec.run("put", key, lambda: kv.put(key, value, timeout=timeout), value=value)
    elif r < 0.7:
        got = rec.run("get", key, lambda: kv.get(key, timeout=timeout))
        if got is not UNKNOWN:
            last_seen[key] = got
    elif r < 0.9:
        expected = last_seen.get(key)
        rec.run("cas", key, lambda: kv.cas(key, expected, value, timeout=timeout), value=value, expected=expected)
    else:
        rec.run("delete", key, lambda: kv.delete(key, timeout=timeout))


def start_clients(target, args_of, n: int):
    """Start ``n`` spawn processes running ``target(*args_of(cid, stop, progress, out))``."""
    stop, progress, out = CTX.Event(), CTX.Value("q", 0), CTX.Queue()
    procs = [CTX.Process(target=target, args=args_of(cid, stop, progress, out), daemon=True) for cid in range(1, n + 1)]
    for p in procs:
        p.start()
    return procs, stop, progress, out


def finish_clients(procs, stop, out, timeout: float = 60.0) -> list:
    """Stop the clients and gather one report from each (bounded)."""
    import queue as _queue

    stop.set()
    reports = []
    deadline = time.monotonic() + timeout
    while len(reports) < len(procs):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"only {len(reports)} of {len(procs)} clients reported")
        try:
            reports.append(out.get(timeout=min(left, 0.5)))
        except _queue.Empty:
            # A client that crashed never reports: say so now rather than at the deadline.
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"client processes failed with exit codes {dead}") from None
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    return reports


def wait_progress(progress, more: int, timeout: float) -> None:
    """Wait until ``more`` further operations were acknowledged."""
    target = progress.value + more
    deadline = time.monotonic() + timeout
    while progress.value < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"clients made {progress.value - target + more} of {more} operations in {timeout} s")
        time.sleep(0.01)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_caught_up(cluster, timeout: float = 30.0) -> list:
    """Every running peer has applied everything the leader committed."""

    def caught_up():
        st = [s for s in cluster.status() if s.alive]
        leaders = [s for s in st if s.role == "leader"]
        if len(leaders) != 1:
            return None
        commit = leaders[0].commit
        return st if all(s.applied >= commit for s in st) else None

    return wait_until(caught_up, timeout, "every peer to apply the leader's commit index")


def read_log(client, timeout: float = 10.0) -> list:
    """The whole AppendLog of the leader, page by page."""
    log = []
    while True:
        page = json.loads(client.read(f"page:{len(log)}".encode(), timeout=timeout))
        log += page
        if len(page) < PAGE:
            return log


def logs_of_every_peer(cluster, timeout: float = 30.0) -> dict:
    """Each peer's AppendLog, read through it while it is the leader (leadership is
    transferred to each one in turn, so every replica is looked at, not just one)."""
    logs = {}
    with cluster.client() as client:
        for st in cluster.status():
            if not st.alive:
                continue
            if cluster.leader() != st.id:
                cluster.transfer_leadership(st.id)
                wait_until(lambda: cluster.leader() == st.id, timeout, f"peer {st.id} to lead")
            logs[st.id] = read_log(client)
    return logs


def check_exactly_once(logs: dict, reports: list) -> int:
    """Every acknowledged command is in every peer's log exactly once, nothing is applied
    twice, nothing appears that no client sent, and all replicas agree on the order."""
    acked = {c for _, a, _ in reports for c in a}
    sent = acked | {c for _, _, u in reports for c in u}
    assert logs, "no peer to check"
    first = None
    for peer, log in logs.items():
        seen = set()
        dups = [c for c in log if c in seen or seen.add(c)]
        assert not dups, f"peer {peer} applied commands twice: {dups[:10]}"
        lost = acked - seen
        assert not lost, f"peer {peer} lost {len(lost)} acknowledged commands: {sorted(lost)[:10]}"
        alien = seen - sent
        assert not alien, f"peer {peer} applied commands nobody sent: {sorted(alien)[:10]}"
        if first is None:
            first = (peer, log)
        else:
            assert log == first[1], f"peers {first[0]} and {peer} disagree on the log"
    return len(acked)


class RawLink:
    """Requests put straight into the inbox of one peer of our choosing, in the wire
    format a Client uses, and the replies collected undecided -- to see what a peer
    answers when no client would ask it (an isolated old leader)."""

    def __init__(self, cluster: str):
        import secrets

        from rsm_shm.cluster import envelope as ev
        from rsm_shm.cluster.control import ControlBlock
        from rsm_shm.cluster.layout import reply_ring_prefix
        from rsm_shm.ring import Ring

        self.ev = ev
        self.cluster = cluster
        ctl = ControlBlock(cluster)
        try:
            self.cluster_id = int(ctl.load().cluster_id)
        finally:
            ctl.close()
        self.reply_to = f"{reply_ring_prefix(cluster)}{os.getpid():x}.{secrets.token_hex(4)}"
        self.reply = Ring(self.reply_to, create=True, capacity=1 << 20)
        self.session = int.from_bytes(secrets.token_bytes(8), "little") | 1

    def _send(self, peer: int, data: bytes) -> None:
        from rsm_shm.cluster.layout import inbox_name
        from rsm_shm.ring import Ring

        ring = Ring(inbox_name(self.cluster, peer), create=False)
        try:
            ring.put(data, timeout=5)
        finally:
            ring.close()

    def read(self, peer: int, rid: int, query: bytes) -> None:
        ev = self.ev
        self._send(
            peer, ev.encode_read(ev.encode_header(ev.KIND_READ, 0, self.cluster_id), self.reply_to, [(rid, query)])
        )

    def propose(self, peer: int, rid: int, command: bytes) -> None:
        """Open a fresh session and propose ``command`` as its first command."""
        ev = self.ev
        reqs = [(ev.OP_REGISTER, 0, self.session, 0, 0, b""), (ev.OP_COMMAND, rid, self.session, 1, 0, command)]
        self._send(peer, ev.encode_propose(ev.encode_header(ev.KIND_PROPOSE, 0, self.cluster_id), self.reply_to, reqs))

    def replies(self, seconds: float) -> list:
        """Every (rid, status name, payload) that arrives within ``seconds``."""
        import queue as _queue

        ev = self.ev
        names = {
            getattr(ev, n): n for n in ("OK", "ERROR", "NOT_LEADER", "RETRY", "SESSION_EXPIRED", "STALE", "BAD_REQUEST")
        }
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = self.reply.get(timeout=left)
            except _queue.Empty:
                break
            out += [(rid, names.get(status, status), payload) for rid, status, payload in ev.decode_reply(data)]
        return out

    def close(self) -> None:
        self.reply.close()
        self.reply.unlink()
