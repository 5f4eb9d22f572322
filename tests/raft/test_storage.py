"""The storage contract (modelled on etcd's storage_test.go), run against every
implementation: MemoryStorage and rsm_shm.cluster's DiskStorage (real files)."""

from __future__ import annotations

import itertools
import warnings

import pytest

from rsm_shm.cluster.storage import DiskStorage, NotDurableWarning
from rsm_shm.raft.storage import (
    CompactedError,
    MemoryStorage,
    SnapOutOfDateError,
    Storage,
    StorageWriter,
    UnavailableError,
    limit_size,
)
from rsm_shm.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta, entry_size


@pytest.fixture(params=["memory", "disk", "disk-fsync"])
def new_storage(request, tmp_path):
    """A factory of empty storages of one implementation; disk ones are closed after."""
    opened = []
    counter = itertools.count()

    def make():
        if request.param == "memory":
            return MemoryStorage()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotDurableWarning)
            s = DiskStorage(tmp_path / f"d{next(counter)}", fsync=request.param == "disk-fsync", segment_bytes=4096)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(new_storage):
    def build(*terms_from_3):
        """Storage whose dummy entry is (index 3, term 3) followed by entries 4.. ."""
        s = new_storage()
        s.apply_snapshot(Snapshot(SnapshotMeta(3, 3, ConfState((1,)))))
        s.append([Entry(term=t, index=4 + k) for k, t in enumerate(terms_from_3)])
        return s

    return build


def test_is_a_storage(new_storage):
    s = new_storage()
    assert isinstance(s, Storage) and isinstance(s, StorageWriter)


def test_empty_storage(new_storage):
    s = new_storage()
    assert s.first_index() == 1 and s.last_index() == 0
    assert s.term(0) == 0
    assert s.entries(1, 1) == []
    hs, cs = s.initial_state()
    assert hs == HardState() and cs == ConfState()


def test_term(store):
    s = store(4, 5)
    with pytest.raises(CompactedError):
        s.term(2)
    assert s.term(3) == 3 and s.term(4) == 4 and s.term(5) == 5
    with pytest.raises(UnavailableError):
        s.term(6)


def test_entries_and_limits(store):
    s = store(4, 5, 6)
    with pytest.raises(CompactedError):
        s.entries(3, 5)
    with pytest.raises(UnavailableError):
        s.entries(4, 8)
    assert [e.index for e in s.entries(4, 7)] == [4, 5, 6]
    one = entry_size(Entry(term=4, index=4))
    assert [e.index for e in s.entries(4, 7, max_bytes=0)] == [4]  # at least one
    assert [e.index for e in s.entries(4, 7, max_bytes=2 * one)] == [4, 5]
    assert [e.index for e in s.entries(4, 7, max_bytes=2 * one + 1)] == [4, 5]
    assert [e.index for e in s.entries(4, 7, max_bytes=3 * one)] == [4, 5, 6]
    assert limit_size([], 0) == []


def test_first_last_and_compact(store):
    s = store(4, 5)
    assert (s.first_index(), s.last_index()) == (4, 5)
    s.compact(4)
    assert (s.first_index(), s.last_index()) == (5, 5)
    assert s.term(4) == 4
    s.compact(2)  # at or below the offset: no-op
    assert s.first_index() == 5
    with pytest.raises(ValueError):
        s.compact(6)


def test_create_snapshot(store):
    s = store(4, 5)
    cs = ConfState((1, 2, 3))
    snap = s.create_snapshot(4, cs, b"data")
    assert snap.meta == SnapshotMeta(4, 4, cs) and snap.data == b"data"
    assert s.snapshot() is snap
    assert s.initial_state()[1] == cs
    with pytest.raises(SnapOutOfDateError):
        s.create_snapshot(3, cs, b"")
    with pytest.raises(ValueError):
        s.create_snapshot(9, cs, b"")


def test_create_snapshot_requires_the_configuration(new_storage):
    # A node that never had a snapshot used to fall back to an empty configuration here:
    # followers then refused the snapshot (it did not list them) and the cluster stalled.
    s = new_storage()
    s.append([Entry(term=1, index=1), Entry(term=1, index=2)])
    with pytest.raises(TypeError, match=r"create_snapshot\(2\): conf_state must be the ConfState"):
        s.create_snapshot(2, None, b"data")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no voters"):
        s.create_snapshot(2, ConfState(), b"data")
    assert s.snapshot().meta.index == 0  # nothing was recorded
    snap = s.create_snapshot(2, ConfState((1, 2, 3)), b"data")
    assert snap.meta.conf_state.voters == (1, 2, 3)


def test_apply_snapshot(new_storage):
    s = new_storage()
    s.apply_snapshot(Snapshot(SnapshotMeta(4, 4, ConfState((1, 2)))))
    assert (s.first_index(), s.last_index(), s.term(4)) == (5, 4, 4)
    with pytest.raises(SnapOutOfDateError):
        s.apply_snapshot(Snapshot(SnapshotMeta(3, 3, ConfState((1,)))))


def _ents(*term_index):
    return [Entry(term=t, index=i) for t, i in term_index]


@pytest.mark.parametrize(
    "ents,want",
    [
        (_ents((3, 3), (4, 4), (5, 5)), [(3, 3), (4, 4), (5, 5)]),
        (_ents((3, 3), (4, 4), (6, 5)), [(3, 3), (4, 4), (6, 5)]),  # truncate 5
        (_ents((3, 3), (4, 4), (5, 5), (5, 6)), [(3, 3), (4, 4), (5, 5), (5, 6)]),
        (_ents((3, 2), (3, 3), (5, 4)), [(3, 3), (5, 4)]),  # skips compacted
        (_ents((5, 4)), [(3, 3), (5, 4)]),
        (_ents((5, 6)), [(3, 3), (4, 4), (5, 5), (5, 6)]),
    ],
)
def test_append(new_storage, ents, want):
    s = new_storage()
    s.apply_snapshot(Snapshot(SnapshotMeta(3, 3, ConfState((1,)))))
    s.append([Entry(term=4, index=4), Entry(term=5, index=5)])
    s.append(ents)
    got = [(s.term(i), i) for i in range(s.first_index() - 1, s.last_index() + 1)]
    assert [(t, i) for (t, i) in got] == [(t, i) for (t, i) in want]


def test_append_gap_is_an_error(store):
    s = store(4)
    with pytest.raises(ValueError, match="missing"):
        s.append([Entry(term=4, index=7)])


def test_hard_state(new_storage):
    s = new_storage()
    s.set_hard_state(HardState(3, 2, 0))
    assert s.initial_state()[0] == HardState(3, 2, 0)
