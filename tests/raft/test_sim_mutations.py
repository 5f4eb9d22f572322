"""The simulator catches real protocol bugs: each test plants one classic Raft bug in the
core (by monkeypatching it) and requires the safety checker to flag the run.

These guard the checker, not the core: a checker that silently accepts a broken Raft
would make every other randomized test worthless.  They reach into core internals
(``RaftLog``): if those move, the tests must move with them (they fail, never skip).
"""

from __future__ import annotations

import os
import sys

import pytest

from rsm_shm.raft import log as raft_log  # noqa: E402
from rsm_shm.raft.sim import SimOptions, Simulator  # noqa: E402
from rsm_shm.raft.sim.check import SafetyViolation  # noqa: E402
from rsm_shm.raft.sim.fuzz import PROFILES, run_seed  # noqa: E402
from rsm_shm.raft.storage import MemoryStorage  # noqa: E402
from rsm_shm.raft.types import HardState  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from datadriven import parse  # noqa: E402
from test_scenarios import TESTDATA, Driver  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def _first_violation(profiles, seeds, steps=500):
    for prof in profiles:
        for seed in seeds:
            r = run_seed(seed, steps=steps, nodes=3 + 2 * (seed % 2), profile=PROFILES[prof], liveness=False)
            if isinstance(r.violation, SafetyViolation):
                return r.violation
    return None


def test_votes_for_stale_candidates_are_caught(monkeypatch):
    assert hasattr(raft_log.RaftLog, "is_up_to_date"), "core internals moved: plant the bug where it lives now"
    # bug: grant votes without the election restriction (§5.4.1)
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, lasti, term: True)
    v = _first_violation(["crashy", "chaos"], range(200))
    assert v is not None, "a Raft without the election restriction went unnoticed"
    assert v.prop in ("leader-completeness", "log-matching", "state-machine-safety", "commit-safety")


def test_committing_old_terms_by_counting_is_caught(monkeypatch):
    assert hasattr(raft_log.RaftLog, "maybe_commit"), "core internals moved: plant the bug where it lives now"

    # bug: commit any entry replicated on a majority, whatever its term (Figure 8)
    def maybe_commit(self, max_index, term):
        if max_index > self.committed:
            self.commit_to(max_index)
            return True
        return False

    monkeypatch.setattr(raft_log.RaftLog, "maybe_commit", maybe_commit)
    driver = Driver()
    cases, _ = parse(os.path.join(TESTDATA, "figure8.txt"))
    with pytest.raises(SafetyViolation) as ei:
        for c in cases:  # the transcript differs once the bug acts: run, do not compare
            driver(c)
    assert ei.value.prop in ("leader-completeness", "commit-safety", "state-machine-safety", "log-matching")


def _double_vote_schedule(sim):
    # node 2 wins term 1 with node 3's vote, and is stopped before it replicates
    # anything (so node 3's log stays as short as node 1's)
    sim.do(("partition", ((1,), (2, 3))))
    sim.do(("campaign", 2))
    sim.do(("ready", 2))
    sim.do(("deliver", 2, 3, 0))
    sim.do(("ready", 3))
    sim.do(("deliver", 3, 2, 0))
    assert sim.leader() == 2
    # node 3 crashes (and forgets its vote, if the bug is planted); node 1 campaigns
    # in term 1 and asks node 3
    sim.do(("crash", 3))
    sim.do(("restart", 3))
    sim.do(("partition", ((1, 3), (2,))))
    sim.do(("campaign", 1))
    sim.stabilize([1, 3])


def test_persisted_vote_prevents_a_second_leader():
    # the control: with the vote persisted, node 3 refuses node 1 and all is well
    sim = Simulator(seed=1, options=SimOptions(pre_vote=False, check_quorum=False))
    sim.add_nodes(3)
    _double_vote_schedule(sim)
    assert sim.checker.leaders == {1: 2}


def test_forgetting_the_vote_on_restart_is_caught(monkeypatch):
    # bug: the vote is not persisted (Figure 2 "persistent state"), so a node that
    # crashes after voting can vote again, for another candidate, in the same term
    orig = MemoryStorage.set_hard_state
    monkeypatch.setattr(MemoryStorage, "set_hard_state", lambda self, hs: orig(self, HardState(hs.term, 0, hs.commit)))
    sim = Simulator(seed=1, options=SimOptions(pre_vote=False, check_quorum=False))
    sim.add_nodes(3)
    with pytest.raises(SafetyViolation) as ei:
        _double_vote_schedule(sim)
    assert ei.value.prop == "election-safety"
