"""The peer process: one Raft node, its log, the state machine, and a plain loop.

Started by :class:`~rsm_shm.cluster.LocalCluster` (never by hand) as
``python -m rsm_shm.cluster.peer --cluster NAME --id N``: a fresh interpreter via
``subprocess.Popen`` (no fork from a threaded process).  It reads everything else from
the control block and the data directory's ``cluster.json``.

The loop, one turn at a time (no threads):

1. take every envelope waiting in the inbox ring (one ``get`` that waits at most until
   the next tick, then one ``get_many`` for the rest);
2. Raft messages are stepped into the node; client proposals and reads are collected;
3. tick if the tick is due.  Ticks come from this process's own monotonic clock, and a
   late tick is never caught up (after SIGSTOP/SIGCONT the peer ticks once, not a burst
   of missed ticks that would fire an election at once);
4. a leader proposes all collected commands as **one** log entry (one fsync and one
   AppendEntries per follower serve the whole batch) and asks one ReadIndex for all
   collected reads; a follower answers "not the leader" with its leader hint;
5. every Ready is handled by :func:`rsm_shm.raft.driver.handle_ready` (persist, then
   send, then apply, then serve reads), replies are sent in one envelope per client,
   a snapshot is taken once ``snapshot_commands`` commands or ``snapshot_bytes`` bytes
   were applied since the last one, and the status record is republished.

Sending goes through a :class:`~rsm_shm.cluster.transport.Transport` (by default the
:class:`~rsm_shm.cluster.transport.RingTransport`: straight into the other peers' inbox
rings) and never blocks: a full, missing or shut-down inbox drops the envelope and
counts it (Raft tolerates loss; the peer is reported unreachable so the leader probes
it).  Links cut in the control block and the drop rate are applied here, by the sender,
whatever the transport.
Garbage in the inbox is dropped and counted (``msgs_bad``); the peer keeps running.

Early failover.  A transport that sees a peer's connection break tells the loop
(:meth:`Peer.peer_lost`, thread-safe); when that peer is the leader, the loop forgets it
(:meth:`~rsm_shm.raft.core.RawNode.forget_leader`) and campaigns after a few heartbeat
intervals instead of an election timeout (the gRPC transport does this).  Rings have no
connection to lose, but peers on one machine see each other's processes: on every tick,
and when a pre-vote arrives, a follower of a ring cluster checks that its leader's
process (pid and start time from the leader's status record) still lives
(:class:`~rsm_shm.cluster.status.LeaderWatch`); if it died, the follower forgets it and
the first surviving voter by id campaigns at once, the next one two heartbeat
intervals later, and so on (they do not split the vote).  Checking on a pre-vote's
arrival is what lets that first campaign win at once: the other followers forget the
dead leader before they answer, instead of ignoring the pre-vote while they still count
its lease.

SIGTERM and SIGINT stop the peer cleanly at the end of the current turn (it publishes
role "stopped" and closes its storage).  It also exits by itself when the process that
manages the cluster has died and the control segment is gone.
"""

from __future__ import annotations

import argparse
import collections
import os
import queue
import random
import signal
import struct
import sys
import time
from bisect import bisect_right
from collections import OrderedDict
from itertools import accumulate, repeat
from operator import itemgetter
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple, cast

from .. import _proc
from ..ring import Ring
from ..segment import shm_path
from ..raft.codec import DecodeError, decode_message, encode_message
from ..raft.core import Config, NotLeaderError, ProposalDroppedError, RawNode
from ..raft.driver import handle_ready
from ..raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
)
from . import envelope as ev
from .control import ControlBlock, LinkView
from .layout import (
    MAX_ENTRY_BYTES,
    MAX_RESULT_BYTES,
    MAX_SIZE_PER_MSG,
    RING_SHUTDOWN,
    Timing,
    inbox_name,
    read_config,
)
from .statemachine import (
    BatchWriter,
    NewerBatchError,
    Sessions,
    decode_runs,
    load_state_machine,
    OP_OVERHEAD,
    RUN_HEADER,
)
from .status import LeaderWatch, StatusRecord, status_segment_name
from .storage_factory import open_storage
from .transport import RingTransport, Transport

# What the peer holds for a client between taking a request and answering it.
_Proposals = Tuple[str, List[ev.ProposeRequest]]  # (reply_to, requests) of one envelope
_Read = Tuple[str, int, bytes]  # (reply_to, rid, query)
_Waiter = Tuple[str, int]  # (reply_to, rid)
_Meta = Tuple[str, int, int, int]  # (reply_to, rid, session, seq) of a proposed op

