"""The automaton status block (csrc/automaton.h through rsm_shm.fsm._status): the mode
word's CAS and futex wait, the text fields, and blocks with hostile contents."""

from __future__ import annotations

import threading
import time

import pytest

from rsm_shm._native import ffi, lib
from rsm_shm.fsm import AutomatonStatistics, ExitKind, Mode
from rsm_shm.fsm._status import ERROR_TEXT_MAX, STATE_TEXT_MAX, StatusBlock
from rsm_shm.segment import SegmentError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def block(shm_name):
    b = StatusBlock(shm_name("status"), create=True, mode=0o600, inbox_capacity=4096)
    yield b
    b.seg.unlink()
    b.close()


def test_layout_matches_the_header():
    assert ffi.sizeof("rsm_automaton") == 240 + lib.RSM_FSM_ERROR_TEXT_MAX
    assert ffi.offsetof("rsm_automaton", "state_text") == 104
    assert ffi.offsetof("rsm_automaton", "error_text") == 232
    assert [m.value for m in Mode] == [0, 1, 2, 3, 4]
    assert lib.RSM_FSM_RESTART_PENDING & lib.RSM_FSM_MODE_MASK == 0


def test_cas_changes_the_word_only_from_the_expected_value(block):
    assert block.mode() is Mode.IDLE
    assert block.cas(int(Mode.RUNNING), int(Mode.DEAD)) is False
    assert block.cas(int(Mode.IDLE), int(Mode.RUNNING)) is True
    assert block.mode() is Mode.RUNNING
    pending = int(Mode.DEAD) | lib.RSM_FSM_RESTART_PENDING
    assert block.cas(int(Mode.RUNNING), pending) is True
    assert block.mode() is Mode.DEAD and block.word() == pending


def test_wait_returns_on_change_timeout_and_slice(block):
    w = block.word()
    assert block.wait_change(w + 1, -1) == lib.RSM_OK  # already different
    assert block.wait_change(w, 0) == lib.RSM_TIMEOUT  # deadline passed: just checks
    t0 = time.monotonic_ns()
    r = block.wait_change(w, t0 + 20_000_000)
    assert r == lib.RSM_TIMEOUT and time.monotonic_ns() - t0 >= 20_000_000
    t0 = time.monotonic_ns()
    assert block.wait_change(w, -1) == lib.RSM_SLICE  # no deadline: back after one slice
    assert time.monotonic_ns() - t0 < 10 * lib.RSM_SLICE_NS

    def change():
        time.sleep(0.02)
        block.cas(w, int(Mode.RUNNING))

    t = threading.Thread(target=change)
    t.start()
    deadline = time.monotonic_ns() + 10_000_000_000
    while (r := block.wait_change(w, deadline)) == lib.RSM_SLICE:
        pass
    t.join()
    assert r == lib.RSM_OK and block.mode() is Mode.RUNNING
    assert block.p.nwaiters == 0


def test_texts_are_bounded_and_keep_the_end_of_a_long_report(block):
    block.set_state_text("s" * 1000)
    assert len(block.state_text().encode()) <= STATE_TEXT_MAX
    report = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: the last line"
    block.set_error(ExitKind.ERROR, report)
    text = block.error_text()
    assert len(text.encode()) <= ERROR_TEXT_MAX
    assert text.startswith("...[truncated]...") and text.endswith("ValueError: the last line")
    block.set_state_text("état ✓")  # UTF-8 survives
    assert block.state_text() == "état ✓"


def test_hostile_contents_are_clamped_or_refused(block):
    p = block.p
    p.state_len = 1 << 30  # longer than the field
    p.error_len = 1 << 30
    p.exit_kind = 77
    p.host_kind = 99
    s = block.statistics(-1)
    assert isinstance(s, AutomatonStatistics)
    assert len(s.state.encode("utf-8", "replace")) <= 3 * STATE_TEXT_MAX
    assert s.exit_kind is ExitKind.KILLED  # unknown: reported as the worst
    p.mode = 0x7F  # not a mode we ever write
    with pytest.raises(SegmentError, match="corrupt"):
        block.mode()
    with pytest.raises(SegmentError, match="corrupt"):
        block.statistics(-1)


def test_attach_checks_the_kind_and_parameters(block, shm_name):
    other = StatusBlock(block.name, create=False, mode=0o600, inbox_capacity=1)
    assert other.inbox_capacity == 4096  # the creator's parameter wins
    other.close()
    from rsm_shm import Event

    e = Event(shm_name("event"), create=True)
    try:
        with pytest.raises(SegmentError, match="EVENT"):
            StatusBlock(e.name, create=False, mode=0o600, inbox_capacity=1)
    finally:
        e.unlink()
        e.close()
