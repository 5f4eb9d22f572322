"""Hypothesis explores action sequences directly (and shrinks any failure to a minimal
one by itself): arbitrary interleavings of ticks, Ready handling, deliveries, drops,
duplicates, crashes, partitions, proposals, reads, transfers, compactions and
membership changes on a 3-node cluster must never break safety, and the healed cluster
must stay live.  Complements the seeded schedules of test_sim_random.py, whose action
mix is weighted; here every action is equally likely, including odd ones."""

from __future__ import annotations

import os

import pytest

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rsm_shm.raft.sim import SimOptions, Simulator  # noqa: E402

# RSM_SLOW=1 explores many more sequences (and not the same ones every run)
SLOW = os.environ.get("RSM_SLOW") == "1"
EXAMPLES = 5000 if SLOW else 400

IDS = st.integers(min_value=1, max_value=4)  # 4 may be added by a conf change
K = st.integers(min_value=0, max_value=2)

ACTION = st.one_of(
    st.tuples(st.just("tick"), IDS),
    st.tuples(st.just("ready"), IDS),
    st.tuples(st.just("deliver"), IDS, IDS, K),
    st.tuples(st.just("drop"), IDS, IDS, K),
    st.tuples(st.just("dup"), IDS, IDS, K),
    st.tuples(st.just("propose"), IDS),
    st.tuples(st.just("read"), IDS),
    st.tuples(st.just("campaign"), IDS),
    st.tuples(st.just("transfer"), IDS, IDS),
    st.tuples(st.just("compact"), IDS),
    st.tuples(st.just("crash"), IDS),
    st.tuples(st.just("restart"), IDS),
    st.tuples(st.just("heal")),
    st.tuples(st.just("cut"), IDS, IDS),
    st.tuples(st.just("partition"), st.sampled_from([((1,), (2, 3, 4)), ((1, 2), (3, 4)), ((1, 3), (2, 4))])),
    st.tuples(
        st.just("conf"),
        IDS,
        st.sampled_from([((1, 4),), ((0, 4),), ((2, 3),), ((0, 4), (2, 1)), ()]),
    ),
)


@pytest.mark.timeout(3600 if SLOW else 120)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=not SLOW)
@given(
    actions=st.lists(ACTION, max_size=150),
    pre_vote=st.booleans(),
    one_entry_per_msg=st.booleans(),
)
def test_any_action_sequence_is_safe_and_live(actions, pre_vote, one_entry_per_msg):
    opts = SimOptions(
        election_tick=4,
        pre_vote=pre_vote,
        check_quorum=pre_vote,
        max_size_per_msg=1 if one_entry_per_msg else 1 << 20,
        snapshot_chunk_size=16,
        snapshot_padding=40,
    )
    sim = Simulator(seed=0, options=opts, verbose=False)
    sim.add_nodes(3)
    for a in actions:
        if a[0] == "crash" and len(sim.live_ids()) <= 1:
            continue
        sim.do(a)  # SafetyViolation propagates: hypothesis shrinks it
    sim.check_liveness()
