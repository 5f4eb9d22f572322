"""The pieces of ``rsm-shm`` that need no subprocess: gc policy, record building in this
process, terminal-safe text, and the kind decoder registry."""

from __future__ import annotations

import os
import time

import pytest

import rsm_shm
from rsm_shm import cli, inspect as insp
from rsm_shm.segment import KIND_CLASSES, Kind

pytestmark = pytest.mark.timeout(30)

NOW = 1_000_000.0


def record(**fields) -> dict:
    rec = {
        "name": "x",
        "path": "/dev/shm/rsm_shm.x",
        "foreign": False,
        "status": "ok",
        "problem": None,
        "creator": {"pid": 10, "start": 5, "alive": False},
        "attached": [],
        "unverified": [],
        "modified": NOW - 1000,
    }
    rec.update(fields)
    return rec


@pytest.mark.parametrize(
    "fields, corrupt, ignore, remove, why",
    [
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
    ],
)
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


def test_every_kind_with_a_class_has_a_decoder():
    for kind in Kind:
        assert kind in KIND_CLASSES, kind
        assert insp.decoder_for(kind) is not None, kind


def test_a_kind_without_a_wait_queue_describes_its_statistics(shm_name):
    from rsm_shm.pool import PoolTable

    table = PoolTable(shm_name("pool"), max_workers=2, create=True)
    try:
        rec = insp.describe("rsm_shm." + table.name, False, insp.ProcessIndex({}, {}, 0, 0.0))
        assert rec["status"] == "ok", rec["problem"]
        assert rec["kind"] == "pool" and rec["detail"]["max_workers"] == 2 and len(rec["detail"]["workers"]) == 2
        assert rec["state"] == str(table.statistics())
    finally:
        table.unlink()
        table.close()


def test_a_pool_table_that_disagrees_with_its_header_is_refused_without_a_crash(shm_name):
    # It used to read the table after unmapping it to word the error: a segfault.
    from rsm_shm.pool import PoolTable

    table = PoolTable(shm_name("pool"), max_workers=1, create=True)
    try:
        table.ptr.max_workers = 7
        with pytest.raises(rsm_shm.SegmentError, match="claims 7 workers, the header 1"):
            PoolTable(table.name, create=False)
        rec = insp.describe("rsm_shm." + table.name, False, insp.ProcessIndex({}, {}, 0, 0.0))
        assert rec["status"] == "undecodable" and "claims 7 workers" in rec["problem"]
    finally:
        table.unlink()
        table.close()


class StatusRecord:
    """A stand-in for a kind that lands later (the Raft status record): a class with the
    contract KIND_CLASSES asks for, and nothing registered with rsm_shm.inspect."""

    def __init__(self, name, *, create=None):
        self.seg = seg_mod.Segment(name, Kind.RAFT_STATUS, 8, create=create, init=self._init)

    @staticmethod
    def _init(seg):
        seg.body("uint64_t *")[0] = 42

    def describe(self):
        return {"term": int(self.seg.body("uint64_t *")[0])}

    def statistics(self):
        return f"term {self.describe()['term']}"

    def close(self):
        self.seg.close()


def test_a_new_kind_plugs_in_through_kind_classes_alone(shm_name, monkeypatch):
    monkeypatch.setitem(KIND_CLASSES, Kind.RAFT_STATUS, f"{__name__}:StatusRecord")
    monkeypatch.setattr(insp, "_TRIED", set())
    monkeypatch.setattr(insp, "DECODERS", {k: v for k, v in insp.DECODERS.items() if k is not Kind.RAFT_STATUS})
    rec_obj = StatusRecord(shm_name("raftstatus"), create=True)
    try:
        rec = insp.describe("rsm_shm." + rec_obj.seg.name, False, insp.ProcessIndex({}, {}, 0, 0.0))
        assert rec["status"] == "ok", rec["problem"]
        assert rec["kind"] == "raft_status" and rec["detail"] == {"term": 42} and rec["state"] == "term 42"
    finally:
        rec_obj.seg.unlink()
        rec_obj.close()


def test_inspect_reads_no_private_attribute_of_a_handle():
    # Decoding goes through each kind's public describe()/statistics()/close() only.
    import ast

    tree = ast.parse(open(insp.__file__).read())
    private = sorted(
        {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        }
    )
    private += sorted(
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_")
    )
    assert private == [], private


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
    from rsm_shm.fsm import _status as status

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


# -- hostile segments: a header that validates in front of an arbitrary body --------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from rsm_shm import segment as seg_mod  # noqa: E402


FORGED_OUTCOMES: dict[str, int] = {}


def _forged(kind: int, params: list[int], body: bytes, initialized: int) -> bytes:
    """A header that passes every check of segment.read_header (checksum included)."""
    padded = params + [0] * (seg_mod.NPARAMS - len(params))
    raw = bytearray(
        seg_mod._HEADER.pack(
            seg_mod.MAGIC,
            seg_mod.LAYOUT_VERSION,
            kind,
            initialized,
            1,
            1,
            time.time_ns(),
            seg_mod.HEADER_SIZE,
            len(body),
            0,
            len(params),
            *padded,
            b"",
            0,
        )
    )
    raw[240:244] = seg_mod._crc(bytes(raw)).to_bytes(4, "little")
    return bytes(raw) + body


