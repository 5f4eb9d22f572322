"""The ``rsm-shm`` command, run for real: the console script and ``python -m rsm_shm`` in
subprocesses, looking at objects made by other processes.

Every segment is named through the ``shm_name`` fixture and every command that could
touch other segments runs with ``--prefix <this test's token>``, so these tests never see
or remove segments of concurrently running tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from rsm_shm import cli as cli_mod

pytestmark = pytest.mark.timeout(60)

PY_M = [sys.executable, "-m", "rsm_shm"]


def _console_script() -> str | None:
    """The rsm-shm script of the Python running the tests: pip puts it next to the
    interpreter (a venv's bin/), which need not be on PATH (``.venv/bin/python -m pytest``)."""
    beside = os.path.join(os.path.dirname(sys.executable), "rsm-shm")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("rsm-shm")


SCRIPT = _console_script()
CHILD_TIMEOUT = 20.0
CLI_TIMEOUT = 30.0

# A process that makes objects and keeps them (and its locks) until its stdin closes.
CHILD = textwrap.dedent(r"""
    import os, sys, threading, time
    import rsm_shm
    mode, p = sys.argv[1], sys.argv[2]
    keep = []
    if mode == "objects":
        lock = rsm_shm.Lock(p + "lock", create=True)
        lock.tag = 0xBEEF
        lock.acquire()
        def waiter():
            rsm_shm.Lock(p + "lock", create=False).acquire(timeout=%(timeout)s)
        for _ in range(2):
            threading.Thread(target=waiter, daemon=True).start()
        sem = rsm_shm.Semaphore(p + "sem", value=3, create=True)
        sem.acquire()
        ev = rsm_shm.Event(p + "event", create=True)
        ev.set()
        rw = rsm_shm.RWLock(p + "rwlock", create=True)
        rw.acquire_read()
        cd = rsm_shm.Countdown(p + "countdown", count=5, create=True)
        cd.count_down(2)
        keep += [lock, sem, ev, rw, cd, rsm_shm.Barrier(p + "barrier", parties=4, create=True),
                 rsm_shm.Gate(p + "gate", create=True), rsm_shm.Once(p + "once", create=True),
                 rsm_shm.Condition(p + "cond", create=True), rsm_shm.RLock(p + "rlock", create=True),
                 rsm_shm.BoundedSemaphore(p + "bsem", value=2, create=True),
                 rsm_shm.AutoResetEvent(p + "are", create=True)]
        deadline = time.monotonic() + %(timeout)s
        while lock.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
    elif mode == "holder":
        lock = rsm_shm.Lock(p + "orphan_lock", create=True)
        lock.acquire()
        keep += [lock, rsm_shm.Semaphore(p + "orphan_sem", create=True),
                 rsm_shm.Event(p + "shared", create=True)]
    elif mode == "attacher":
        lock = rsm_shm.Lock(p + "live_lock", create=True)
        lock.acquire()
        keep += [lock, rsm_shm.Event(p + "shared", create=False)]
    elif mode == "ring":
        from rsm_shm import ring
        r = ring.Ring(p + "ring", capacity=4096, create=True)
        q = ring.Queue(p + "queue", capacity=4096, create=True)
        shut = ring.Ring(p + "shut", capacity=1024, create=True)
        shut.shutdown()
        q.put({"answer": 42})
        for _ in range(10):
            r.put(b"x" * 100)  # 10 records of 128 bytes (16-byte header, 16-byte aligned)
        def producer():
            try:
                r.put(b"y" * 3000, timeout=%(timeout)s)  # does not fit: blocks
            except Exception:
                pass
        threading.Thread(target=producer, daemon=True).start()
        deadline = time.monotonic() + %(timeout)s
        while r.statistics().blocked_producers < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        keep += [r, q, shut]
    elif mode == "automaton":
        from rsm_shm.fsm import Automaton, Opcode
        def handler(n, op):
            return n + 1 if op.code is Opcode.CMD else n
        a = Automaton(p + "auto", handler, 0, create=True).start("thread")
        for _ in range(3):
            a.post(b"+")
        deadline = time.monotonic() + %(timeout)s
        while a.statistics().commands < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        keep.append(a)
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)
    os._exit(0)
""") % {"timeout": CHILD_TIMEOUT}


class Children:
    """Child processes of one test; all are killed and reaped at the end, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, mode: str, prefix: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, mode, prefix], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        line = proc.stdout.readline()  # bounded by the test timeout
        assert line.strip() == "ready", f"child {mode} failed to start (rc {proc.poll()})"
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=CHILD_TIMEOUT)
            for f in (proc.stdin, proc.stdout):
                f.close()


@pytest.fixture
def children():
    c = Children()
    try:
        yield c
    finally:
        c.kill_all()


@pytest.fixture
def prefix(shm_token):
    """The name prefix of this test's objects (names made by shm_name start with it too)."""
    return shm_token + "."


def run(*args: str, script: bool = False, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    if script:
        if SCRIPT is None:
            pytest.skip(
                f"no rsm-shm console script next to {sys.executable} or on PATH: install the package (pip install -e .)"
            )
        cmd = [SCRIPT, *args]
    else:
        cmd = [*PY_M, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    if check_rc is not None:
        assert r.returncode == check_rc, f"{args}: rc {r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


def run_json(*args: str, script: bool = False, check_rc: int | None = 0) -> dict:
    doc = json.loads(run(*args, "--json", script=script, check_rc=check_rc).stdout)
    check_document(doc)
    return doc


def by_name(doc: dict) -> dict:
    return {s["name"]: s for s in doc["segments"]}


# -- the schema, as documented in rsm_shm/cli.py --------------------------------------------

SEGMENT_KEYS = {
    "name": str,
    "path": str,
    "foreign": bool,
    "status": str,
    "problem": (str, type(None)),
    "kind": (str, type(None)),
    "size": (int, type(None)),
    "mode": (str, type(None)),
    "uid": (int, type(None)),
    "inode": (int, type(None)),
    "modified": (float, type(None)),
    "created": (float, type(None)),
    "age": (float, type(None)),
    "creator": (dict, type(None)),
    "attached": list,
    "unverified": list,
    "state": (str, type(None)),
    "header": (dict, type(None)),
    "detail": (dict, type(None)),
}
HEADER_KEYS = {
    "version",
    "kind",
    "initialized",
    "creator_pid",
    "creator_start",
    "created",
    "header_size",
    "body_size",
    "flags",
    "anonymous",
    "params",
    "ref_name",
}
STATUSES = {
    "ok",
    "building",
    "failed",
    "undecodable",
    "corrupt",
    "truncated",
    "unknown-version",
    "unreadable",
    "foreign",
}
QUEUE_KEYS = {"nslots", "nwaiters", "noverflow", "slots"}
SLOT_KEYS = {"slot", "phase", "kind", "token", "pid", "tid", "ticket", "alive"}


def check_segment(s: dict) -> None:
    assert set(s) == set(SEGMENT_KEYS), set(s) ^ set(SEGMENT_KEYS)
    for key, types in SEGMENT_KEYS.items():
        assert isinstance(s[key], types), (key, s[key])
    assert s["status"] in STATUSES
    assert s["path"].startswith("/dev/shm/")
    if s["foreign"]:
        assert s["status"] == "foreign" and s["kind"] is None and s["detail"] is None and s["header"] is None
    if s["creator"] is not None:
        assert set(s["creator"]) == {"pid", "start", "alive"}
    for a in s["attached"] + s["unverified"]:
        assert set(a) == {"pid", "name"} and isinstance(a["pid"], int)
    if s["header"] is not None:
        assert set(s["header"]) == HEADER_KEYS
    if s["detail"] is not None:
        assert s["status"] == "ok"
        _check_queues(s["detail"])


def _check_queues(detail: dict) -> None:
    for key, value in detail.items():
        if key == "queue":
            assert set(value) == QUEUE_KEYS
            for slot in value["slots"]:
                assert set(slot) == SLOT_KEYS
        elif isinstance(value, dict):
            _check_queues(value)


def check_document(doc: dict) -> None:
    assert doc["schema"] == 1
    assert isinstance(doc["time"], float)
    assert set(doc["scan"]) == {"processes", "seconds"}
    command = doc["command"]
    if command in ("ls", "watch"):
        assert set(doc) == {"schema", "command", "time", "scan", "segments"} | (
            {"frame"} if command == "watch" else set()
        )
        for s in doc["segments"]:
            check_segment(s)
    elif command == "inspect":
        assert set(doc) == {"schema", "command", "time", "scan", "segment"}
        check_segment(doc["segment"])
    elif command == "gc":
        assert set(doc) == {"schema", "command", "time", "scan", "dry_run", "results"}
        for r in doc["results"]:
            assert set(r) == {"name", "path", "status", "action", "reason"}
            assert r["action"] in ("removed", "would-remove", "kept", "failed")
            assert r["reason"]
    else:
        raise AssertionError(f"unknown command {command!r}")


# -- tests --------------------------------------------------------------------------------


def test_ls_shows_objects_of_another_process_with_kind_and_state(children, prefix):
    child = children.start("objects", prefix)
    doc = run_json("ls", "--prefix", prefix, script=True)
    segs = {name[len(prefix) :]: s for name, s in by_name(doc).items()}
    expected_kinds = {
        "lock": "lock",
        "sem": "semaphore",
        "event": "event",
        "rwlock": "rwlock",
        "countdown": "countdown",
        "barrier": "barrier",
        "gate": "gate",
        "once": "once",
        "cond": "condition",
        "rlock": "rlock",
        "bsem": "bounded_semaphore",
        "are": "auto_reset_event",
    }
    assert {k: s["kind"] for k, s in segs.items()} == expected_kinds
    for s in segs.values():
        assert s["status"] == "ok", s
        assert s["creator"]["pid"] == child.pid and s["creator"]["alive"]
        assert child.pid in [a["pid"] for a in s["attached"]]
    assert segs["lock"]["state"] == f"locked by {child.pid}/{child.pid} (alive), 2 waiting, tag=0xbeef"
    lock = segs["lock"]["detail"]
    assert lock["locked"] and lock["owner_pid"] == child.pid and lock["owner_alive"] is True
    assert lock["tag"] == 0xBEEF and lock["waiters"] == 2
    queue = lock["queue"]["slots"]
    assert len(queue) == 2 and all(w["pid"] == child.pid and w["alive"] for w in queue)
    assert queue[0]["ticket"] < queue[1]["ticket"]
    assert segs["sem"]["detail"]["value"] == 2 and segs["sem"]["state"] == "value=2"
    assert segs["event"]["state"] == "set"
    assert segs["rwlock"]["detail"]["readers"] == 1
    assert segs["countdown"]["detail"]["count"] == 3 and segs["countdown"]["state"] == "3 remaining"
    assert segs["barrier"]["detail"]["parties"] == 4 and segs["barrier"]["detail"]["state"] == "filling"
    assert segs["gate"]["detail"]["is_set"] is False
    assert segs["once"]["detail"]["done"] is False
    assert segs["cond"]["detail"]["lock"]["embedded"] is True
    assert segs["bsem"]["detail"]["max_value"] == 2
    assert segs["are"]["detail"]["value"] == 0

    # The plain table, through python -m: one line per segment plus the header.
    text = run("ls", "--prefix", prefix).stdout.splitlines()
    assert text[0].split()[:3] == ["NAME", "KIND", "SIZE"]
    assert len(text) == 1 + len(expected_kinds)
    lock_line = next(line for line in text if line.startswith(prefix + "lock "))
    assert f"{child.pid} alive" in lock_line and "locked by" in lock_line and "2 waiting" in lock_line


def test_inspect_decodes_everything_and_changes_nothing(children, prefix):
    child = children.start("objects", prefix)
    doc = run_json("inspect", prefix + "lock")
    seg = doc["segment"]
    assert seg["kind"] == "lock" and seg["header"]["initialized"] == "ready"
    assert seg["detail"]["owner_tid"] == child.pid  # the main thread holds it
    text = run("inspect", "rsm_shm." + prefix + "lock", script=True).stdout  # the full file name works too
    assert "locked by" in text and "wait queue" in text and "0xbeef" in text and f"{child.pid} (" in text

    # Inspecting attaches read-only in effect: the segment's bytes stay the same.
    path = f"/dev/shm/rsm_shm.{prefix}barrier"
    with open(path, "rb") as f:
        before = f.read()
    inspected = run_json("inspect", prefix + "barrier")["segment"]
    assert inspected["state"] == "filling, 0/4 waiting, generation 0"
    with open(path, "rb") as f:
        assert f.read() == before


def test_sigkilled_owner_shows_dead_and_gc_removes_only_orphans(children, prefix):
    holder = children.start("holder", prefix)
    attacher = children.start("attacher", prefix)
    holder.kill()  # SIGKILL: no atexit, no release
    holder.wait(timeout=CHILD_TIMEOUT)

    seg = run_json("inspect", prefix + "orphan_lock")["segment"]
    assert seg["creator"] == {"pid": holder.pid, "start": seg["creator"]["start"], "alive": False}
    assert seg["detail"]["locked"] and seg["detail"]["owner_pid"] == holder.pid
    assert seg["detail"]["owner_alive"] is False
    assert seg["state"].startswith(f"locked by {holder.pid}/{holder.pid} (dead)")
    assert seg["attached"] == []

    gc = ["gc", "--prefix", prefix, "--ignore-unreadable"]
    dry = {r["name"][len(prefix) :]: r for r in run_json(*gc, "--dry-run")["results"]}
    assert {k: r["action"] for k, r in dry.items()} == {
        "orphan_lock": "would-remove",
        "orphan_sem": "would-remove",
        "shared": "kept",
        "live_lock": "kept",
    }
    assert "dead" in dry["orphan_lock"]["reason"]
    assert str(attacher.pid) in dry["shared"]["reason"]  # creator dead, but a live process maps it
    assert os.path.exists(f"/dev/shm/rsm_shm.{prefix}orphan_lock")  # a dry run removes nothing

    text = run(*gc, script=True).stdout
    assert "2 removed, 2 kept" in text
    left = by_name(run_json("ls", "--prefix", prefix))
    assert sorted(left) == [prefix + "live_lock", prefix + "shared"]
    assert left[prefix + "live_lock"]["detail"]["owner_alive"] is True

    # Once the last user is gone too, everything goes.
    attacher.kill()
    attacher.wait(timeout=CHILD_TIMEOUT)
    doc = run_json(*gc)
    assert sorted(r["action"] for r in doc["results"]) == ["removed", "removed"]
    run("ls", "--prefix", prefix, check_rc=1)  # nothing matched


def _segment_bytes(shm_name, cls_name: str = "Event") -> bytes:
    """The bytes of a real, freshly made segment (then unlinked)."""
    import rsm_shm

    obj = getattr(rsm_shm, cls_name)(shm_name("template"), create=True)
    try:
        with open(f"/dev/shm/rsm_shm.{obj.name}", "rb") as f:
            return f.read()
    finally:
        obj.close()
        obj.unlink()


def _write(name: str, data: bytes, size: int | None = None) -> str:
    path = f"/dev/shm/rsm_shm.{name}"
    with open(path, "wb") as f:
        f.write(data)
        if size is not None:
            f.truncate(size)
    return path


def test_corrupt_truncated_and_unknown_version_segments_are_reported_not_trusted(shm_name, prefix):
    import struct

    valid = _segment_bytes(shm_name)
    flipped = bytearray(valid)
    flipped[60] ^= 0xFF  # inside params: covered by the CRC
    newer = bytearray(valid)
    struct.pack_into("<H", newer, 4, 99)  # layout version 99
    building = bytearray(valid)
    struct.pack_into("<I", building, 8, 0)  # initialized = BUILDING (not covered by the CRC)
    lock = _segment_bytes(shm_name, "Lock")
    hostile = bytearray(lock)
    hostile[256:] = b"\xff" * (len(lock) - 256)  # valid header, garbage body (bad policy code)
    struct.pack_into("<I", hostile, 256 + 32 + 12, 64)  # but the right wq.nslots
    hostile_q = bytearray(hostile)
    struct.pack_into("<I", hostile_q, 256 + 24, 0)  # and a valid policy: decodes garbage counts and slots
    rwlock = bytearray(_segment_bytes(shm_name, "RWLock"))
    struct.pack_into("<I", rwlock, 256 + 32 + 12, 4096)  # wq.nslots: 4096 slots past a 64-slot mapping
    cases = {
        "rwlock_q": (bytes(rwlock), None, "undecodable"),  # once a SIGBUS in RWLock.statistics
        "garbage": (os.urandom(1000), None, "corrupt"),
        "tiny": (b"RSM1", None, "truncated"),
        "empty": (b"", None, "truncated"),
        "sparse": (b"\0" * 16, 64 << 20, "corrupt"),  # 64 MiB, never read whole
        "crc": (bytes(flipped), None, "corrupt"),
        "newer": (bytes(newer), None, "unknown-version"),
        "cut": (valid[:300], None, "truncated"),  # header says a longer body
        "building": (bytes(building), None, "building"),
        "hostile": (bytes(hostile), None, "undecodable"),
        "hostile_q": (bytes(hostile_q), None, "ok"),
    }
    names = {}
    for label, (data, size, _) in cases.items():
        names[label] = shm_name(label)
        _write(names[label], data, size)

    t0 = time.monotonic()
    segs = by_name(run_json("ls", "--prefix", prefix))
    elapsed = time.monotonic() - t0
    for label, (_, _, status) in cases.items():
        seg = segs[names[label]]
        assert seg["status"] == status, (label, seg)
        if status not in ("building", "undecodable", "ok"):
            assert seg["problem"] and seg["creator"] is None and seg["detail"] is None
    assert segs[names["hostile"]]["kind"] == "lock" and segs[names["hostile"]]["detail"] is None
    assert "policy" in segs[names["hostile"]]["problem"]
    assert "wait queue" in segs[names["rwlock_q"]]["problem"]
    garbage_q = segs[names["hostile_q"]]["detail"]["queue"]
    assert garbage_q["nslots"] == 64 and len(garbage_q["slots"]) == 64
    assert all(slot["alive"] is False and slot["phase"] == "unknown(15)" for slot in garbage_q["slots"])
    assert segs[names["building"]]["state"] == "being created"  # its "creator" is this test process
    assert elapsed < 10
    text = run("ls", "--prefix", prefix).stdout
    assert "CORRUPT:" in text and "TRUNCATED:" in text and "UNKNOWN-VERSION:" in text
    for label in cases:
        r = run_json("inspect", names[label])
        assert r["segment"]["status"] == cases[label][2]
        assert run("inspect", names[label]).stdout.startswith("name:")

    # gc keeps untrusted headers unless asked; then only those idle for a minute.
    gc = ["gc", "--prefix", prefix, "--ignore-unreadable"]
    kept = {r["name"]: r for r in run_json(*gc)["results"]}
    assert all(r["action"] == "kept" for r in kept.values())
    assert "--corrupt" in kept[names["garbage"]]["reason"]
    recent = {r["name"]: r["action"] for r in run_json(*gc, "--corrupt")["results"]}
    assert set(recent.values()) == {"kept"}
    old = time.time() - 120
    for label in ("garbage", "tiny", "newer"):
        os.utime(f"/dev/shm/rsm_shm.{names[label]}", (old, old))
    removed = {r["name"] for r in run_json(*gc, "--corrupt")["results"] if r["action"] == "removed"}
    assert removed == {names["garbage"], names["tiny"], names["newer"]}


def test_foreign_segments_are_listed_only_with_all_and_never_touched(prefix):
    foreign = f"rsmclitest_{prefix.rstrip('.')}"
    looks_ours = f"rsmclitest2_{prefix.rstrip('.')}"
    paths = [f"/dev/shm/{foreign}", f"/dev/shm/{looks_ours}"]
    try:
        with open(paths[0], "wb") as f:
            f.write(b"not ours" * 100)
        with open(paths[1], "wb") as f:
            f.write(_valid_header_bytes_like())  # our magic, but no prefix: still foreign
        plain = by_name(run_json("ls"))
        assert foreign not in plain and looks_ours not in plain
        every = by_name(run_json("ls", "--all"))
        for name in (foreign, looks_ours):
            assert every[name]["foreign"] and every[name]["status"] == "foreign"
            assert every[name]["kind"] is None and every[name]["detail"] is None
        seg = run_json("inspect", looks_ours)["segment"]
        assert seg["foreign"] and seg["header"] is None
        assert "foreign" in run("ls", "--all").stdout
        run_json("gc", "--prefix", foreign, check_rc=1)  # a prefix never selects foreign files
        run_json("gc", "--dry-run", "--corrupt", "--ignore-unreadable")  # the unfiltered gc, dry
        assert all(os.path.exists(p) for p in paths)
    finally:
        for p in paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _valid_header_bytes_like() -> bytes:
    import struct
    from rsm_shm.segment import LAYOUT_VERSION, MAGIC

    return struct.pack("<IH", MAGIC, LAYOUT_VERSION) + b"\0" * 250


def test_watch_count_prints_frames_and_exits(children, prefix):
    child = children.start("objects", prefix)
    r = run("watch", prefix + "lock", prefix + "sem", "--count", "3", "--interval", "0.05", script=True)
    assert "\x1b[" not in r.stdout  # not a terminal: no ANSI codes
    frames = [line for line in r.stdout.splitlines() if line.startswith("rsm-shm watch")]
    assert len(frames) == 3 and frames[-1].endswith("frame 3/3")
    assert r.stdout.count(prefix + "lock ") == 3 and r.stdout.count(prefix + "sem ") == 3
    assert f"locked by {child.pid}" in r.stdout

    lines = run("watch", "--prefix", prefix, "--count", "2", "--interval", "0.05", "--json").stdout.splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["frame"] for d in docs] == [0, 1]
    for d in docs:
        check_document(d)
        assert len(d["segments"]) == 12

    missing = run("watch", prefix + "nope", "--count", "1", "--interval", "0.05", check_rc=1)
    assert "not found" in missing.stdout


def test_watch_clears_the_screen_only_on_a_terminal(shm_name):
    import pty
    import rsm_shm

    ev = rsm_shm.Event(shm_name("ev"), create=True)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*PY_M, "watch", ev.name, "--count", "2", "--interval", "0.05"], stdout=slave, stderr=subprocess.PIPE
        )
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=CLI_TIMEOUT) == 0
        proc.stderr.close()
    finally:
        os.close(master)
        ev.close()
    assert out.count(cli_mod._CLEAR_SCREEN.encode()) == 2
    assert ev.name.encode() in out