_ShutDown = RING_SHUTDOWN
_MAX_BATCH = 4096  # envelopes taken from the inbox per turn
_REPLY_RING_CACHE = 32  # client reply rings kept open (their touched pages count in RSS)
_OWNER_CHECK_TICKS = 50  # how often (in ticks) to check that the manager lives
_CTX = struct.Struct(">Q")
_ENV_HEADER_SIZE = ev.HEADER_SIZE
_ENV_FROM = struct.Struct("<IQ")  # an envelope's sender and cluster id, at offset 4
_FULL_STATUS_EVERY = 0.1  # seconds between full status records when nothing moved


class Peer:
    """One peer process (see the module docstring).  Also usable in-process by tests."""

    def __init__(
        self, cluster: str, peer_id: int, transport: Optional[Transport] = None, data_dir: Optional[str] = None
    ) -> None:
        self.cluster = cluster
        self.id = peer_id
        self.ctl = ControlBlock(cluster)
        rec = self.ctl.load()
        self.cluster_id = int(rec.cluster_id)
        # A served peer (rsm_shm.cluster.serve) names its own; a LocalCluster's peers
        # share the one in the control block.
        self.data_dir = data_dir if data_dir is not None else ControlBlock.data_dir_of(rec)
        cfg = read_config(self.data_dir)
        if cfg is None or cfg.get("cluster_id") != self.cluster_id or cfg.get("name") != cluster:
            raise RuntimeError(f"peer {peer_id}: {self.data_dir} does not hold cluster {cluster!r}")
        self.timing = Timing.from_config(cfg["timing"])
        self.fsync = bool(cfg["fsync"])
        self.sessions = Sessions(load_state_machine(cfg["state_machine"]), self.timing.max_sessions)
        self.store = open_storage(
            os.path.join(self.data_dir, f"peer{peer_id}"), cluster=cluster, node_id=peer_id, fsync=self.fsync
        )
        self.storage = self.store.storage
        self.inbox = Ring(inbox_name(cluster, peer_id), create=False)
        self.status_rec = StatusRecord(status_segment_name(cluster, peer_id), create=False)
        self.links = LinkView(self.ctl, peer_id)
        self.links.refresh()

        snap = self.storage.snapshot()
        self.applied = snap.meta.index
        self.conf_state: ConfState = snap.meta.conf_state
        if snap.meta.index:
            self.sessions.restore(snap.data)
        initial = [int(p) for p in cfg["peers"]]
        voters = initial if peer_id in initial else []
        if not snap.meta.index and voters:
            self.conf_state = ConfState(voters=tuple(sorted(voters)))
        config = Config(
            election_tick=self.timing.election_tick,
            heartbeat_tick=self.timing.heartbeat_tick,
            max_size_per_msg=MAX_SIZE_PER_MSG,
            pre_vote=True,
            check_quorum=True,
            applied=snap.meta.index,
            # Followers learn a new commit index with the next append or heartbeat: per
            # command this spares each follower a wake-up and the leader a response.
            broadcast_commit=False,
        )
        self.node = RawNode(peer_id, voters, self.storage, config, random.Random(os.urandom(16)))
        self.stopping = False
        self.pid = os.getpid()
        self.start_time = _proc.start_time(self.pid)

        # Proposals and reads collected this turn; pending ones waiting for apply.
        self._proposals: List[_Proposals] = []
        self._reads: List[_Read] = []
        self._pending: Dict[Tuple[int, int], _Waiter] = {}  # (session, seq) -> who waits
        self._read_ctx = 0
        self._reads_waiting: Dict[bytes, List[_Read]] = {}  # read_index ctx -> the reads
        self._reads_ready: List[Tuple[int, List[_Read]]] = []  # (index, the reads)
        self._admin_pending: Dict[int, _Waiter] = {}  # log index of a conf change -> who waits
        # Called (in this loop) with each applied conf change entry and the configuration
        # it made, and with (None, configuration) after a snapshot is restored: served
        # peers learn their peers' addresses from the changes' context.
        self.on_conf_change: Optional[Callable[[Optional[Entry], ConfState], None]] = None
        self._force_snapshot = False
        # Applied since the last snapshot (restart counts again what it re-applies):
        # client commands and bytes of log entries (see Timing.snapshot_commands).
        self._snap_commands = 0
        self._snap_bytes = 0
        self._replies: Dict[str, List[ev.Reply]] = {}
        self._reply_rings: "OrderedDict[str, Ring]" = OrderedDict()
        self.transport: Transport = transport if transport is not None else RingTransport(cluster)
        self._was_leader = False
        self._raft_hdr = ev.encode_header(ev.KIND_RAFT, peer_id, self.cluster_id)
        self._raft_head = self._raft_hdr[:4]  # magic, version, kind: what every Raft envelope starts with
        self._reply_hdr = ev.encode_header(ev.KIND_REPLY, peer_id, self.cluster_id)
        self._rng = random.Random()
        # counters (published in the status record)
        self.c = dict(
            msgs_in=0,
            msgs_out=0,
            msgs_dropped=0,
            msgs_bad=0,
            snapshots_sent=0,
            snapshots_received=0,
            proposals=0,
            reads=0,
        )
        self._last_contact_ns = 0
        # Peers whose connection to us broke, appended by transport threads (a deque's
        # append and popleft are atomic): read by the loop only (see peer_lost).
        self._lost_peers: Deque[int] = collections.deque()
        self._early_campaign: Optional[Tuple[float, int]] = None  # (monotonic time, term)
        # Ring peers share this machine: a follower sees its leader's process die.  Not
        # for other transports, whose peers may be on other hosts (pids mean nothing).
        self._leader_watch = LeaderWatch(cluster, self.cluster_id) if transport is None else None
        self._status = self.status_rec.new_record()
        self._published: Optional[Tuple[Role, int, int, int]] = None
        self._published_full_ns = 0
        # The full record (counters, match indexes, membership) is rewritten at least this
        # often even when nothing a reader acts on moved: every tick cost an idle peer
        # ~1% of a CPU for counters nobody reads that fast.
        self._publish_ns = int(max(self.timing.tick, _FULL_STATUS_EVERY) * 1e9)
        self._published_cs: Optional[ConfState] = None

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        tick = self.timing.tick
        node = self.node
        inbox = self.inbox
        next_tick = time.monotonic() + tick
        ticks = 0
        self.publish_status(force=True)
        while not self.stopping:
            wait = next_tick - time.monotonic()
            if self._early_campaign is not None:
                wait = min(wait, self._early_campaign[0] - time.monotonic())
            try:
                # The first envelope with the ring's leanest wait (one C call that waits
                # on the futex: get_many's wait costs ~50 us more CPU per wake-up, and a
                # sequential command wakes the leader twice), then whatever else is there.
                batch = [inbox.get(timeout=wait if wait > 0 else 0)]
            except queue.Empty:
                batch = None
            except _ShutDown:
                break
            if batch is not None and inbox.qsize():
                try:
                    batch += inbox.get_many(_MAX_BATCH - 1, 0)
                except (queue.Empty, *_ShutDown):
                    pass  # taken meanwhile (qsize is a snapshot); a shutdown ends the next wait
            if batch:
                self.dispatch(batch)
            if self._lost_peers:
                self._forget_lost_leader()
            early = self._early_campaign
            if early is not None and time.monotonic() >= early[0]:
                self._campaign_early(early[1])
            # Fault injection takes effect within a turn (one C call when nothing changed).
            if self.links.refresh() and self.links.stopping:
                break
            now = time.monotonic()
            if now >= next_tick:
                node.tick()
                ticks += 1
                next_tick += tick
                if next_tick <= now:  # late (paused, starved): resume, never catch up
                    next_tick = now + tick
                if ticks % _OWNER_CHECK_TICKS == 0 and self._orphaned():
                    break
                if self._leader_watch is not None:
                    self.check_leader_process()
            if self._proposals:
                self.flush_proposals()
            if self._reads:
                self.flush_reads()
            while node.has_ready():
                rd = handle_ready(node, self)
                if rd.soft_state is not None:
                    self._on_role(rd.soft_state)
            # Status first: a client that got its answer finds the commit in the record.
            self.publish_status()
            if self._replies:
                self.flush_replies()
            self.maybe_snapshot()
        self.publish_status(force=True, stopped=True)

    def _orphaned(self) -> bool:
        """The manager died and nobody controls the cluster any more."""
        try:
            rec = self.ctl.load()
        except Exception:
            return False
        if ControlBlock.slots_of(rec).get(self.id, (0,))[0] == 0:
            return True
        return not _proc.process_alive(int(rec.owner_pid), int(rec.owner_start)) and not os.path.exists(
            shm_path(self.ctl.name)
        )

    def stop(self, *_args: object) -> None:
        self.stopping = True

    # ------------------------------------------------------------------ failover
    def peer_lost(self, peer_id: int) -> None:
        """The connection from peer ``peer_id`` broke (its process was killed, or the
        network between us failed).  Thread-safe and quick: called by the transport's
        threads, acted on by the loop in its next turn (see _forget_lost_leader)."""
        self._lost_peers.append(peer_id)

    def _forget_lost_leader(self) -> None:
        """If the lost peer is our leader, forget it (RawNode.forget_leader: we grant
        pre-votes at once) and campaign soon, instead of waiting out the election
        timeout.  Safe: the campaign starts with a pre-vote, which every follower still
        hearing from a live leader ignores, and it is called off if that leader's
        heartbeat reaches us first."""
        lost: Set[int] = set()
        while self._lost_peers:
            lost.add(self._lost_peers.popleft())
        term, role, leader = self.node.leadership()
        if role != Role.FOLLOWER or leader not in lost:
            return
        # Not at once: a live leader whose stream was only replaced reaches us within
        # two heartbeat intervals.
        self._forget_leader(term, leader, settle_beats=2)

    def check_leader_process(self) -> None:
        """Ring peers: if our leader's process died, forget the leader and campaign in
        turn (see the module docstring).  A dead process leads nobody: no waiting for
        a heartbeat that might still come, unlike a broken connection."""
        watch = self._leader_watch
        if watch is None:
            return
        term, role, leader = self.node.leadership()
        if role == Role.FOLLOWER and leader and watch.leader_gone(leader, term):
            self._forget_leader(term, leader, settle_beats=0)

    def _forget_leader(self, term: int, leader: int, settle_beats: int) -> None:
        node = self.node
        node.forget_leader()
        if node.leadership().leader != 0:
            return  # refused (lease-based reads)
        # After settle_beats heartbeat intervals the followers take turns by id, two
        # heartbeat intervals apart (far above a message's round trip, even on a busy
        # host), so that they do not campaign together and split the vote: the first
        # whose log is up to date wins.
        others = sorted(v for v in set(self.conf_state.voters) | set(self.conf_state.voters_outgoing) if v != leader)
        if self.id not in others:
            return  # a learner never campaigns
        t = self.timing
        beat = t.tick * t.heartbeat_tick
        turn = others.index(self.id)
        delay = beat * (settle_beats + 2 * turn + (self._rng.random() if settle_beats else 0.0))
        self._early_campaign = (time.monotonic() + delay, term)

    def _campaign_early(self, term: int) -> None:
        self._early_campaign = None
        # Only if nothing happened meanwhile: no leader came back, no election began.
        if self.node.leadership() == (term, Role.FOLLOWER, 0):
            self.node.campaign()

    def close(self) -> None:
        for r in self._reply_rings.values():
            r.close()
        self._reply_rings.clear()
        self.transport.close()
        if self._leader_watch is not None:
            self._leader_watch.close()
        self.store.close()
        self.inbox.close()
        self.status_rec.close()
        self.ctl.close()

    # ------------------------------------------------------------------ input
    def dispatch(self, batch: List[bytes]) -> None:
        c = self.c
        c["msgs_in"] += len(batch)
        cid = self.cluster_id
        node = self.node
        pre_vote = MessageType.PRE_VOTE
        raft_head = self._raft_head
        for b in batch:
            try:
                if b[:4] == raft_head and len(b) >= _ENV_HEADER_SIZE:
                    # A Raft envelope (the steady state): the header checks of
                    # ev.decode_header without its call.
                    kind = ev.KIND_RAFT
                    sender, bcid = _ENV_FROM.unpack_from(b, 4)
                else:
                    kind, sender, bcid = ev.decode_header(b)
                if bcid != cid:
                    raise ev.EnvelopeError("envelope of another cluster incarnation")
                if kind == ev.KIND_RAFT:
                    m = decode_message(b[ev.HEADER_SIZE :])
                    if m.to != self.id or m.frm != sender:
                        raise ev.EnvelopeError("raft message not addressed to this peer or forged sender")
                    self._last_contact_ns = time.monotonic_ns()
                    if m.type == pre_vote:
                        self.check_leader_process()  # grant it at once if our leader died
                    node.step(m)
                elif kind == ev.KIND_PROPOSE:
                    self._proposals.append(ev.decode_propose(b))
                elif kind == ev.KIND_READ:
                    reply_to, reqs = ev.decode_read(b)
                    for rid, q in reqs:
                        self._reads.append((reply_to, rid, q))
                elif kind == ev.KIND_ADMIN:
                    self.admin(*ev.decode_admin(b))
                else:
                    raise ev.EnvelopeError(f"a peer does not take envelopes of kind {kind}")
            except (ev.EnvelopeError, DecodeError):
                c["msgs_bad"] += 1

    def _leader_hint(self) -> bytes:
        return ev.LEADER_HINT.pack(self.node.leadership().leader)

    def _reply(self, reply_to: str, rid: int, status: int, payload: bytes) -> None:
        if len(payload) > MAX_RESULT_BYTES:
            status, payload = ev.ERROR, b"result too large to deliver (%d bytes)" % len(payload)
        self._replies.setdefault(reply_to, []).append((rid, status, payload))

    def flush_proposals(self) -> None:
        envelopes, self._proposals = self._proposals, []
        node = self.node
        if node.leadership().role != Role.LEADER:
            hint = self._leader_hint()
            for reply_to, reqs in envelopes:
                for req in reqs:
                    self._reply(reply_to, req[1], ev.NOT_LEADER, hint)
            return
        # Encoded straight into the batch (no list of op tuples in between): this runs
        # for every command of a pipelined load.
        batch = BatchWriter()
        meta: List[_Meta] = []
        command = ev.OP_COMMAND
        for reply_to, reqs in envelopes:
            if _one_run(reqs):
                batch, meta = self._add_run(batch, meta, reply_to, reqs)
                continue
            for op, rid, session, seq, acked, data in reqs:
                n = OP_OVERHEAD + len(data)
                if batch.size + n > MAX_ENTRY_BYTES:
                    if n + 5 > MAX_ENTRY_BYTES:
                        self._reply(reply_to, rid, ev.BAD_REQUEST, b"command larger than the largest log entry")
                        continue
                    self._propose_batch(batch, meta)
                    batch, meta = BatchWriter(), []
                batch.add(op, session, seq, acked, data)
                meta.append((reply_to, rid, session, seq if op == command else 0))
        if meta:
            self._propose_batch(batch, meta)

    def _add_run(
        self, batch: BatchWriter, meta: List[_Meta], reply_to: str, reqs: List[ev.ProposeRequest]
    ) -> Tuple[BatchWriter, List[_Meta]]:
        """Add an envelope that is one run (see _one_run) to the batch as runs, in C
        loops: the same batches, entries and size limits as command by command."""
        session, acked = reqs[0][2], reqs[0][4]
        data = list(map(_DATA, reqs))
        # costs[i]: what requests 0..i add to a run besides its header.
        costs = list(accumulate(map(_LEN_FIELD.__add__, map(len, data))))
        start, n = 0, len(reqs)
        while start < n:
            done = costs[start - 1] if start else 0
            k = bisect_right(costs, done + MAX_ENTRY_BYTES - batch.size - RUN_HEADER, start) - start
            if k == 0:
                if OP_OVERHEAD + len(data[start]) + 5 > MAX_ENTRY_BYTES:
                    self._reply(reply_to, reqs[start][1], ev.BAD_REQUEST, b"command larger than the largest log entry")
                    start += 1
                    continue
                self._propose_batch(batch, meta)
                batch, meta = BatchWriter(), []
                continue
            part = reqs[start : start + k]
            batch.add_run(session, part[0][3], acked, data[start : start + k])
            meta += zip(repeat(reply_to), map(_RID, part), repeat(session), map(_SEQ, part))
            start += k
        return batch, meta

    def _propose_batch(self, batch: BatchWriter, meta: List[_Meta]) -> None:
        try:
            self.node.propose(batch.finish())
        except NotLeaderError:
            hint = self._leader_hint()
            for reply_to, rid, _s, _q in meta:
                self._reply(reply_to, rid, ev.NOT_LEADER, hint)
            return
        except ProposalDroppedError:
            for reply_to, rid, _s, _q in meta:
                self._reply(reply_to, rid, ev.RETRY, b"proposal dropped (leadership transfer?)")
            return
        self.c["proposals"] += len(meta)
        # pending[(session, seq)] = (reply_to, rid) for each, in C loops
        self._pending.update(zip(map(_META_KEY, meta), map(_META_WAITER, meta)))

    def flush_reads(self) -> None:
        reads, self._reads = self._reads, []
        node = self.node
        if node.leadership().role != Role.LEADER:
            hint = self._leader_hint()
            for reply_to, rid, _q in reads:
                self._reply(reply_to, rid, ev.NOT_LEADER, hint)
            return
        self._read_ctx += 1
        ctx = _CTX.pack(self._read_ctx)
        try:
            node.read_index(ctx)
        except ProposalDroppedError:
            for reply_to, rid, _q in reads:
                self._reply(reply_to, rid, ev.RETRY, b"no leader to serve a read")
            return
        self._reads_waiting[ctx] = reads

    def admin(self, reply_to: str, rid: int, op: int, arg: int, context: bytes = b"") -> None:
        node = self.node
        if node.leadership().role != Role.LEADER:
            self._reply(reply_to, rid, ev.NOT_LEADER, self._leader_hint())
            return
        try:
            if op == ev.ADMIN_TRANSFER:
                node.transfer_leadership(arg)
                self._reply(reply_to, rid, ev.OK, b"")
                return
            if op == ev.ADMIN_SNAPSHOT:
                self._force_snapshot = True
                self._reply(reply_to, rid, ev.OK, b"")
                return
            kinds = {
                ev.ADMIN_ADD_LEARNER: ConfChangeType.ADD_LEARNER,
                ev.ADMIN_PROMOTE: ConfChangeType.ADD_NODE,
                ev.ADMIN_REMOVE: ConfChangeType.REMOVE_NODE,
            }
            if op not in kinds:
                self._reply(reply_to, rid, ev.BAD_REQUEST, b"unknown admin operation %d" % op)
                return
            index = node.propose_conf_change(ConfChange(((kinds[op], arg),), context=context))
            self._admin_pending[index] = (reply_to, rid)
        except NotLeaderError:
            self._reply(reply_to, rid, ev.NOT_LEADER, self._leader_hint())
        except ProposalDroppedError as e:
            self._reply(reply_to, rid, ev.RETRY, str(e).encode())
        except (ValueError, TypeError) as e:  # e.g. a peer id the configuration cannot take
            self._reply(reply_to, rid, ev.BAD_REQUEST, str(e).encode())

    # ------------------------------------------------------------------ ReadyIO
    def persist(self, rd: Ready) -> None:
        snap = rd.snapshot
        if snap is not None and not snap.is_empty():
            self.c["snapshots_received"] += 1
            # The next publish is a full one: the counter shows together with the applied
            # index the snapshot brought (the quick publish updates only the indexes).
            self._published = None
        self.store.save(rd)

    def send(self, messages: Sequence[Message]) -> List[int]:
        unreachable: List[int] = []
        if not messages:
            return unreachable
        links = self.links
        drop = links.drop_rate
        cut = links.cut_mask  # (a bit per peer id: LinkView.is_cut, tested once when 0)
        hdr = self._raft_hdr
        c = self.c
        put = self.transport.send
        snap = MessageType.SNAP
        for m in messages:
            to = m.to
            # Links and the drop rate are the sender's business, for every transport.
            if cut and links.is_cut(to):
                c["msgs_dropped"] += 1
                unreachable.append(to)
                continue
            if drop and self._rng.random() < drop:
                c["msgs_dropped"] += 1
                continue
            if m.type == snap and m.snap_offset == 0:
                c["snapshots_sent"] += 1
            if put(to, hdr + encode_message(m)):
                c["msgs_out"] += 1
            else:
                c["msgs_dropped"] += 1
                unreachable.append(to)
        return unreachable

    def restore(self, snapshot: Snapshot) -> None:
        self.sessions.restore(snapshot.data)
        self.conf_state = snapshot.meta.conf_state
        if self.on_conf_change is not None:
            self.on_conf_change(None, self.conf_state)
        self.applied = snapshot.meta.index
        self._snap_commands = self._snap_bytes = 0

    def apply(self, entry: Entry, conf_state: Optional[ConfState]) -> None:
        self.applied = entry.index
        if entry.type == EntryType.CONF_CHANGE:
            if conf_state is not None:
                if self.on_conf_change is not None:
                    self.on_conf_change(entry, conf_state)
                old, self.conf_state = self.conf_state, conf_state
                if _members(conf_state) - _members(old):
                    # A joining peer has no log and the initial configuration is in no
                    # entry (the founders got it at bootstrap): it must start from a
                    # snapshot that includes its admission.  Every peer compacts now,
                    # so whichever leader serves it later sends one.
                    self._force_snapshot = True
            waiter = self._admin_pending.pop(entry.index, None)
            if waiter is not None:
                self._reply(waiter[0], waiter[1], ev.OK, b"")
            return
        if not entry.data:
            return  # a new leader's no-op
        try:
            runs = decode_runs(entry.data)
        except ValueError:
            self.c["msgs_bad"] += 1
            return
        except NewerBatchError as e:  # stop: skipping it would diverge from newer peers
            raise NewerBatchError(f"peer {self.id}, log entry {entry.index}: {e}") from None
        outcomes = self.sessions.apply_runs(runs, entry.index)
        self._snap_commands += len(outcomes)
        self._snap_bytes += len(entry.data)
        pending = self._pending
        if pending:  # a leader answers the clients whose commands it proposed
            command = ev.OP_COMMAND
            reply = self._reply
            pos = 0
            for op, session, seq, _acked, datas in runs:
                first = seq if op == command else 0  # a REGISTER waits under (session, 0)
                n = len(datas)
                if n == 1:  # a lone command (no loops to set up)
                    waiter = pending.pop((session, first), None)
                    if waiter is not None:
                        status, result = outcomes[pos]
                        reply(waiter[0], waiter[1], status, result)
                    pos += 1
                    continue
                waiters = list(map(pending.pop, zip(repeat(session), range(first, first + n)), repeat(None)))
                outs = outcomes[pos : pos + n]
                pos += n
                if n > 1 and None not in waiters:
                    # The usual run: every command has one waiting client (C loops).
                    found = cast(List[_Waiter], waiters)
                    if len(set(map(_FIRST, found))) == 1 and max(map(len, map(_SECOND, outs))) <= MAX_RESULT_BYTES:
                        self._replies.setdefault(found[0][0], []).extend(
                            zip(map(_SECOND, found), map(_FIRST, outs), map(_SECOND, outs))
                        )
                        continue
                for waiter, (status, result) in zip(waiters, outs):
                    if waiter is not None:
                        reply(waiter[0], waiter[1], status, result)

    def read_states(self, states: Sequence[ReadState]) -> None:
        for rs in states:
            reads = self._reads_waiting.pop(rs.context, None)
            if reads:
                self._reads_ready.append((rs.index, reads))
        if self._reads_ready:
            self._serve_reads()

    def _serve_reads(self) -> None:
        keep = []
        for index, reads in self._reads_ready:
            if index <= self.applied:
                for reply_to, rid, q in reads:
                    status, result = self.sessions.query(q)
                    self._reply(reply_to, rid, status, result)
                self.c["reads"] += len(reads)
            else:
                keep.append((index, reads))
        self._reads_ready = keep

    # ------------------------------------------------------------------ after a Ready
    def _on_role(self, ss: SoftState) -> None:
        leader = ss.role == Role.LEADER
        if self._was_leader and not leader:
            # Deposed: nothing pending here will be answered by this peer; tell clients
            # to go to the new leader at once (they retry with the same sequence number,
            # so a command that does commit is still applied exactly once).
            hint = ev.LEADER_HINT.pack(ss.leader)
            for reply_to, rid in self._pending.values():
                self._reply(reply_to, rid, ev.NOT_LEADER, hint)
            self._pending.clear()
            for reads in self._reads_waiting.values():
                for reply_to, rid, _q in reads:
                    self._reply(reply_to, rid, ev.NOT_LEADER, hint)
            self._reads_waiting.clear()
            for _i, reads in self._reads_ready:
                for reply_to, rid, _q in reads:
                    self._reply(reply_to, rid, ev.NOT_LEADER, hint)
            self._reads_ready = []
            for reply_to, rid in self._admin_pending.values():
                self._reply(reply_to, rid, ev.NOT_LEADER, hint)
            self._admin_pending.clear()
        self._was_leader = leader

    def flush_replies(self) -> None:
        replies, self._replies = self._replies, {}
        hdr = self._reply_hdr
        for reply_to, items in replies.items():
            ring = self._reply_rings.get(reply_to)
            try:
                if ring is None:
                    ring = Ring(reply_to, create=False)
                    self._reply_rings[reply_to] = ring
                    if len(self._reply_rings) > _REPLY_RING_CACHE:
                        self._reply_rings.popitem(last=False)[1].close()
                else:
                    self._reply_rings.move_to_end(reply_to)
                limit = ring.max_message - ev.HEADER_SIZE - 4
                if len(items) == 1 or sum(map(len, map(_THIRD, items))) + 13 * len(items) <= limit:  # one envelope
                    ring.put_nowait(ev.encode_reply(hdr, items))
                    continue
                chunk: List[ev.Reply] = []
                size = 0
                for it in items:
                    n = 13 + len(it[2])
                    if chunk and size + n > limit:
                        ring.put_nowait(ev.encode_reply(hdr, chunk))
                        chunk, size = [], 0
                    chunk.append(it)
                    size += n
                ring.put_nowait(ev.encode_reply(hdr, chunk))
            except (queue.Full, FileNotFoundError, ValueError, *_ShutDown):
                # The client is gone or not reading: it retries (same sequence number) or
                # has given up.  Never block the peer on a client.
                self.c["msgs_dropped"] += 1
                bad = self._reply_rings.pop(reply_to, None)
                if bad is not None:
                    bad.close()
            except Exception:  # e.g. a foreign segment under a client's name
                self.c["msgs_dropped"] += 1

    def maybe_snapshot(self) -> None:
        """Take a snapshot and compact the log once ``snapshot_commands`` commands or
        ``snapshot_bytes`` bytes were applied since the last one (or one is forced: a
        peer joined)."""
        timing = self.timing
        if (
            not self._force_snapshot
            and self._snap_commands < timing.snapshot_commands
            and self._snap_bytes < timing.snapshot_bytes
        ):
            return
        storage = self.storage
        applied = self.applied
        force, self._force_snapshot = self._force_snapshot, False
        if applied <= storage.snapshot_meta.index:
            return
        storage.create_snapshot(applied, self.conf_state, self.sessions.snapshot())
        self._snap_commands = self._snap_bytes = 0
        # Keep a tail for slow followers: snapshot_keep entries, at most snapshot_bytes.
        keep = 0 if force else min(timing.snapshot_keep, applied - storage.first_index() + 1)
        while keep and storage.entries_size(applied - keep + 1, applied + 1) > timing.snapshot_bytes:
            keep //= 2
        compact_to = applied - keep
        if compact_to >= storage.first_index():
            storage.compact(compact_to)

    def publish_status(self, force: bool = False, stopped: bool = False) -> None:
        """Publish the status record: in full when the leadership, the links or the
        membership moved, when forced, or at least every 0.1 s (counters and match
        indexes may lag that much); when only the log moved (commit, applied, last
        index) just those fields and the time are refreshed -- still before any reply
        that depends on them goes out (a client that got its answer finds the commit
        in the record)."""
        r = self.node.raft
        log = r.raft_log
        s = self._status
        now = time.monotonic_ns()
        lkey = (r.role, r.term, r.lead, self.links.seq)
        if (
            not force
            and lkey == self._published
            and self.conf_state is self._published_cs
            and now - self._published_full_ns < self._publish_ns
        ):
            applied = self.applied
            committed = log.committed
            if committed == s.commit and applied == s.applied:
                return
            s.commit = committed
            s.applied = applied
            s.last_index = log.last_index()
            s.updated_ns = now
            self.status_rec.publish(s)
            return
        self._published = lkey
        self._published_cs = self.conf_state
        self._published_full_ns = now
        s.cluster_id = self.cluster_id
        s.id = self.id
        s.pid = self.pid
        s.start_time = self.start_time
        s.role = 15 if stopped else int(r.role)
        s.term = r.term
        s.leader = r.lead
        s.commit = log.committed
        s.applied = self.applied
        s.first_index = self.storage.first_index()
        s.last_index = log.last_index()
        s.updated_ns = now
        s.last_contact_ns = self._last_contact_ns
        cs = self.conf_state
        s.voters = sum(1 << (v - 1) for v in set(cs.voters) | set(cs.voters_outgoing) if 1 <= v <= 64)
        s.learners = sum(1 << (v - 1) for v in set(cs.learners) | set(cs.learners_next) if 1 <= v <= 64)
        for k, v in self.c.items():
            setattr(s, k, v)
        s.fsyncs = self.store.fsyncs
        s.fsync_ns = self.store.fsync_ns
        n = 0
        if r.role == Role.LEADER:
            for pid, pr in r.trk.visit():
                if pid != self.id and n < 16:
                    s.match_id[n] = pid
                    s.match_index[n] = pr.match
                    n += 1
        s.nmatch = n
        s.control_seq = self.links.seq
        self.status_rec.publish(s)


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)
_THIRD = itemgetter(2)
_OP = itemgetter(0)  # of a ProposeRequest (op, rid, session, seq, acked, data)
_RID = itemgetter(1)
_SESSION = itemgetter(2)
_SEQ = itemgetter(3)
_ACKED = itemgetter(4)
_DATA = itemgetter(5)
_META_KEY = itemgetter(2, 3)  # of a _Meta: (session, seq)
_META_WAITER = itemgetter(0, 1)  # (reply_to, rid)
_LEN_FIELD = 4  # a command's length in a batch run
_ONLY_COMMAND = {ev.OP_COMMAND}