_NSLOTS = st.one_of(st.integers(1, 8), st.integers(0, 70), st.sampled_from([4096, 5000, 2**32 - 1]))
_PARAM = st.one_of(
    st.integers(0, 3), st.sampled_from([64, 1024, 4096, 1 << 20, 2**32 - 1, 2**64 - 1]), st.integers(0, 2**64 - 1)
)
# Bodies: mostly big enough for the kind's layout (so the decoders really run on them),
# filled with noise, all-ones, or zeros with a few hostile words.
_BODY = st.one_of(
    st.integers(0, 12000).map(lambda n: os.urandom(n)),
    st.integers(0, 12000).map(lambda n: b"\xff" * n),
    st.lists(st.tuples(st.integers(0, 2999), st.integers(0, 2**32 - 1)), max_size=12).map(
        lambda words: _poke(bytearray(12000), words)
    ),
)


def _poke(buf: bytearray, words) -> bytes:
    for index, value in words:
        buf[index * 4 : index * 4 + 4] = value.to_bytes(4, "little")
    return bytes(buf)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from([k.value for k in Kind]),
    params=st.tuples(_NSLOTS, st.lists(_PARAM, max_size=3)).map(lambda t: [t[0], *t[1]]),
    body=_BODY,
    initialized=st.sampled_from([1, 1, 1, 1, 0, 2, 7]),
)
def test_forged_headers_with_hostile_bodies_never_crash_the_decoders(shm_name, kind, params, body, initialized):
    name = shm_name("forged")
    path = f"/dev/shm/rsm_shm.{name}"
    with open(path, "wb") as f:
        f.write(_forged(kind, params, body, initialized))
    try:
        rec = insp.describe("rsm_shm." + name, False, insp.ProcessIndex({}, {}, 0, 0.0))
        assert rec is not None and rec["status"] in {s.value for s in insp.SegmentStatus}
        FORGED_OUTCOMES[rec["status"]] = FORGED_OUTCOMES.get(rec["status"], 0) + 1
        cli.render_inspect(rec)
        cli.render_table([rec])
    finally:
        os.unlink(path)


_TEMPLATES: dict[str, bytes] = {}
_FACTORIES = {
    "Lock": lambda n: rsm_shm.Lock(n, max_waiters=4),
    "RLock": lambda n: rsm_shm.RLock(n, max_waiters=4),
    "Semaphore": lambda n: rsm_shm.Semaphore(n, value=2, max_waiters=4),
    "Event": lambda n: rsm_shm.Event(n, max_waiters=4),
    "Gate": lambda n: rsm_shm.Gate(n, max_waiters=4),
    "Countdown": lambda n: rsm_shm.Countdown(n, count=3, max_waiters=4),
    "Once": lambda n: rsm_shm.Once(n, max_waiters=4),
    "RWLock": lambda n: rsm_shm.RWLock(n, max_waiters=4),
    "Condition": lambda n: rsm_shm.Condition(n, max_waiters=4),
    "Barrier": lambda n: rsm_shm.Barrier(n, parties=2, max_waiters=4),
}
try:
    from rsm_shm import ring as _ring_mod

    _FACTORIES["Ring"] = lambda n: _ring_mod.Ring(n, capacity=256, max_waiters=4)
except ImportError:  # the ring module lands separately
    pass


def _template(shm_name, kind: str) -> bytes:
    if kind not in _TEMPLATES:
        obj = _FACTORIES[kind](shm_name("tpl"))
        try:
            with open(f"/dev/shm/rsm_shm.{obj.name}", "rb") as f:
                _TEMPLATES[kind] = f.read()
        finally:
            obj.close()
            obj.unlink()
    return _TEMPLATES[kind]


_WORD = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 5, 64, 4096, 5000, 0x3FFFFFFF, 0x40000000, 0x80000000, 0xFFFFFFFF, os.getpid()]),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(sorted(_FACTORIES)),
    pokes=st.lists(st.tuples(st.integers(0, 10**6), _WORD), min_size=1, max_size=8),
)
def test_real_segments_with_corrupted_bodies_never_crash_the_decoders(shm_name, kind, pokes):
    raw = bytearray(_template(shm_name, kind))
    nwords = (len(raw) - seg_mod.HEADER_SIZE) // 4
    for index, value in pokes:
        at = seg_mod.HEADER_SIZE + (index % nwords) * 4
        raw[at : at + 4] = value.to_bytes(4, "little")
    name = shm_name("mutant")
    path = f"/dev/shm/rsm_shm.{name}"
    with open(path, "wb") as f:
        f.write(raw)
    try:
        rec = insp.describe("rsm_shm." + name, False, insp.ProcessIndex({}, {}, 0, 0.0))
        assert rec is not None and rec["status"] in ("ok", "undecodable")
        FORGED_OUTCOMES["mutant " + rec["status"]] = FORGED_OUTCOMES.get("mutant " + rec["status"], 0) + 1
        cli.render_inspect(rec)
        cli.render_table([rec])
    finally:
        os.unlink(path)
