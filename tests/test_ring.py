"""Ring and Queue semantics in one process (threads where blocking is involved).

Multi-process delivery, SIGKILL and shutdown-while-blocked across processes are in
test_ring_procs.py.
"""

from __future__ import annotations

import collections
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rsm_shm
from rsm_shm.ring import RingStatistics, ShutDown, record_size

MODES = {"mpmc": {}, "spsc": {"producers": 1, "consumers": 1}, "mpsc": {"consumers": 1}, "spmc": {"producers": 1}}


@pytest.fixture(params=list(MODES))
def mode(request):
    return MODES[request.param]


@pytest.fixture
def make_ring(shm_name):
    made = []

    def make(**kw):
        r = rsm_shm.Ring(shm_name("ring"), **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.unlink()
        r.close()


def test_bytes_like_and_empty_messages(make_ring, mode):
    r = make_ring(capacity=1024, **mode)
    r.put(b"abc")
    r.put(bytearray(b"defg"))
    r.put(memoryview(b"xhijx")[1:4])
    r.put(b"")
    assert [r.get(), r.get(), r.get(), r.get()] == [b"abc", b"defg", b"hij", b""]
    assert r.empty() and r.qsize() == 0


def test_largest_message_fits_empty_ring_and_larger_fails_at_once(make_ring, mode):
    r = make_ring(capacity=256, **mode)
    assert r.max_message == 256 - 16
    big = bytes(range(240))
    r.put(big, timeout=0)
    assert r.full()
    # Too large can never fit: ValueError at once, even with no timeout and a full ring.
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="never fit"):
        r.put(b"x" * 241)
    with pytest.raises(ValueError, match="never fit"):
        r.put_many([b"x", b"y" * 241])
    assert time.monotonic() - t0 < 1
    assert r.get() == big


@pytest.mark.parametrize("capacity", [64, 256])
def test_wraparound_at_every_offset(make_ring, mode, capacity):
    """Shift the ring's start by every 16-byte step, then put messages of every length
    across the end of the data area; each must come back intact."""
    r = make_ring(capacity=capacity, **mode)
    for shift in range(0, capacity, 16):
        for length in range(0, r.max_message + 1, 7):
            if shift:
                r.put(b"s" * (shift - 16 if shift >= 16 else 0))  # a record of exactly `shift` bytes
                assert r.get() == b"s" * (shift - 16)
            payload = os.urandom(length)
            r.put(payload, timeout=0)
            assert r.get(timeout=0) == payload
    assert r.statistics().used_bytes == 0


def test_full_and_empty_edges(make_ring, mode):
    r = make_ring(capacity=256, **mode)
    msg = b"m" * 16  # 32-byte records: exactly 8 fit
    for i in range(8):
        assert not r.full()
        r.put_nowait(msg)
    assert r.full() and r.qsize() == 8
    with pytest.raises(queue.Full):
        r.put_nowait(b"")
    assert r.get_nowait() == msg
    r.put_nowait(b"")  # 16 bytes fit in the 32 freed
    r.put_nowait(b"")
    with pytest.raises(queue.Full):
        r.put_nowait(b"")
    got = r.get_many(100)
    assert got == [msg] * 7 + [b"", b""]
    assert r.empty()
    with pytest.raises(queue.Empty):
        r.get_nowait()
    with pytest.raises(queue.Empty):
        r.get_many(3, timeout=0)


def test_timeouts(make_ring, mode):
    r = make_ring(capacity=64, **mode)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        r.get(timeout=0.15)
    assert 0.14 <= time.monotonic() - t0 < 2
    r.put(b"x" * 48)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        r.put(b"y", timeout=0.15)
    assert 0.14 <= time.monotonic() - t0 < 2
    assert r.get() == b"x" * 48
    with pytest.raises(ValueError):
        r.get(timeout=-1)  # checked when the call would block
    assert r.statistics().blocked_producers == 0 and r.statistics().blocked_consumers == 0


