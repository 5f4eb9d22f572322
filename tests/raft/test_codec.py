"""The binary message format: round trips, strict rejection, and a fuzz of the decoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsm_shm.raft.codec import (
    FORMAT_VERSION,
    DecodeError,
    decode_conf_change,
    decode_conf_state,
    decode_entry,
    decode_message,
    encode_conf_change,
    encode_conf_state,
    encode_entry,
    encode_message,
)
from rsm_shm.raft.types import (
    ConfChange,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

U64 = st.integers(min_value=0, max_value=(1 << 63) - 1)  # what decodes (see the codec docstring)
SMALL = st.integers(min_value=0, max_value=1 << 20)
IDS = st.lists(st.integers(min_value=1, max_value=(1 << 63) - 1), max_size=5).map(tuple)

entries_st = st.builds(Entry, term=U64, index=U64, type=st.sampled_from(EntryType), data=st.binary(max_size=64))
conf_state_st = st.builds(
    ConfState, voters=IDS, learners=IDS, voters_outgoing=IDS, learners_next=IDS, auto_leave=st.booleans()
)
snapshot_st = st.builds(
    Snapshot, meta=st.builds(SnapshotMeta, index=U64, term=U64, conf_state=conf_state_st), data=st.binary(max_size=64)
)
message_st = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=U64,
    frm=U64,
    term=U64,
    log_term=U64,
    index=U64,
    entries=st.lists(entries_st, max_size=4).map(tuple),
    commit=U64,
    reject=st.booleans(),
    reject_hint=U64,
    snapshot=st.none() | snapshot_st,
    context=st.binary(max_size=16),
    snap_offset=U64,
    snap_total=U64,
)


def sample_message() -> Message:
    cs = ConfState(voters=(1, 2, 3), learners=(4,), voters_outgoing=(1, 2), learners_next=(2,), auto_leave=True)
    return Message(
        MessageType.SNAP,
        to=2,
        frm=1,
        term=7,
        log_term=6,
        index=41,
        entries=(
            Entry(term=6, index=42, type=EntryType.NORMAL, data=b"a"),
            Entry(term=7, index=43, type=EntryType.CONF_CHANGE, data=b"\x00\xff"),
        ),
        commit=40,
        reject=True,
        reject_hint=12,
        snapshot=Snapshot(SnapshotMeta(40, 6, cs), b"chunk"),
        context=b"ctx",
        snap_offset=5,
        snap_total=10,
    )


def test_roundtrip_sample():
    m = sample_message()
    assert decode_message(encode_message(m)) == m


@pytest.mark.parametrize("t", list(MessageType))
def test_roundtrip_every_type(t):
    m = Message(t, to=3, frm=1, term=2)
    b = encode_message(m)
    assert b[:2] == b"RM" and b[2] == FORMAT_VERSION
    assert decode_message(b) == m


def test_decoded_types_are_enums():
    m = decode_message(encode_message(sample_message()))
    assert isinstance(m.type, MessageType)
    assert isinstance(m.entries[1].type, EntryType)


@given(message_st)
@settings(max_examples=300, deadline=None)
def test_roundtrip_property(m):
    assert decode_message(encode_message(m)) == m


def test_encode_rejects_out_of_range_fields():
    with pytest.raises(ValueError):
        encode_message(Message(MessageType.APP, to=-1, frm=1))
    with pytest.raises(ValueError):
        encode_message(Message(MessageType.APP, to=1, frm=1, term=1 << 64))


def test_integers_beyond_2_63_are_malformed():
    """Terms, indexes and ids are kept as signed 64-bit integers (the log's index arrays):
    a message that carried a larger one passed the decoder and crashed the peer that
    saved it ("OverflowError: int too big to convert" in storage), found by sending
    mutated Raft envelopes to a served peer."""
    big = (1 << 63).to_bytes(8, "big")
    ok = (7).to_bytes(8, "big")
    # The sample has a snapshot (the careful reader); the second message none (the fast path).
    plain = Message(MessageType.APP, to=2, frm=1, term=7, index=7, entries=(Entry(term=7, index=7, data=b"x"),))
    for m in (sample_message(), plain):
        b = encode_message(m)
        assert decode_message(b) == m
        at = [i for i in range(len(b) - 7) if b[i : i + 8] == ok]  # term, entry term/index, ...
        assert at
        for i in at:
            with pytest.raises(DecodeError, match="beyond 2\\*\\*63-1"):
                decode_message(b[:i] + big + b[i + 8 :])
    cc = encode_conf_change(ConfChange(((ConfChangeType.ADD_NODE, 7),)))
    i = cc.index(ok)
    with pytest.raises(DecodeError, match="beyond"):
        decode_conf_change(cc[:i] + big + cc[i + 8 :])


def test_every_truncation_is_a_decode_error():
    b = encode_message(sample_message())
    for n in range(len(b)):
        with pytest.raises(DecodeError):
            decode_message(b[:n])


def test_trailing_bytes_rejected():
    with pytest.raises(DecodeError, match="trailing"):
        decode_message(encode_message(sample_message()) + b"\x00")


def test_bad_magic_version_type_flags():
    b = bytearray(encode_message(sample_message()))
    for pos, val, what in [(0, ord("X"), "magic"), (2, 99, "version"), (3, 200, "message type"), (4, 0x80, "flags")]:
        c = bytearray(b)
        c[pos] = val
        with pytest.raises(DecodeError, match=what):
            decode_message(bytes(c))


def test_huge_counts_do_not_allocate():
    # header + empty context + an entry count of 2**32-1 with nothing behind it
    hdr = struct.pack(">2sBBB9Q", b"RM", FORMAT_VERSION, int(MessageType.APP), 0, *([1] * 9))
    with pytest.raises(DecodeError, match="truncated"):
        decode_message(hdr + struct.pack(">I", 0) + struct.pack(">I", 0xFFFFFFFF))


def test_non_bytes_input():
    with pytest.raises(DecodeError):
        decode_message("not bytes")  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        decode_message(None)  # type: ignore[arg-type]
    assert decode_message(bytearray(encode_message(sample_message()))) == sample_message()
    assert decode_message(memoryview(encode_message(sample_message()))) == sample_message()


@given(st.binary(max_size=512))
@settings(max_examples=2000, deadline=None)
def test_fuzz_random_bytes_only_decode_error(b):
    try:
        m = decode_message(b)
    except DecodeError:
        return
    assert isinstance(m, Message)


@given(message_st, st.data())
@settings(max_examples=1000, deadline=None)
def test_fuzz_mutated_valid_messages_only_decode_error(m, data):
    b = bytearray(encode_message(m))
    n_mut = data.draw(st.integers(min_value=1, max_value=6))
    for _ in range(n_mut):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if not b:
            break
        pos = data.draw(st.integers(min_value=0, max_value=len(b) - 1))
        if op == "flip":
            b[pos] = data.draw(st.integers(min_value=0, max_value=255))
        elif op == "insert":
            b.insert(pos, data.draw(st.integers(min_value=0, max_value=255)))
        elif op == "delete":
            del b[pos]
        else:
            del b[pos:]
    try:
        out = decode_message(bytes(b))
    except DecodeError:
        return
    # whatever decodes re-encodes to exactly the same bytes (canonical format)
    assert encode_message(out) == bytes(b)


@given(st.binary(max_size=128))
@settings(max_examples=500, deadline=None)
def test_fuzz_other_decoders(b):
    for dec in (decode_conf_change, decode_entry, decode_conf_state):
        try:
            dec(b)
        except DecodeError:
            pass


def test_conf_change_roundtrip():
    cc = ConfChange(
        ((ConfChangeType.ADD_NODE, 4), (ConfChangeType.ADD_LEARNER, 5), (ConfChangeType.REMOVE_NODE, 1)),
        b"why",
        ConfChangeTransition.JOINT_EXPLICIT,
    )
    assert decode_conf_change(encode_conf_change(cc)) == cc
    assert decode_conf_change(encode_conf_change(ConfChange())) == ConfChange()
    with pytest.raises(DecodeError):
        decode_conf_change(b"")
    with pytest.raises(DecodeError):
        decode_conf_change(encode_conf_change(cc)[:-1])


def test_entry_and_conf_state_roundtrip():
    e = Entry(term=3, index=9, type=EntryType.CONF_CHANGE, data=b"x" * 100)
    assert decode_entry(encode_entry(e)) == e
    cs = ConfState((1, 2), (3,), (1, 2, 4), (4,), True)
    assert decode_conf_state(encode_conf_state(cs)) == cs


def test_entry_fields_are_keyword_only():
    # Entry(term, index) and Entry(index, term) would both type-check: no positional form.
    with pytest.raises(TypeError):
        Entry(3, 9)  # type: ignore[misc]
    e = Entry(term=3, index=9)
    assert (e.term, e.index, e.type, e.data) == (3, 9, EntryType.NORMAL, b"")