def test_a_body_its_class_refuses_is_listed_with_its_header(shm_name):
    from rsm_shm.segment import Kind, Segment

    seg = Segment(shm_name("raft"), Kind.RAFT_STATUS, 64, create=True, params=(7,))
    try:
        s = run_json("inspect", seg.name)["segment"]
        assert s["status"] == "undecodable" and s["kind"] == "raft_status" and s["detail"] is None
        assert s["header"]["params"] == [7] and "no known record type" in s["problem"]
    finally:
        seg.close()


def test_cluster_records_are_decoded(shm_name):
    import warnings
    from rsm_shm.cluster import LocalCluster

    name = shm_name("cl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fsync=False says it is not durable
        c = LocalCluster(name, "rsm_shm.cluster:KVStore", peers=1, fsync=False).start()
    with c:
        c.wait_leader(10)
        s = run_json("inspect", name + ".s1")["segment"]
        assert s["status"] == "ok", s
        assert s["detail"]["record"] == "peer" and s["detail"]["role"] == "leader"
        assert s["state"].startswith("peer 1 leader, term ")
        s = run_json("inspect", name + ".ctl")["segment"]
        assert s["detail"]["record"] == "control" and s["detail"]["peers"]["1"]["state"] == "running"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["inspect"],
        ["watch", "--interval", "0"],
        ["watch", "--count", "0"],
        ["watch", "--interval", "nan"],
        ["gc", "--prefix", ""],
        ["ls", "--bogus"],
        ["inspect", "../etc"],
        ["watch", "x", "--prefix", "x"],
        # the cluster commands share the same argument types (an infinite interval was accepted there)
        ["cluster", "status", "x", "--count", "0"],
        ["cluster", "status", "x", "--interval", "inf"],
        ["kv", "x", "get", "k", "--timeout", "-1"],
    ],
)
def test_usage_errors_exit_2(args):
    r = run(*args, check_rc=2)
    assert r.stderr


