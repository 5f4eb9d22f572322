"""``LocalCluster(restart_failed=...)``: the owner restarts peers that die unasked.

Crashes are real SIGKILLs sent straight to a peer's pid (as the OOM killer or an outside
``kill -9`` would), not through the cluster's API; fault injection through the API
(``kill``) must stay in force.  Every wait is bounded and awaits a state change.
"""

from __future__ import annotations

import json
import os
import signal
import warnings

import pytest

from cluster_harness import KV, wait_until
from rsm_shm import _proc
from rsm_shm.cluster import LocalCluster
from rsm_shm.cluster.restarts import RestartPolicy

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]

FAST = RestartPolicy(backoff=0.02, max_backoff=0.1, interval=0.01)


def peer(cluster, pid):
    return next(s for s in cluster.status() if s.id == pid)


def crash(cluster, pid) -> int:
    """SIGKILL peer ``pid``'s process behind the cluster's back; its old OS pid."""
    ospid = peer(cluster, pid).pid
    os.kill(ospid, signal.SIGKILL)
    return ospid


def restarted(cluster, pid, old_ospid, count):
    def done():
        s = peer(cluster, pid)
        return s.alive and s.pid != old_ospid and s.restarts == count and s.state == "running"

    return wait_until(done, 30, f"peer {pid} to be restarted ({count} restarts)")


def test_a_crashed_peer_is_restarted_and_a_killed_one_is_not(make_cluster):
    cluster = make_cluster(KV, fsync=False, restart_failed=FAST)
    leader = cluster.wait_leader(timeout=30)
    follower, other = [p for p in (1, 2, 3) if p != leader]
    client = cluster.client()
    client.propose(b'{"op": "put", "key": "k", "value": 1}', timeout=10)

    old = crash(cluster, leader)
    restarted(cluster, leader, old, 1)
    client.propose(b'{"op": "put", "key": "k", "value": 2}', timeout=10)
    # The restarted peer catches up from its log and the leader.
    commit = max(s.commit for s in cluster.status())
    wait_until(lambda: peer(cluster, leader).applied >= commit, 30, f"peer {leader} to catch up")

    # kill() is fault injection: the watcher leaves that peer dead.  Proof that the
    # watcher looked after the kill: it restarts another peer crashed later.
    cluster.kill(follower)
    old = crash(cluster, other)
    restarted(cluster, other, old, 1)
    s = peer(cluster, follower)
    assert (s.alive, s.state, s.restarts) == (False, "killed", 0)
    cluster.restart(follower)
    assert peer(cluster, follower).alive
    assert [s.restarts for s in cluster.status()] == [1 if p != follower else 0 for p in (1, 2, 3)]


def test_a_removed_peer_is_not_restarted(make_cluster):
    """remove_peer() stops the peer's process: no crash, no restart (proof that the
    watcher looked afterwards: it restarts a peer crashed later)."""
    cluster = make_cluster(KV, fsync=False, restart_failed=FAST)
    leader = cluster.wait_leader(timeout=30)
    gone, other = [p for p in (1, 2, 3) if p != leader]
    gone_pid = peer(cluster, gone).pid
    cluster.remove_peer(gone)
    old = crash(cluster, other)
    restarted(cluster, other, old, 1)
    assert [s.id for s in cluster.status()] == sorted((leader, other))
    assert not _proc.process_alive(gone_pid)


