"""Membership changes of a running, loaded cluster: add a peer (it catches up from a
snapshot), remove one, replace one whose disk was wiped."""

from __future__ import annotations

import os
import shutil

import pytest

from cluster_harness import (
    APPEND_LOG,
    append_writer,
    check_exactly_once,
    finish_clients,
    logs_of_every_peer,
    start_clients,
    wait_caught_up,
    wait_progress,
    wait_until,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]

# Small enough that a few hundred commands compact the log, so a new peer cannot be
# sent the log from index 1 and must install a snapshot.
SNAPSHOT_COMMANDS = 50


def peer(cluster, pid_):
    return next(s for s in cluster.status() if s.id == pid_)


def loaded(cluster, n_clients=2):
    return start_clients(
        append_writer, lambda cid, stop, progress, out: (cluster.name, cid, stop, progress, out), n_clients
    )


def test_added_peer_catches_up_from_a_snapshot_and_votes(make_cluster):
    cluster = make_cluster(APPEND_LOG, fsync=False, snapshot_commands=SNAPSHOT_COMMANDS, snapshot_keep=10)
    cluster.wait_leader(timeout=15)
    procs, stop, progress, out = loaded(cluster)
    try:
        wait_progress(progress, 4 * SNAPSHOT_COMMANDS, timeout=30)
        wait_until(lambda: min(s.first_index for s in cluster.status()) > 1, 15, "the logs to compact")
        new = cluster.add_peer()
        assert new == 4
        wait_until(
            lambda: new in peer(cluster, cluster.leader() or 1).voters, 30, f"peer {new} to be promoted to voter"
        )
        wait_progress(progress, 50, timeout=30)
    finally:
        reports = finish_clients(procs, stop, out)
    wait_caught_up(cluster)
    st = peer(cluster, new)
    assert st.alive and st.snapshots_received >= 1, st
    logs = logs_of_every_peer(cluster)
    assert set(logs) == {1, 2, 3, 4}
    check_exactly_once(logs, reports)


def test_removed_peer_leaves_and_the_rest_carry_on(make_cluster):
    cluster = make_cluster(APPEND_LOG, fsync=False)
    leader = cluster.wait_leader(timeout=15)
    procs, stop, progress, out = loaded(cluster)
    try:
        wait_progress(progress, 50, timeout=30)
        gone = next(s.id for s in cluster.status() if s.id != leader)
        cluster.remove_peer(gone)
        wait_until(
            lambda: gone not in peer(cluster, cluster.leader() or leader).voters,
            15,
            f"peer {gone} to leave the configuration",
        )
        wait_until(
            lambda: not peer(cluster, gone).alive if gone in {s.id for s in cluster.status()} else True,
            15,
            f"peer {gone}'s process to end",
        )
        wait_progress(progress, 50, timeout=30)
        # Removing the leader hands leadership to one of the others.
        cluster.remove_peer(leader)
        wait_until(lambda: cluster.leader() not in (None, leader), 15, "a leader among the rest")
        # One voter left: it is its own quorum and keeps committing.
        wait_progress(progress, 50, timeout=30)
    finally:
        reports = finish_clients(procs, stop, out)
    logs = logs_of_every_peer(cluster)
    assert len(logs) == 1
    check_exactly_once(logs, reports)


def test_a_wiped_peer_is_replaced(make_cluster):
    cluster = make_cluster(APPEND_LOG, fsync=True, snapshot_commands=SNAPSHOT_COMMANDS, snapshot_keep=10)
    leader = cluster.wait_leader(timeout=15)
    procs, stop, progress, out = loaded(cluster)
    try:
        wait_progress(progress, 100, timeout=30)
        victim = next(s.id for s in cluster.status() if s.id != leader)
        cluster.kill(victim)
        # Its disk is lost: a peer that forgot its votes must never rejoin under its old
        # id, so it is removed and a fresh peer takes its place.
        shutil.rmtree(os.path.join(cluster.data_dir, f"peer{victim}"))
        cluster.remove_peer(victim)
        new = cluster.add_peer()
        wait_until(lambda: new in peer(cluster, cluster.leader() or leader).voters, 30, f"peer {new} to be promoted")
        wait_progress(progress, 50, timeout=30)
    finally:
        reports = finish_clients(procs, stop, out)
    wait_caught_up(cluster)
    logs = logs_of_every_peer(cluster)
    assert victim not in logs and new in logs
    check_exactly_once(logs, reports)
