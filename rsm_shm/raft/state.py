"""The state a :class:`~rsm_shm.raft.protocol.Raft` shares with its mixins.

``Raft`` is assembled from mixins (:mod:`.election`, :mod:`.replication`,
:mod:`.membership`, :mod:`.readonly`) that read and write one object's fields and call
each other's methods.  :class:`RaftState`, their common base, declares those fields and
the methods they call across modules, so a type checker checks every mixin on its own.
It adds nothing at run time: the fields are set by ``Raft.__init__`` and the methods
live in ``Raft`` and the mixins (the declarations below are seen by type checkers only).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config
    from .log import RaftLog
    from .readonly import ReadOnly
    from .tracker import ProgressTracker
    from .types import Entry, Message, ReadState, Role, Snapshot

__all__ = ["RaftState", "SnapshotKey"]

#: Identifies one snapshot transfer: (sender, term, index, snapshot term, total bytes).
SnapshotKey = Tuple[int, int, int, int, int]


class RaftState:
    # -- configuration (fixed after __init__) -------------------------------------------
    cfg: Config
    id: int
    rng: random.Random
    max_msg_size: int
    max_uncommitted_size: int
    election_timeout: int
    heartbeat_timeout: int
    check_quorum: bool
    pre_vote: bool
    # -- persistent and volatile Raft state ---------------------------------------------
    raft_log: RaftLog
    trk: ProgressTracker
    term: int
    vote: int
    lead: int
    role: Role
    is_learner: bool
    lead_transferee: int
    pending_conf_index: int
    uncommitted_size: int
    # -- reads ----------------------------------------------------------------------------
    read_only: ReadOnly
    read_states: List[ReadState]
    pending_read_index_messages: List[Message]
    # -- timers ---------------------------------------------------------------------------
    election_elapsed: int
    heartbeat_elapsed: int
    randomized_election_timeout: int
    boot_lease_ticks: int
    # -- output and transfers in progress -------------------------------------------------
    msgs: List[Message]
    snap_buffer: Optional[Tuple[SnapshotKey, bytearray]]
    append_pending: bool

    if TYPE_CHECKING:  # pragma: no cover
        # Defined in Raft (protocol.py).
        def step(self, m: Message) -> None: ...
        def send(self, m: Message) -> None: ...
        def become_follower(self, term: int, lead: int) -> None: ...
        def become_pre_candidate(self) -> None: ...
        def become_candidate(self) -> None: ...
        def become_leader(self) -> None: ...
        def append_entry(self, es: List[Entry]) -> bool: ...

        # Defined in ReplicationMixin.
        def bcast_append(self) -> None: ...
        def bcast_heartbeat(self, ctx: Optional[bytes] = None) -> None: ...
        def send_append(self, to: int) -> None: ...
        def maybe_send_append(self, to: int, send_if_empty: bool = True) -> bool: ...
        def maybe_commit(self) -> bool: ...
        def handle_append_entries(self, m: Message) -> None: ...
        def handle_heartbeat(self, m: Message) -> None: ...
        def handle_snapshot_chunk(self, m: Message) -> None: ...

        # Defined in MembershipMixin.
        def restore(self, s: Snapshot) -> bool: ...
        def send_timeout_now(self, to: int) -> None: ...

        # Defined in ReadMixin.
        def handle_read_ack(self, m: Message) -> None: ...
        def release_pending_read_index_messages(self) -> None: ...