def test_not_found_exits_1(prefix):
    r = run("inspect", prefix + "missing", check_rc=1)
    assert "no segment" in r.stderr
    run("ls", "--prefix", prefix, check_rc=1)
    assert run_json("ls", "--prefix", prefix, check_rc=1)["segments"] == []


def _with_creator(raw: bytes, pid: int, start: int) -> bytes:
    """A copy of a segment whose header names another creator, checksum recomputed as
    csrc/segment.h specifies (CRC32 of bytes [0,8) + [12,240), stored at 240)."""
    import struct
    import zlib

    out = bytearray(raw)
    struct.pack_into("<iQ", out, 12, pid, start)
    crc = zlib.crc32(bytes(out[12:240]), zlib.crc32(bytes(out[0:8])))
    struct.pack_into("<I", out, 240, crc)
    return bytes(out)


def test_a_reused_pid_does_not_keep_a_dead_creators_segment_alive(shm_name, prefix):
    from rsm_shm import _proc

    raw = _segment_bytes(shm_name, "Semaphore")
    me = os.getpid()
    real_start = _proc.start_time(me)
    reused = shm_name("reused")
    ours = shm_name("ours")
    _write(reused, _with_creator(raw, me, real_start + 12345))  # "me", but a different start time
    _write(ours, _with_creator(raw, me, real_start))
    segs = by_name(run_json("ls", "--prefix", prefix))
    assert segs[reused]["status"] == "ok" and segs[reused]["creator"]["alive"] is False
    assert segs[ours]["creator"]["alive"] is True
    results = {r["name"]: r["action"] for r in run_json("gc", "--prefix", prefix, "--ignore-unreadable")["results"]}
    assert results == {reused: "removed", ours: "kept"}


