"""Value types of the Raft core: messages, entries, states, snapshots and the Ready.

Everything here is an immutable value except :class:`Ready`, which is a plain record
handed to the application.  :class:`Entry` and :class:`Message` are named tuples (a
runtime makes and decodes several of each per command: a frozen dataclass sets each
field through ``object.__setattr__``, about ten times the cost of building the tuple);
the others are frozen dataclasses.  Node ids are integers >= 1; 0 means "none"
(no vote, no known leader).  Nothing in this module does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple

NONE = 0  # "no node": no vote cast, no leader known


class MessageType(enum.IntEnum):
    """Kinds of :class:`Message`.

    The wire kinds are exchanged between nodes.  The local kinds (HUP, BEAT, PROP,
    CHECK_QUORUM, UNREACHABLE, SNAP_STATUS) are only fed to a node's own state machine by
    :class:`~rsm_shm.raft.core.RawNode` and are never sent; a node receiving one from the
    network ignores it (see ``core.Raft.step``).
    """

    VOTE = 1
    VOTE_RESP = 2
    PRE_VOTE = 3
    PRE_VOTE_RESP = 4
    APP = 5
    APP_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9  # one InstallSnapshot chunk (thesis §5.3, "chunked")
    SNAP_RESP = 10  # acknowledgement of snapshot bytes received so far
    TIMEOUT_NOW = 11  # leadership transfer: "start an election now" (thesis §3.10)
    READ_INDEX = 12  # follower -> leader: "confirm leadership, tell me the commit index"
    READ_INDEX_RESP = 13
    TRANSFER_LEADER = 14  # follower -> leader: "please transfer leadership to m.index"
    # local-only kinds
    HUP = 32  # start an election (campaign)
    BEAT = 33  # leader: broadcast heartbeats
    PROP = 34  # leader: append proposed entries
    CHECK_QUORUM = 35  # leader: step down unless a quorum was recently active
    UNREACHABLE = 36  # the runtime could not deliver to m.frm
    SNAP_STATUS = 37  # the runtime reports the outcome of a snapshot transfer


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.PROP,
        MessageType.CHECK_QUORUM,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
    }
)


def vote_resp_type(t: MessageType) -> MessageType:
    """The response kind for a (pre-)vote request kind."""
    if t == MessageType.VOTE:
        return MessageType.VOTE_RESP
    if t == MessageType.PRE_VOTE:
        return MessageType.PRE_VOTE_RESP
    raise ValueError(f"not a vote message type: {t!r}")


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class _EntryFields(NamedTuple):
    term: int
    index: int  # type: ignore[assignment]  # the field hides tuple.index, on purpose
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


class Entry(_EntryFields):
    """One log entry: ``Entry(term=..., index=..., type=EntryType.NORMAL, data=b"")``.
    The fields are keyword-only: two ints side by side invite a swapped term and index,
    which no type check would catch.  ``data`` is opaque to Raft except for CONF_CHANGE
    entries, whose data is a :class:`ConfChange` encoded by
    :func:`rsm_shm.raft.codec.encode_conf_change`.  An entry with empty data proposed by
    a new leader is the "no-op" of thesis §6.4.  Immutable (a named tuple)."""

    __slots__ = ()

    def __new__(cls, *, term: int, index: int, type: EntryType = EntryType.NORMAL, data: bytes = b"") -> "Entry":
        return tuple.__new__(cls, (term, index, type, data))

    def __getnewargs_ex__(self) -> Tuple[Tuple[()], dict[str, object]]:
        # copy and pickle rebuild through the keyword-only constructor
        return (), {"term": self.term, "index": self.index, "type": self.type, "data": self.data}


def entry_size(e: Entry) -> int:
    """Approximate encoded size used for batching limits (etcd's ``Entry.Size()``)."""
    return len(e.data) + 24


@dataclass(frozen=True)
class HardState:
    """State that must be on stable storage before any message that depends on it is sent:
    the current term, the vote cast in it (Figure 2 "persistent state") and the commit index
    (persisted so a restart does not re-deliver less than it already applied)."""

    term: int = 0
    vote: int = 0
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == 0 and self.commit == 0


@dataclass(frozen=True)
class ConfState:
    """A membership configuration (thesis §4.3 joint consensus).

    ``voters`` is the incoming majority config; ``voters_outgoing`` is non-empty only
    while in a joint configuration C(old,new).  ``learners_next`` are voters of the outgoing
    config that become learners when the joint configuration is left.  ``auto_leave``
    tells the leader to propose the leave-joint change by itself once the joint config
    is committed."""

    voters: Tuple[int, ...] = ()
    learners: Tuple[int, ...] = ()
    voters_outgoing: Tuple[int, ...] = ()
    learners_next: Tuple[int, ...] = ()
    auto_leave: bool = False

    def is_empty(self) -> bool:
        return not (self.voters or self.learners or self.voters_outgoing or self.learners_next)


@dataclass(frozen=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True)
class Snapshot:
    """An application snapshot covering every entry up to ``meta.index``.  In a SNAP
    message, ``data`` holds one chunk only (see ``Message.snap_offset``)."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.meta.index == 0


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


@dataclass(frozen=True)
class ConfChange:
    """A membership change.  One change is applied directly ("one server at a time",
    thesis §4.1); several changes enter a joint configuration (thesis §4.3); an empty
    ``changes`` tuple leaves the joint configuration.

    ``transition`` selects how multiple changes are made (only meaningful when there are
    several changes, or explicitly asked): AUTO (joint, left automatically), JOINT_IMPLICIT
    (joint, left automatically) or JOINT_EXPLICIT (joint, the application proposes an empty
    ConfChange to leave)."""

    changes: Tuple[Tuple[ConfChangeType, int], ...] = ()
    context: bytes = b""
    transition: int = 0  # ConfChangeTransition

    def leave_joint(self) -> bool:
        return not self.changes and self.transition == ConfChangeTransition.AUTO


class ConfChangeTransition(enum.IntEnum):
    AUTO = 0  # joint with auto-leave when more than one change, else simple
    JOINT_IMPLICIT = 1  # joint, auto-leave
    JOINT_EXPLICIT = 2  # joint, leave by an explicit empty ConfChange


class Message(NamedTuple):
    """A Raft message.

    Field use by kind (as in etcd's raftpb.Message):

    * APP: ``index``/``log_term`` identify the entry preceding ``entries``; ``commit`` is the
      leader's commit index.
    * APP_RESP: ``index`` is the last index matched (accept) or the rejected probe index
      (reject), with ``reject_hint``/``log_term`` giving the follower's hint for fast
      backtracking (thesis §5.3 "optimization").
    * VOTE/PRE_VOTE: ``index``/``log_term`` describe the candidate's last entry; ``context``
      is ``b"transfer"`` for an election started by leadership transfer.
    * HEARTBEAT/HEARTBEAT_RESP: ``context`` carries the ReadIndex round (8 bytes) or empty.
    * SNAP: ``snapshot`` holds the metadata and one chunk of data starting at byte
      ``snap_offset`` of a ``snap_total``-byte snapshot.  SNAP_RESP: ``index`` is the
      snapshot index, ``snap_offset`` the number of contiguous bytes received so far
      (``reject``: restart the transfer at ``snap_offset``; ``reject`` with context
      ``b"refused"``: the follower is not in the snapshot's configuration and will
      not install it).
    * READ_INDEX/READ_INDEX_RESP: ``context`` is the application's request context;
      ``index`` the read index in the response.
    * TRANSFER_LEADER: ``index`` is the node leadership should go to.

    Immutable (a named tuple).
    """

    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0  # type: ignore[assignment]  # the field hides tuple.index, on purpose
    entries: Tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Optional[Snapshot] = None
    context: bytes = b""
    snap_offset: int = 0
    snap_total: int = 0


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True)
class SoftState:
    """Volatile state that is useful to the application but need not be persisted."""

    leader: int = 0
    role: Role = Role.FOLLOWER


@dataclass(frozen=True)
class ReadState:
    """A linearizable read may be served once the application applied ``index``.
    ``context`` is the context passed to ``read_index``."""

    index: int
    context: bytes


@dataclass
class Ready:
    """What the application must do next, in this order (etcd's RawNode contract;
    :func:`rsm_shm.raft.driver.handle_ready` does exactly this and says why):

    1. persist ``snapshot`` (if not None), then append ``entries`` to stable storage,
       then ``hard_state`` (if not None), syncing once if ``must_sync`` -- all before
       step 2, since the messages may promise what is persisted (a vote, an accepted
       entry; Figure 2 "respond to RPCs only after updating stable storage");
    2. send ``messages`` (only now; they may depend on step 1);
    3. install ``snapshot`` in the state machine, apply ``committed_entries`` (calling
       ``RawNode.apply_conf_change`` for CONF_CHANGE entries), and serve ``read_states``
       once the applied index reaches each ``ReadState.index``;
    4. call ``RawNode.advance(ready)``.

    A leader's own entries in ``entries`` may be persisted in parallel with sending its
    messages in a real runtime (thesis §10.2.1), but the simple order above is always safe.
    """

    soft_state: Optional[SoftState] = None
    hard_state: Optional[HardState] = None
    entries: List[Entry] = field(default_factory=list)
    snapshot: Optional[Snapshot] = None
    committed_entries: List[Entry] = field(default_factory=list)
    messages: List[Message] = field(default_factory=list)
    read_states: List[ReadState] = field(default_factory=list)
    must_sync: bool = False
