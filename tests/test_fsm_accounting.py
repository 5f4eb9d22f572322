"""What an automaton reports about itself: commands counted as they are handled, commands
taken out of the inbox but not yet handled, what a SIGKILL leaves behind, a host that
died before it started, and the words ``rsm-shm ls`` uses for how an automaton ended.

Handlers are module-level (spawned hosts import them); every automaton is named through
``shm_name`` so its segments go whatever happens.
"""

from __future__ import annotations

import os
import signal
import time

import pytest


from rsm_shm import inspect as insp
from rsm_shm.fsm import Automaton, AutomatonFailed, ExitKind, Mode, Opcode

pytestmark = pytest.mark.timeout(90)

SLOW = 30.0
POSTED = 30


def slow_counter(n, op):
    """Each command takes 50 ms: a batch of commands stays in the host's hands a while."""
    if op.code is Opcode.CMD:
        time.sleep(0.05)
        return n + 1
    return n


def wait_for(a: Automaton, pred, timeout=SLOW):
    deadline = time.monotonic() + timeout
    while True:
        s = a.statistics()
        if pred(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in time; last status: {s}")
        time.sleep(0.005)


@pytest.mark.parametrize("host", ["process", "subprocess"])
def test_a_sigkilled_host_accounts_for_every_command(shm_name, host):
    a = Automaton(shm_name("acct"), slow_counter, 0, create=True)
    try:
        for _ in range(POSTED):  # queued before the start: the host takes them in one batch
            a.post(b"+")
        a.start(host)
        s = wait_for(a, lambda s: s.commands >= 5)
        # While busy, nothing is invisible: queued + taken (not yet handled) + handled.
        assert s.inbox_depth + s.in_hand + s.commands == POSTED, s
        assert s.in_hand > 0 and f"{s.in_hand} taken" in str(s)
        os.kill(s.host_pid, signal.SIGKILL)
        other = Automaton(a.name, create=False)  # no Process object: /proc alone tells
        try:
            with pytest.raises(AutomatonFailed) as info:
                other.join(SLOW)
        finally:
            other.close()
        assert info.value.kind is ExitKind.KILLED
        s = a.statistics()
        assert s.commands >= 5 and s.dropped > 0, s
        assert s.commands + s.dropped == POSTED, s  # each command handled or dropped, once
        assert s.in_hand == 0 and s.inbox_depth <= 0
    finally:
        a.unlink()
        a.close()


def test_a_handler_error_mid_batch_counts_the_rest_as_dropped(shm_name):
    def breaks_at_three(n, op):
        if op.code is Opcode.CMD:
            if n == 3:
                raise RuntimeError("third command broke")
            return n + 1
        return n

    a = Automaton(shm_name("acct"), breaks_at_three, 0, create=True)
    try:
        for _ in range(10):
            a.post(b"+")
        a.start("thread")
        with pytest.raises(AutomatonFailed, match="third command broke"):
            a.join(SLOW)
        s = a.statistics()
        # Four commands reached the handler (the fourth raised); six never did.
        assert (s.commands, s.dropped, s.in_hand) == (4, 6, 0), s
    finally:
        a.unlink()
        a.close()


def test_ls_shows_a_host_that_died_before_it_started_as_dead(shm_name):
    a = Automaton(shm_name("acct"), slow_counter, 0, create=True)
    try:
        a.start("subprocess")
        pid = a.statistics().host_pid
        os.kill(pid, signal.SIGKILL)  # long before the new interpreter can claim the automaton
        a._host.wait(SLOW)  # reaped: the pid is gone, not a zombie
        rec = insp.describe("rsm_shm." + a.name, False, insp.scan_processes())
        assert rec["status"] == "ok", rec["problem"]
        assert rec["detail"]["mode"] == "idle" and rec["detail"]["host_alive"] is False
        assert rec["detail"]["host_died"] is True
        assert rec["state"].startswith("DEAD (host process"), rec["state"]
        assert "IDLE" not in rec["state"].split(",")[0]
        # Reading it recorded nothing: the first joiner does, and gets the failure.
        assert a.mode is Mode.IDLE
        with pytest.raises(AutomatonFailed, match=str(pid)):
            a.join(SLOW)
        assert str(a.statistics()).startswith("DEAD (killed")
    finally:
        a.unlink()
        a.close()


def test_a_clean_finish_does_not_read_as_a_failure(shm_name):
    a = Automaton(shm_name("acct"), slow_counter, 0, create=True).start("thread")
    try:
        a.post(b"+")
        a.drain()
        assert a.join(SLOW) is True
        text = str(a.statistics())
        assert text.startswith("FINISHED (drained)"), text
        assert "DEAD" not in text and "clean)" not in text
    finally:
        a.unlink()
        a.close()
