"""Per-primitive semantics: the threading behaviours we promise, plus the seed's extras."""

from __future__ import annotations

import threading
import time

import pytest

import rsm_shm


@pytest.fixture
def make(objs):
    return objs


def _start(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def _until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


# -- Event -------------------------------------------------------------------------------


def test_event(make):
    e = make(rsm_shm.Event)
    assert not e.is_set() and e.wait(0) is False and e.wait(0.05) is False
    assert e.wait(timeout=0.01) is False
    with pytest.raises(TypeError):
        e.wait(tmeout=1)
    results = []
    ts = [_start(lambda: results.append(e.wait(30))) for _ in range(5)]
    _until(lambda: e.pending == 5)
    e.set()
    for t in ts:
        t.join(30)
    assert results == [True] * 5
    assert e.wait() is True
    e.clear()
    assert not e.is_set()


def test_event_wait_true_even_if_cleared_right_after_set(make):
    e = make(rsm_shm.Event)
    out = []
    t = _start(lambda: out.append(e.wait(30)))
    _until(lambda: e.pending == 1)
    e.set()
    e.clear()
    t.join(30)
    assert out == [True]


def test_auto_reset_event_lets_one_through(make):
    a = make(rsm_shm.AutoResetEvent)
    assert a.wait(timeout=0.01) is False
    a.set()
    a.set()  # capped at 1
    assert a.wait(0) is True
    assert a.wait(0.02) is False
    out = []
    ts = [_start(lambda: out.append(a.wait(30))) for _ in range(3)]
    _until(lambda: a.pending == 3)
    a.set()
    _until(lambda: len(out) == 1)
    assert a.pending == 2
    a.set()
    a.set()
    for t in ts:
        t.join(30)
    assert out == [True] * 3


# -- Semaphore extras ------------------------------------------------------------------


def test_semaphore_release_n_and_disable(make):
    s = make(rsm_shm.Semaphore, value=0)
    got, errors = [], []

    def blocked():
        try:
            got.append(s.acquire(timeout=30))
        except rsm_shm.DisabledError as e:
            errors.append(e)

    ts = [_start(blocked) for _ in range(4)]
    _until(lambda: s.pending == 4)
    s.release(2)
    _until(lambda: len(got) == 2)
    assert s.pending == 2
    s.disable()
    for t in ts:
        t.join(30)
    assert got == [True, True] and len(errors) == 2 and s.disabled
    with pytest.raises(rsm_shm.DisabledError):
        s.acquire(False)
    with pytest.raises(rsm_shm.DisabledError):
        s.release()
    with pytest.raises(ValueError):
        make(rsm_shm.Semaphore).release(0)


def test_bounded_semaphore(make):
    b = make(rsm_shm.BoundedSemaphore, value=2)
    b.acquire()
    b.release()
    with pytest.raises(ValueError, match="too many"):
        b.release()
    assert b.value == 2


def test_fifo_semaphore_serves_in_arrival_order(make):
    s = make(rsm_shm.Semaphore, value=0, policy="fifo")
    order = []
    for i in range(5):
        _start(lambda i=i: (s.acquire(timeout=30), order.append(i)))
        _until(lambda i=i: s.pending == i + 1)
    for k in range(5):
        s.release()  # one permit at a time: the hand-off order is what we check
        _until(lambda k=k: len(order) == k + 1)
    assert order == [0, 1, 2, 3, 4]


def test_fifo_lock_hands_off_in_arrival_order(make):
    lk = make(rsm_shm.Lock, policy="fifo")
    lk.acquire()
    order = []

    def waiter(i):
        lk.acquire()
        order.append(i)
        lk.release()

    for i in range(4):
        _start(waiter, i)
        _until(lambda i=i: lk.pending == i + 1)
    lk.release()
    _until(lambda: len(order) == 4)
    assert order == [0, 1, 2, 3]


def test_lock_tag_and_pending(make):
    lk = make(rsm_shm.Lock)
    lk.tag = 0xDEADBEEF
    assert lk.tag == 0xDEADBEEF
    with pytest.raises(ValueError):
        lk.tag = 1 << 32
    lk.acquire()
    t = _start(lambda: (lk.acquire(), lk.release()))
    _until(lambda: lk.pending == 1)
    assert "1 waiting" in repr(lk)
    lk.release()
    t.join(30)
    assert lk.pending == 0


# -- Condition ---------------------------------------------------------------------------


def test_condition_requires_lock(make):
    c = make(rsm_shm.Condition)
    with pytest.raises(RuntimeError):
        c.wait(0.01)
    with pytest.raises(RuntimeError):
        c.notify()


def test_condition_notify_wakes_exactly_n(make):
    c = make(rsm_shm.Condition)
    woken = []

    def waiter(i):
        with c:
            if c.wait(30):
                woken.append(i)

    ts = [_start(waiter, i) for i in range(5)]
    _until(lambda: c.waiters == 5)
    with c:
        c.notify(2)
    _until(lambda: len(woken) == 2)
    time.sleep(0.1)  # give a wrongly woken third waiter the chance to show up
    assert len(woken) == 2 and c.waiters == 3
    with c:
        c.notify_all()
    for t in ts:
        t.join(30)
    assert sorted(woken) == [0, 1, 2, 3, 4]


def test_condition_wait_timeout_and_wait_for(make):
    c = make(rsm_shm.Condition)
    with c:
        t0 = time.monotonic()
        assert c.wait(0.1) is False
        assert time.monotonic() - t0 >= 0.1
        assert c.wait_for(lambda: 0, timeout=0.05) == 0
        assert c.wait_for(lambda: 7) == 7


def test_condition_with_external_lock_attaches_by_name(make, shm_name):
    lk = make(rsm_shm.Lock)
    c = make(rsm_shm.Condition, lock=lk)
    c2 = rsm_shm.Condition(c.name, create=False)
    try:
        assert c2.lock.name == lk.name
        with c2:
            assert lk.locked()
        with pytest.raises(ValueError):
            rsm_shm.Condition(c.name, lock=make(rsm_shm.Lock), create=False)
    finally:
        c2.close()


# -- Barrier -----------------------------------------------------------------------------


def test_barrier_indexes_and_action(make):
    ran = []
    b = make(rsm_shm.Barrier, parties=3, action=lambda: ran.append(1))
    out = []
    ts = [_start(lambda: out.append(b.wait(30))) for _ in range(3)]
    for t in ts:
        t.join(30)
    assert sorted(out) == [0, 1, 2] and ran == [1]
    assert b.n_waiting == 0 and not b.broken and b.parties == 3


def test_barrier_timeout_breaks_and_reset(make):
    b = make(rsm_shm.Barrier, parties=2)
    with pytest.raises(rsm_shm.BrokenBarrierError):
        b.wait(0.05)
    assert b.broken
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(1)
    b.reset()
    assert not b.broken
    out = []
    ts = [_start(lambda: out.append(b.wait(30))) for _ in range(2)]
    for t in ts:
        t.join(30)
    assert sorted(out) == [0, 1]


def test_barrier_abort_wakes_waiters(make):
    b = make(rsm_shm.Barrier, parties=3)
    errors = []

    def waiter():
        try:
            b.wait(30)
        except rsm_shm.BrokenBarrierError:
            errors.append(1)

    ts = [_start(waiter) for _ in range(2)]
    _until(lambda: b.n_waiting == 2)
    b.abort()
    for t in ts:
        t.join(30)
    assert errors == [1, 1]


# -- Gate, Countdown, Once ---------------------------------------------------------------


def test_gate(make):
    g = make(rsm_shm.Gate, auto_shut=2)
    assert g.wait(0.02) is False
    out = []
    ts = [_start(lambda: out.append(g.wait(30))) for _ in range(3)]
    _until(lambda: g.pending == 3)
    g.open()
    _until(lambda: len(out) == 2)
    _until(lambda: g.pending == 1)  # the third, woken by open(), found it closed and waits again
    assert not g.is_open() and g.entries == 2
    g.open()
    for t in ts:
        t.join(30)
    assert out == [True] * 3 and g.entries == 1


def test_gate_shut_by_hand(make):
    g = make(rsm_shm.Gate)
    g.open()
    assert g.is_open() and g.wait(0) is True
    g.shut()
    assert not g.is_open() and g.wait(0.02) is False
    out = []
    t = _start(lambda: out.append(g.wait(30)))
    _until(lambda: g.pending == 1)
    g.open()
    t.join(30)
    assert out == [True] and g.is_open() and not g.closed  # shut() is not close(): the handle stays usable


def test_countdown(make):
    ran = []
    cd = make(rsm_shm.Countdown, count=3, action=lambda: ran.append(1))
    out = []
    t = _start(lambda: out.append(cd.wait(30)))
    assert cd.count_down() is False
    assert cd.count_down(1) is False
    with pytest.raises(ValueError):
        cd.count_down(2)
    assert cd.count_down() is True
    t.join(30)
    assert out == [True] and ran == [1] and cd.done()
    cd.reset(1)
    assert not cd.done() and cd.wait(0.01) is False


def test_once_runs_once_and_retries_after_failure(make):
    o = make(rsm_shm.Once)
    calls = []

    def boom():
        calls.append("boom")
        raise KeyError("x")

    with pytest.raises(KeyError):
        o.call(boom)
    assert not o.done
    assert o.call(calls.append, "ok") is True
    assert o.call(calls.append, "again") is False
    assert calls == ["boom", "ok"] and o.done
    with pytest.raises(RuntimeError):
        o2 = make(rsm_shm.Once)
        o2.call(lambda: o2.call(lambda: None))


def test_once_concurrent_callers_wait_for_the_run(make):
    o = make(rsm_shm.Once)
    started = threading.Event()
    release = threading.Event()
    results = []

    def slow():
        started.set()
        assert release.wait(30)

    t1 = _start(lambda: results.append(o.call(slow)))
    assert started.wait(30)
    t2 = _start(lambda: results.append(o.call(slow)))
    _until(lambda: o.statistics().waiters == 1)
    assert not results
    release.set()
    t1.join(30)
    t2.join(30)
    assert sorted(results) == [False, True]


# -- RWLock ------------------------------------------------------------------------------


def test_rwlock_readers_share_writer_excludes(make):
    rw = make(rsm_shm.RWLock)
    assert rw.acquire_read() and rw.acquire_read()
    assert _run(lambda: rw.acquire_write(timeout=0.05)) is False
    assert _run(lambda: (rw.acquire_read(False), rw.release_read())[0]) is True
    rw.release_read()
    rw.release_read()
    with pytest.raises(RuntimeError):
        rw.release_read()
    with rw.write():
        assert _run(lambda: rw.acquire_read(timeout=0.05)) is False
        with pytest.raises(RuntimeError):
            _run(rw.release_write)
    rw.acquire_read()
    try:
        with pytest.raises(TimeoutError):
            _run(lambda: rw.write(timeout=0.05).__enter__())
    finally:
        rw.release_read()


def test_rwlock_writer_preference(make):
    rw = make(rsm_shm.RWLock)
    rw.acquire_read()
    order = []
    w = _start(lambda: (rw.acquire_write(), order.append("w"), rw.release_write()))
    _until(lambda: rw.statistics().writer_tid != 0)  # the writer claimed the lock, draining us
    r = _start(lambda: (rw.acquire_read(), order.append("r"), rw.release_read()))
    _until(lambda: rw.statistics().waiting_readers == 1)
    rw.release_read()
    w.join(30)
    r.join(30)
    assert order == ["w", "r"]


def _run(fn):
    out = []

    def go():
        try:
            out.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001
            out.append(("err", e))

    t = threading.Thread(target=go)
    t.start()
    t.join(30)
    kind, v = out[0]
    if kind == "err":
        raise v
    return v


@pytest.mark.parametrize(
    "cls,block",
    [
        (rsm_shm.Lock, lambda o: o.acquire(timeout=30)),  # Python slice loop
        (rsm_shm.Semaphore, lambda o: o.acquire(timeout=30)),  # C slice loop (fast_sync.c)
        (rsm_shm.Event, lambda o: o.wait(30)),  # C slice loop (fast_sync.c)
    ],
)
def test_close_while_another_thread_waits(shm_name, cls, block):
    """close() must never unmap under a blocked C call: the waiter gets ValueError instead."""
    obj = cls(shm_name(), create=True)
    if cls is rsm_shm.Lock:
        holder = cls(obj.name, create=False)
        holder.acquire()
    elif cls is rsm_shm.Semaphore:
        obj.acquire()
    waiter = cls(obj.name, create=False)
    errors = []

    def wait():
        try:
            block(waiter)
        except ValueError as e:
            errors.append(e)

    t = _start(wait)
    _until(lambda: obj.pending == 1)
    waiter.close()
    t.join(10)
    assert not t.is_alive() and len(errors) == 1 and "closed" in str(errors[0])
    assert waiter._seg._mmap is None  # the last thread out unmapped it
    with pytest.raises(ValueError, match="closed"):
        block(waiter)
    if cls is rsm_shm.Lock:
        holder.release()
        holder.close()
    obj.close()
    obj.unlink()
