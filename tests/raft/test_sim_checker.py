"""The simulator's safety checker must catch each violation it claims to catch.

These tests feed the checker hand-made observations (no Raft core involved), so a broken
core cannot hide behind a checker that never fires.
"""

from __future__ import annotations

import pytest

from rsm_shm.raft.sim.check import SafetyChecker, SafetyViolation
from rsm_shm.raft.types import Entry, EntryType, Role

pytestmark = pytest.mark.timeout(30)


def _terms(log):
    d = {e.index: e.term for e in log}

    def term_of(i):
        return 0 if i == 0 else d.get(i)

    return term_of


def test_two_leaders_in_one_term():
    ck = SafetyChecker()
    ck.observe_role(1, 3, Role.LEADER)
    ck.observe_role(1, 3, Role.LEADER)  # the same leader again is fine
    ck.observe_role(2, 3, Role.FOLLOWER)
    ck.observe_role(2, 4, Role.LEADER)
    with pytest.raises(SafetyViolation) as ei:
        ck.observe_role(3, 3, Role.LEADER)
    assert ei.value.prop == "election-safety"


def test_log_matching_same_index_term_different_data():
    ck = SafetyChecker()
    a = [Entry(term=1, index=1, data=b"x"), Entry(term=1, index=2, data=b"y")]
    ck.observe_persisted(1, a, _terms(a))
    ck.observe_persisted(2, a[:1], _terms(a))  # a prefix is fine
    b = [Entry(term=1, index=1, data=b"x"), Entry(term=1, index=2, data=b"z")]
    with pytest.raises(SafetyViolation) as ei:
        ck.observe_persisted(3, b, _terms(b))
    assert ei.value.prop == "log-matching"


def test_log_matching_same_entry_different_predecessor():
    ck = SafetyChecker()
    a = [Entry(term=1, index=1), Entry(term=2, index=2), Entry(term=3, index=3, data=b"q")]
    ck.observe_persisted(1, a, _terms(a))
    b = [Entry(term=1, index=1), Entry(term=1, index=2), Entry(term=3, index=3, data=b"q")]
    with pytest.raises(SafetyViolation) as ei:
        ck.observe_persisted(2, b, _terms(b))
    assert ei.value.prop == "log-matching"


def test_log_matching_conf_change_type_differs():
    ck = SafetyChecker()
    ck.observe_persisted(1, [Entry(term=1, index=1, type=EntryType.NORMAL, data=b"c")], lambda i: 0)
    with pytest.raises(SafetyViolation):
        ck.observe_persisted(2, [Entry(term=1, index=1, type=EntryType.CONF_CHANGE, data=b"c")], lambda i: 0)


def test_state_machine_safety():
    ck = SafetyChecker()
    ck.observe_apply(1, Entry(term=1, index=1, data=b"a"))
    ck.observe_apply(2, Entry(term=1, index=1, data=b"a"))
    with pytest.raises(SafetyViolation) as ei:
        ck.observe_apply(3, Entry(term=2, index=1, data=b"b"))
    assert ei.value.prop == "state-machine-safety"


def test_applied_gap_and_regression():
    ck = SafetyChecker()
    ck.observe_apply(1, Entry(term=1, index=1))
    with pytest.raises(SafetyViolation) as ei:
        ck.observe_apply(1, Entry(term=1, index=3))
    assert ei.value.prop == "applied-monotonic"
    ck2 = SafetyChecker()
    ck2.observe_apply(1, Entry(term=1, index=1))
    ck2.observe_apply(1, Entry(term=1, index=2))
    with pytest.raises(SafetyViolation):
        ck2.observe_apply(1, Entry(term=1, index=2))  # applied twice in one incarnation
    with pytest.raises(SafetyViolation):
        ck2.observe_snapshot_applied(1, 1)  # a snapshot older than the applied index


