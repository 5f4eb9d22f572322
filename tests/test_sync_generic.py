"""One generic suite over every lock-like primitive, with threads and with processes."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
import time

import pytest

import rsm_shm

FACTORIES = {
    "Lock": lambda n: rsm_shm.Lock(n, create=True),
    "Lock-fifo": lambda n: rsm_shm.Lock(n, create=True, policy="fifo"),
    "Lock-lifo": lambda n: rsm_shm.Lock(n, create=True, policy="lifo"),
    "RLock": lambda n: rsm_shm.RLock(n, create=True),
    "RLock-fifo": lambda n: rsm_shm.RLock(n, create=True, policy="fifo"),
    "Semaphore": lambda n: rsm_shm.Semaphore(n, create=True),
    "Semaphore-fifo": lambda n: rsm_shm.Semaphore(n, create=True, policy="fifo"),
    "BoundedSemaphore": lambda n: rsm_shm.BoundedSemaphore(n, create=True),
}
OWNED = {"Lock", "Lock-fifo", "Lock-lifo", "RLock", "RLock-fifo"}


@pytest.fixture(params=sorted(FACTORIES))
def lockish(request, shm_name):
    obj = FACTORIES[request.param](shm_name(request.param))
    yield request.param, obj
    obj.close()
    obj.unlink()


def _in_thread(fn):
    """Run fn in another thread; return its result or re-raise its exception here."""
    out: list = []

    def run():
        try:
            out.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out.append(("err", e))

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert not t.is_alive()
    status, value = out[0]
    if status == "err":
        raise value
    return value


def test_acquire_release_and_context(lockish):
    kind, lk = lockish
    assert lk.acquire() is True
    assert _in_thread(lambda: lk.acquire(False)) is False
    lk.release()
    with lk:
        assert _in_thread(lambda: lk.acquire(False)) is False
    assert _in_thread(lambda: (lk.acquire(False), lk.release())[0]) is True


def test_timeout_returns_false_after_timeout(lockish):
    kind, lk = lockish
    lk.acquire()
    t0 = time.monotonic()
    assert _in_thread(lambda: lk.acquire(timeout=0.2)) is False
    assert time.monotonic() - t0 >= 0.2
    lk.release()


def test_argument_rules_match_threading(lockish):
    kind, lk = lockish
    if kind.startswith(("Lock", "RLock")):
        with pytest.raises(ValueError):
            lk.acquire(False, 1)
        with pytest.raises(ValueError):
            lk.acquire(True, -5)
        with pytest.raises(ValueError):
            threading.Lock().acquire(False, 1)
    else:
        with pytest.raises(ValueError):
            lk.acquire(False, 1)
        with pytest.raises(ValueError):
            threading.Semaphore().acquire(False, 1)


def test_release_unowned(lockish):
    kind, lk = lockish
    if kind in OWNED:
        with pytest.raises(RuntimeError):
            lk.release()
        lk.acquire()
        if kind.startswith("RLock"):
            with pytest.raises(RuntimeError):
                _in_thread(lambda: lk.release())  # only the owner may release an RLock
            lk.release()
        else:
            _in_thread(lambda: lk.release())  # threading.Lock: any thread may release it
            assert not lk.locked()
            t = threading.Lock()
            t.acquire()
            _in_thread(t.release)  # (the behaviour we mirror)
    elif kind == "BoundedSemaphore":
        with pytest.raises(ValueError):
            lk.release()


def test_mutual_exclusion_threads(lockish):
    kind, lk = lockish
    state = {"inside": 0, "max": 0, "n": 0}

    def work():
        for _ in range(2000):
            with lk:
                state["inside"] += 1
                state["max"] = max(state["max"], state["inside"])
                state["n"] += 1
                state["inside"] -= 1

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert state == {"inside": 0, "max": 1, "n": 8000}


def _child_acquire_release(obj, q):
    ok = obj.acquire(timeout=30)
    q.put(ok)
    obj.release()


def test_wakeup_across_processes(lockish):
    kind, lk = lockish
    lk.acquire()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child_acquire_release, args=(lk, q))  # pickled by name
    p.start()
    try:
        deadline = time.monotonic() + 30
        pending = getattr(lk, "pending", None)
        while pending is not None and lk.pending == 0 and time.monotonic() < deadline:
            time.sleep(0.005)  # wait for an observable state: the child is queued
        lk.release()
        assert q.get(timeout=30) is True
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0


def test_pickles_as_name(lockish):
    kind, lk = lockish
    data = pickle.dumps(lk)
    assert len(data) < 200 and lk.name.encode() in data
    other = pickle.loads(data)
    try:
        assert other.name == lk.name and type(other) is type(lk)
        other.acquire()
        assert lk.acquire(False) is (kind.startswith("RLock"))  # same thread: RLock re-enters
        if kind.startswith("RLock"):
            lk.release()
        other.release()
    finally:
        other.close()


def test_statistics_and_repr(lockish):
    kind, lk = lockish
    lk.acquire()
    s = lk.statistics()
    r = repr(lk)
    assert lk.name in r
    if kind in OWNED:
        assert s.locked and s.owner_alive and s.owner_tid == threading.get_native_id()
        assert "locked by" in r
    else:
        assert s.value == 0
    lk.release()
