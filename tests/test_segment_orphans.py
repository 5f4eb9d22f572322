"""Segments their creator never finished are reported at once (issue 9).

An open used to wait the whole creation timeout (10 s) on a zero-length file with our
prefix, and on a half-built header whose creator pid had been reused.  Now an empty file
is waited for only while it is young enough to be a creator's work in progress, and the
creator is judged by pid *and* start time.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import pytest

import rsm_shm
from rsm_shm import segment
from rsm_shm.segment import SegmentError


def _write(name: str, data: bytes, age: float = 0.0) -> str:
    path = segment.shm_path(name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    if age:
        t = time.time() - age
        os.utime(path, (t, t))
    return path


def _building_header(shm_name, pid: int, start: int) -> bytes:
    good = rsm_shm.Lock(shm_name(), create=True)
    try:
        with open(segment.shm_path(good.name), "rb") as f:
            data = bytearray(f.read())
    finally:
        good.close()
        good.unlink()
    struct.pack_into("<I", data, 8, 0)  # initialized = BUILDING
    struct.pack_into("<iQ", data, 12, pid, start)
    return bytes(data)


def test_an_old_empty_segment_is_reported_at_once(shm_name):
    name = shm_name()
    _write(name, b"", age=60)
    t0 = time.monotonic()
    with pytest.raises(SegmentError, match=r"empty \(0 bytes\) and nobody is creating it"):
        rsm_shm.Lock(name)
    assert time.monotonic() - t0 < 0.3


def test_a_fresh_empty_segment_is_waited_for_briefly_only(shm_name):
    name = shm_name()
    _write(name, b"")
    t0 = time.monotonic()
    with pytest.raises(SegmentError, match="empty"):
        rsm_shm.Lock(name, create=False)
    assert time.monotonic() - t0 < segment.MAGIC_WAIT_TIMEOUT + 0.5


def test_a_fresh_empty_segment_sized_by_its_creator_meanwhile_opens(shm_name):
    # The race the wait exists for: the loser opens before the winner sized the file.
    name = shm_name()
    lock = rsm_shm.Lock(name, create=True)
    try:
        with open(segment.shm_path(name), "rb") as f:
            data = f.read()
        lock.close()
        lock.unlink()
        path = _write(name, b"")
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                (
                    "import sys, time, os; time.sleep(0.1); fd = os.open(sys.argv[1], os.O_RDWR); "
                    "os.write(fd, bytes.fromhex(sys.argv[2])); os.close(fd)"
                ),
                path,
                data.hex(),
            ]
        )
        try:
            opened = rsm_shm.Lock(name, create=False)
            opened.close()
        finally:
            child.wait(30)
    finally:
        lock.unlink()


def test_a_half_built_segment_whose_creator_pid_was_reused_is_reported_at_once(shm_name):
    # Our own (live) pid with another start time: the creator that had this pid is gone.
    name = shm_name()
    _write(name, _building_header(shm_name, os.getpid(), start=1))
    t0 = time.monotonic()
    with pytest.raises(SegmentError, match=f"never finished by its creator \\(pid {os.getpid()}, dead\\)"):
        rsm_shm.Lock(name)
    assert time.monotonic() - t0 < 0.5


def test_a_creator_that_dies_while_we_wait_is_reported_within_a_slice(shm_name):
    name = shm_name()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    try:
        start = 0
        deadline = time.monotonic() + 10
        while not start and time.monotonic() < deadline:  # /proc shows it once it runs
            from rsm_shm import _proc

            start = _proc.start_time(child.pid)
        _write(name, _building_header(shm_name, child.pid, start))
        t0 = time.monotonic()
        with pytest.raises(SegmentError, match="never finished"):
            rsm_shm.Lock(name)
        assert time.monotonic() - t0 < 3.0  # the child lives ~0.6 s; was: the full 10 s
    finally:
        child.wait(30)
