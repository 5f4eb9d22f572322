"""The simulated world around the Raft nodes: the application's state machine and the
network (see :mod:`rsm_shm.raft.sim`)."""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ..types import Entry

__all__ = ["StateMachine", "InFlight", "Network", "SkewedTimeouts"]

_DIGEST_SIZE = 32
_SM_MAGIC = b"SM1"
_SM_HEADER = struct.Struct(">3sQ32s")


class StateMachine:
    """The application: a hash chain over applied commands.

    Two replicas that applied the same entries have the same ``digest``; the snapshot is
    ``(index, digest)`` padded with ``padding`` bytes so that snapshots span several
    InstallSnapshot chunks when the chunk size is small.
    """

    def __init__(self, padding: int = 0) -> None:
        self.padding = padding
        self._reset()

    def _reset(self) -> None:
        self.index = 0
        self.digest = bytes(_DIGEST_SIZE)
        # digests of recent indexes, so a snapshot can be made at any index >= the last
        # compaction point (the application snapshots at a past applied index)
        self.history: Dict[int, bytes] = {0: self.digest}

    def apply(self, e: Entry) -> None:
        h = hashlib.sha256(self.digest)
        h.update(struct.pack(">QB", e.index, int(e.type)))
        h.update(e.data)
        self.digest = h.digest()
        self.index = e.index
        self.history[e.index] = self.digest

    def snapshot_data(self, index: int) -> bytes:
        if index not in self.history:
            raise ValueError(f"state machine has no state at index {index} (applied {self.index})")
        return _SM_HEADER.pack(_SM_MAGIC, index, self.history[index]) + b"." * self.padding

    def restore(self, data: bytes, index: int) -> None:
        """Replace the state by snapshot ``data`` taken at ``index`` (empty data and index 0
        mean the initial state)."""
        if index == 0 and not data:
            self._reset()
            return
        magic, idx, digest = _SM_HEADER.unpack_from(data)
        if magic != _SM_MAGIC or idx != index:
            raise ValueError(f"bad state machine snapshot: index {idx} for a snapshot at {index}")
        self.index = idx
        self.digest = digest
        self.history = {idx: digest}

    def prune(self, below: int) -> None:
        for i in [i for i in self.history if i < below]:
            del self.history[i]


# ------------------------------------------------------------------------------ network
@dataclass
class InFlight:
    """One encoded message on its way from ``frm`` to ``to`` (``seq``: sending order)."""

    seq: int
    frm: int
    to: int
    data: bytes


@dataclass
class Network:
    """In-flight messages (as bytes) and the current cuts.

    A message across a cut is dropped when sent and when (if it was in flight when the
    cut appeared) it would be delivered.  The simulator drops the messages to a node
    when it crashes (and any that reach a node while it is down).
    """

    queue: List[InFlight] = field(default_factory=list)
    cut: Set[Tuple[int, int]] = field(default_factory=set)
    seq: int = 0
    sent: int = 0
    bytes_sent: int = 0
    dropped: int = 0

    def connected(self, a: int, b: int) -> bool:
        return (a, b) not in self.cut

    def send(self, frm: int, to: int, data: bytes) -> bool:
        self.sent += 1
        self.bytes_sent += len(data)
        if not self.connected(frm, to):
            self.dropped += 1
            return False
        self.seq += 1
        self.queue.append(InFlight(self.seq, frm, to, data))
        return True

    def between(self, frm: int, to: int) -> List[InFlight]:
        return [f for f in self.queue if f.frm == frm and f.to == to]

    def find(self, frm: int, to: int, k: int) -> Optional[InFlight]:
        n = 0
        for f in self.queue:
            if f.frm == frm and f.to == to:
                if n == k:
                    return f
                n += 1
        return None

    def remove(self, item: InFlight) -> None:
        self.queue.remove(item)

    def partition(self, groups: Sequence[Sequence[int]], everyone: Iterable[int]) -> None:
        """Cut every link between nodes of different groups; nodes of ``everyone`` in no
        group are cut from everybody.  The cuts are computed now: a node created later is
        connected to all until the next partition."""
        where: Dict[int, int] = {}
        for g, ids in enumerate(groups):
            for i in ids:
                where[i] = g
        nodes = sorted(set(everyone) | set(where))
        lone = len(groups)
        for a in nodes:
            for b in nodes:
                if a == b:
                    continue
                ga = where.get(a, lone + a)
                gb = where.get(b, lone + b)
                if ga != gb:
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()


class SkewedTimeouts(random.Random):
    """The random source of a node whose clock runs fast or slow: odd node ids draw their
    randomized election timeouts from the lower half of the range, even ids from the
    upper half.  Every draw is still a legal timeout, and each half keeps at least two
    values, so split votes among the nodes of one half still resolve (§5.2).  What the
    skew adds is schedules in which the same nodes keep timing out first, as nodes on
    faster clocks would -- the schedules that expose a timer restarted when it should not
    be."""

    def __new__(cls, seed: str, node_id: int) -> "SkewedTimeouts":
        # Python 3.10's random.Random.__new__ refuses a second argument.
        # (typeshed declares no Random.__new__, hence the ignore)
        return super().__new__(cls, seed)  # type: ignore[call-arg]

    def __init__(self, seed: str, node_id: int) -> None:
        super().__init__(seed)
        self.node_id = node_id

    def randrange(self, start: int, stop: Optional[int] = None, step: int = 1) -> int:
        if stop is not None or step != 1 or start < 4:
            return super().randrange(start, stop, step)
        half = start // 2
        return (0 if self.node_id % 2 else start - half) + super().randrange(half)