def test_blocked_get_wakes_on_put(make_ring):
    r = make_ring(capacity=1024)
    out = []
    t = threading.Thread(target=lambda: out.append(r.get(timeout=10)))
    t.start()
    _wait_for(lambda: r.statistics().blocked_consumers == 1)
    r.put(b"wake")
    t.join(10)
    assert out == [b"wake"]


def test_blocked_put_wakes_when_room_appears(make_ring):
    r = make_ring(capacity=256)
    r.put(b"a" * 200)
    done = threading.Event()
    t = threading.Thread(target=lambda: (r.put(b"b" * 100, timeout=10), done.set()))
    t.start()
    _wait_for(lambda: r.statistics().blocked_producers == 1)
    assert not done.is_set()
    assert r.get() == b"a" * 200
    t.join(10)
    assert done.is_set() and r.get() == b"b" * 100


def test_blocked_put_resumes_within_a_slice_even_below_the_wake_threshold(make_ring):
    # Producers are woken once capacity/8 is free; one that fits earlier re-checks at its
    # next slice (~50 ms) instead.
    r = make_ring(capacity=1 << 16)
    while True:
        try:
            r.put_nowait(b"f" * 1000)
        except queue.Full:
            break
    done = []
    t = threading.Thread(target=lambda: (r.put(b"small", timeout=5), done.append(time.monotonic())))
    t.start()
    _wait_for(lambda: r.statistics().blocked_producers == 1)
    t0 = time.monotonic()
    r.get()  # frees ~1 KiB: below the wake threshold (8 KiB here)
    t.join(10)
    assert done and done[0] - t0 < 0.5


def test_shutdown_wakes_blocked_consumers_and_producers(make_ring):
    r = make_ring(capacity=64)
    errors = []

    def consumer():
        try:
            r.get(timeout=10)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            errors.append(e)

    cs = [threading.Thread(target=consumer) for _ in range(3)]
    for t in cs:
        t.start()
    _wait_for(lambda: r.statistics().blocked_consumers == 3)
    r.shutdown()
    for t in cs:
        t.join(10)
    assert len(errors) == 3 and all(isinstance(e, ShutDown) for e in errors)

    r2 = make_ring(capacity=64)
    r2.put(b"x" * 48)
    perrors = []

    def producer():
        try:
            r2.put(b"y", timeout=10)
        except BaseException as e:  # noqa: BLE001
            perrors.append(e)

    ps = [threading.Thread(target=producer) for _ in range(2)]
    for t in ps:
        t.start()
    _wait_for(lambda: r2.statistics().blocked_producers == 2)
    r2.shutdown()
    for t in ps:
        t.join(10)
    assert len(perrors) == 2 and all(isinstance(e, ShutDown) for e in perrors)
    # Consumers drain what was put before the shutdown, then get ShutDown.
    assert r2.get() == b"x" * 48
    with pytest.raises(ShutDown):
        r2.get()
    with pytest.raises(ShutDown):
        r2.get_many(4)
    assert r2.is_shutdown and not r2.closed  # shut down for everyone, still mapped here

    r3 = make_ring(capacity=256)
    sent = []

    def batch_producer():
        try:
            r3.put_many([b"z" * 16] * 20, timeout=10)  # 8 fit, then it blocks
        except ShutDown as e:
            sent.append(e.sent)

    t = threading.Thread(target=batch_producer)
    t.start()
    _wait_for(lambda: r3.statistics().blocked_producers == 1)
    r3.shutdown()
    t.join(10)
    assert sent == [8] and len(r3.get_many(100)) == 8


def test_put_many_get_many_order_and_partial_timeout(make_ring, mode):
    r = make_ring(capacity=512, **mode)
    items = [bytes([i]) * i for i in range(10)]
    r.put_many(items)
    assert r.get_many(4) == items[:4]
    assert r.get_many(100) == items[4:]
    with pytest.raises(queue.Full) as ei:
        r.put_many([b"z" * 16] * 20, timeout=0.05)  # 32-byte records: 16 fit
    assert ei.value.sent == 16
    assert r.get_many(100) == [b"z" * 16] * 16


