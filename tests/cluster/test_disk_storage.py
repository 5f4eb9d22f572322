"""DiskStorage on real files: restarts, torn tails, corruption, compaction, metadata.

The storage contract itself runs against DiskStorage in tests/raft/test_storage.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings

import pytest

from rsm_shm.cluster.storage import DATA_FORMAT, DataDirError, DiskStorage, NotDurableWarning
from rsm_shm.cluster.wal import CorruptLogError
from rsm_shm.raft.storage import CompactedError, MemoryStorage
from rsm_shm.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

CS = ConfState((1, 2, 3))


def open_disk(path, **kw):
    kw.setdefault("fsync", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotDurableWarning)
        return DiskStorage(path, **kw)


def ents(first, last, term=1, size=20):
    return [
        Entry(term=term, index=i, type=EntryType.NORMAL, data=bytes([i % 251]) * size) for i in range(first, last + 1)
    ]


def observed(s):
    """Everything a restarted peer reads from its storage."""
    first, last = s.first_index(), s.last_index()
    snap = s.snapshot()
    return {
        "hard_state": s.initial_state()[0],
        "conf_state": s.initial_state()[1],
        "first": first,
        "last": last,
        "terms": [s.term(i) for i in range(first - 1, last + 1)],
        "entries": s.entries(first, last + 1),
        "snapshot": (snap.meta, snap.data),
    }


def wal_files(path):
    d = os.path.join(path, "wal")
    return [os.path.join(d, n) for n in sorted(os.listdir(d))]


# ------------------------------------------------------------------ restart
def test_restart_keeps_hard_state_entries_and_snapshot(tmp_path):
    d = tmp_path / "data"
    with DiskStorage(d, cluster="kv", node_id=2) as s:
        s.save(HardState(2, 2, 0), ents(1, 10, term=2), sync=True)
        s.create_snapshot(6, CS, b"state at 6")
        s.save(HardState(3, 1, 8), ents(9, 12, term=3), sync=True)  # replaces 9, 10
        before = observed(s)
    with DiskStorage(d, cluster="kv", node_id=2) as s:
        assert observed(s) == before
        assert s.hard_state == HardState(3, 1, 8)
        assert [s.term(i) for i in (8, 9, 12)] == [2, 3, 3]
        assert s.snapshot().data == b"state at 6" and s.snapshot().meta.conf_state == CS
        assert s.recovery.truncated is None and s.recovery.entries == 12


def test_received_snapshot_replaces_the_log_across_restart(tmp_path):
    d = tmp_path / "data"
    with open_disk(d) as s:
        s.save(HardState(1, 1, 3), ents(1, 5), sync=True)
        snap = Snapshot(SnapshotMeta(20, 4, CS), b"leader state")
        s.save(HardState(4, 0, 20), ents(21, 22, term=4), snap, sync=False)
        assert (s.first_index(), s.last_index()) == (21, 22)
        before = observed(s)
    with open_disk(d) as s:
        assert observed(s) == before
        assert len(os.listdir(d / "snap")) == 1  # the snapshot file, nothing else


def test_model_based_random_operations_and_restarts(tmp_path):
    """Random appends (with conflicting suffixes), hard states, snapshots, compactions
    and restarts: DiskStorage always reads exactly like MemoryStorage, the model.  Tiny
    segments make the log roll and compaction delete segments many times."""
    rng = random.Random(7)
    d = tmp_path / "data"
    disk = open_disk(d, segment_bytes=4096, cache_entries=16, cache_bytes=1024)
    mem = MemoryStorage()
    deleted_segments = 0
    try:
        for step in range(600):
            op = rng.random()
            last = mem.last_index()
            if op < 0.5:
                # a conflicting suffix may be replaced, never below the snapshot (committed)
                start = rng.randint(max(mem.first_index(), last - 5, mem.snapshot().meta.index + 1), last + 1)
                term = mem.hard_state.term + rng.randint(0, 1)
                batch = ents(start, start + rng.randint(0, 12), term=max(term, 1), size=rng.randint(0, 90))
                hs = HardState(max(term, 1), rng.randint(0, 3), min(mem.hard_state.commit + 1, start - 1))
                mem.append(batch)
                mem.set_hard_state(hs)
                disk.save(hs, batch, sync=rng.random() < 0.5)
            elif op < 0.6 and last > mem.snapshot().meta.index:
                at = rng.randint(mem.snapshot().meta.index + 1, last)
                data = rng.randbytes(rng.randint(0, 200))
                mem.create_snapshot(at, CS, data)
                disk.create_snapshot(at, CS, data)
            elif op < 0.75:
                at = rng.randint(mem.first_index() - 1, mem.snapshot().meta.index or mem.first_index() - 1)
                before = len(os.listdir(d / "wal"))
                mem.compact(at)
                disk.compact(at)
                deleted_segments += max(0, before - len(os.listdir(d / "wal")))
            elif op < 0.78:
                snap = Snapshot(SnapshotMeta(last + rng.randint(1, 30), mem.hard_state.term + 1, CS), rng.randbytes(50))
                mem.apply_snapshot(snap)
                disk.apply_snapshot(snap)
            else:
                disk.close()
                disk = open_disk(d, segment_bytes=4096, cache_entries=16, cache_bytes=1024)
            assert observed(disk) == observed(mem), f"step {step}"
        assert deleted_segments > 5, "compaction never deleted a segment: the test lost its point"
        assert disk.stats.disk_reads > 0, "every read came from the cache: the test lost its point"
    finally:
        disk.close()


# ------------------------------------------------------------------ torn tails
def _build_with_last_save(d):
    """A log, its state before the last save, and the last segment's size before it."""
    with open_disk(d) as s:
        s.save(HardState(1, 1, 0), ents(1, 5), sync=True)
        s.save(HardState(1, 1, 5), ents(6, 8), sync=True)
        before = observed(s)
        path = wal_files(d)[-1]
        size_before = os.path.getsize(path)
        s.save(HardState(2, 1, 8), ents(9, 11, term=2), sync=True)
        after = observed(s)
    return path, size_before, before, after


