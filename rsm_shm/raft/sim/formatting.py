"""Human-readable one-line forms of Raft values for simulator transcripts.

Stable formats: the datadriven expectations under ``tests/testdata/raft`` depend on them.
"""

from __future__ import annotations

from typing import Sequence

from ..codec import decode_conf_change
from ..types import ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType

__all__ = ["format_message", "format_entry", "format_conf_change", "format_conf_state", "short"]


def short(data: bytes, limit: int = 12) -> str:
    try:
        s = data.decode("ascii")
        if not s.isprintable():
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        s = data.hex()
    return s if len(s) <= limit else s[:limit] + "..."


def format_entry(e: Entry) -> str:
    """``term/index`` followed by the data (``CC[...]`` for a conf change, nothing for a
    leader's no-op)."""
    if e.type == EntryType.CONF_CHANGE:
        try:
            cc = decode_conf_change(e.data)
            body = " CC" + format_conf_change(cc)
        except ValueError:
            body = " CC?" + e.data.hex()
    elif e.data:
        body = " " + short(e.data)
    else:
        body = ""
    return f"{e.term}/{e.index}{body}"


_CC_LETTER = {ConfChangeType.ADD_NODE: "v", ConfChangeType.ADD_LEARNER: "l", ConfChangeType.REMOVE_NODE: "r"}


def format_conf_change(cc: ConfChange) -> str:
    if not cc.changes:
        return "[leave-joint]"
    return "[" + " ".join(f"{_CC_LETTER[ConfChangeType(t)]}{n}" for t, n in cc.changes) + "]"


def format_conf_state(cs: ConfState) -> str:
    def ids(t: Sequence[int]) -> str:
        return "(" + " ".join(str(i) for i in sorted(t)) + ")"

    s = f"voters={ids(cs.voters)}"
    if cs.voters_outgoing:
        s += f"&&{ids(cs.voters_outgoing)}"
    if cs.learners:
        s += f" learners={ids(cs.learners)}"
    if cs.learners_next:
        s += f" learners_next={ids(cs.learners_next)}"
    if cs.auto_leave:
        s += " autoleave"
    return s


def format_message(m: Message) -> str:
    """One line per message, showing only the fields its kind uses."""
    t = m.type
    parts = [f"{m.frm}->{m.to} {t.name} term={m.term}"]
    if t in (MessageType.VOTE, MessageType.PRE_VOTE, MessageType.APP):
        parts.append(f"log={m.log_term}/{m.index}")
    if t == MessageType.APP:
        parts.append(f"commit={m.commit}")
        if m.entries:
            parts.append("[" + ", ".join(format_entry(e) for e in m.entries) + "]")
    if t in (MessageType.APP_RESP, MessageType.READ_INDEX_RESP, MessageType.SNAP_RESP):
        parts.append(f"index={m.index}")
    if t == MessageType.HEARTBEAT:
        parts.append(f"commit={m.commit}")
    if m.reject:
        parts.append(f"rejected hint={m.reject_hint}")
        if t == MessageType.APP_RESP and m.log_term:
            parts.append(f"hint_term={m.log_term}")
    if t == MessageType.SNAP and m.snapshot is not None:
        meta = m.snapshot.meta
        parts.append(f"snap={meta.term}/{meta.index} bytes={m.snap_offset}+{len(m.snapshot.data)}/{m.snap_total}")
    if t == MessageType.SNAP_RESP:
        parts.append(f"received={m.snap_offset}")
    if m.context:
        parts.append(f"ctx={short(m.context, 16)}")
    return " ".join(parts)
