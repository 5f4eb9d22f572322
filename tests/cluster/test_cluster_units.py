"""The cluster runtime's pure parts: envelopes, sessions (exactly once), KVStore, records."""

from __future__ import annotations

import json
import os
import random
import struct
import time

import pytest

from rsm_shm.cluster import CommandError, KVStore, StateMachine
from rsm_shm.cluster import envelope as ev
from rsm_shm.cluster.statemachine import (
    BATCH_VERSION,
    BatchWriter,
    NewerBatchError,
    Sessions,
    decode_batch,
    decode_runs,
    encode_batch,
    load_state_machine,
)


def test_envelopes_round_trip():
    hdr = ev.encode_header(ev.KIND_PROPOSE, 0, 42)
    reqs = [(ev.OP_REGISTER, 0, 7, 0, 0, b""), (ev.OP_COMMAND, 1, 7, 1, 0, b"x" * 100)]
    b = ev.encode_propose(hdr, "ring.name", reqs)
    assert ev.decode_header(b) == (ev.KIND_PROPOSE, 0, 42)
    assert ev.decode_propose(b) == ("ring.name", reqs)
    b = ev.encode_read(ev.encode_header(ev.KIND_READ, 0, 42), "r", [(5, b"q"), (6, b"")])
    assert ev.decode_read(b) == ("r", [(5, b"q"), (6, b"")])
    b = ev.encode_reply(ev.encode_header(ev.KIND_REPLY, 3, 42), [(5, ev.OK, b"res"), (6, ev.ERROR, b"")])
    assert ev.decode_reply(b) == [(5, ev.OK, b"res"), (6, ev.ERROR, b"")]
    b = ev.encode_admin(ev.encode_header(ev.KIND_ADMIN, 0, 42), "r", 9, ev.ADMIN_TRANSFER, 2)
    assert ev.decode_admin(b) == ("r", 9, ev.ADMIN_TRANSFER, 2, b"")
    b = ev.encode_admin(ev.encode_header(ev.KIND_ADMIN, 0, 42), "r", 9, ev.ADMIN_ADD_LEARNER, 4, b"10.0.0.4:7001")
    assert ev.decode_admin(b) == ("r", 9, ev.ADMIN_ADD_LEARNER, 4, b"10.0.0.4:7001")


def test_every_truncation_or_corruption_raises_envelope_error_only():
    rng = random.Random(1)
    hdr = ev.encode_header(ev.KIND_PROPOSE, 0, 42)
    samples = [
        ev.encode_propose(hdr, "ring", [(ev.OP_COMMAND, 1, 7, 1, 0, b"abc"), (ev.OP_COMMAND, 2, 7, 2, 1, b"")]),
        ev.encode_read(ev.encode_header(ev.KIND_READ, 0, 42), "r", [(5, b"q")]),
        ev.encode_reply(ev.encode_header(ev.KIND_REPLY, 3, 42), [(5, ev.OK, b"res")]),
        ev.encode_admin(ev.encode_header(ev.KIND_ADMIN, 0, 42), "r", 9, 1, 2),
        ev.encode_admin(ev.encode_header(ev.KIND_ADMIN, 0, 42), "r", 9, 2, 4, b"host:7001"),
    ]
    decoders = {
        ev.KIND_PROPOSE: ev.decode_propose,
        ev.KIND_READ: ev.decode_read,
        ev.KIND_REPLY: ev.decode_reply,
        ev.KIND_ADMIN: ev.decode_admin,
    }

    def decode(b):
        kind, _s, _c = ev.decode_header(b)
        if kind in decoders:
            decoders[kind](b)

    for good in samples:
        for n in range(len(good)):
            with pytest.raises(ev.EnvelopeError):
                decode(good[:n])
        for _ in range(200):
            bad = bytearray(good)
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
            try:
                decode(bytes(bad))
            except ev.EnvelopeError:
                pass
        with pytest.raises(ev.EnvelopeError):
            decode(good + b"\0")