def test_torn_tail_at_every_byte_offset_is_cut(tmp_path):
    d = tmp_path / "data"
    path, size_before, before, after = _build_with_last_save(d)
    with open(path, "rb") as f:
        full = f.read()
    assert len(full) > size_before + 100
    # the last save wrote an entries record, then a hard-state record (16 + 24 bytes)
    hs_at = len(full) - 16 - 24
    mid = dict(after, hard_state=before["hard_state"])
    for cut in range(size_before, len(full) + 1):
        for tail in ("cut", "zeros", "garbage"):
            if tail == "cut":
                damaged = full[:cut]
            elif tail == "zeros":  # the file grew but the data never reached the disk
                damaged = full[:cut] + bytes(len(full) - cut)
            else:  # stale bytes instead of the data
                damaged = full[:cut] + random.Random(cut).randbytes(len(full) - cut)
            intact = damaged == full  # zeros over bytes that were zero
            with open(path, "wb") as f:
                f.write(damaged)
            with open_disk(d) as s:
                want = after if intact else mid if cut >= hs_at else before
                assert observed(s) == want, (tail, cut)
                good_end = hs_at if cut >= hs_at else size_before
                if len(damaged) > good_end and not intact:
                    t = s.recovery.truncated
                    assert t is not None and t.path == path and t.offset == good_end, (tail, cut)
                    assert t.dropped == len(damaged) - good_end
                else:
                    assert s.recovery.truncated is None
                if not intact:
                    # the log goes on after the cut: append and restart again
                    s.save(HardState(2, 1, 8), ents(9, 9, term=2), sync=True)
            if not intact:
                with open_disk(d) as s:
                    assert s.last_index() == 9 and s.term(9) == 2


def test_flipped_bit_before_the_tail_is_refused_naming_file_and_offset(tmp_path):
    d = tmp_path / "data"
    path, size_before, _before, _after = _build_with_last_save(d)
    with open(path, "rb") as f:
        full = f.read()
    # every byte before the last record (the last save is one entries record and one
    # hard-state record: flipping the entries record leaves an intact record after it)
    last_record = len(full) - 16 - 24
    for pos in range(0, last_record):
        damaged = bytearray(full)
        damaged[pos] ^= 1 << (pos % 8)
        with open(path, "wb") as f:
            f.write(damaged)
        with pytest.raises(CorruptLogError) as ei:
            open_disk(d).close()
        e = ei.value
        assert e.path == path and e.offset <= pos, (pos, e)
        assert path in str(e) and f"offset {e.offset}" in str(e)
    with open(path, "wb") as f:
        f.write(full)
    with open_disk(d) as s:
        assert s.last_index() == 11  # the undamaged log still opens


def test_damage_in_the_very_last_record_is_cut_like_a_torn_write(tmp_path):
    """The documented ambiguity: damage inside the last record cannot be told from a
    torn write, so that record (never more) is cut."""
    d = tmp_path / "data"
    path, _size_before, _before, after = _build_with_last_save(d)
    with open(path, "rb") as f:
        full = bytearray(f.read())
    full[-3] ^= 0x10  # inside the last (hard state) record
    with open(path, "wb") as f:
        f.write(full)
    with open_disk(d) as s:
        assert s.last_index() == 11 and s.hard_state == HardState(1, 1, 5)
        assert s.recovery.truncated.offset == len(full) - 16 - 24