def test_restart_resumes_from_snapshot_index():
    ck = SafetyChecker()
    for i in range(1, 4):
        ck.observe_apply(1, Entry(term=1, index=i, data=b"%d" % i))
    ck.node_restarted(1, 2)  # crash: state machine restored from a snapshot at 2
    ck.observe_apply(1, Entry(term=1, index=3, data=b"3"))  # re-applying the same entry is fine


def test_leader_completeness():
    ck = SafetyChecker()
    log = [Entry(term=1, index=1), Entry(term=1, index=2, data=b"w")]
    ck.observe_persisted(1, log, _terms(log))
    ck.observe_commit(1, 1, 2, _terms(log))  # node 1 at term 1 knows 1..2 committed
    # a leader of term 1 (the committer) is not bound; a leader of term 2 is
    ck.check_leader_log(1, 1, _terms(log), 0)
    ck.check_leader_log(2, 2, _terms(log), 0)  # it has both entries: fine
    short = [Entry(term=1, index=1)]
    with pytest.raises(SafetyViolation) as ei:
        ck.check_leader_log(3, 3, _terms(short), 0)
    assert ei.value.prop == "leader-completeness"
    # a compacted prefix counts as present
    ck.check_leader_log(4, 4, lambda i: None, 2)


def test_commit_divergence():
    ck = SafetyChecker()
    ck.observe_commit(1, 1, 2, _terms([Entry(term=1, index=1), Entry(term=1, index=2)]))
    with pytest.raises(SafetyViolation) as ei:
        ck.observe_commit(2, 2, 2, _terms([Entry(term=1, index=1), Entry(term=2, index=2)]))
    assert ei.value.prop == "commit-safety"


def test_stale_read_is_caught():
    ck = SafetyChecker()
    for i in range(1, 6):
        ck.observe_apply(1, Entry(term=1, index=i))
    ck.read_issued(b"r1")
    with pytest.raises(SafetyViolation) as ei:
        ck.read_returned(2, 3, b"r1")  # index 5 was applied before the read started
    assert ei.value.prop == "linearizable-read"
    ck.read_issued(b"r2")
    ck.read_returned(1, 5, b"r2")
    ck.read_returned(1, 5, b"r2")  # duplicate answer: ignored


def test_stale_lease_read_tolerated_when_disabled():
    ck = SafetyChecker(check_reads=False)
    ck.observe_apply(1, Entry(term=1, index=1))
    ck.read_issued(b"r")
    ck.read_returned(1, 0, b"r")
    assert ck.reads_checked == 1


def test_hard_state_must_not_go_back():
    from rsm_shm.raft.types import HardState

    ck = SafetyChecker()
    ck.observe_hard_state(1, HardState(1, 0, 0), HardState(1, 2, 0))  # first vote in term 1
    ck.observe_hard_state(1, HardState(1, 2, 0), HardState(2, 0, 0))  # new term: vote reset
    for old, new, prop in [
        (HardState(3, 1, 5), HardState(2, 1, 5), "term-monotonic"),
        (HardState(3, 1, 5), HardState(3, 2, 5), "vote-once"),
        (HardState(3, 1, 5), HardState(3, 1, 4), "commit-monotonic"),
    ]:
        with pytest.raises(SafetyViolation) as ei:
            ck.observe_hard_state(1, old, new)
        assert ei.value.prop == prop


def test_a_command_proposed_once_is_committed_once():
    ck = SafetyChecker()
    ck.proposed_once(b"c")
    ck.observe_apply(1, Entry(term=1, index=1, data=b"c"))
    ck.observe_apply(2, Entry(term=1, index=1, data=b"c"))  # another replica, same index: fine
    ck.observe_apply(1, Entry(term=1, index=2, data=b"d"))  # not registered: may repeat
    ck.observe_apply(1, Entry(term=1, index=3, data=b"d"))
    with pytest.raises(SafetyViolation) as ei:
        ck.observe_apply(1, Entry(term=1, index=4, data=b"c"))
    assert ei.value.prop == "no-duplicates"
