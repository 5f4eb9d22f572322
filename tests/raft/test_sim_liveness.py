"""Liveness where it must hold, over many seeds, on a perfect network.

* With a majority up and connected, a leader emerges within a bounded number of election
  timeouts (the bound is LEADER_ELECTION_TIMEOUTS; the test also reports the worst case
  seen, which is far lower).
* Leader stickiness (pre-vote + check-quorum): a follower cut off for many election
  timeouts rejoins without disturbing the leader -- same leader, same term.
* Check-quorum: a leader cut off from its majority steps down within two election
  timeouts, and the majority elects a new one.
"""

from __future__ import annotations

import random

import pytest

from rsm_shm.raft.sim import LEADER_ELECTION_TIMEOUTS, SimOptions, Simulator  # noqa: E402
from rsm_shm.raft.types import Role  # noqa: E402

pytestmark = pytest.mark.timeout(120)
SEEDS = 150
SLOWER_SEEDS = 50  # for the tests that tick for many election timeouts


def _ticks_to_leader(sim: Simulator, ids, limit: int) -> int:
    """Tick every node in ``ids`` once per round on a perfect network until one of them
    is a leader acknowledged by all of them; return the rounds it took."""
    for rounds in range(limit + 1):
        sim.stabilize(ids)
        leaders = [i for i in ids if sim.status(i).role == Role.LEADER]
        if leaders and all(sim.status(i).leader == leaders[-1] for i in ids):
            return rounds
        for i in ids:
            sim.do(("tick", i))
    raise AssertionError(f"no leader among {ids} within {limit} ticks")


@pytest.mark.parametrize("pre_vote", [True, False])
def test_leader_emerges_with_a_minority_down(pre_vote):
    worst = 0
    for seed in range(SEEDS):
        rng = random.Random(seed)
        sim = Simulator(seed=seed, options=SimOptions(pre_vote=pre_vote, check_quorum=pre_vote))
        ids = sim.add_nodes(5)
        down = rng.sample(ids, 2)
        for d in down:
            sim.do(("crash", d))
        up = [i for i in ids if i not in down]
        et = sim.options.election_tick
        worst = max(worst, _ticks_to_leader(sim, up, LEADER_ELECTION_TIMEOUTS * et))
    # report how far below the bound the worst case stayed
    print(f"pre_vote={pre_vote}: worst election took {worst} ticks ({worst / et:.1f} election timeouts)")
    assert worst <= LEADER_ELECTION_TIMEOUTS * et


def test_leader_reelected_after_leader_crash():
    for seed in range(SEEDS):
        sim = Simulator(seed=seed)
        ids = sim.add_nodes(3)
        et = sim.options.election_tick
        _ticks_to_leader(sim, ids, LEADER_ELECTION_TIMEOUTS * et)
        old = sim.leader()
        sim.do(("crash", old))
        rest = [i for i in ids if i != old]
        _ticks_to_leader(sim, rest, LEADER_ELECTION_TIMEOUTS * et)
        assert sim.leader() != old


def test_rejoining_follower_does_not_disturb_the_leader():
    for seed in range(SLOWER_SEEDS):
        rng = random.Random(seed)
        sim = Simulator(seed=seed, options=SimOptions(pre_vote=True, check_quorum=True))
        ids = sim.add_nodes(3)
        et = sim.options.election_tick
        _ticks_to_leader(sim, ids, LEADER_ELECTION_TIMEOUTS * et)
        lead = sim.leader()
        term = sim.status(lead).term
        lone = rng.choice([i for i in ids if i != lead])
        sim.do(("partition", (tuple(i for i in ids if i != lone), (lone,))))
        for _ in range(rng.randrange(3, 6) * et):  # many election timeouts
            for i in ids:
                sim.do(("tick", i))
            sim.stabilize()
        sim.do(("heal",))
        for _ in range(2 * et):
            for i in ids:
                sim.do(("tick", i))
            sim.stabilize()
        assert sim.leader() == lead, f"seed {seed}: leader changed"
        assert all(sim.status(i).term == term for i in ids), f"seed {seed}: term moved"


def test_isolated_leader_steps_down():
    for seed in range(SLOWER_SEEDS):
        sim = Simulator(seed=seed, options=SimOptions(pre_vote=True, check_quorum=True))
        ids = sim.add_nodes(5)
        et = sim.options.election_tick
        _ticks_to_leader(sim, ids, LEADER_ELECTION_TIMEOUTS * et)
        lead = sim.leader()
        rest = [i for i in ids if i != lead]
        sim.do(("partition", ((lead,), tuple(rest))))
        stepped = None
        for t in range(1, 2 * et + 1):
            sim.do(("tick", lead))
            sim.stabilize([lead])
            if sim.status(lead).role != Role.LEADER:
                stepped = t
                break
        assert stepped is not None, f"seed {seed}: isolated leader {lead} still leads after {2 * et} ticks"
        _ticks_to_leader(sim, rest, LEADER_ELECTION_TIMEOUTS * et)