def test_damage_in_an_older_segment_is_refused(tmp_path):
    d = tmp_path / "data"
    with open_disk(d, segment_bytes=4096) as s:
        for i in range(1, 200, 10):
            s.save(HardState(1, 1, i), ents(i, i + 9, size=50), sync=True)
    files = wal_files(d)
    assert len(files) >= 3
    with open(files[0], "r+b") as f:
        f.seek(os.path.getsize(files[0]) - 5)  # the end of an older segment
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 4]))
    with pytest.raises(CorruptLogError, match=os.path.basename(files[0])):
        open_disk(d, segment_bytes=4096)


def test_a_missing_segment_is_refused(tmp_path):
    d = tmp_path / "data"
    with open_disk(d, segment_bytes=4096) as s:
        for i in range(1, 200, 10):
            s.save(HardState(1, 1, i), ents(i, i + 9, size=50), sync=True)
    files = wal_files(d)
    os.unlink(files[1])
    with pytest.raises(CorruptLogError, match="missing"):
        open_disk(d, segment_bytes=4096)
    os.unlink(files[0])  # now a prefix is gone, but nothing was compacted
    with pytest.raises(CorruptLogError, match="missing"):
        open_disk(d, segment_bytes=4096)


# ------------------------------------------------------------------ compaction
def test_compaction_deletes_whole_segments_and_survives_restart(tmp_path):
    d = tmp_path / "data"
    with open_disk(d, segment_bytes=4096) as s:
        for i in range(1, 400, 10):
            s.save(HardState(1, 1, i + 9), ents(i, i + 9, size=50), sync=True)
        n_before = len(wal_files(d))
        s.create_snapshot(350, CS, b"snap")
        s.compact(350)
        n_after = len(wal_files(d))
        assert n_after < n_before / 2, (n_before, n_after)
        with pytest.raises(CompactedError):
            s.entries(350, 352)
        before = observed(s)
    with open_disk(d, segment_bytes=4096) as s:
        assert observed(s) == before
        assert s.first_index() == 351 and s.term(350) == 1


def test_snapshot_data_is_read_back_from_its_file_not_kept_in_memory(tmp_path):
    import gc
    import weakref

    with open_disk(tmp_path / "data") as s:
        s.save(HardState(1, 1, 10), ents(1, 10), sync=True)
        data = b"state" * 1000
        made = s.create_snapshot(8, CS, data)
        ref = weakref.ref(made)
        held = s.snapshot()
        assert held is made  # shared while a caller holds it
        del made, held
        gc.collect()
        assert ref() is None  # the storage itself does not keep the data
        again = s.snapshot()  # read back from the file
        assert again.meta == SnapshotMeta(8, 1, CS) and again.data == data
        assert s.snapshot_meta == again.meta
        # the sizes the log's index knows: 21-byte entry header + 20 bytes of data
        assert s.entries_size(1, 11) == 10 * 41
        assert s.entries_size(9, 11) == 2 * 41
        assert s.entries_size(0, 100) == 10 * 41  # clamped


# ------------------------------------------------------------------ group commit
def test_one_fsync_per_save(tmp_path):
    with DiskStorage(tmp_path / "data", segment_bytes=1 << 20) as s:
        n = s.stats.fsyncs
        s.save(HardState(1, 1, 0), ents(1, 100), sync=True)
        assert s.stats.fsyncs == n + 1
        s.save(HardState(1, 1, 50), (), sync=False)  # a commit index alone: no sync
        assert s.stats.fsyncs == n + 1
        s.save(HardState(1, 1, 60), ents(101, 101), sync=True)
        assert s.stats.fsyncs == n + 2


# ------------------------------------------------------------------ the directory
def test_another_clusters_or_peers_directory_is_refused(tmp_path):
    d = tmp_path / "data"
    DiskStorage(d, cluster="alpha", node_id=1).close()
    with pytest.raises(DataDirError, match="cluster 'alpha', not 'beta'"):
        DiskStorage(d, cluster="beta", node_id=1)
    with pytest.raises(DataDirError, match="peer 1, not 2"):
        DiskStorage(d, cluster="alpha", node_id=2)
    DiskStorage(d, cluster="alpha", node_id=1).close()


