"""Linearizable read-only queries (thesis §6.4).

ReadIndex (``ReadOnlyOption.SAFE``, the default):

1. The leader must have committed an entry of its current term (its no-op, thesis
   §6.4 step 1); until then requests are queued.
2. It records its commit index as the read index.
3. It confirms it is still the leader by a round of heartbeats: each heartbeat carries
   the number of the newest pending read "round"; a follower echoes it.  A request of
   round r is confirmed once a quorum (of both halves when joint) acknowledged a round
   >= r — the acknowledgement of a heartbeat sent after the request was registered
   proves nobody had deposed the leader then.
4. The request is answered with the read index (a :class:`ReadState` locally, or a
   READ_INDEX_RESP to the follower that forwarded it); the application serves the read
   once it applied that index.

Rounds are numbered by the leader itself, so requests with equal application contexts
(even from different nodes) never collide.

Lease-based reads (``ReadOnlyOption.LEASE_BASED``, opt-in, thesis §6.4.1): the leader
answers at once with its commit index, skipping step 3, while it holds a lease.  Every
heartbeat carries a round numbered with the tick it was sent at; once a quorum
acknowledged a round sent at tick ``s``, each of those followers reset its election timer
at or after ``s`` and, by leader stickiness (``check_quorum``), refuses to vote before
``s + election_timeout`` of its own ticks, so no other leader can exist before then.
The leader therefore answers from its lease only while ``now < s + election_timeout - 1``
(one tick of margin), never during a leadership transfer, and otherwise falls back to a
ReadIndex round.  This rests on the clock assumption: ticks advance at the same rate on
every node (bounded drift is what the margin absorbs).  A node that restarts has
forgotten whom it followed, so with lease reads it refuses votes for an election timeout
after starting.  ``campaign()`` (a forced election, as in leadership transfer) bypasses
leases by design: a lease leader's reads are then only as safe as its caller's choice.
(etcd's lease reads lack the tick bookkeeping and can serve stale reads for up to a
second election timeout: etcd-io/raft#166.)
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass
from typing import AbstractSet, Deque, Dict, List, Optional

from .quorum import joint_committed
from .types import NONE, Message
from .state import RaftState

__all__ = ["ReadOnlyOption", "ReadIndexRequest", "ReadOnly", "encode_round", "decode_round"]

_ROUND = struct.Struct(">Q")


class ReadOnlyOption(enum.IntEnum):
    SAFE = 0
    LEASE_BASED = 1


def encode_round(r: int) -> bytes:
    return _ROUND.pack(r)


def decode_round(b: bytes) -> Optional[int]:
    """The round number in a heartbeat context, or None if it is not one."""
    if len(b) != _ROUND.size:
        return None
    r: int = _ROUND.unpack(b)[0]
    return r


@dataclass(frozen=True)
class ReadIndexRequest:
    round: int
    index: int  # the leader's commit index when the request arrived
    frm: int  # requesting node (0 or the leader itself = local)
    context: bytes


class ReadOnly:
    """Pending ReadIndex requests of a leader (reset whenever the node changes role)."""

    def __init__(self, option: ReadOnlyOption) -> None:
        self.option = option
        self._round = 0
        self._pending: Deque[ReadIndexRequest] = deque()
        self._acks: Dict[int, int] = {}  # voter -> highest round it acknowledged
        self.now = 0  # the leader's ticks since it became leader (lease clock)
        self._sent_at: Dict[int, int] = {}  # round -> self.now when its heartbeat left

    def tick(self) -> None:
        self.now += 1

    def add_request(self, index: int, frm: int, context: bytes) -> int:
        self._round += 1
        self._sent_at[self._round] = self.now
        self._pending.append(ReadIndexRequest(self._round, index, frm, context))
        return self._round

    def new_lease_round(self) -> int:
        """A round for a plain heartbeat (lease mode): its quorum acknowledgement
        renews the lease from the tick it was sent."""
        self._round += 1
        self._sent_at[self._round] = self.now
        return self._round

    def lease_start(self, incoming: AbstractSet[int], outgoing: AbstractSet[int]) -> Optional[int]:
        """The send tick of the newest round a quorum acknowledged (None: none yet).
        Every follower of that quorum reset its election timer at or after that tick."""
        r = self.confirmed_round(incoming, outgoing)
        if not r:
            return None
        for old in [k for k in self._sent_at if k < r]:
            del self._sent_at[old]
        return self._sent_at.get(r)

    def last_pending_round(self) -> int:
        """Round to piggyback on heartbeats (0 = none pending)."""
        return self._pending[-1].round if self._pending else 0

    def recv_ack(self, id: int, round: int) -> None:
        if round > self._acks.get(id, 0):
            self._acks[id] = round

    def confirmed_round(self, incoming: AbstractSet[int], outgoing: AbstractSet[int]) -> int:
        return joint_committed(incoming, outgoing, self._acks.get)

    def advance(self, incoming: AbstractSet[int], outgoing: AbstractSet[int]) -> List[ReadIndexRequest]:
        """Pop and return every request whose round a quorum confirmed."""
        r = self.confirmed_round(incoming, outgoing)
        out: List[ReadIndexRequest] = []
        while self._pending and self._pending[0].round <= r:
            out.append(self._pending.popleft())
        return out


class ReadMixin(RaftState):
    """ReadIndex handling, mixed into :class:`rsm_shm.raft.protocol.Raft`."""

    def committed_entry_in_current_term(self) -> bool:
        return self.raft_log.term_or_zero(self.raft_log.committed) == self.term

    def leader_read_index(self, m: Message) -> None:
        """A READ_INDEX at the leader (local when ``m.frm`` is 0 or ourselves)."""
        if self.trk.is_singleton():
            # Only one voter: our commit index is trivially confirmed.
            self._answer_read(m.frm, m.context, self.raft_log.committed)
            return
        if not self.committed_entry_in_current_term():
            # thesis §6.4 step 1: a new leader does not know the latest commit index
            # until its no-op commits; hold the request until then.
            self.pending_read_index_messages.append(m)
            return
        self._send_read_index_response(m)

    def in_read_lease(self) -> bool:
        """Whether a lease read may be answered now (see the module docs)."""
        if self.lead_transferee != NONE:
            return False
        cfg = self.trk.config
        start = self.read_only.lease_start(cfg.incoming, cfg.outgoing)
        return start is not None and self.read_only.now < start + self.election_timeout - 1

    def _send_read_index_response(self, m: Message) -> None:
        index = self.raft_log.committed
        if self.read_only.option == ReadOnlyOption.LEASE_BASED and self.in_read_lease():
            self._answer_read(m.frm, m.context, index)
            return
        rnd = self.read_only.add_request(index, m.frm, m.context)
        self.read_only.recv_ack(self.id, rnd)
        self.bcast_heartbeat(encode_round(rnd))

    def release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages or not self.committed_entry_in_current_term():
            return
        pending, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in pending:
            self._send_read_index_response(m)

    def handle_read_ack(self, m: Message) -> None:
        """A heartbeat response may acknowledge a ReadIndex round."""
        if not m.context:
            return
        rnd = decode_round(m.context)
        if rnd is None or not self.trk.is_voter(m.frm):
            return
        self.read_only.recv_ack(m.frm, rnd)
        cfg = self.trk.config
        for req in self.read_only.advance(cfg.incoming, cfg.outgoing):
            self._answer_read(req.frm, req.context, req.index)

    def _answer_read(self, frm: int, context: bytes, index: int) -> None:
        from .types import Message, MessageType, ReadState

        if frm == 0 or frm == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self.send(
                Message(MessageType.READ_INDEX_RESP, to=frm, frm=self.id, term=self.term, index=index, context=context)
            )
