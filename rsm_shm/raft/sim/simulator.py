"""A deterministic simulator for the Raft core: N nodes, logical time, a hostile network.

Every node is a :class:`~rsm_shm.raft.core.RawNode` over a
:class:`~rsm_shm.raft.storage.MemoryStorage` and a tiny hash-chain state machine.  The
simulator handles every Ready with :func:`rsm_shm.raft.driver.handle_ready`, the very
sequence a peer process runs: persist the snapshot, entries and hard state, then send the
messages, then apply the committed entries (conf changes through ``apply_conf_change``)
and serve reads, then ``advance``.  Every message is encoded to bytes and decoded again
on delivery, so the codec is exercised by every run.

Nothing happens unless an *action* asks for it; actions are plain tuples so that a run
can be recorded, replayed and shrunk (:mod:`rsm_shm.raft.sim.fuzz`):

=========================  ==========================================================
``("tick", id)``           one logical clock tick of node ``id``
``("tick_all",)``          one tick of every live node (synchronised clocks)
``("ready", id)``          handle node ``id``'s pending Ready (persist, send, apply)
``("deliver", f, t, k)``   deliver the k-th oldest in-flight message from f to t
                           (k > 0 reorders; not delivering a message delays it)
``("drop", f, t, k)``      lose that message;  ``("dup", f, t, k)``: duplicate it
``("propose", id)``        propose a fresh, unique command at node ``id``
``("read", id)``           start a ReadIndex read with a fresh context at ``id``
``("conf", id, changes)``  propose a ConfChange (``changes`` as in ConfChange)
``("transfer", id, to)``   ask node ``id`` to transfer leadership to ``to``
``("campaign", id)``       make node ``id`` campaign now
``("forget", id)``         node ``id`` forgets its leader (``RawNode.forget_leader``)
``("compact", id)``        the application of ``id`` snapshots at its applied index and
                           compacts its log there
``("crash", id)``          node ``id`` loses everything not persisted (its RawNode, its
                           state machine and any Ready not yet handled)
``("restart", id)``        rebuild node ``id`` from its storage
``("partition", groups)``  cut every link between different groups (tuple of tuples)
``("cut", f, t)``          cut the link from f to t only (asymmetric partition)
``("heal",)``              remove every cut
=========================  ==========================================================

``("conf", ...)`` that adds an unknown id first creates that server.  A server joining a
running cluster starts from a copy of the most advanced live member's snapshot (taken at
its applied index), as a real deployment seeds a new server: the configuration is not
in the log (bootstrap voters are given to ``RawNode``), so an empty newcomer could not
learn it.  A crash drops the messages in flight to the crashed node.

Safety (:mod:`rsm_shm.raft.sim.check`) is checked after every action; a breach raises
:class:`~rsm_shm.raft.sim.check.SafetyViolation`.  :meth:`Simulator.check_liveness` heals
everything and checks liveness.  The same seed and the same actions always produce the
same run: :attr:`Simulator.digest` hashes the whole transcript.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ..codec import decode_message
from ..core import NotLeaderError, ProposalDroppedError, RawNode, Status
from ..driver import handle_ready
from .check import SafetyChecker
from .formatting import format_conf_change, format_entry, format_message
from .formatting import short as _short
from .liveness import LivenessViolation, check_liveness
from .node import SimNode, SimOptions, SimReadyIO, term_of
from .world import InFlight, Network, SkewedTimeouts, StateMachine
from ..storage import MemoryStorage
from ..types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    HardState,
    Message,
    MessageType,
    Role,
    Snapshot,
)

__all__ = [
    "SimOptions",
    "Simulator",
    "SimNode",
    "Network",
    "StateMachine",
    "LivenessViolation",
    "format_message",
    "format_entry",
]

#: One step of a run: ``(kind, *arguments)`` as in the table above.
Action = Tuple[Any, ...]

# Upper bound of delivery/Ready rounds in one stabilize(); a correct core quiesces long
# before (no ticks means no new heartbeats), so hitting it means a message storm.
MAX_STABILIZE_ROUNDS = 10_000


class Simulator:
    """A cluster of simulated nodes driven by actions (see the module docstring).

    ``out`` collects transcript lines (messages delivered, role changes, applied entries,
    read results...); :attr:`digest` hashes every line ever emitted, for replay checks.
    Pass ``verbose=False`` to keep only the digest (faster, for the fuzzer).
    """

    def __init__(
        self,
        seed: int = 0,
        options: Optional[SimOptions] = None,
        checker: Optional[SafetyChecker] = None,
        verbose: bool = True,
    ) -> None:
        self.seed = seed
        self.options = options or SimOptions()
        self.checker = checker or SafetyChecker(check_reads=not self.options.lease_reads)
        self.verbose = verbose
        self.nodes: Dict[int, SimNode] = {}
        self.net = Network()
        self.out: List[str] = []
        self._hash = hashlib.sha256()
        self.actions: List[Action] = []  # applied actions, for replay and shrinking
        self.steps = 0
        self._prop_seq = 0
        self._read_seq = 0
        self.accepted: List[Tuple[int, int, bytes]] = []  # (node, index, data) proposals accepted
        self.applied_count = 0  # entries applied, summed over nodes
        self.sent_by_type: Counter[str] = Counter()  # messages sent, by MessageType name
        # (node, snapshot index) of complete snapshots delivered to a node outside their
        # configuration, which the core refuses as etcd does (for diagnosing stalls)
        self.refused_snapshots: Set[Tuple[int, int]] = set()

    # ---------------------------------------------------------------- transcript
    def emit(self, line: str, shown: Optional[str] = None) -> None:
        """Add ``line`` to the transcript hash and (when verbose) to ``out``; ``shown``
        replaces it in ``out`` when the readable form is too costly to hash every time."""
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        if self.verbose:
            self.out.append(line if shown is None else shown)

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    # ------------------------------------------------------------------- building
    def add_nodes(self, n: int, voters: Optional[Sequence[int]] = None) -> List[int]:
        """Create ``n`` new nodes with the next free ids that bootstrap a cluster whose
        voters are ``voters`` (default: the new nodes themselves); see :meth:`add_node`
        for a node joining an existing cluster."""
        start = max(self.nodes, default=0) + 1
        ids = list(range(start, start + n))
        boot = tuple(voters) if voters is not None else tuple(ids)
        for i in ids:
            self.add_node(i, boot)
        return ids

    def add_node(self, nid: int, voters: Sequence[int] = (), storage: Optional[MemoryStorage] = None) -> SimNode:
        """Create node ``nid``.  A node that bootstraps a cluster names its ``voters``; a
        node joining an existing cluster (``voters`` empty) starts from a copy of the most
        advanced snapshot of a live member, as a real deployment seeds a new server, so it
        learns the configuration in force rather than guessing it."""
        if nid < 1 or nid in self.nodes:
            raise ValueError(f"node id {nid} is invalid or already used")
        if storage is None:
            storage = MemoryStorage() if voters else self._seed_storage()
        node = SimNode(nid, tuple(voters), storage, StateMachine(self.options.snapshot_padding))
        self.nodes[nid] = node
        self._start(node)
        return node

    def _seed_storage(self) -> MemoryStorage:
        donors = [n for n in self.nodes.values() if n.alive]
        if not donors:
            raise ValueError("no live node to seed a joining node from")
        donor = max(donors, key=lambda n: (n.sm.index, -n.id))
        snap = donor.storage.snapshot()
        if donor.sm.index > snap.meta.index:
            snap = self._take_snapshot(donor, donor.sm.index)
        st = MemoryStorage()
        if snap.meta.index > 0:
            st.apply_snapshot(snap)
            st.set_hard_state(HardState(term=snap.meta.term, vote=0, commit=snap.meta.index))
        return st

    def _start(self, node: SimNode) -> None:
        snap = node.storage.snapshot()
        node.sm = StateMachine(self.options.snapshot_padding)
        node.sm.restore(snap.data, snap.meta.index)
        if snap.meta.index > 0:
            node.conf_state = snap.meta.conf_state
        else:
            node.conf_state = ConfState(voters=tuple(sorted(node.boot_voters)))
        node.conf_history = [(snap.meta.index, node.conf_state)]
        node.incarnation += 1
        node.pending_reads = []
        node.last_role = None
        key = f"{self.seed}:{node.id}:{node.incarnation}"
        rng = SkewedTimeouts(key, node.id) if self.options.skewed_timeouts else random.Random(key)
        node.raw = RawNode(node.id, node.boot_voters, node.storage, self.options.config(snap.meta.index), rng)
        self.checker.node_restarted(node.id, snap.meta.index)

    # ------------------------------------------------------------------- actions
    def do(self, action: Action) -> bool:
        """Perform one action; return False (and do nothing) when it does not apply in
        the current state (e.g. delivering a message that is not there).  Safety is
        checked afterwards."""
        kind = action[0]
        fn = getattr(self, "_act_" + kind, None)
        if fn is None:
            raise ValueError(f"unknown simulator action {action!r}")
        ok = fn(*action[1:])
        if ok:
            self.steps += 1
            self.actions.append(action)
            self.check()
        return bool(ok)

    def _live(self, nid: int) -> Optional[SimNode]:
        n = self.nodes.get(nid)
        return n if n is not None and n.alive else None

    def _act_tick(self, nid: int) -> bool:
        n = self._live(nid)
        if n is None:
            return False
        n.running.tick()
        return True

    def _act_tick_all(self) -> bool:
        for n in self.nodes.values():
            if n.alive:
                n.running.tick()
        return True

    def _act_ready(self, nid: int) -> bool:
        n = self._live(nid)
        if n is None or not n.running.has_ready():
            return False
        self.handle_ready(n)
        return True

    def _act_deliver(self, frm: int, to: int, k: int = 0) -> bool:
        item = self.net.find(frm, to, k)
        if item is None:
            return False
        self.net.remove(item)
        self._deliver(item)
        return True

    def _act_drop(self, frm: int, to: int, k: int = 0) -> bool:
        item = self.net.find(frm, to, k)
        if item is None:
            return False
        self.net.remove(item)
        self.net.dropped += 1
        self.emit(f"drop {format_message(decode_message(item.data))}")
        return True

    def _act_dup(self, frm: int, to: int, k: int = 0) -> bool:
        item = self.net.find(frm, to, k)
        if item is None:
            return False
        self.net.send(item.frm, item.to, item.data)
        self.emit(f"dup {format_message(decode_message(item.data))}")
        return True

    def _act_propose(self, nid: int, data: Optional[bytes] = None) -> bool:
        n = self._live(nid)
        if n is None:
            return False
        if data is None:
            self._prop_seq += 1
            data = b"p%d" % self._prop_seq
            self.checker.proposed_once(data)
        try:
            idx = n.running.propose(data)
        except NotLeaderError as e:
            self.emit(f"{nid} propose {_short(data)}: not leader (hint {e.leader_hint})")
            return True
        except ProposalDroppedError as e:
            self.emit(f"{nid} propose {_short(data)}: dropped ({e})")
            return True
        self.accepted.append((nid, idx, data))
        self.emit(f"{nid} propose {_short(data)}: index {idx}")
        return True

    def _act_read(self, nid: int, ctx: Optional[bytes] = None) -> bool:
        n = self._live(nid)
        if n is None:
            return False
        if ctx is None:
            self._read_seq += 1
            ctx = b"r%d" % self._read_seq
        self.checker.read_issued(ctx)
        try:
            n.running.read_index(ctx)
        except (NotLeaderError, ProposalDroppedError) as e:
            self.emit(f"{nid} read-index {_short(ctx)}: refused ({type(e).__name__})")
            return True
        self.emit(f"{nid} read-index {_short(ctx)}")
        return True

    def _act_conf(self, nid: int, changes: Sequence[Tuple[int, int]], transition: int = 0) -> bool:
        n = self._live(nid)
        if n is None:
            return False
        cc = ConfChange(tuple((ConfChangeType(t), i) for t, i in changes), b"", transition)
        # A node added by this change must exist to catch up; it joins as a fresh server.
        for t, i in cc.changes:
            if t != ConfChangeType.REMOVE_NODE and i not in self.nodes:
                self.add_node(i)
                self.emit(f"new node {i}")
        try:
            idx = n.running.propose_conf_change(cc)
        except (NotLeaderError, ProposalDroppedError, ValueError) as e:
            self.emit(f"{nid} conf-change {format_conf_change(cc)}: refused ({type(e).__name__}: {e})")
            return True
        self.emit(f"{nid} conf-change {format_conf_change(cc)}: index {idx}")
        return True

    def _act_transfer(self, nid: int, to: int) -> bool:
        n = self._live(nid)
        if n is None:
            return False
        try:
            n.running.transfer_leadership(to)
        except (NotLeaderError, ValueError) as e:
            self.emit(f"{nid} transfer-leadership to {to}: refused ({type(e).__name__})")
            return True
        self.emit(f"{nid} transfer-leadership to {to}")
        return True

    def _act_campaign(self, nid: int) -> bool:
        n = self._live(nid)
        if n is None:
            return False
        n.running.campaign()
        return True

    def _act_forget(self, nid: int) -> bool:
        n = self._live(nid)
        if n is None:
            return False
        lead = n.running.leadership().leader
        n.running.forget_leader()
        if n.running.leadership().leader != lead:
            self.emit(f"{nid} forgets leader {lead}")
        return True

    def _act_compact(self, nid: int, index: Optional[int] = None) -> bool:
        n = self.nodes.get(nid)
        if n is None or not n.alive:
            return False
        idx = n.sm.index if index is None else index
        if idx <= n.storage.snapshot().meta.index or idx > n.sm.index:
            return False
        self._take_snapshot(n, idx)
        n.storage.compact(idx)
        n.sm.prune(idx)
        self.emit(f"{nid} compact {idx}: log now {n.storage.first_index()}..{n.storage.last_index()}")
        return True

    def _take_snapshot(self, n: SimNode, idx: int) -> Snapshot:
        return n.storage.create_snapshot(idx, n.conf_at(idx), n.sm.snapshot_data(idx))

    def _act_crash(self, nid: int) -> bool:
        n = self._live(nid)
        if n is None:
            return False
        n.raw = None
        # Messages on their way to a dead process are lost with its connections; the ones
        # it sent before dying are already out and stay in flight.
        lost = [f for f in self.net.queue if f.to == nid]
        for f in lost:
            self.net.remove(f)
        self.net.dropped += len(lost)
        self.emit(f"crash {nid}" + (f" ({len(lost)} messages to it lost)" if lost else ""))
        return True

    def _act_restart(self, nid: int) -> bool:
        n = self.nodes.get(nid)
        if n is None or n.alive:
            return False
        self._start(n)
        hs = n.storage.hard_state
        self.emit(
            f"restart {nid}: term={hs.term} vote={hs.vote} commit={hs.commit} "
            f"log={n.storage.first_index()}..{n.storage.last_index()} applied={n.sm.index}"
        )
        return True

    def _act_partition(self, groups: Tuple[Tuple[int, ...], ...]) -> bool:
        self.net.heal()
        self.net.partition(groups, self.nodes)
        self.emit("partition " + " / ".join(" ".join(str(i) for i in g) for g in groups))
        return True

    def _act_cut(self, frm: int, to: int) -> bool:
        """A one-way cut: messages from ``frm`` to ``to`` are lost, the reverse direction
        still works (an asymmetric partition)."""
        if frm == to or (frm, to) in self.net.cut:
            return False
        self.net.cut.add((frm, to))
        self.emit(f"cut {frm}->{to}")
        return True

    def _act_heal(self) -> bool:
        self.net.heal()
        self.emit("heal")
        return True

    # ---------------------------------------------------------------- the runtime
    def _deliver(self, item: InFlight) -> None:
        m = decode_message(item.data)
        n = self._live(item.to)
        if n is None or not self.net.connected(item.frm, item.to):
            self.net.dropped += 1
            self.emit(f"lost {format_message(m)}")
            return
        self.emit(format_message(m))
        if m.type == MessageType.SNAP and m.snapshot is not None:
            self._note_snapshot_to_outsider(n.id, m, m.snapshot)
        n.running.step(m)

    def _note_snapshot_to_outsider(self, nid: int, m: Message, snap: Snapshot) -> None:
        cs = snap.meta.conf_state
        if m.snap_offset + len(snap.data) >= m.snap_total and nid not in (
            set(cs.voters) | set(cs.learners) | set(cs.voters_outgoing) | set(cs.learners_next)
        ):
            self.refused_snapshots.add((nid, snap.meta.index))

    def handle_ready(self, n: SimNode) -> None:
        """Handle one Ready of ``n`` with the runtime's own sequence
        (:func:`rsm_shm.raft.driver.handle_ready`), observing every step."""
        handle_ready(n.running, SimReadyIO(self, n))
        st = n.storage
        hs = st.hard_state
        self.checker.observe_commit(n.id, hs.term, min(hs.commit, st.last_index()), term_of(st))

    def _serve_reads(self, n: SimNode) -> None:
        keep = []
        for rs in n.pending_reads:
            if rs.index <= n.sm.index:
                self.checker.read_returned(n.id, rs.index, rs.context)
                self.emit(f"{n.id} read {_short(rs.context)} at index {rs.index}: applied={n.sm.index}")
            else:
                keep.append(rs)
        n.pending_reads = keep

    # ------------------------------------------------------------------- checking
    def check(self) -> None:
        """Check the per-step safety properties over every live node."""
        ck = self.checker
        for nid in sorted(self.nodes):
            n = self.nodes[nid]
            if n.raw is None:
                continue
            # leadership(), not status(): the full record would dominate checking
            # every node after every step
            term, role, _ = n.running.leadership()
            ck.observe_role(nid, term, role)
            if role == Role.LEADER and not n.running.has_ready():
                ck.check_leader_log(nid, term, term_of(n.storage), n.storage.first_index() - 1)

    # ------------------------------------------------------------- conveniences
    def live_ids(self) -> List[int]:
        return [i for i in sorted(self.nodes) if self.nodes[i].alive]

    def status(self, nid: int) -> Status:
        n = self._live(nid)
        if n is None:
            raise ValueError(f"node {nid} is not running")
        return n.running.status()

    def leader(self) -> Optional[int]:
        """The live leader of the highest term, if any."""
        best = None
        for nid in self.live_ids():
            st = self.nodes[nid].running.status()
            if st.role == Role.LEADER and (best is None or st.term > best[0]):
                best = (st.term, nid)
        return None if best is None else best[1]

    def stabilize(self, ids: Optional[Iterable[int]] = None, max_rounds: int = MAX_STABILIZE_ROUNDS) -> int:
        """Handle every Ready and deliver every message (oldest first) among ``ids`` (all
        nodes by default) until nothing is left to do; messages to other nodes stay in
        flight.  Returns the number of actions taken.  Raises LivenessViolation if the
        cluster does not quiesce (a message storm without ticks is a bug)."""
        only = None if ids is None else set(ids)
        done = 0
        for _ in range(max_rounds):
            progressed = False
            for nid in sorted(self.nodes):
                if only is not None and nid not in only:
                    continue
                n = self.nodes[nid]
                if n.alive and n.running.has_ready():
                    self.do(("ready", nid))
                    done += 1
                    progressed = True
            batch = [f for f in self.net.queue if only is None or (f.to in only and f.frm in only)]
            for f in batch:
                # Delivered in queue order, f is always the oldest left from f.frm to f.to.
                self.do(("deliver", f.frm, f.to, 0))
                done += 1
                progressed = True
            if not progressed:
                return done
        raise LivenessViolation("quiescence", f"no quiescence after {max_rounds} rounds of stabilize")

    def members(self) -> List[int]:
        """Voters and learners of the configuration of the current leader (or of the
        lowest live node when there is no leader)."""
        lid = self.leader()
        ref = self.nodes[lid] if lid is not None else self.nodes[self.live_ids()[0]]
        cs = ref.running.status().conf_state
        return sorted(set(cs.voters) | set(cs.voters_outgoing) | set(cs.learners) | set(cs.learners_next))

    # ------------------------------------------------------------------ liveness
    def check_liveness(self, proposals: int = 3) -> None:
        """Restart every crashed node, heal the network, and require on a perfect
        network: a leader within LEADER_ELECTION_TIMEOUTS election timeouts that applies
        its whole log (pending conf changes) within COMMIT_TIMEOUTS more, then
        ``proposals`` fresh proposals committed and applied by every member within
        COMMIT_TIMEOUTS more.  Raises LivenessViolation otherwise (see :mod:`.liveness`)."""
        check_liveness(self, proposals)
