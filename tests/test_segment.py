"""Segments: creation semantics, validation of hostile input, lifetime, permissions."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys

import pytest

import rsm_shm
from rsm_shm import segment
from rsm_shm._native import ffi
from rsm_shm.segment import HEADER_SIZE, SegmentError


def test_header_layout_matches_c():
    fields = {
        "magic": 0,
        "version": 4,
        "kind": 6,
        "initialized": 8,
        "creator_pid": 12,
        "creator_start": 16,
        "created_ns": 24,
        "header_size": 32,
        "body_size": 36,
        "flags": 40,
        "nparams": 44,
        "params": 48,
        "ref_name": 112,
        "crc": 240,
    }
    for name, off in fields.items():
        assert ffi.offsetof("rsm_segment_header", name) == off, name
    assert ffi.sizeof("rsm_segment_header") == HEADER_SIZE == segment._HEADER.size


def test_create_modes(shm_name):
    name = shm_name()
    with pytest.raises(FileNotFoundError):
        rsm_shm.Lock(name, create=False)
    a = rsm_shm.Lock(name, create=True)
    with pytest.raises(FileExistsError):
        rsm_shm.Lock(name, create=True)
    b = rsm_shm.Lock(name)  # create=None opens the existing one
    c = rsm_shm.Lock(name, create=False)
    assert a.acquire()
    assert b.locked() and c.locked()
    a.release()
    for x in (a, b, c):
        x.close()
        x.close()  # idempotent
    a.unlink()
    a.unlink()  # idempotent
    assert not os.path.exists(segment.shm_path(name))


def test_creation_race_many_processes(shm_name):
    name = shm_name()
    code = "import sys, rsm_shm; s = rsm_shm.Semaphore(sys.argv[1], value=0); s.release(); s.close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, name]) for _ in range(6)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    s = rsm_shm.Semaphore(name, create=False)
    try:
        assert s.value == 6  # exactly one creator initialised it; nobody re-initialised
    finally:
        s.close()
        s.unlink()


@pytest.mark.parametrize("bad", ["", "a" * 201, "a/b", ".hidden", "-x", "sp ace", "é"])
def test_bad_names(bad):
    with pytest.raises(ValueError):
        rsm_shm.Lock(bad)


def test_name_type_and_create_type(shm_name):
    with pytest.raises(TypeError):
        rsm_shm.Lock(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rsm_shm.Lock(shm_name(), create="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rsm_shm.Lock(shm_name(), mode=0o1777)


def test_out_of_range_values(shm_name, shm_token):
    with pytest.raises(ValueError):
        rsm_shm.Semaphore(shm_name(), value=-1)
    with pytest.raises(ValueError):
        rsm_shm.Semaphore(shm_name(), value=1 << 31)
    with pytest.raises(ValueError):
        rsm_shm.Lock(shm_name(), max_waiters=0)
    with pytest.raises(ValueError):
        rsm_shm.Barrier(shm_name(), parties=0)
    with pytest.raises(ValueError):
        rsm_shm.Lock(shm_name(), policy="random")
    # Nothing was created by any of the failed constructors.
    assert not [e for e in os.listdir("/dev/shm") if shm_token in e]


def test_other_kind_is_rejected_and_left_intact(shm_name):
    name = shm_name()
    ev = rsm_shm.Event(name, create=True)
    ev.set()
    with pytest.raises(SegmentError, match="EVENT"):
        rsm_shm.Lock(name)
    assert ev.is_set()
    ev.close()
    ev.unlink()


def _write_file(name: str, data: bytes) -> str:
    path = os.path.join("/dev/shm", segment.PREFIX + name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def _valid_header_bytes(shm_name) -> bytes:
    name = shm_name()
    lk = rsm_shm.Lock(name, create=True)
    with open(segment.shm_path(name), "rb") as f:
        data = f.read()
    lk.close()
    lk.unlink()
    return data


def test_foreign_segment(shm_name):
    name = shm_name()
    _write_file(name, b"\x00" * 4096)
    with pytest.raises(SegmentError, match="not an rsm_shm segment"):
        rsm_shm.Lock(name, create=False)
    with pytest.raises(SegmentError):
        segment.read_header(name)
    assert os.path.getsize(segment.shm_path(name)) == 4096  # untouched


def test_truncated_segment(shm_name):
    data = _valid_header_bytes(shm_name)
    name = shm_name()
    _write_file(name, data[: HEADER_SIZE + 8])
    with pytest.raises(SegmentError, match="truncated"):
        rsm_shm.Lock(name, create=False)
    short = shm_name()
    _write_file(short, data[:100])
    with pytest.raises(SegmentError, match="truncated"):
        rsm_shm.Lock(short, create=False)


def test_corrupt_header(shm_name):
    data = bytearray(_valid_header_bytes(shm_name))
    data[50] ^= 0xFF  # a parameter byte: the CRC must catch it
    name = shm_name()
    _write_file(name, bytes(data))
    with pytest.raises(SegmentError, match="corrupt"):
        rsm_shm.Lock(name, create=False)


def test_other_layout_version(shm_name):
    data = bytearray(_valid_header_bytes(shm_name))
    struct.pack_into("<H", data, 4, 99)
    name = shm_name()
    _write_file(name, bytes(data))
    with pytest.raises(SegmentError, match="layout version 99"):
        rsm_shm.Lock(name, create=False)


def test_half_built_segment_of_dead_creator(shm_name):
    data = bytearray(_valid_header_bytes(shm_name))
    struct.pack_into("<I", data, 8, 0)  # initialized = BUILDING ...
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    struct.pack_into("<i", data, 12, dead.pid)  # ... by a creator that is gone
    name = shm_name()
    _write_file(name, bytes(data))
    with pytest.raises(SegmentError, match="never finished"):
        rsm_shm.Lock(name)


def test_half_built_segment_of_live_creator_times_out(shm_name, monkeypatch):
    data = bytearray(_valid_header_bytes(shm_name))
    struct.pack_into("<I", data, 8, 0)
    struct.pack_into("<i", data, 12, os.getpid())  # "we" are building it and never finish
    name = shm_name()
    _write_file(name, bytes(data))
    monkeypatch.setattr(segment, "CREATE_WAIT_TIMEOUT", 0.2)
    with pytest.raises(SegmentError, match="still being built"):
        rsm_shm.Lock(name)


def test_mode(shm_name):
    a = rsm_shm.Lock(shm_name(), create=True)
    b = rsm_shm.Lock(shm_name(), create=True, mode=0o660)
    try:
        assert stat.S_IMODE(os.stat(segment.shm_path(a.name)).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(segment.shm_path(b.name)).st_mode) == 0o660  # not filtered by umask
    finally:
        for x in (a, b):
            x.close()
            x.unlink()


def test_attached_process_exit_does_not_unlink(shm_name):
    """The resource-tracker bug of multiprocessing.shared_memory on Python < 3.13."""
    name = shm_name()
    lk = rsm_shm.Lock(name, create=True)
    code = "import sys, rsm_shm; l = rsm_shm.Lock(sys.argv[1], create=False); l.acquire(); l.release(); l.close()"
    subprocess.run([sys.executable, "-c", code, name], check=True, timeout=60)
    assert os.path.exists(segment.shm_path(name))
    lk.close()
    lk.unlink()


def test_anonymous_reclaimed_when_creator_exits():
    code = "import rsm_shm; l = rsm_shm.Lock(); print(l.name, flush=True)"
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True)
    name = out.stdout.strip()
    assert name.startswith("anon.")
    assert not os.path.exists(segment.shm_path(name))


def test_anonymous_survives_while_creator_lives():
    lk = rsm_shm.Lock()
    try:
        other = rsm_shm.Lock(lk.name, create=False)
        assert lk.acquire()
        assert other.locked()
        lk.release()
        other.close()
        with pytest.raises(ValueError):
            rsm_shm.Lock(None, create=False)
    finally:
        lk.close()
        lk.unlink()


def test_use_after_close_raises(shm_name):
    lk = rsm_shm.Lock(shm_name(), create=True)
    lk.close()
    with pytest.raises(ValueError, match="closed"):
        lk.acquire()
    with pytest.raises(ValueError, match="closed"):
        lk.release()
    assert "closed" in repr(lk)
    lk.unlink()


@pytest.mark.parametrize(
    "cls,queue_offset",
    [
        (rsm_shm.Lock, ffi.offsetof("rsm_lock", "wq")),
        (rsm_shm.Semaphore, ffi.offsetof("rsm_sem", "wq")),
        (rsm_shm.Event, ffi.offsetof("rsm_event", "wq")),
        (rsm_shm.RWLock, ffi.offsetof("rsm_rwlock", "wq")),
        (rsm_shm.Condition, 0),
    ],
)
def test_corrupt_wait_queue_size_is_rejected(shm_name, cls, queue_offset):
    """C walks q->nslots slots: a corrupt count must be caught before any C call (SIGBUS)."""
    name = shm_name()
    obj = cls(name, create=True)
    path = segment.shm_path(name)
    try:
        with open(path, "r+b") as f:
            f.seek(HEADER_SIZE + queue_offset + ffi.offsetof("rsm_waitq", "nslots"))
            f.write(struct.pack("<I", 4096))
        with pytest.raises(SegmentError, match="wait queue"):
            cls(name, create=False)
    finally:
        obj.close()
        obj.unlink()


def _make_anonymous_and_report(q) -> None:
    lk = rsm_shm.Lock()
    q.put(lk.name)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_anonymous_reclaimed_when_a_multiprocessing_child_exits(method, single_threaded):
    """multiprocessing children leave through os._exit(): atexit does not run there."""
    import multiprocessing as mp

    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=_make_anonymous_and_report, args=(q,))
    p.start()
    name = q.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0
    assert not os.path.exists(segment.shm_path(name))


def test_semaphore_of_an_older_layout_is_refused(shm_name):
    """Semaphores have their own layout version (header params[5]; 2 since the count word
    carries the robust tag).  A segment without it -- made by an older rsm_shm -- must be
    refused with a message that says so, not misread."""
    name = shm_name()
    sem = rsm_shm.Semaphore(name, create=True, robust=True)
    try:
        with open(segment.shm_path(name), "rb") as f:
            data = bytearray(f.read())
    finally:
        sem.close()
        sem.unlink()
    struct.pack_into("<I", data, 44, 5)  # nparams: the five of layout 1
    struct.pack_into("<Q", data, 48 + 5 * 8, 0)
    struct.pack_into("<I", data, 240, segment._crc(bytes(data[:HEADER_SIZE])))
    old = shm_name()
    _write_file(old, bytes(data))
    with pytest.raises(SegmentError, match="semaphore layout version 1; this rsm_shm reads version 2"):
        rsm_shm.Semaphore(old, create=False)
