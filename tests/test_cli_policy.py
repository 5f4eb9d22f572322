"""The pieces of ``rsm-shm`` that need no subprocess: gc policy, record building in this
process, terminal-safe text, and the kind decoder registry."""
from __future__ import annotations

import os
import time

import pytest

import rsm_shm
from rsm_shm import cli, inspect as insp
from rsm_shm.segment import Kind

pytestmark = pytest.mark.timeout(30)

NOW = 1_000_000.0


def record(**fields) -> dict:
    rec = {"name": "x", "path": "/dev/shm/rsm_shm.x", "foreign": False, "status": "ok", "problem": None,
           "creator": {"pid": 10, "start": 5, "alive": False}, "attached": [], "unverified": [],
           "modified": NOW - 1000}
    rec.update(fields)
    return rec


@pytest.mark.parametrize("fields, corrupt, ignore, remove, why", [
    ({}, False, False, True, "is dead"),
    ({"creator": {"pid": 10, "start": 5, "alive": True}}, False, False, False, "is alive"),
    ({"attached": [{"pid": 7, "name": "w"}]}, False, False, False, "mapped by live process 7"),
    ({"attached": [{"pid": 7, "name": "w"}, {"pid": 8, "name": "w"}]}, True, True, False, "processes 7, 8"),
    ({"unverified": [{"pid": 1, "name": "init"}]}, False, False, False, "cannot read"),
    ({"unverified": [{"pid": 1, "name": "init"}]}, False, True, True, "is dead"),
    ({"foreign": True, "status": "foreign", "creator": None}, True, True, False, "foreign"),
    ({"status": "building"}, False, False, True, "is dead"),
    ({"status": "corrupt", "creator": None}, False, False, False, "--corrupt"),
    ({"status": "truncated", "creator": None}, True, False, True, "unmodified"),
    ({"status": "unknown-version", "creator": None, "modified": NOW - 5}, True, False, False, "5 s ago"),
    ({"status": "unreadable", "creator": None, "problem": "denied"}, True, True, False, "denied"),
])
def test_gc_verdict(fields, corrupt, ignore, remove, why):
    got, reason = insp.gc_verdict(record(**fields), corrupt=corrupt, ignore_unreadable=ignore, now=NOW)
    assert got is remove and why in reason


def test_printable_escapes_control_characters_and_cuts():
    assert cli.printable("ok\x1b[2J\nend") == "ok\\x1b[2J\\nend"
    assert cli.printable("a" * 50, 10) == "a" * 7 + "..."


def test_human_formats():
    assert [cli.human_size(n) for n in (None, 0, 1023, 2368, 64 << 20)] == ["-", "0B", "1023B", "2.3K", "64.0M"]
    assert [cli.human_age(s) for s in (None, 5, 65, 3700, 90000)] == ["-", "5s", "1m05s", "1h01m", "1d1h"]


def test_describe_in_process_sees_this_process_attached_elsewhere(shm_name):
    # The scan excludes the scanning process itself, so describe() of our own lock shows
    # no attacher; the kind and the state are decoded all the same.
    lock = rsm_shm.RLock(shm_name("rl"), create=True)
    try:
        with lock, lock:
            procs = insp.scan_processes()
            rec = insp.describe("rsm_shm." + lock.name, False, procs)
        assert rec["kind"] == "rlock" and rec["detail"]["count"] == 2
        assert rec["attached"] == []
        assert rec["state"].startswith(f"locked by {os.getpid()}/") and rec["state"].endswith("x2")
    finally:
        lock.close()


def test_every_primitive_kind_has_a_decoder():
    for kind in Kind:
        if kind.name in ("RING", "QUEUE", "AUTOMATON", "RAFT_STATUS"):
            continue  # modules that land separately; see rsm_shm/inspect.py
        assert kind in insp.DECODERS, kind


def test_resolve_names(shm_name):
    with pytest.raises(ValueError):
        insp.resolve("a/b")
    ev = rsm_shm.Event(shm_name("ev"), create=True)
    try:
        assert insp.resolve(ev.name) == ("rsm_shm." + ev.name, False)
        assert insp.resolve("rsm_shm." + ev.name) == ("rsm_shm." + ev.name, False)
        assert insp.resolve(ev.name + ".missing") is None
    finally:
        ev.close()


def test_automaton_status_block_is_decoded(shm_name):
    status = pytest.importorskip("rsm_shm.fsm._status")
    block = status.StatusBlock(shm_name("auto"), create=True, mode=0o600, inbox_capacity=8)
    try:
        rec = insp.describe("rsm_shm." + block.name, False, insp.scan_processes())
        assert rec["status"] == "ok", rec["problem"]
        assert rec["kind"] == "automaton" and rec["detail"]["mode"] == "idle"
        assert rec["detail"]["inbox_capacity"] == 8
    finally:
        block.close()


def test_scan_is_fast_enough_to_run_once_per_command():
    t0 = time.monotonic()
    procs = insp.scan_processes()
    assert procs.scanned > 0 and time.monotonic() - t0 < 5.0