def test_get_many_with_large_messages_grows_buffer(make_ring):
    r = make_ring(capacity=1 << 18)
    big = os.urandom(100_000)
    r.put_many([b"a", big, b"b"])
    got = []
    while len(got) < 3:
        got += r.get_many(10)
    assert got == [b"a", big, b"b"]
    r.put(big)
    assert r.get() == big


def test_one_message_calls_take_keywords_and_messages_larger_than_the_c_buffer(make_ring, mode):
    # put/get/put_nowait/get_nowait are C entry points (csrc/fast_ring.c): their argument
    # forms are those of the documented signatures, and a message larger than the C
    # receive buffer (64 KiB) goes through the slow path intact, on a fresh handle too.
    r = make_ring(capacity=1 << 18, **mode)
    big = os.urandom(70_000)
    r.put(data=b"kw")
    r.put(b"kw2", timeout=1)
    r.put(data=bytearray(big), timeout=None)
    r.put_nowait(big)
    r.put(big, 0)
    assert r.get(timeout=1) == b"kw"
    assert r.get(1.5) == b"kw2"
    assert r.get() == big
    assert r.get_nowait() == big
    assert r.get(timeout=0) == big
    with pytest.raises(queue.Empty):
        r.get_nowait()
    with pytest.raises(TypeError):
        r.put()
    with pytest.raises(TypeError):
        r.put(b"x", 1, 2)
    with pytest.raises(TypeError):
        r.put(b"x", block=True)
    with pytest.raises(TypeError):
        r.get(block=True)
    with pytest.raises(TypeError):
        r.put_nowait(b"x", 0)
    with pytest.raises(TypeError, match="timeout must be a number"):
        r.put(b"x", timeout="1")
    assert r.empty()  # nothing was put by the calls that raised
    for _ in range(3):  # 3 records of 70016 bytes fill 256 KiB
        r.put(big)
    with pytest.raises(queue.Full):
        r.put_nowait(big)  # too big to copy with the GIL held: the slow path tries, then Full


def test_a_get_waiting_in_c_receives_messages_of_every_size(make_ring, mode):
    # A get that finds the ring empty waits in C (csrc/fast_ring.c) into a 4 KiB stack
    # buffer: a larger message is taken with the GIL held into the handle's 64 KiB buffer,
    # a larger one still by the Python slow path.  Each message arrives while it waits.
    r = make_ring(capacity=1 << 18, **mode)
    sizes = [10, 4096, 4097, 65_536, 70_000, 0]
    out = []
    t = threading.Thread(target=lambda: out.extend(r.get(timeout=10) for _ in sizes))
    t.start()
    sent = []
    for i, n in enumerate(sizes):
        _wait_for(lambda: r.statistics().blocked_consumers == 1)
        sent.append(os.urandom(n))
        r.put(sent[-1])
        _wait_for(lambda: len(out) > i or not t.is_alive())
    t.join(10)
    assert [len(m) for m in out] == sizes and out == sent
    assert r.statistics().blocked_consumers == 0


def test_single_producer_role_is_enforced(make_ring):
    r = make_ring(capacity=1024, producers=1, consumers=1)
    r.put(b"mine")
    errors = []

    def other():
        try:
            r.put(b"theirs", timeout=1)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert errors and "single-producer" in str(errors[0])
    # A role whose thread has exited is taken over.
    r2 = rsm_shm.Ring(r.name, create=False)
    t = threading.Thread(target=lambda: r2.get(timeout=5))
    t.start()
    t.join(10)
    r.put(b"after")
    assert r.get_many(5, timeout=5) == [b"after"]  # consumer role of the dead thread taken over
    r2.close()


def test_statistics_and_repr(make_ring, mode):
    r = make_ring(capacity=1024, **mode)
    r.put(b"12345")
    s = r.statistics()
    assert isinstance(s, RingStatistics)
    assert (s.capacity, s.messages, s.used_bytes, s.is_shutdown) == (1024, 1, record_size(5), False)
    assert s.tail - s.head == s.used_bytes
    with pytest.raises(AttributeError):
        s.messages = 3  # frozen
    assert "1 messages" in repr(r) and r.name in repr(r)
    r.get()
    r.close()
    assert "closed" in repr(r)
    with pytest.raises(ValueError):
        r.put(b"x")


