"""A tiny synchronous network of RawNodes for the core's unit tests.

Not the simulator (``rsm_shm.raft.sim``): no randomness beyond the nodes' seeded rngs,
messages delivered in FIFO order by :meth:`Net.stabilize`, explicit drop filters.
Every message goes through the binary codec, as on a real wire.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Set, Tuple

from rsm_shm.raft.codec import decode_conf_change, decode_message, encode_message
from rsm_shm.raft.core import Config, RawNode
from rsm_shm.raft.storage import MemoryStorage
from rsm_shm.raft.types import EntryType, Message, MessageType, ReadState, Role


def cfg(**kw) -> Config:
    base = dict(election_tick=10, heartbeat_tick=1)
    base.update(kw)
    return Config(**base)


class Net:
    def __init__(self, n: int = 3, config: Optional[Config] = None, seed: int = 0, ids=None) -> None:
        self.ids: List[int] = list(ids) if ids is not None else list(range(1, n + 1))
        self.config = config or cfg()
        self.seed = seed
        self.stores: Dict[int, MemoryStorage] = {i: MemoryStorage() for i in self.ids}
        self.nodes: Dict[int, RawNode] = {}
        for i in self.ids:
            self.nodes[i] = self._make(i, self.ids)
        self.queue: List[Message] = []
        self.applied: Dict[int, List[Tuple[int, int, bytes]]] = {i: [] for i in self.ids}
        self.read_states: Dict[int, List[ReadState]] = {i: [] for i in self.ids}
        self.cut: Set[Tuple[int, int]] = set()
        self.down: Set[int] = set()
        self.filter: Optional[Callable[[Message], bool]] = None  # True = drop
        self.sent: List[Message] = []  # every message delivered or dropped, in order
        self.auto_conf = True

    def _make(self, i: int, voters, config: Optional[Config] = None) -> RawNode:
        return RawNode(i, voters, self.stores[i], config or self.config, random.Random(self.seed * 1000 + i))

    # ---- topology
    def add_node(self, i: int, voters=()) -> RawNode:
        self.ids.append(i)
        self.stores[i] = MemoryStorage()
        self.nodes[i] = self._make(i, voters)
        self.applied[i] = []
        self.read_states[i] = []
        return self.nodes[i]

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.cut.add((i, j))
                self.cut.add((j, i))

    def partition(self, *groups) -> None:
        self.cut = set()
        for g in groups:
            for a in g:
                for j in self.ids:
                    if j not in g:
                        self.cut.add((a, j))
                        self.cut.add((j, a))

    def heal(self) -> None:
        self.cut = set()

    def crash(self, i: int) -> None:
        self.down.add(i)
        self.queue = [m for m in self.queue if m.to != i and m.frm != i]

    def restart(self, i: int, config: Optional[Config] = None) -> RawNode:
        """Rebuild node ``i`` from its storage (what it persisted) with a fresh state
        machine replaying from the snapshot."""
        self.down.discard(i)
        st = self.stores[i]
        self.applied[i] = [("snap", st.snapshot().meta.index, b"")] if st.snapshot().meta.index else []
        self.nodes[i] = self._make(i, self.ids, config)
        return self.nodes[i]

    # ---- driving
    def process(self, i: int) -> None:
        if i in self.down:
            return
        n = self.nodes[i]
        while n.has_ready():
            rd = n.ready()
            st = self.stores[i]
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
                self.applied[i] = [("snap", rd.snapshot.meta.index, rd.snapshot.data)]
            st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            for m in rd.messages:
                self.queue.append(decode_message(encode_message(m)))
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE and self.auto_conf:
                    n.apply_conf_change(decode_conf_change(e.data))
                # conf changes are recorded without data so data() lists commands only
                self.applied[i].append((e.index, e.term, b"" if e.type == EntryType.CONF_CHANGE else e.data))
            self.read_states[i].extend(rd.read_states)
            n.advance(rd)

    def deliver(self, m: Message) -> None:
        self.sent.append(m)
        if (m.frm, m.to) in self.cut or m.to in self.down or m.to not in self.nodes:
            return
        if self.filter is not None and self.filter(m):
            return
        self.nodes[m.to].step(m)
        self.process(m.to)

    def stabilize(self, limit: int = 200000) -> int:
        for i in self.ids:
            self.process(i)
        k = 0
        while self.queue and k < limit:
            q, self.queue = self.queue, []
            for m in q:
                k += 1
                self.deliver(m)
        return k

    def take(self) -> List[Message]:
        """Process every node and return (without delivering) the queued messages."""
        for i in self.ids:
            self.process(i)
        q, self.queue = self.queue, []
        return q

    def tick(self, n: int = 1, who=None) -> None:
        for _ in range(n):
            for i in who or self.ids:
                if i in self.down:
                    continue
                self.nodes[i].tick()
                self.process(i)
            self.stabilize()

    def elect(self, i: int) -> None:
        self.nodes[i].campaign()
        self.stabilize()
        assert self.role(i) == Role.LEADER, self.nodes[i].status()

    # ---- observations
    def role(self, i: int) -> Role:
        return self.nodes[i].status().role

    def leaders(self) -> List[int]:
        return [i for i in self.ids if i not in self.down and self.role(i) == Role.LEADER]

    def status(self, i: int):
        return self.nodes[i].status()

    def data(self, i: int) -> List[bytes]:
        return [d for (_, _, d) in self.applied[i] if d and _ != "snap"]

    def count(self, t: MessageType) -> int:
        return sum(1 for m in self.sent if m.type == t)