def test_a_crash_loop_is_given_up_visibly_and_restart_brings_it_back(make_cluster):
    """Two restarts allowed per minute: the third crash marks the peer failed (and says
    so in its log and with a RuntimeWarning); restart() starts it again, and its crash
    history with it."""
    cluster = make_cluster(
        KV, fsync=False, restart_failed=RestartPolicy(max_restarts=2, window=60, backoff=0.01, interval=0.01)
    )
    cluster.wait_leader(timeout=30)
    victim = 3
    for n in (1, 2):
        old = crash(cluster, victim)
        restarted(cluster, victim, old, n)
    # The watcher thread marks the peer failed, then warns: wait for the warning itself.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        crash(cluster, victim)

        def warned():
            return any(
                w.category is RuntimeWarning and "peer 3 died 3 times within 60 s" in str(w.message) for w in caught
            )

        wait_until(warned, 30, "the crash-loop warning")
    s = peer(cluster, victim)
    assert (s.alive, s.state, s.restarts) == (False, "failed", 2)
    assert "not restarted again" in cluster.peer_log(victim)
    # Restarted by hand from another process (as `rsm-shm cluster restart` does): its
    # crash history starts again, so the next crash is restarted, not given up on.
    other = LocalCluster.attach(cluster.name)
    try:
        other.restart(victim)
    finally:
        other.close()
    s = peer(cluster, victim)
    assert (s.alive, s.state) == (True, "running")
    old = crash(cluster, victim)
    restarted(cluster, victim, old, 3)


def test_restart_policy_and_restart_failed_refuse_bad_values(tmp_path):
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy(max_restarts=0)
    with pytest.raises(ValueError, match="backoff"):
        RestartPolicy(backoff=-1)
    with pytest.raises(ValueError, match="interval"):
        RestartPolicy(interval=0)
    with pytest.raises(TypeError, match="restart_failed must be a bool or a RestartPolicy, not 'yes'"):
        LocalCluster("x", KV, restart_failed="yes")
    assert RestartPolicy(backoff=0.1, max_backoff=1.0).delay(0) == 0.1
    assert RestartPolicy(backoff=0.1, max_backoff=1.0).delay(10) == 1.0


# -- a peer that cannot start: start() fails at once with its error, nothing restarts it


def _segments_of(name):
    from rsm_shm.cluster.layout import segment_pattern

    pat = segment_pattern(name)
    return [e for e in os.listdir("/dev/shm") if e.startswith("rsm_shm.") and pat.fullmatch(e[len("rsm_shm.") :])]


@pytest.mark.parametrize("restart_failed", [False, True])
def test_a_peer_whose_state_machine_fails_to_build_fails_start_with_its_error(
    shm_name, tmp_path, cluster_env, monkeypatch, restart_failed
):
    """The import path imports here (start() checks it) but the class refuses to build in
    the peers: start() raises at once with the peer's own words, whatever the restart
    policy, and leaves no segment behind."""
    monkeypatch.setenv("RSM_SHM_TEST_MANAGER_PID", str(os.getpid()))
    name = shm_name("sm")
    c = LocalCluster(
        name,
        "cluster_machines:OnlyInTheTestProcess",
        data_dir=str(tmp_path / "d"),
        fsync=False,
        restart_failed=restart_failed,
    )
    try:
        with pytest.raises(
            RuntimeError, match=r"(?s)peer \d exited with status 1 while starting.*refuses to run in a peer"
        ):
            c.start()
        assert _segments_of(name) == []
    finally:
        c.destroy()


def test_a_peer_whose_data_directory_is_refused_fails_start_with_its_error(shm_name, tmp_path, cluster_env):
    """Peer 2's directory says it was written by a newer rsm_shm: start() names it."""
    name = shm_name("dd")
    data = tmp_path / "d"
    with LocalCluster(name, KV, data_dir=str(data), fsync=False) as c:
        c.wait_leader(timeout=30)
    meta = data / "peer2" / "META"
    doc = json.loads(meta.read_text())
    doc["format"] += 1
    meta.write_text(json.dumps(doc))
    c = LocalCluster(name, KV, data_dir=str(data), fsync=False, restart_failed=True)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)peer 2 exited with status 1 while starting.*newer rsm_shm"):
            c.start()
        assert _segments_of(name) == []
    finally:
        c.destroy()


def test_closing_the_owner_handle_ends_its_watcher(make_cluster):
    """close() on the handle that started the cluster (which should rather stop() it)
    leaves the peers running but ends the restart watcher thread with the handle."""
    import threading

    cluster = make_cluster(KV, fsync=False, restart_failed=FAST)
    watcher = next(t for t in threading.enumerate() if t.name == f"rsm_shm restarts {cluster.name}")
    cluster.close()
    assert not watcher.is_alive()
    LocalCluster.attach(cluster.name).stop()
