"""Automatic snapshots: taken after a number of applied commands or bytes (not log
entries: a leader packs many commands into one entry), so that a restarted peer
applies only the commands after its last snapshot."""

from __future__ import annotations

import struct
import time

import pytest

from rsm_shm.cluster import LocalCluster, Timing

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::rsm_shm.cluster.storage.NotDurableWarning")]

APPLY_COUNTER = "cluster_machines:ApplyCounter"
BATCH = 1000  # commands sent at once: the leader packs them into a few log entries
TAIL = 5  # commands after the last snapshot


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param({"snapshot_commands": 100}, id="commands"),
        pytest.param({"snapshot_commands": 10**9, "snapshot_bytes": 20_000}, id="bytes"),
    ],
)
def test_a_snapshot_threshold_is_counted_in_commands_or_bytes_and_restart_applies_only_the_tail(shm_name, policy):
    command = b"c" * 64  # ~100 bytes in the log with its session header
    with LocalCluster(shm_name("cl"), APPLY_COUNTER, peers=3, fsync=False, snapshot_keep=1, **policy) as c:
        c.wait_leader(10)
        cl = c.client()
        cl.propose_many([command] * BATCH, timeout=30)
        commit = max(s.commit for s in c.status())
        # Far fewer entries than commands: a policy counting entries would not fire.
        assert commit < 100, commit
        # Every peer took a snapshot and compacted its log.
        _wait(
            lambda: all(s.first_index > 1 and s.applied >= commit for s in c.status()),
            15,
            "every peer to compact its log",
        )
        for _ in range(TAIL):
            cl.propose(command)
        leader = c.leader()
        follower = next(s.id for s in c.status() if s.id != leader)
        c.kill(follower)
        c.restart(follower)
        c.transfer_leadership(follower, timeout=15)
        count, applied_here = struct.unpack("<QQ", cl.read(b""))
        assert count == BATCH + TAIL
        # The restarted peer restored its snapshot and applied only the commands after it.
        assert applied_here == TAIL, applied_here


def test_snapshot_every_is_gone_with_a_pointer_to_its_replacements():
    with pytest.raises(TypeError, match="snapshot_commands and snapshot_bytes"):
        Timing.from_kwargs({"snapshot_every": 10})
    # a cluster.json written before the rename still opens
    assert Timing.from_config({"tick": 0.01, "snapshot_every": 10}).snapshot_commands == 100_000
