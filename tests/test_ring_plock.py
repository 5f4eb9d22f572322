"""A put that finds the multi-producer reservation lock busy waits for it instead of
reporting a full ring.

The lock (``plock``, holding its holder's pid) is held for a few instructions while a
producer reserves room.  On a loaded machine the holder can be preempted right there;
``put_nowait`` (and a put with a short timeout) then used to raise ``queue.Full`` on an
empty ring, and the cluster's peers, which send with ``put_nowait``, dropped messages
and waited a tick or more for the retransmission.  The tests hold the lock by writing a
pid into the ring's header, as a producer inside its reservation would.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

import pytest

import rsm_shm
from rsm_shm._native import lib


@pytest.fixture
def ring(shm_name):
    r = rsm_shm.Ring(shm_name("ring"), create=True, capacity=1 << 16)
    try:
        yield r
    finally:
        r.unlink()
        r.close()


def test_put_nowait_waits_for_a_briefly_held_lock(ring):
    ring._ptr.plock = 1  # pid 1 lives: a producer inside its reservation
    released = threading.Event()

    def release():
        time.sleep(0.003)
        ring._ptr.plock = 0
        released.set()

    t = threading.Thread(target=release)
    t.start()
    try:
        ring.put_nowait(b"m")  # raised queue.Full (an empty ring) before the fix
    finally:
        t.join(5)
    assert released.is_set()
    assert ring.get_nowait() == b"m"


def test_put_with_short_timeout_waits_for_a_briefly_held_lock(ring):
    ring._ptr.plock = 1
    t = threading.Timer(0.003, lambda: setattr(ring._ptr, "plock", 0))
    t.start()
    try:
        ring.put(b"m", timeout=0.0005)
    finally:
        t.join(5)
    assert ring.get_nowait() == b"m"


def test_put_nowait_releases_a_lock_whose_holder_died(ring):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(30)
    ring._ptr.plock = dead.pid
    ring.put_nowait(b"m")  # raised queue.Full forever before the fix (nobody judged it)
    assert ring._ptr.plock == 0
    assert ring.get_nowait() == b"m"
    assert ring.statistics().repairs >= 1


def test_put_nowait_gives_up_on_a_lock_held_past_the_grace(ring):
    ring._ptr.plock = 1  # a live holder that never lets go (e.g. stopped in there)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        ring.put_nowait(b"m")
    waited = time.monotonic() - t0
    assert lib.RSM_RING_PLOCK_GRACE_NS / 1e9 <= waited < 5
    ring._ptr.plock = 0
    ring.put_nowait(b"m")
    assert ring.get_nowait() == b"m"
