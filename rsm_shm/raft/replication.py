"""Log replication: AppendEntries, heartbeats and chunked InstallSnapshot, on both the
leader and the follower side (Raft §5.3, thesis §3.5, §5.3, §10.2).  Mixed into
:class:`rsm_shm.raft.protocol.Raft`."""

from __future__ import annotations

from typing import Optional

from .readonly import ReadOnlyOption, encode_round
from .storage import CompactedError, SnapshotTemporarilyUnavailable, UnavailableError
from .tracker import Progress, ProgressState
from .types import Message, MessageType, Snapshot, entry_size
from .state import RaftState

__all__ = ["ReplicationMixin", "SNAPSHOT_REFUSED"]

# Enum members as module constants for the per-message paths below (an attribute
# lookup on an enum class costs about as much as the comparison it feeds).
_MT_APP = MessageType.APP
_MT_APP_RESP = MessageType.APP_RESP
_PS_PROBE = ProgressState.PROBE
_PS_REPLICATE = ProgressState.REPLICATE
_PS_SNAPSHOT = ProgressState.SNAPSHOT

# Context of a SNAP_RESP by which a follower refuses a snapshot it cannot install.
SNAPSHOT_REFUSED = b"refused"


class ReplicationMixin(RaftState):
    # ================================================================== leader side
    def send_append(self, to: int) -> None:
        self.maybe_send_append(to, True)

    def maybe_send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send the entries ``to`` is missing (at most ``max_size_per_msg`` bytes), or
        snapshot chunks if it needs compacted entries.  Returns whether a message went."""
        pr = self.trk.progress.get(to)
        if pr is None:
            return False
        if pr.state == _PS_SNAPSHOT:
            return self._send_snapshot_chunks(to, pr)
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.raft_log.term(prev_index)
            ents = self.raft_log.entries(pr.next, self.max_msg_size)
        except CompactedError:
            return self._start_snapshot(to, pr)
        except UnavailableError:
            # next ran past our log (we were a follower with a longer log before):
            # probe from our end.
            pr.next = self.raft_log.last_index() + 1
            pr.become_probe()
            return False
        if not ents and not send_if_empty:
            return False
        self.send(
            Message(
                _MT_APP,
                to=to,
                frm=self.id,
                term=self.term,
                log_term=prev_term,
                index=prev_index,
                entries=tuple(ents),
                commit=self.raft_log.committed,
            )
        )
        pr.update_on_entries_send(len(ents), sum(entry_size(e) for e in ents), pr.next)
        return True

    def _start_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            # Do not ship a snapshot to a node we have not heard from lately.
            return False
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty():
            raise RuntimeError("need a non-empty snapshot to send")
        pr.become_snapshot(snap)
        return self._send_snapshot_chunks(to, pr)

    def _send_snapshot_chunks(self, to: int, pr: Progress) -> bool:
        """Send snapshot chunks from ``pr.snap_next`` while fewer than
        ``max_inflight_snapshot_chunks`` chunks are unacknowledged (thesis §5.3: the
        snapshot is sent in chunks; the follower reassembles them in order)."""
        snap = pr.snap
        if snap is None:
            return False
        data = snap.data
        total = len(data)
        cs = self.cfg.snapshot_chunk_size
        window = cs * self.cfg.max_inflight_snapshot_chunks
        sent = False
        while True:
            off = pr.snap_next
            if total == 0:
                if pr.snap_empty_sent:
                    break
            elif off >= total:
                break
            if off - pr.snap_acked >= window:
                break
            chunk = data[off : off + cs]
            self.send(
                Message(
                    MessageType.SNAP,
                    to=to,
                    frm=self.id,
                    term=self.term,
                    snapshot=Snapshot(snap.meta, chunk),
                    snap_offset=off,
                    snap_total=total,
                )
            )
            pr.snap_next = off + len(chunk)
            pr.snap_empty_sent = pr.snap_empty_sent or total == 0
            sent = True
        return sent

    def bcast_append(self) -> None:
        for i, _ in self.trk.visit():
            if i != self.id:
                self.send_append(i)

    def bcast_heartbeat(self, ctx: Optional[bytes] = None) -> None:
        if ctx is None:
            if self.read_only.option == ReadOnlyOption.LEASE_BASED:
                rnd = self.read_only.new_lease_round()  # every heartbeat renews the lease
            else:
                rnd = self.read_only.last_pending_round()
            ctx = encode_round(rnd) if rnd else b""
        for i, pr in self.trk.visit():
            if i == self.id:
                continue
            # Never tell a follower to commit past what it is known to have: it may
            # not have those entries yet (or still hold conflicting ones).
            commit = min(pr.match, self.raft_log.committed)
            self.send(Message(MessageType.HEARTBEAT, to=i, frm=self.id, term=self.term, commit=commit, context=ctx))

    def maybe_commit(self) -> bool:
        return self.raft_log.maybe_commit(self.trk.committed(), self.term)

    def handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            # Fast backtracking: skip every entry the follower's hint proves cannot
            # match (etcd's findConflictByTerm on both sides, thesis §5.3 end).
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == _PS_REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        old_paused = pr.is_paused()
        updated = pr.maybe_update(m.index)
        if (
            updated
            or (pr.match == m.index and pr.state == _PS_PROBE)
            # The follower already holds everything the snapshot in transfer covers
            # (e.g. it was installed from elsewhere, or we compacted past an older
            # snapshot we were still sending): stop that transfer.
            or (pr.state == _PS_SNAPSHOT and m.index >= pr.pending_snapshot)
        ):
            if pr.state == _PS_PROBE:
                pr.become_replicate()
            elif pr.state == _PS_SNAPSHOT:
                # The follower installed the snapshot (or already had it).  Resume
                # with the log if it is still there, else probe (a new snapshot).
                pr.become_probe()
                if pr.match + 1 >= self.raft_log.first_index():
                    pr.become_replicate()
            else:
                pr.inflights.free_le(m.index)
            if self.maybe_commit():
                self.release_pending_read_index_messages()
                if self.cfg.broadcast_commit:
                    self.bcast_append()
                elif old_paused:
                    self.send_append(m.frm)
            elif old_paused:
                self.send_append(m.frm)
            # keep the pipeline full (several AppendEntries in flight); nothing to send
            # when the follower already has everything (the sequential steady state:
            # pr.state is REPLICATE or PROBE here, neither of which sends an empty append)
            if pr.next <= self.raft_log.last_index():
                while self.maybe_send_append(m.frm, False):
                    pass
            if m.frm == self.lead_transferee and pr.match == self.raft_log.last_index():
                # the transfer target caught up: tell it to campaign now (thesis §3.10)
                self.send_timeout_now(m.frm)

    def handle_heartbeat_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.msg_app_flow_paused = False
        if pr.state == ProgressState.SNAPSHOT:
            # Go-back-N: resend every chunk not acknowledged yet (lost or reordered).
            pr.snap_next = pr.snap_acked
            pr.snap_empty_sent = False
            self._send_snapshot_chunks(m.frm, pr)
        else:
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                # The follower is alive but the window stays full: the messages in it
                # were probably lost.  Free one slot so an append goes out; its reject
                # (or ack) resynchronizes the pipeline (etcd's FreeFirstOne).
                pr.inflights.free_first_one()
            if pr.match < self.raft_log.last_index() or pr.state == ProgressState.PROBE:
                self.send_append(m.frm)
        self.handle_read_ack(m)

    def handle_snapshot_response(self, m: Message, pr: Progress) -> None:
        """A SNAP_RESP acknowledges ``m.snap_offset`` contiguous bytes of snapshot
        ``m.index`` (reject = the follower wants the transfer to restart there)."""
        pr.recent_active = True
        if pr.state != ProgressState.SNAPSHOT or pr.snap is None or m.index != pr.snap.meta.index:
            return  # stale
        if m.reject and m.context == SNAPSHOT_REFUSED:
            # The follower cannot use this snapshot.  Probe again after the next
            # heartbeat response; the probe finds the log compacted and starts over
            # with the newest snapshot in storage.
            pr.pending_snapshot = 0
            pr.become_probe()
            pr.msg_app_flow_paused = True
            return
        if m.reject:
            pr.snap_acked = pr.snap_next = min(m.snap_offset, len(pr.snap.data))
            pr.snap_empty_sent = False
        else:
            pr.snap_acked = max(pr.snap_acked, min(m.snap_offset, len(pr.snap.data)))
            pr.snap_next = max(pr.snap_next, pr.snap_acked)
        self._send_snapshot_chunks(m.frm, pr)

    def handle_snapshot_status(self, m: Message, pr: Progress) -> None:
        """The runtime reported the outcome of a snapshot transfer (``report_snapshot``)."""
        if pr.state != ProgressState.SNAPSHOT:
            return
        if not m.reject:
            pr.become_probe()
            # wait for the follower's next response before probing again
            pr.msg_app_flow_paused = True
        else:
            pr.pending_snapshot = 0
            pr.become_probe()

    # ================================================================== follower side
    def handle_append_entries(self, m: Message) -> None:
        if m.index < self.raft_log.committed:
            # Everything up to our commit index is known to match: say so.
            self.send(Message(_MT_APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.raft_log.committed))
            return
        mlast, ok = self.raft_log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if ok:
            self.send(Message(_MT_APP_RESP, to=m.frm, frm=self.id, term=self.term, index=mlast))
            return
        # Reject with a hint: the largest index <= the probe whose term is <= the
        # leader's term there.  The leader can skip everything after it at once
        # (fast conflict backtracking).
        hint_index = min(m.index, self.raft_log.last_index())
        hint_index, hint_term = self.raft_log.find_conflict_by_term(hint_index, m.log_term)
        self.send(
            Message(
                _MT_APP_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def handle_heartbeat(self, m: Message) -> None:
        self.raft_log.commit_to(m.commit)
        self.send(Message(MessageType.HEARTBEAT_RESP, to=m.frm, frm=self.id, term=self.term, context=m.context))

    def handle_snapshot_chunk(self, m: Message) -> None:
        """Reassemble a chunked snapshot; once complete, install it (Figure 13 /
        thesis §5.3 InstallSnapshot receiver)."""
        s = m.snapshot
        if s is None:
            return
        meta = s.meta
        # Already covered (we hold the snapshot's last entry with the same term, or
        # committed past it)?  Answer without transferring the rest.
        if meta.index <= self.raft_log.committed or self.raft_log.match_term(meta.index, meta.term):
            self.snap_buffer = None
            self.raft_log.commit_to(min(max(meta.index, self.raft_log.committed), self.raft_log.last_index()))
            self.send(
                Message(MessageType.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.raft_log.committed)
            )
            return
        cs = meta.conf_state
        if self.id not in cs.voters and self.id not in cs.learners and self.id not in cs.voters_outgoing:
            # A snapshot of a configuration without us (we were added after it was
            # taken, or removed before): refuse it at once, as etcd does, and tell the
            # leader so that it falls back to probing and fetches a newer snapshot.
            self.snap_buffer = None
            self.send(
                Message(
                    MessageType.SNAP_RESP,
                    to=m.frm,
                    frm=self.id,
                    term=self.term,
                    index=meta.index,
                    reject=True,
                    context=SNAPSHOT_REFUSED,
                )
            )
            return
        key = (m.frm, m.term, meta.index, meta.term, m.snap_total)
        buf = self.snap_buffer
        if buf is None or buf[0] != key:
            if m.snap_offset != 0:
                # We lost the beginning (restart or a new transfer): restart at 0.
                self.snap_buffer = None
                self._send_snap_resp(m, 0, reject=True)
                return
            buf = self.snap_buffer = (key, bytearray())
        data = buf[1]
        if m.snap_offset == len(data):
            data += s.data
        elif m.snap_offset > len(data):
            self._send_snap_resp(m, len(data), reject=True)  # gap: go back
            return
        # (offset < len: a duplicate; acknowledge what we have)
        if len(data) > m.snap_total:
            self.snap_buffer = None
            self._send_snap_resp(m, 0, reject=True)
            return
        if len(data) < m.snap_total:
            self._send_snap_resp(m, len(data), reject=False)
            return
        self.snap_buffer = None
        full = Snapshot(meta, bytes(data))
        if self.restore(full):
            self.send(
                Message(MessageType.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.raft_log.last_index())
            )
        else:
            self.send(
                Message(MessageType.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.raft_log.committed)
            )

    def _send_snap_resp(self, m: Message, offset: int, reject: bool) -> None:
        self.send(
            Message(
                MessageType.SNAP_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=m.snapshot.meta.index if m.snapshot else 0,
                snap_offset=offset,
                reject=reject,
            )
        )