def _one_run(reqs: List[ev.ProposeRequest]) -> bool:
    """The usual envelope of a pipelined client: commands of one session with
    consecutive sequence numbers and one ``acked`` (checked in C loops)."""
    n = len(reqs)
    if n < 2:
        return False
    first = reqs[0][3]
    return (
        _ONLY_COMMAND.issuperset(map(_OP, reqs))
        and len(set(map(_SESSION, reqs))) == 1
        and len(set(map(_ACKED, reqs))) == 1
        and list(map(_SEQ, reqs)) == list(range(first, first + n))
    )


def _members(cs: ConfState) -> Set[int]:
    return set(cs.voters) | set(cs.learners) | set(cs.voters_outgoing) | set(cs.learners_next)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rsm_shm.cluster.peer", description=__doc__.split("\n")[0])
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--id", type=int, required=True)
    args = ap.parse_args(argv)
    peer = Peer(args.cluster, args.id)
    signal.signal(signal.SIGTERM, peer.stop)
    signal.signal(signal.SIGINT, peer.stop)
    prof_dir = os.environ.get("RSM_SHM_PEER_PROFILE")
    try:
        if prof_dir:  # development aid: a cProfile of the loop per peer
            import cProfile

            cProfile.runctx("peer.run()", globals(), {"peer": peer}, os.path.join(prof_dir, f"peer{args.id}.prof"))
        else:
            peer.run()
    finally:
        peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