def test_newer_format_is_refused(tmp_path):
    d = tmp_path / "data"
    DiskStorage(d).close()
    (d / "META").write_text('{"format": %d, "cluster": null, "node_id": null}' % (DATA_FORMAT + 1))
    with pytest.raises(DataDirError, match="newer rsm_shm"):
        DiskStorage(d)
    (d / "META").write_text("not json")
    with pytest.raises(DataDirError, match="not readable"):
        DiskStorage(d)


def test_an_older_format_is_raised_on_open(tmp_path):
    """A format-1 directory (written before log entries held runs) opens, and its META
    says DATA_FORMAT afterwards, so an older rsm_shm refuses it rather than skipping the
    entries it cannot read."""
    d = tmp_path / "data"
    DiskStorage(d, cluster="c", node_id=1).close()
    (d / "META").write_text('{"format": 1, "cluster": "c", "node_id": 1}')
    DiskStorage(d, cluster="c", node_id=1).close()
    assert json.loads((d / "META").read_text()) == {"format": DATA_FORMAT, "cluster": "c", "node_id": 1}
    assert DATA_FORMAT >= 2


def test_a_directory_open_in_another_process_is_refused(tmp_path):
    d = tmp_path / "data"
    with DiskStorage(d, cluster="c"):
        code = (
            "import sys; from rsm_shm.cluster.storage import DiskStorage, DataDirError\n"
            f"try: DiskStorage({str(d)!r})\n"
            "except DataDirError as e: print(e); sys.exit(3)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 3, out.stderr
        assert f"locked by pid {os.getpid()}" in out.stdout
    DiskStorage(d, cluster="c").close()  # released on close


def test_fsync_false_warns_and_closed_storage_raises(tmp_path):
    with pytest.warns(NotDurableWarning, match="not durable|OS crash"):
        s = DiskStorage(tmp_path / "data", fsync=False)
    s.close()
    assert s.closed
    s.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        s.entries(1, 1)
    with pytest.raises(ValueError, match="closed"):
        s.save(HardState(1, 0, 0))


def test_entries_read_back_from_disk_beyond_the_cache(tmp_path):
    with open_disk(tmp_path / "data", cache_entries=8, cache_bytes=1 << 20, segment_bytes=8192) as s:
        written = []
        for i in range(1, 500, 7):
            batch = ents(i, i + 6, size=i % 40)
            s.save(None, batch, sync=False)
            written += batch
        assert s.stats.cached_entries <= 8
        assert s.last_index() == len(written)
        assert s.entries(1, len(written) + 1) == written
        got = s.entries(3, 400, max_bytes=300)
        assert got == written[2 : 2 + len(got)] and 1 <= len(got) < 20


# ------------------------------------------------------------------ real kills
_WRITER = r"""
import sys, warnings
warnings.simplefilter("ignore")
from rsm_shm.cluster.storage import DiskStorage
from rsm_shm.raft.types import ConfState, Entry, HardState
s = DiskStorage(sys.argv[1], cluster="kill", fsync=sys.argv[2] == "1", segment_bytes=4096)
i = s.last_index()
while True:
    batch = [Entry(term=1, index=j, data=b"%d" % j * 3) for j in range(i + 1, i + 8)]
    s.save(HardState(1, 1, i), batch, sync=True)
    i += 7
    if i % 98 == 0:
        s.create_snapshot(i, ConfState((1,)), b"snap %d" % i)
        s.compact(i - 20)
    print(i, flush=True)
"""


@pytest.mark.parametrize("fsync", [False, True])
def test_sigkilled_writer_loses_nothing_it_acknowledged(tmp_path, fsync):
    """A writer process is SIGKILLed at random points (mid-save, mid-roll, mid-snapshot
    or compaction): every save that returned is there after a restart, intact."""
    d = str(tmp_path / "data")
    rng = random.Random(11)
    acked = 0
    for _round in range(6):
        p = subprocess.Popen(
            [sys.executable, "-c", _WRITER, d, "1" if fsync else "0"], stdout=subprocess.PIPE, text=True
        )
        try:
            for _ in range(rng.randint(5, 40)):
                line = p.stdout.readline()
                assert line, "the writer died by itself"
                acked = int(line)
        finally:
            p.kill()
            p.wait(timeout=30)
            p.stdout.close()
        with DiskStorage(d, cluster="kill") as s:
            assert s.last_index() >= acked
            assert s.hard_state.commit >= acked - 7
            for e in s.entries(s.first_index(), s.last_index() + 1):
                assert e.data == b"%d" % e.index * 3
            snap = s.snapshot()
            if snap.meta.index:
                assert snap.data == b"snap %d" % snap.meta.index
    assert acked > 100