def test_batch_round_trip_and_garbage():
    ops = [(ev.OP_COMMAND, 1, 2, 1, b"a"), (ev.OP_REGISTER, 3, 0, 0, b"")]
    assert decode_batch(encode_batch(ops)) == ops
    w = BatchWriter()
    for op in ops:
        w.add(*op)
    assert w.finish() == encode_batch(ops) and w.size == len(encode_batch(ops)) and w.count == 2
    for junk in (b"", b"\x02\0\0\0\0", encode_batch(ops)[:-1], encode_batch(ops) + b"x"):
        with pytest.raises(ValueError):
            decode_batch(junk)


def test_batch_groups_a_sessions_consecutive_commands_into_runs():
    """A leader's batch holds runs (consecutive commands of one session with the same
    acked); every way a run can end starts a new one, and every op comes back."""
    c, r = ev.OP_COMMAND, ev.OP_REGISTER
    ops = [(r, 5, 0, 0, b""), (c, 5, 1, 0, b"a"), (c, 5, 2, 0, b""), (c, 5, 3, 0, b"ccc")]
    ops += [(c, 6, 4, 0, b"d"), (c, 5, 4, 0, b"e")]  # another session, then back
    ops += [(c, 5, 6, 0, b"f"), (c, 5, 7, 2, b"g"), (r, 7, 0, 0, b""), (r, 7, 0, 0, b"")]  # gap, new acked, registers
    b = encode_batch(ops)
    assert decode_batch(b) == ops
    runs = decode_runs(b)
    assert [(op, sid, seq, len(datas)) for op, sid, seq, _a, datas in runs] == [
        (r, 5, 0, 1),
        (c, 5, 1, 3),
        (c, 6, 4, 1),
        (c, 5, 4, 1),
        (c, 5, 6, 1),
        (c, 5, 7, 1),
        (r, 7, 0, 1),
        (r, 7, 0, 1),
    ]
    assert runs[1][4] == [b"a", b"", b"ccc"]
    # A batch of version 1 (one header per op, as earlier releases logged) still reads.
    v1 = struct.pack("<BI", 1, len(ops)) + b"".join(
        struct.pack("<BQQQI", op, sid, seq, acked, len(d)) + d for op, sid, seq, acked, d in ops
    )
    assert decode_batch(v1) == ops and [len(run[4]) for run in decode_runs(v1)] == [1] * len(ops)
    # Malformed runs: every truncation, an empty or a multi-op REGISTER run, bit flips.
    for n in range(len(b)):
        with pytest.raises(ValueError):
            decode_runs(b[:n])
    for bad_run in (struct.pack("<BQQQI", c, 5, 1, 0, 0), struct.pack("<BQQQI", r, 5, 0, 0, 2) + bytes(8)):
        with pytest.raises(ValueError, match="batch run of"):
            decode_runs(struct.pack("<BI", 2, 1) + bad_run)
    rng = random.Random(3)
    for _ in range(300):
        bad = bytearray(b)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        try:
            decode_runs(bytes(bad))
        except (ValueError, NewerBatchError):  # a flipped version byte may read as newer
            pass
    # A newer rsm_shm's batch is not "malformed" (skipped alike everywhere) but a reason to
    # stop: the newer peers apply it.
    newer = bytes([BATCH_VERSION + 1]) + b[1:]
    with pytest.raises(NewerBatchError, match=f"batch format {BATCH_VERSION + 1}, written by a newer"):
        decode_runs(newer)
    assert not issubclass(NewerBatchError, ValueError)


