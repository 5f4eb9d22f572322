"""A replicated key-value store that loses nothing when its leader is SIGKILLed.

    python examples/replicated_kv.py [--seconds S] [--clients N] [--no-fsync]

Starts a 3-peer ``KVStore`` cluster (each peer its own process, logs fsynced on disk),
writes from two client processes, SIGKILLs the leader in the middle of the stream, keeps
writing, restarts the killed peer, and prints a timeline: leader changes, the failover
time (kill -> the next write acknowledged), how many writes were acknowledged, and that
every peer ends with the same state, including the one that was killed.  It takes a few
seconds and leaves no process, shared-memory segment or file behind.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

from rsm_shm.cluster import KVClient, LocalCluster

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"{time.monotonic() - T0:7.3f} s  {text}", flush=True)


KEYS_PER_CLIENT = 50


def writer(cluster_name: str, client_id: int, stop, acked, out) -> None:
    """Write ``c<id>-<n % 50> = n`` for n = 1, 2, ... until told to stop; report what was
    acknowledged, with when each write was invoked and acknowledged."""
    done, unknown = [], []
    with KVClient(cluster_name) as kv:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"c{client_id}-{n % KEYS_PER_CLIENT}"
            invoked = time.monotonic()
            try:
                kv.put(key, n, timeout=10)
            except TimeoutError:
                unknown.append((key, n))  # may or may not have happened
                continue
            done.append((key, n, invoked, time.monotonic()))
            with acked.get_lock():
                acked.value += 1
    out.put((client_id, done, unknown))


def wait_for(what: str, predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.005)


def live_leader(cluster, exclude=None):
    leaders = [s for s in cluster.status() if s.alive and s.role == "leader" and s.id != exclude]
    return leaders[0] if len(leaders) == 1 else None


def agreed(cluster):
    """The common applied index when every peer applied everything the leader committed."""
    st = cluster.status()
    leaders = [s for s in st if s.alive and s.role == "leader"]
    if len(leaders) != 1 or not all(s.alive for s in st):
        return None
    applied = {s.applied for s in st}
    return applied.pop() if len(applied) == 1 and leaders[0].commit in (s.applied for s in st) else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.7, help="seconds of writing before and after the kill")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--no-fsync", action="store_true", help="do not fsync (faster, not durable)")
    ap.add_argument("--name", default=f"demo{os.getpid()}", help="cluster name")
    args = ap.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")

    cluster = LocalCluster(args.name, "rsm_shm.cluster:KVStore", peers=3, fsync=not args.no_fsync)
    procs = []
    try:
        cluster.start()
        say(
            f"cluster {args.name!r} started: 3 peer processes, KVStore, "
            f"{'fsync on every commit' if not args.no_fsync else 'NO fsync'}"
        )
        first = wait_for("a leader", lambda: live_leader(cluster))
        say(f"peer {first.id} is the leader (term {first.term})")

        stop, acked, out = ctx.Event(), ctx.Value("q", 0), ctx.Queue()
        procs = [
            ctx.Process(target=writer, args=(args.name, i + 1, stop, acked, out), daemon=True)
            for i in range(args.clients)
        ]
        for p in procs:
            p.start()
        wait_for("the first writes", lambda: acked.value >= 10)
        say(f"{args.clients} client processes are writing")
        time.sleep(args.seconds)  # let the stream run

        victim = live_leader(cluster)
        before = acked.value
        t_kill = time.monotonic()
        cluster.kill(victim.id)
        say(f"SIGKILL the leader, peer {victim.id} ({before} writes acknowledged so far)")
        successor = wait_for("a new leader", lambda: live_leader(cluster, exclude=victim.id))
        say(
            f"peer {successor.id} is the leader (term {successor.term}), "
            f"{(time.monotonic() - t_kill) * 1e3:.0f} ms after the kill"
        )
        wait_for("writes after the kill", lambda: acked.value >= before + 10)
        time.sleep(args.seconds)

        cluster.restart(victim.id)
        say(f"restarted peer {victim.id}")
        leader_commit = wait_for("a leader", lambda: live_leader(cluster)).commit
        wait_for(
            f"peer {victim.id} to catch up",
            lambda: next(s for s in cluster.status() if s.id == victim.id).applied >= leader_commit,
        )
        say(f"peer {victim.id} caught up (applied index {leader_commit})")

        stop.set()
        reports = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        writes = [w for _, done, _ in reports for w in done]
        unknown = sum(len(u) for _, _, u in reports)
        after = [ack for _, _, invoked, ack in writes if invoked >= t_kill]
        failover = (min(after) - t_kill) * 1e3 if after else float("nan")
        say(f"clients stopped: {len(writes)} writes acknowledged, {unknown} of unknown outcome")

        # Agreement: every peer applied the same log, and every peer -- read while it
        # leads, so each replica is looked at, not just one -- ends with every key at the
        # last value a client had acknowledged for it (or a later write whose
        # acknowledgement was lost to a timeout): no acknowledged write was lost.
        final = wait_for("every peer to apply the same log", lambda: agreed(cluster))
        last = {}
        for key, n, _, _ in writes:
            last[key] = max(last.get(key, 0), n)
        later = {}
        for _, _, u in reports:
            for key, n in u:
                later.setdefault(key, set()).add(n)
        with KVClient(args.name) as kv:
            for st in cluster.status():
                if cluster.leader() != st.id:
                    cluster.transfer_leadership(st.id)
                    wait_for(f"peer {st.id} to lead", lambda: cluster.leader() == st.id)
                for key, n in last.items():
                    got = kv.get(key)
                    if got != n and not (got in later.get(key, ()) and got > n):
                        say(f"peer {st.id}: {key} = {got!r}, but {n} was acknowledged: A WRITE WAS LOST")
                        return 1
        say(
            f"agreement: peers {', '.join(str(s.id) for s in cluster.status())} all applied the same "
            f"{final} entries; each holds the last acknowledged value of all {len(last)} keys"
        )
        print()
        print(f"leader changes : peer {first.id} -> (SIGKILL) -> peer {successor.id}")
        print(f"failover       : {failover:.0f} ms from the SIGKILL to the next acknowledged write")
        print(f"writes         : {len(writes)} acknowledged, {unknown} unknown, 0 lost")
        return 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
        cluster.destroy()
        print("cluster destroyed: no peer process, shared-memory segment or data directory is left")


if __name__ == "__main__":
    sys.exit(main())
