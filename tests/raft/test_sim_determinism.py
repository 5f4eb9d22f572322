"""The simulator is deterministic: the same seed replays the same run, bit for bit."""

from __future__ import annotations

import pytest

from rsm_shm.raft.sim import Simulator
from rsm_shm.raft.sim.fuzz import PROFILES, replay, run_seed

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("profile", ["chaos", "membership"])
def test_same_seed_same_run(profile):
    a = run_seed(7, steps=600, nodes=5, profile=PROFILES[profile])
    b = run_seed(7, steps=600, nodes=5, profile=PROFILES[profile])
    assert a.ok and b.ok, (a.violation, b.violation)
    assert a.digest == b.digest
    assert a.actions == b.actions


def test_verbose_does_not_change_the_run():
    a = run_seed(11, steps=400, verbose=False)
    b = run_seed(11, steps=400, verbose=True)
    assert a.digest == b.digest
    assert b.transcript, "a verbose run keeps its transcript"


def test_replaying_the_actions_reproduces_the_run():
    r = run_seed(3, steps=500, nodes=3)
    assert r.ok, r.violation
    v, sim = replay(r.actions, 3, 3, liveness=False)
    assert v is None
    assert sim.digest == r.digest


def test_different_seeds_differ():
    digests = {run_seed(s, steps=300).digest for s in range(5)}
    assert len(digests) == 5


def test_fresh_simulator_is_quiet():
    sim = Simulator(seed=1)
    sim.add_nodes(3)
    sim.stabilize()
    # nothing happens without ticks or a campaign: no leader, no messages
    assert sim.leader() is None
    assert not sim.net.queue


def test_same_run_in_another_process_with_another_hash_seed():
    # set/dict iteration must not leak into the schedule: replay in fresh interpreters
    import os
    import subprocess
    import sys

    code = (
        "from rsm_shm.raft.sim.fuzz import run_seed, PROFILES;"
        "print(run_seed(5, steps=300, nodes=5, profile=PROFILES['membership']).digest)"
    )
    root = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
    digests = set()
    for hash_seed in ("1", "977"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath(root), env.get("PYTHONPATH")) if p)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    digests.add(run_seed(5, steps=300, nodes=5, profile=PROFILES["membership"]).digest)
    assert len(digests) == 1