def test_pickles_as_name_and_attaches_from_another_program(make_ring):
    r = make_ring(capacity=4096)
    r2 = pickle.loads(pickle.dumps(r))
    r2.put(b"via pickle")
    assert r.get() == b"via pickle"
    r2.close()
    code = textwrap.dedent(f"""
        import rsm_shm
        r = rsm_shm.Ring({r.name!r}, create=False)
        r.put(r.get(timeout=10) + b" back")
    """)
    p = subprocess.Popen([sys.executable, "-c", code])
    r.put(b"there")
    assert p.wait(60) == 0
    assert r.get(timeout=10) == b"there back"


def test_kind_and_parameter_validation(make_ring, shm_name):
    with pytest.raises(ValueError):
        rsm_shm.Ring(capacity=1000)
    with pytest.raises(ValueError):
        rsm_shm.Ring(capacity=32)
    with pytest.raises(ValueError):
        rsm_shm.Ring(producers=0)
    q = rsm_shm.Queue(shm_name("q"), capacity=1024)
    try:
        with pytest.raises(rsm_shm.SegmentError, match="QUEUE"):
            rsm_shm.Ring(q.name, create=False)
    finally:
        q.unlink()
        q.close()


def test_ctrl_c_interrupts_a_blocked_get_and_leaves_the_ring_clean(make_ring):
    r = make_ring(capacity=1024)
    code = textwrap.dedent(f"""
        import sys, rsm_shm
        r = rsm_shm.Ring({r.name!r}, create=False)
        print("ready", flush=True)
        try:
            r.get()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    _wait_for(lambda: r.statistics().blocked_consumers == 1)
    p.send_signal(signal.SIGINT)
    assert p.stdout.readline().strip() == "interrupted"
    assert p.wait(30) == 0
    assert r.statistics().blocked_consumers == 0
    r.put(b"still works")
    assert r.get() == b"still works"


# -- Queue ---------------------------------------------------------------------------------


class _Json:
    """A pluggable serializer (module level so the Queue pickles with it)."""

    @staticmethod
    def dumps(obj):
        import json

        return json.dumps(obj).encode()

    @staticmethod
    def loads(data):
        import json

        return json.loads(data)


def test_queue_objects_and_errors_where_put(shm_name):
    q = rsm_shm.Queue(shm_name("q"), capacity=4096)
    try:
        q.put({"a": [1, 2]})
        q.put_nowait(None)
        assert q.get() == {"a": [1, 2]} and q.get_nowait() is None
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            q.put(lambda: 1)  # fails in the caller; nothing enqueued
        assert q.empty() and q.qsize() == 0
        with pytest.raises(queue.Empty):
            q.get(block=False)
        with pytest.raises(queue.Empty):
            q.get(timeout=0.05)
        q.put_many(range(5))
        assert q.get_many(10) == list(range(5))
        q2 = pickle.loads(pickle.dumps(q))
        q2.put("x")
        assert q.get() == "x"
        q2.close()
        q.shutdown()
        assert q.is_shutdown and not q.closed
        with pytest.raises(ShutDown):
            q.put(1)
        with pytest.raises(ShutDown):
            q.get()
        with pytest.raises(ValueError, match="maxsize"):
            rsm_shm.Queue(maxsize=3)
    finally:
        q.unlink()
        q.close()


def test_shutdown_is_queue_shutdown_and_not_a_handle_error():
    assert rsm_shm.ShutDown is ShutDown and issubclass(ShutDown, rsm_shm.RsmError)
    # A closed handle raises ValueError; the end of stream must not be mistaken for it.
    assert not issubclass(ShutDown, ValueError)
    if hasattr(queue, "ShutDown"):  # Python 3.13+
        assert issubclass(ShutDown, queue.ShutDown)


def test_ring_close_unmaps_this_handle_only(make_ring):
    r = make_ring(capacity=1024)
    other = rsm_shm.Ring(r.name, create=False)
    try:
        r.put(b"a")
        r.close()
        r.close()  # idempotent
        assert r.closed  # a property that never raises
        for call in (lambda: r.put(b"b"), r.get, lambda: r.is_shutdown, r.shutdown):
            with pytest.raises(ValueError, match="closed"):
                call()
        assert not other.closed and not other.is_shutdown  # the stream goes on elsewhere
        other.put(b"b")
        assert other.get_many(5) == [b"a", b"b"]
    finally:
        other.close()


def test_queue_close_is_multiprocessing_queue_close(shm_name):
    q = rsm_shm.Queue(shm_name("q"), capacity=4096)
    q2 = pickle.loads(pickle.dumps(q))
    try:
        q.put(1)
        assert not q.closed
        q.close()
        q.close()  # idempotent
        assert q.closed and not q2.closed
        # multiprocessing.Queue raises ValueError("Queue ... is closed") from put and get
        with pytest.raises(ValueError, match="Queue .* is closed"):
            q.put(2)
        with pytest.raises(ValueError, match="Queue .* is closed"):
            q.get()
        q.join_thread()  # allowed after close(), as in multiprocessing
        assert not q2.is_shutdown  # close() ends nothing for the other handles
        q2.put(3)
        assert q2.get() == 1 and q2.get() == 3
    finally:
        q2.unlink()
        q2.close()


def test_queue_pluggable_serializer(shm_name):
    q = rsm_shm.Queue(shm_name("q"), capacity=4096, serializer=_Json)
    try:
        q.put({"k": [1, "two"]})
        assert q.ring.get() == b'{"k": [1, "two"]}'
        q.put([3])
        q2 = pickle.loads(pickle.dumps(q))
        assert q2.get() == [3]
        q2.close()
        with pytest.raises(TypeError):
            rsm_shm.Queue(serializer=object())
    finally:
        q.unlink()
        q.close()


# -- a model check -------------------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 200)),
        st.tuples(st.just("put_many"), st.lists(st.integers(0, 120), max_size=5)),
        st.tuples(st.just("get"), st.just(0)),
        st.tuples(st.just("get_many"), st.integers(1, 6)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops, spsc=st.booleans())
def test_matches_a_byte_counting_model(shm_name, ops, spsc):
    """Full exactly when the record would not fit, Empty exactly when nothing is there,
    order and content as a deque."""
    kw = {"producers": 1, "consumers": 1} if spsc else {}
    r = rsm_shm.Ring(shm_name("model"), capacity=512, **kw)
    model: collections.deque = collections.deque()
    counter = 0
    try:
        for op, arg in ops:
            used = sum(record_size(len(m)) for m in model)
            if op == "put":
                counter += 1
                msg = bytes([counter % 256]) * arg
                if used + record_size(arg) <= 512:
                    r.put_nowait(msg)
                    model.append(msg)
                else:
                    with pytest.raises(queue.Full):
                        r.put_nowait(msg)
            elif op == "put_many":
                msgs = []
                for n in arg:
                    counter += 1
                    msgs.append(bytes([counter % 256]) * n)
                fit = 0
                for m in msgs:
                    if used + record_size(len(m)) > 512:
                        break
                    used += record_size(len(m))
                    fit += 1
                if fit == len(msgs):
                    r.put_many(msgs, timeout=0)
                else:
                    with pytest.raises(queue.Full) as ei:
                        r.put_many(msgs, timeout=0)
                    assert ei.value.sent == fit
                model.extend(msgs[:fit])
            elif op == "get":
                if model:
                    assert r.get_nowait() == model.popleft()
                else:
                    with pytest.raises(queue.Empty):
                        r.get_nowait()
            else:
                if model:
                    got = r.get_many(arg, timeout=0)
                    want = [model.popleft() for _ in range(min(arg, len(model)))]
                    assert got == want
                else:
                    with pytest.raises(queue.Empty):
                        r.get_many(arg, timeout=0)
            assert r.qsize() == len(model)
    finally:
        r.unlink()
        r.close()


def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)