def test_rings_and_queues_of_another_process(children, prefix):
    from rsm_shm import ring as ring_mod

    child = children.start("ring", prefix)
    segs = {name[len(prefix) :]: s for name, s in by_name(run_json("ls", "--prefix", prefix, script=True)).items()}
    assert {k: s["kind"] for k, s in segs.items()} == {"ring": "ring", "queue": "queue", "shut": "ring"}
    ring = segs["ring"]
    assert ring["status"] == "ok", ring["problem"]
    assert ring["detail"]["messages"] == 10 and ring["detail"]["used_bytes"] == 1280
    assert ring["detail"]["blocked_producers"] == 1 and ring["detail"]["fill"] == 31.2
    assert [w["pid"] for w in ring["detail"]["producer_queue"]["slots"]] == [child.pid]
    assert ring["state"].startswith("31% full") and "1 producers blocked" in ring["state"]
    assert segs["queue"]["detail"]["messages"] == 1
    assert segs["shut"]["detail"]["is_shutdown"] is True and segs["shut"]["state"].endswith("shut down")
    assert "producer wait queue" in run("inspect", prefix + "ring").stdout

    # Looking never changes a ring: it is not shut down, and its messages are all still there.
    r = ring_mod.Ring(prefix + "ring", create=False)
    try:
        assert not r.is_shutdown and r.qsize() == 10
    finally:
        r.close()


def test_automaton_of_another_process(children, prefix):
    child = children.start("automaton", prefix)
    segs = by_name(run_json("ls", "--prefix", prefix))
    auto = segs[prefix + "auto"]
    assert auto["kind"] == "automaton" and auto["status"] == "ok", auto["problem"]
    assert auto["detail"]["mode"] == "running" and auto["detail"]["commands"] == 3
    assert auto["detail"]["state"] == "3" and auto["detail"]["host_pid"] == child.pid
    assert auto["state"].startswith("RUNNING")
    inbox = segs[prefix + "auto.inbox.0"]
    assert inbox["kind"] == "ring" and inbox["detail"]["single_consumer"] is True
