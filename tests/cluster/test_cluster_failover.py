"""Early failover of ring clusters: followers see their leader's process die.

Peers of a LocalCluster publish their pid and start time in their status records; a
follower whose leader's process is gone forgets the leader (RawNode.forget_leader) and
the surviving voters take turns campaigning at once, instead of waiting out the election
timeout.  Real processes, real SIGKILL; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from cluster_harness import KV, wait_until
from rsm_shm import _proc
from rsm_shm.cluster.status import LeaderWatch, StatusRecord, status_segment_name

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]


def test_a_killed_leader_is_replaced_before_any_election_timeout(make_cluster):
    """With a 3-6 s election timeout (and a 3 s leader lease that makes followers ignore
    pre-votes), a new leader is elected well within the lease after a SIGKILL (the bound
    leaves room for a loaded machine; typically it takes some 20 ms),
    in the next term (one election: the survivors did not split the vote), and takes
    writes."""
    cluster = make_cluster(KV, fsync=False, tick=0.01, heartbeat_tick=2, election_tick=300)
    leader = cluster.wait_leader(timeout=30)
    wait_until(
        lambda: all(s.leader == leader for s in cluster.status() if s.alive), 10, f"every peer to follow {leader}"
    )
    client = cluster.client()
    client.propose(b'{"op": "put", "key": "a", "value": 1}', timeout=10)
    term = next(s.term for s in cluster.status() if s.id == leader)
    t0 = time.monotonic()
    cluster.kill(leader)

    def elected():
        leaders = [s for s in cluster.status() if s.alive and s.role == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    new = wait_until(elected, 15, f"a new leader after peer {leader}")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"peer {new.id} was elected {elapsed:.2f} s after the kill: the leader lease ran out"
    assert new.term == term + 1, f"elected in term {new.term}, {new.term - term} terms after the kill"
    client.propose(b'{"op": "put", "key": "a", "value": 2}', timeout=10)
    assert json.loads(client.read(b'{"op": "get", "key": "a"}', timeout=10)) == {"found": True, "value": 2}


@pytest.fixture
def record(shm_name):
    """A peer status record of a made-up cluster, unlinked afterwards."""
    cluster = shm_name("w")
    rec = StatusRecord(status_segment_name(cluster, 1), create=True)
    yield cluster, rec
    rec.close()
    rec.unlink()


def _publish(rec, cluster_id: int, peer_id: int, pid: int, start: int) -> None:
    raw = rec.new_record()
    raw.cluster_id, raw.id, raw.pid, raw.start_time = cluster_id, peer_id, pid, start
    rec.publish(raw)


@pytest.mark.parametrize("how", ["pidfd", "proc"])
def test_leader_watch_tells_a_dead_leader_from_a_live_one(record, how, monkeypatch):
    """Alive: no.  SIGKILLed but not yet reaped (a zombie): gone.  A live process with
    another start time (the pid was reused): gone.  With a pidfd, and without (older
    kernels: kill(pid, 0) and /proc)."""
    cluster, rec = record
    if how == "proc":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open on this platform")
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        _publish(rec, 7, 1, child.pid, _proc.start_time(child.pid))
        watch = LeaderWatch(cluster, 7)
        assert not watch.leader_gone(1, 5)
        assert not watch.leader_gone(1, 5)
        child.kill()
        # Not reaped yet: the kernel keeps a zombie with the same pid.
        wait_until(lambda: not _proc.process_alive(child.pid), 10, "the child to die")
        assert watch.leader_gone(1, 5)
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
    me = _proc.start_time(os.getpid())
    _publish(rec, 7, 1, os.getpid(), me + 1)
    assert watch.leader_gone(1, 6), "a live pid with another start time is another process"
    _publish(rec, 7, 1, os.getpid(), me)
    assert not watch.leader_gone(1, 7)
    watch.close()


def test_leader_watch_only_trusts_records_of_that_leader(record):
    """A record of another cluster incarnation, of another peer, or no record at all is
    no evidence: the leader is not reported gone (its election timeout still applies)."""
    cluster, rec = record
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that is dead
    watch = LeaderWatch(cluster, 7)
    _publish(rec, 8, 1, child.pid, 0)
    assert not watch.leader_gone(1, 5), "another cluster id"
    _publish(rec, 7, 2, child.pid, 0)
    assert not watch.leader_gone(1, 5), "a record that names another peer"
    assert not watch.leader_gone(2, 5), "no record for peer 2"
    _publish(rec, 7, 1, 0, 0)
    assert not watch.leader_gone(1, 5), "no pid"
    _publish(rec, 7, 1, child.pid, 0)
    assert watch.leader_gone(1, 5)
    watch.close()
