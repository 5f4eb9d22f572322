"""The simulated servers: their options, their durable and volatile parts, and the
:class:`~rsm_shm.raft.driver.ReadyIO` through which the simulator handles a node's Ready
(persist to MemoryStorage, send over the simulated network, apply to the hash-chain state
machine), reporting every step to the safety checker and the transcript."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Set, TYPE_CHECKING, Tuple

from ..codec import encode_message
from ..config import Config, ReadOnlyOption
from ..storage import CompactedError, MemoryStorage, UnavailableError
from ..types import LOCAL_MESSAGES, ConfState, Entry, Message, ReadState, Ready, Role, Snapshot
from .check import SafetyViolation
from .formatting import format_conf_state, format_entry, format_message
from .world import StateMachine

if TYPE_CHECKING:  # pragma: no cover
    from ..core import RawNode
    from .simulator import Simulator

__all__ = ["SimNode", "SimOptions", "SimReadyIO", "term_of"]


@dataclass
class SimOptions:
    """Knobs of the simulated cluster (passed to every node's core Config)."""

    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    lease_reads: bool = False
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_uncommitted_size: int = 0
    snapshot_chunk_size: int = 64 * 1024
    snapshot_padding: int = 0  # extra bytes in each app snapshot (to force chunking)
    skewed_timeouts: bool = False  # odd ids time out early, even ids late (world.SkewedTimeouts)

    def config(self, applied: int) -> Config:
        read_only = ReadOnlyOption.LEASE_BASED if self.lease_reads else ReadOnlyOption.SAFE
        return Config(
            election_tick=self.election_tick,
            heartbeat_tick=self.heartbeat_tick,
            max_size_per_msg=self.max_size_per_msg,
            max_inflight_msgs=self.max_inflight_msgs,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            read_only_option=read_only,
            max_uncommitted_size=self.max_uncommitted_size,
            snapshot_chunk_size=self.snapshot_chunk_size,
            applied=applied,
        )


@dataclass
class SimNode:
    """One simulated server: its stable storage survives crashes, the rest does not."""

    id: int
    boot_voters: Tuple[int, ...]
    storage: MemoryStorage
    sm: StateMachine
    raw: Optional[RawNode] = None  # None while crashed
    conf_state: ConfState = field(default_factory=ConfState)
    # (index, conf state in force from that index on), to snapshot at a past index
    conf_history: List[Tuple[int, ConfState]] = field(default_factory=list)
    incarnation: int = 0
    pending_reads: List[ReadState] = field(default_factory=list)
    last_role: Optional[Tuple[int, int]] = None  # (leader, role) last reported

    @property
    def alive(self) -> bool:
        return self.raw is not None

    @property
    def running(self) -> RawNode:
        """The RawNode of a running node (RuntimeError if it crashed)."""
        raw = self.raw
        if raw is None:
            raise RuntimeError(f"simulated node {self.id} is crashed")
        return raw

    def conf_at(self, index: int) -> ConfState:
        cs = self.conf_history[0][1] if self.conf_history else self.conf_state
        for i, c in self.conf_history:
            if i <= index:
                cs = c
        return cs


def term_of(storage: MemoryStorage) -> Callable[[int], Optional[int]]:
    def term_of(i: int) -> Optional[int]:
        try:
            return storage.term(i)
        except (CompactedError, UnavailableError):
            return None

    return term_of


class SimReadyIO:
    """The simulator's :class:`~rsm_shm.raft.driver.ReadyIO` for one Ready of one node:
    MemoryStorage, the simulated network and the hash-chain state machine, with every
    step reported to the safety checker and the transcript."""

    def __init__(self, sim: "Simulator", node: SimNode) -> None:
        self.sim = sim
        self.node = node
        self.applied: List[Entry] = []

    def persist(self, rd: Ready) -> None:
        sim, n, st = self.sim, self.node, self.node.storage
        nid = n.id
        # persist() comes first, so the role change is reported before anything else
        if rd.soft_state is not None:
            key = (rd.soft_state.leader, int(rd.soft_state.role))
            if key != n.last_role:
                n.last_role = key
                sim.emit(f"{nid} is {Role(rd.soft_state.role).name} (leader {rd.soft_state.leader})")
        snap = rd.snapshot
        if snap is not None and not snap.is_empty():
            st.apply_snapshot(snap)
            meta = snap.meta
            sim.emit(f"{nid} installs snapshot {meta.term}/{meta.index} {format_conf_state(meta.conf_state)}")
        if rd.entries:
            st.append(rd.entries)
            sim.checker.observe_persisted(nid, list(rd.entries), term_of(st))
        if rd.hard_state is not None:
            sim.checker.observe_hard_state(nid, st.hard_state, rd.hard_state)
            st.set_hard_state(rd.hard_state)

    def send(self, messages: Sequence[Message]) -> Set[int]:
        sim, nid = self.sim, self.node.id
        unreachable: Set[int] = set()
        for m in messages:
            if m.type in LOCAL_MESSAGES:
                raise SafetyViolation("wire", f"node {nid} asked to send local message {m!r}")
            if m.frm != nid:
                raise SafetyViolation("wire", f"node {nid} sends a message claiming to be from {m.frm}: {m!r}")
            sim.sent_by_type[m.type.name] += 1
            if not sim.net.send(nid, m.to, encode_message(m)):
                sim.emit(f"cut {format_message(m)}")
                unreachable.add(m.to)
        return unreachable

    def restore(self, snap: Snapshot) -> None:
        n = self.node
        n.sm.restore(snap.data, snap.meta.index)
        n.conf_state = snap.meta.conf_state
        n.conf_history = [(snap.meta.index, n.conf_state)]
        self.sim.checker.observe_snapshot_applied(n.id, snap.meta.index)

    def apply(self, e: Entry, conf_state: Optional[ConfState]) -> None:
        sim, n = self.sim, self.node
        sim.checker.observe_apply(n.id, e)
        n.sm.apply(e)
        sim.applied_count += 1
        self.applied.append(e)
        if conf_state is not None:
            n.conf_state = conf_state
            n.conf_history.append((e.index, conf_state))
            sim.emit(f"{n.id} conf {format_conf_state(conf_state)}")

    def read_states(self, states: Sequence[ReadState]) -> None:
        sim, n = self.sim, self.node
        if self.applied:
            # one transcript line for the whole batch (called once, after applying)
            first, last = self.applied[0], self.applied[-1]
            shown = None
            if sim.verbose:
                shown = f"{n.id} applies [" + ", ".join(format_entry(e) for e in self.applied) + "]"
            sim.emit(f"{n.id} applies {first.index}..{last.index} -> {n.sm.digest.hex()[:8]}", shown)
        n.pending_reads.extend(states)
        sim._serve_reads(n)
