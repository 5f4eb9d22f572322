"""rsm_shm._errors.raise_for: the one place a C status code becomes an exception."""

from __future__ import annotations

import queue
import threading

import pytest

import rsm_shm
from rsm_shm._errors import raise_for
from rsm_shm._native import lib


def _raised(code, obj, op="", detail=""):
    with pytest.raises(BaseException) as info:
        raise_for(code, obj, op, detail)
    return info.value


def test_ring_codes(objs):
    ring = objs(rsm_shm.Ring, capacity=1024)
    e = _raised(lib.RSM_CLOSED, ring, "put")
    assert type(e) is rsm_shm.ShutDown and "Ring" in str(e) and ring.name in str(e)
    assert "drained" in str(_raised(lib.RSM_CLOSED, ring, "get"))
    for code in (lib.RSM_TIMEOUT, lib.RSM_WOULDBLOCK):
        assert type(_raised(code, ring, "put")) is queue.Full
        assert type(_raised(code, ring, "get")) is queue.Empty
    assert "3 of 5" in str(_raised(lib.RSM_TIMEOUT, ring, "put", "3 of 5 messages put"))
    assert isinstance(_raised(lib.RSM_INVAL, ring, "put"), ValueError)


def test_queue_is_named_as_a_queue(objs):
    q = objs(rsm_shm.Queue, capacity=1024)
    e = _raised(lib.RSM_CLOSED, q.ring, "put")
    assert str(e).startswith(f"Queue {q.name!r}")


def test_primitive_codes(objs):
    lock, rlock = objs(rsm_shm.Lock), objs(rsm_shm.RLock)
    sem, bsem = objs(rsm_shm.Semaphore), objs(rsm_shm.BoundedSemaphore)
    # threading's own wording where threading has one
    assert str(_raised(lib.RSM_NOT_OWNER, lock)) == "release unlocked lock"
    assert str(_raised(lib.RSM_NOT_OWNER, rlock)) == "cannot release un-acquired lock"
    e = _raised(lib.RSM_NOT_OWNER, objs(rsm_shm.RWLock), "release_read")
    assert type(e) is RuntimeError and "release_read()" in str(e)
    assert type(_raised(lib.RSM_OVERFLOW, rlock)) is OverflowError
    for s in (sem, bsem):
        e = _raised(lib.RSM_OVERFLOW, s)
        assert type(e) is ValueError and str(e) == "Semaphore released too many times"
    e = _raised(lib.RSM_DISABLED, sem)
    assert isinstance(e, rsm_shm.DisabledError) and sem.name in str(e)
    e = _raised(lib.RSM_CLOSED, lock)  # the fast path on an unmapped handle
    assert type(e) is ValueError and str(e) == f"Lock {lock.name!r} is closed"
    assert type(_raised(lib.RSM_BROKEN, objs(rsm_shm.Barrier, parties=2))) is threading.BrokenBarrierError
    assert "inside its own callable" in str(_raised(lib.RSM_INVAL, objs(rsm_shm.Once)))
    assert "max_waiters" in str(_raised(lib.RSM_NO_SLOT, lock))


def test_unknown_code_names_object_and_code(objs):
    ev = objs(rsm_shm.Event)
    e = _raised(12345, ev)
    assert type(e) is RuntimeError and "12345" in str(e) and f"Event {ev.name!r}" in str(e)


def test_fast_path_failures_go_through_raise_for(objs):
    lock = objs(rsm_shm.Lock)
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()  # a C fast path: the status reaches raise_for from C
    sem = objs(rsm_shm.BoundedSemaphore, value=1)
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()
    sem.disable()
    with pytest.raises(rsm_shm.DisabledError, match=sem.name):
        sem.acquire()
