"""A corrupt ring is reported (SegmentError), never read as garbage (issue 9).

The tests damage a ring's shared memory the way a stray write would -- a record length,
the tail -- through a second handle's raw mapping, then read it through the public API.
Every read path bounds-checks positions and lengths against the capacity (csrc/ring_get.c,
record_in_bounds / tail_in_bounds; Ring._positions).
"""

from __future__ import annotations

import pytest

import rsm_shm
from rsm_shm._native import ffi
from rsm_shm.segment import SegmentError

MODES = {"mpmc": {}, "spsc": {"producers": 1, "consumers": 1}, "mpsc": {"consumers": 1}}
READS = {
    "get": lambda r: r.get(timeout=1),
    "get_forever": lambda r: r.get(),
    "get_nowait": lambda r: r.get_nowait(),
    "get_many": lambda r: r.get_many(8, timeout=1),
}


def _ring(shm_name, mode):
    r = rsm_shm.Ring(shm_name("ring"), create=True, capacity=4096, **MODES[mode])
    for i in range(3):
        r.put(bytes([65 + i]) * 100)
    return r


def _set_len(r, pos: int, value: int) -> None:
    p = r._ptr
    data = ffi.cast("char *", p) + p.data_offset
    ffi.cast("uint32_t *", data + (pos & (p.capacity - 1)) + 8)[0] = value


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("bad_len", [40, 150, 5000, 2**32 - 1], ids=lambda n: f"len{n}")
def test_a_corrupt_record_length_is_a_segment_error(shm_name, mode, read, bad_len):
    r = _ring(shm_name, mode)
    try:
        _set_len(r, 0, bad_len)  # the first record said 100 bytes
        with pytest.raises(SegmentError, match="corrupt"):
            READS[read](r)
    finally:
        r.close()
        r.unlink()


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_corrupt_tail_is_a_segment_error_everywhere(shm_name, mode, read):
    r = _ring(shm_name, mode)
    try:
        r._ptr.tail = r._ptr.tail + 100 * 4096 * 16  # far past head + capacity
        for stat in (r.statistics, r.empty, r.full, r.describe):
            with pytest.raises(SegmentError, match="corrupt"):
                stat()
        with pytest.raises(SegmentError, match="corrupt"):
            while True:  # the three good records may come first; then the damage shows
                READS[read](r)
    finally:
        r.close()
        r.unlink()


def test_a_healthy_busy_ring_never_looks_corrupt(shm_name):
    # The checks must not fire on a ring that is merely moving (statistics while puts and
    # gets run on other threads; multi-consumer gets that help each other).
    import threading

    r = rsm_shm.Ring(shm_name("ring"), create=True, capacity=4096)
    stop = threading.Event()
    errors = []

    def producer():
        i = 0
        while not stop.is_set():
            try:
                r.put(bytes(i % 200), timeout=0.05)
            except Exception as e:  # noqa: BLE001 -- queue.Full is fine, anything else is not
                if type(e).__name__ != "Full":
                    errors.append(e)
            i += 1

    def consumer():
        while not stop.is_set():
            try:
                r.get(timeout=0.05)
            except Exception as e:  # noqa: BLE001
                if type(e).__name__ != "Empty":
                    errors.append(e)

    threads = [threading.Thread(target=f) for f in (producer, producer, consumer, consumer)]
    for t in threads:
        t.start()
    try:
        for _ in range(3000):
            r.statistics()
            r.empty()
            r.full()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        r.close()
        r.unlink()
    assert not errors, errors[:3]


def test_capacity_beyond_the_layout_is_refused_with_the_real_range(shm_name):
    with pytest.raises(ValueError, match=r"between 64 and 2147483648, not 4294967296"):
        rsm_shm.Ring(shm_name(), capacity=2**32)