def test_sessions_apply_runs_is_apply_op_by_op(monkeypatch):
    """The peers apply a batch run by run: the outcomes and the session table are what
    applying op by op gives, on random runs of pipelined commands with retries of
    whole or partial runs, skips, new acknowledgements, registrations, evictions,
    unknown sessions and erroring commands, with a small cap on kept results."""
    from rsm_shm.cluster import statemachine

    monkeypatch.setattr(statemachine, "MAX_RESULTS_PER_SESSION", 5)
    rng = random.Random(11)
    one, many = Sessions(Log(), max_sessions=3), Sessions(Log(), max_sessions=3)
    nxt, acks = {}, {}
    for index in range(1, 300):
        w = BatchWriter()
        for _ in range(rng.randint(1, 4)):
            sid = rng.randint(1, 4)
            if rng.random() < 0.1:
                w.add(ev.OP_REGISTER, sid, 0, 0, b"")
                continue
            seq = max(1, nxt.get(sid, 1) + rng.choice((0, 0, 0, 1, -2, -7)))
            if rng.random() < 0.3:
                acks[sid] = max(acks.get(sid, 0), seq - rng.randint(1, 8))
            for k in range(rng.randint(1, 9)):
                w.add(ev.OP_COMMAND, sid, seq + k, max(0, acks.get(sid, 0)), rng.choice((b"a", b"b", b"raise", b"int")))
            nxt[sid] = max(nxt.get(sid, 1), seq + rng.randint(1, 9))
        b = w.finish()
        expect = [one.apply(*op, index) for op in decode_batch(b)]
        assert many.apply_runs(decode_runs(b), index) == expect
    assert one.snapshot() == many.snapshot() and one.sm.items == many.sm.items
    assert sum(len(s[2]) for s in many.table.values()) > 0 and any(s[3] for s in many.table.values())


class Log(StateMachine):
    def __init__(self):
        self.items = []

    def apply(self, command):
        if command == b"raise":
            raise KeyError("nope")
        if command == b"int":
            return 3
        self.items.append(command)
        return b"%d" % len(self.items)

    def query(self, q):
        return b",".join(self.items)

    def snapshot(self):
        return b",".join(self.items)

    def restore(self, data):
        self.items = data.split(b",") if data else []


def test_sessions_apply_each_sequence_number_once():
    s = Sessions(Log())
    assert s.apply(ev.OP_COMMAND, 9, 1, 0, b"a", 1) == (ev.SESSION_EXPIRED, s.apply(ev.OP_COMMAND, 9, 1, 0, b"a", 1)[1])
    assert s.apply(ev.OP_REGISTER, 9, 0, 0, b"", 2) == (ev.OK, b"")
    assert s.apply(ev.OP_COMMAND, 9, 1, 0, b"a", 3) == (ev.OK, b"1")
    assert s.apply(ev.OP_COMMAND, 9, 1, 0, b"a", 4) == (ev.OK, b"1")  # a retry: the recorded result
    assert s.apply(ev.OP_COMMAND, 9, 3, 0, b"c", 5) == (ev.OK, b"2")  # seq 2 was given up
    assert s.apply(ev.OP_COMMAND, 9, 2, 0, b"b", 6)[0] == ev.STALE  # ... and is never applied
    assert s.sm.items == [b"a", b"c"]
    # Errors are outcomes, recorded like results; the state is unchanged.
    assert s.apply(ev.OP_COMMAND, 9, 4, 3, b"raise", 7) == (ev.ERROR, b"KeyError('nope')")
    assert s.apply(ev.OP_COMMAND, 9, 4, 3, b"raise", 8) == (ev.ERROR, b"KeyError('nope')")
    assert s.apply(ev.OP_COMMAND, 9, 5, 4, b"int", 9)[0] == ev.ERROR
    # Acknowledged results are forgotten.
    assert list(s.table[9][2]) == [5]


