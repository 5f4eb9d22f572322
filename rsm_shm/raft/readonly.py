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
answers at once with its commit index, skipping step 3.  This is only safe if clocks
drift by a bounded amount: a leader assumes no other leader can be elected while its
followers' election timers, reset by its heartbeats, have not expired, which holds only
if ticks advance at similar rates on all nodes.  It requires ``check_quorum`` (a leader
that loses its quorum steps down within an election timeout) and the followers' lease
check on (pre)votes that comes with it.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional

from .quorum import joint_committed

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
    return _ROUND.unpack(b)[0]


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

    def add_request(self, index: int, frm: int, context: bytes) -> int:
        self._round += 1
        self._pending.append(ReadIndexRequest(self._round, index, frm, context))
        return self._round

    def last_pending_round(self) -> int:
        """Round to piggyback on heartbeats (0 = none pending)."""
        return self._pending[-1].round if self._pending else 0

    def recv_ack(self, id: int, round: int) -> None:
        if round > self._acks.get(id, 0):
            self._acks[id] = round

    def confirmed_round(self, incoming, outgoing) -> int:
        return joint_committed(incoming, outgoing, self._acks.get)

    def advance(self, incoming, outgoing) -> List[ReadIndexRequest]:
        """Pop and return every request whose round a quorum confirmed."""
        r = self.confirmed_round(incoming, outgoing)
        out: List[ReadIndexRequest] = []
        while self._pending and self._pending[0].round <= r:
            out.append(self._pending.popleft())
        return out

    def pending_count(self) -> int:
        return len(self._pending)


class ReadMixin:
    """ReadIndex handling, mixed into :class:`rsm_shm.raft.machine.Raft`."""

    def committed_entry_in_current_term(self) -> bool:
        return self.raft_log.term_or_zero(self.raft_log.committed) == self.term

    def leader_read_index(self, m) -> None:
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

    def _send_read_index_response(self, m) -> None:
        index = self.raft_log.committed
        if self.read_only.option == ReadOnlyOption.LEASE_BASED:
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

    def handle_read_ack(self, m) -> None:
        """A heartbeat response may acknowledge a ReadIndex round."""
        if self.read_only.option != ReadOnlyOption.SAFE or not m.context:
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