def test_sessions_snapshot_carries_the_table_and_evicts_deterministically():
    s = Sessions(Log(), max_sessions=2)
    for sid, idx in ((1, 1), (2, 2)):
        s.apply(ev.OP_REGISTER, sid, 0, 0, b"", idx)
    s.apply(ev.OP_COMMAND, 1, 1, 0, b"x", 3)
    s.apply(ev.OP_REGISTER, 3, 0, 0, b"", 4)  # evicts session 2 (least recently used)
    assert sorted(s.table) == [1, 3]
    assert s.apply(ev.OP_COMMAND, 2, 1, 0, b"y", 5)[0] == ev.SESSION_EXPIRED
    t = Sessions(Log(), max_sessions=2)
    t.restore(s.snapshot())
    assert t.table == s.table and t.sm.items == [b"x"]
    assert t.apply(ev.OP_COMMAND, 1, 1, 0, b"x", 6) == (ev.OK, b"1")
    with pytest.raises(ValueError):
        t.restore(b"garbage-snapshot")


def test_sessions_apply_batch_is_apply_in_order():
    """apply_batch (the peers' fast path) gives exactly what apply gives, op by op, on
    a random mix of registrations, retries, skips, stale and erroring commands, new
    acknowledgements and unknown sessions."""
    rng = random.Random(7)
    one, many = Sessions(Log(), max_sessions=3), Sessions(Log(), max_sessions=3)
    seqs = {}
    for index in range(1, 400):
        ops = []
        for _ in range(rng.randint(1, 6)):
            sid = rng.randint(1, 5)
            if rng.random() < 0.1:
                ops.append((ev.OP_REGISTER, sid, 0, 0, b""))
                continue
            seq = seqs[sid] = seqs.get(sid, 0) + rng.choice((1, 1, 1, 2, 0, -1))
            acked = max(0, seq - rng.randint(1, 5))
            ops.append((ev.OP_COMMAND, sid, max(seq, 1), acked, rng.choice((b"a", b"b", b"raise", b"int"))))
        expect = [one.apply(*op, index) for op in ops]
        assert many.apply_batch(ops, index) == expect
    assert one.snapshot() == many.snapshot() and one.sm.items == many.sm.items


def test_state_machine_apply_batch_default_is_apply_in_order():
    """The default apply_batch calls apply for each command; an exception apply raises
    (or a result that is not bytes) becomes that command's outcome, the rest go on."""
    log = Log()
    out = log.apply_batch([b"a", b"raise", b"int", b"b"])
    assert out[0] == b"1" and out[3] == b"2" and log.items == [b"a", b"b"]
    assert isinstance(out[1], KeyError) and isinstance(out[2], TypeError) and "Log.apply returned int" in str(out[2])


class Batched(Log):
    """Counts apply_batch calls; a batch containing b"boom" raises out of apply_batch,
    one containing b"short" returns too few outcomes."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def apply_batch(self, commands):
        self.batches.append(list(commands))
        if b"boom" in commands:
            raise RuntimeError("batch failed")
        out = super().apply_batch(commands)
        return out[:-1] if b"short" in commands else out


def test_sessions_give_a_run_of_new_commands_to_apply_batch_at_once():
    s = Sessions(Batched())
    s.apply(ev.OP_REGISTER, 9, 0, 0, b"", 1)
    s.apply(ev.OP_REGISTER, 8, 0, 0, b"", 1)
    ops = [(ev.OP_COMMAND, 9, 1, 0, b"a"), (ev.OP_COMMAND, 8, 1, 0, b"b"), (ev.OP_COMMAND, 9, 2, 0, b"c")]
    ops += [(ev.OP_COMMAND, 9, 2, 0, b"c")]  # a duplicate in the same entry: its recorded result
    ops += [(ev.OP_COMMAND, 9, 3, 0, b"d")]
    assert s.apply_batch(ops, 2) == [(ev.OK, b"1"), (ev.OK, b"2"), (ev.OK, b"3"), (ev.OK, b"3"), (ev.OK, b"4")]
    # The duplicate ends the run: the commands before it are applied first, in one call.
    assert s.sm.batches == [[b"a", b"b", b"c"], [b"d"]]
    # An exception out of apply_batch is the outcome of every command of the run.
    assert (
        s.apply_batch([(ev.OP_COMMAND, 9, 4, 0, b"e"), (ev.OP_COMMAND, 9, 5, 0, b"boom")], 3)
        == [(ev.ERROR, b"RuntimeError('batch failed')")] * 2
    )
    short = s.apply_batch([(ev.OP_COMMAND, 9, 6, 0, b"f"), (ev.OP_COMMAND, 8, 2, 0, b"short")], 4)
    assert [st for st, _r in short] == [ev.ERROR, ev.ERROR] and b"returned 1 outcomes for 2 commands" in short[0][1]
    assert s.apply_batch([(ev.OP_COMMAND, 9, 5, 0, b"boom")], 5) == [(ev.ERROR, b"RuntimeError('batch failed')")]
    assert s.sm.items == [b"a", b"b", b"c", b"d", b"f", b"short"]  # a raising batch changed nothing


def test_kvstore_apply_batch_is_apply_command_by_command():
    """KVStore's apply_batch (every peer parses every command) gives exactly apply's
    results, errors included, and the same state: valid and malformed commands mixed."""
    cmds = [
        b'{"op":"put","key":"a","value":1}',
        b'{"op": "put", "key": "b", "value": {"x": [1, 2]}}',
        b' {"op":"put","key":"c","value":2}',  # leading whitespace
        b'{"op":"put","key":"d","value":3} ',
        b'{"op":"put","key":"e","value":4},{"op":"put","key":"f","value":5}',  # two objects
        b'{"op":"put","key":"g","value":"',  # truncated
        b'"}',
        b"\xff\xfe",  # not UTF-8
        b"[1,2]",
        b'{"op":"put","key":1,"value":1}',
        b'{"op":"put","key":"h"}',
        b'{"op":"zap","key":"a"}',
        b'{"op":"delete","key":"a"}',
        b'{"op":"delete","key":"a"}',
        b'{"op":"cas","key":"b","expected":{"x":[1,2]},"new":7}',
        b'{"op":"cas","key":"b","expected":0,"new":8}',
        b'{"op":"cas","key":"b","expected":7}',
        b'{"op":"cas","key":"b","expected":7,"new":null}',
        b'{"op":"put","key":"\\u00e9\\u00e9","value":"\\u00e9"}',
        '{"op":"put","key":"\u00e9","value":"\u00fc"}'.encode(),
        b"[" * 100_000,  # too deep for the parser
        b"",
    ]
    one, many = KVStore(), KVStore()
    expect = []
    for c in cmds:
        try:
            expect.append(one.apply(c))
        except Exception as e:
            expect.append(e)
    got = many.apply_batch(cmds)
    assert [r if isinstance(r, bytes) else repr(r) for r in got] == [
        r if isinstance(r, bytes) else repr(r) for r in expect
    ]
    assert sum(isinstance(r, Exception) for r in got) == 11
    assert many.data == one.data and many.snapshot() == one.snapshot()


def test_kvstore_commands():
    kv = KVStore()
    assert kv.apply(b'{"op":"put","key":"a","value":[1,2]}') == b'{"ok": true}'
    assert json.loads(kv.query(b'{"op":"get","key":"a"}')) == {"found": True, "value": [1, 2]}
    assert json.loads(kv.apply(b'{"op":"cas","key":"a","expected":[1,2],"new":null}')) == {"ok": True}
    assert json.loads(kv.query(b'{"op":"get","key":"a"}')) == {"found": False, "value": None}
    for bad in (
        b"nope",
        b"[]",
        b'{"op":"put","key":1,"value":1}',
        b'{"op":"put","key":"a"}',
        b'{"op":"zap","key":"a"}',
    ):
        with pytest.raises(ValueError):
            kv.apply(bad)
    kv.apply(b'{"op":"put","key":"b","value":1}')
    other = KVStore()
    other.restore(kv.snapshot())
    assert other.data == kv.data


def test_load_state_machine_names_the_path():
    assert isinstance(load_state_machine("rsm_shm.cluster:KVStore"), KVStore)
    for path, msg in (
        ("nocolon", "import path"),
        ("no_such_mod_xyz:A", "cannot import"),
        ("rsm_shm.cluster:Nope", "no attribute"),
        ("os:getcwd", "not a subclass"),
    ):
        with pytest.raises(ValueError, match=msg):
            load_state_machine(path)


def test_status_record_round_trip(shm_name):
    from rsm_shm.cluster.status import StatusRecord

    rec = StatusRecord(shm_name("st"), create=True)
    try:
        assert rec.load() is None
        s = rec.new_record()
        s.id, s.pid, s.role, s.term, s.leader, s.commit = 2, os.getpid(), 3, 7, 2, 99
        s.nmatch, s.match_id[0], s.match_index[0] = 1, 3, 98
        s.voters = 0b111
        rec.publish(s)
        st = rec.read(state="running")
        assert (st.id, st.role, st.term, st.commit, st.match, st.voters) == (2, "leader", 7, 99, {3: 98}, (1, 2, 3))
        assert st.alive and st.is_leader
        other = StatusRecord(rec.name, create=False)
        assert other.read().term == 7
        other.close()
    finally:
        rec.close()
        rec.unlink()


def test_status_seqlock_never_shows_a_torn_record(shm_name):
    import threading
    from rsm_shm.cluster.status import StatusRecord

    rec = StatusRecord(shm_name("st"), create=True)
    stop = threading.Event()

    def writer():
        s = rec.new_record()
        i = 0
        while not stop.is_set():
            i += 1
            s.term = s.commit = s.applied = s.last_index = i
            s.match_index[15] = i
            rec.publish(s)

    t = threading.Thread(target=writer)
    t.start()
    try:
        # Until the writer's first publication every load is None (a loaded machine once
        # ran all 20000 loads before the writer thread got its first turn).
        deadline = time.monotonic() + 10
        while rec.seq() == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert rec.seq() > 0, "the writer thread never published"
        seen = 0
        for _ in range(20000):
            raw = rec.load()
            if raw is None:
                continue
            assert raw.term == raw.commit == raw.applied == raw.last_index == raw.match_index[15]
            seen += 1
        assert seen > 0
    finally:
        stop.set()
        t.join()
        rec.close()
        rec.unlink()


def test_ring_transport_drops_and_counts_instead_of_blocking(shm_name):
    from rsm_shm import Ring
    from rsm_shm.cluster.layout import inbox_name
    from rsm_shm.cluster.transport import RingTransport, Transport

    cluster = shm_name("t")
    t = RingTransport(cluster)
    assert isinstance(t, Transport)
    assert t.send(2, b"x") is False  # no inbox ring for peer 2: dropped, counted
    assert t.counters() == {"ring_dropped_full": 0, "ring_dropped_missing": 1}
    ring = Ring(inbox_name(cluster, 2), create=True, capacity=4096)
    try:
        sent = 0
        while t.send(2, b"y" * 100):
            sent += 1
            assert sent < 100, "a 4 KiB ring took more than 100 messages of 100 bytes"
        assert t.counters()["ring_dropped_full"] == 1 and sent > 0
        assert ring.get_nowait() == b"y" * 100
        ring.shutdown()
        assert t.send(2, b"z") is False
        assert t.counters()["ring_dropped_missing"] == 2
    finally:
        t.close()
        ring.close()
        ring.unlink()
    t.close()  # idempotent


def test_peer_log_of_a_cluster_without_a_data_directory_is_empty(shm_name):
    # Before start() (and after destroy()) a temporary-directory cluster has no data
    # directory: peer_log said "" only for a missing file and raised TypeError here.
    from rsm_shm.cluster import LocalCluster

    cluster = LocalCluster(shm_name("c"), "rsm_shm.cluster:KVStore", peers=1)
    assert cluster.data_dir is None
    assert cluster.peer_log(1) == ""


def test_a_control_block_is_made_after_its_lock(shm_name, monkeypatch):
    # A cluster that is starting is attached to (LocalCluster.attach, a peer joining) as
    # soon as its control block exists: its lock must exist by then (it was made after the
    # block, and `rsm-shm cluster serve` peers or attach failed with FileNotFoundError).
    from rsm_shm.cluster import control
    from rsm_shm.segment import shm_path

    name = shm_name("ctlorder")
    lock_there = []
    real = control.Segment

    def segment(seg_name, *args, **kwargs):
        lock_there.append(os.path.exists(shm_path(control.lock_segment_name(name))))
        return real(seg_name, *args, **kwargs)

    monkeypatch.setattr(control, "Segment", segment)
    ctl = control.ControlBlock(name, create=True)
    try:
        assert lock_there == [True]
        other = control.ControlBlock(name)
        other.close()
    finally:
        ctl.unlink()
        ctl.close()
    assert not os.path.exists(shm_path(control.control_segment_name(name)))
    assert not os.path.exists(shm_path(control.lock_segment_name(name)))


class _ScriptedPeer:
    """Stands in for the leader behind a Client (no processes): answers each proposal
    envelope the client sends with one reply envelope; ``answer(seq, data, sent_before)``
    gives the (status, payload) of one request."""

    def __init__(self, client, answer):
        self.client, self.answer, self.seen, self.queue = client, answer, set(), []

    def send(self, target, envelopes):
        hdr = ev.encode_header(ev.KIND_REPLY, 1, 7)
        for b in envelopes:
            _reply_to, reqs = ev.decode_propose(b)
            items = []
            for op, rid, _session, seq, _acked, data in reqs:
                if op == ev.OP_COMMAND:
                    items.append((rid, *self.answer(seq, data, seq in self.seen)))
                    self.seen.add(seq)
            self.queue.append(ev.encode_reply(hdr, items))
        return []

    def get(self, timeout):
        if not self.queue:
            raise AssertionError("the client waits for a reply that was never sent")
        return self.queue.pop(0)


def _scripted_client(answer):
    from rsm_shm.cluster.client import Client

    c = Client.__new__(Client)
    c.name, c._closed = "scripted", False
    c._init_session(7, "scripted.reply")
    c._leader = 1
    c._discover_once = lambda: 1
    peer = _ScriptedPeer(c, answer)
    c._send, c._reply = peer.send, peer
    return c, peer


def test_client_pipeline_maps_outcomes_to_commands_through_stale_resends_and_odd_replies():
    """propose_many's results are in command order whatever the replies look like: STALE
    answers (sent again under new sequence numbers), replies in another order, a
    duplicate answer, an answer to no request, and an error outcome."""
    cmds = [b"c%d" % i for i in range(50)]

    def echo(seq, data, again):
        return (ev.STALE, b"") if seq % 7 == 0 and not again else (ev.OK, data)

    c, peer = _scripted_client(echo)
    assert c.propose_many(cmds) == cmds
    assert c.propose_many(cmds[:3]) == cmds[:3]
    assert c._seq > 53 and max(peer.seen) == c._seq  # the STALE ones went again, under new numbers

    # Replies reversed, one duplicated, one for a request id nobody sent.
    def send_shuffled(target, envelopes):
        peer.send(target, envelopes)
        items = ev.decode_reply(peer.queue.pop())
        items = items[::-1] + [items[0], (12345, ev.OK, b"stray")]
        peer.queue.append(ev.encode_reply(ev.encode_header(ev.KIND_REPLY, 1, 7), items))
        return []

    c._send = send_shuffled
    assert c.propose_many(cmds[:20]) == cmds[:20]
    c._send = peer.send
    peer.answer = lambda seq, data, again: (ev.ERROR, b"boom") if data == b"c4" else (ev.OK, data)
    with pytest.raises(CommandError, match="boom"):
        c.propose_many(cmds[:10])
    assert c.propose_many([bytearray(b"c1"), memoryview(b"c2")]) == [b"c1", b"c2"]
    c._closed = True


def _proposing_peer(monkeypatch, one_run):
    """A Peer without a process: its leader node records the entries it is given."""
    from rsm_shm.cluster import peer as peer_mod
    from rsm_shm.raft.core import Leadership
    from rsm_shm.raft.types import Role

    class Node:
        def __init__(self):
            self.entries = []

        def leadership(self):
            return Leadership(1, Role.LEADER, 1)

        def propose(self, data):
            self.entries.append(data)

    if not one_run:
        monkeypatch.setattr(peer_mod, "_one_run", lambda reqs: False)
    p = peer_mod.Peer.__new__(peer_mod.Peer)
    p.node, p.c, p._pending, p._replies, p._proposals = Node(), {"proposals": 0}, {}, {}, []
    return p


def test_leader_batches_a_pipelined_envelope_as_command_by_command(monkeypatch):
    """A client's pipelined envelope (one session, consecutive sequence numbers) is
    added to the leader's batches in C loops: the same entries (split at the entry size
    limit), the same waiting clients and answers as command by command."""
    from rsm_shm.cluster.layout import MAX_ENTRY_BYTES

    c = ev.OP_COMMAND
    big = b"y" * (MAX_ENTRY_BYTES - 20)  # larger than any entry can hold with its header
    envelopes = [
        ("r1", [(c, 100 + i, 5, 1 + i, 0, b"x%d" % i * 40) for i in range(3000)]),
        ("r2", [(c, 7 + i, 6, 3 + i, 2, b"z" * (i % 300)) for i in range(2500)]),
        ("r1", [(c, 3100 + i, 5, 3001 + i, 0, b"w%d" % i * 30) for i in range(2000)]),
        ("r3", [(c, 1, 8, 1, 0, b"a"), (c, 2, 8, 2, 0, big), (c, 3, 8, 3, 0, b"b")]),
        ("r4", [(ev.OP_REGISTER, 0, 9, 0, 0, b""), (c, 1, 9, 1, 0, b"q")]),
        ("r4", [(c, 2, 9, 2, 0, b"q2")]),
    ]
    seen = []
    for one_run in (True, False):
        p = _proposing_peer(monkeypatch, one_run)
        p._proposals = list(envelopes)
        p.flush_proposals()
        seen.append((p.node.entries, p._pending, p._replies, p.c["proposals"]))
        monkeypatch.undo()
    assert seen[0] == seen[1]
    entries, pending, replies, count = seen[0]
    assert len(entries) >= 3 and all(len(e) <= MAX_ENTRY_BYTES for e in entries)
    assert count == 3000 + 2500 + 2000 + 2 + 2 + 1 and len(pending) == count
    assert replies == {"r3": [(2, ev.BAD_REQUEST, b"command larger than the largest log entry")]}
    ops = [op for e in entries for op in decode_batch(e)]
    assert [(op[1], op[2]) for op in ops][:3] == [(5, 1), (5, 2), (5, 3)] and len(ops) == count


def test_batch_add_run_is_add_command_by_command():
    runs = [(5, 1, 0, [b"a", b"bb"]), (5, 3, 0, [b"c"]), (5, 4, 1, [b"d", b""]), (6, 1, 0, [b"e"])]
    one, many = BatchWriter(), BatchWriter()
    one.add(ev.OP_REGISTER, 5, 0, 0, b"")
    many.add(ev.OP_REGISTER, 5, 0, 0, b"")
    for session, seq, acked, data in runs:
        many.add_run(session, seq, acked, data)
        for i, d in enumerate(data):
            one.add(ev.OP_COMMAND, session, seq + i, acked, d)
    assert many.finish() == one.finish() and (many.size, many.count) == (one.size, one.count) == (len(one.finish()), 7)
    assert len(decode_runs(many.finish())) == 4  # register, 5:1-3, 5:4-5 (new acked), 6:1
