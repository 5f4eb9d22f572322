"""Handling one :class:`~rsm_shm.raft.types.Ready`: the order every runtime must follow.

The Raft core (:class:`~rsm_shm.raft.core.RawNode`) never does I/O; it hands the
application a Ready and waits for :meth:`~rsm_shm.raft.core.RawNode.advance`.  What to
do with a Ready, and in which order, is where runtimes get Raft wrong, so it lives here,
once, and both the deterministic simulator (:mod:`rsm_shm.raft.sim`) and the peer process
of :mod:`rsm_shm.cluster` call :func:`handle_ready`.  The simulator therefore checks
Raft's safety properties against the exact sequence a real peer runs.

The application supplies the I/O as a :class:`ReadyIO`.  :func:`handle_ready` does:

1. **persist** (``io.persist(rd)``): the snapshot, then the entries, then the hard
   state, with a single sync when ``rd.must_sync``.  Before step 2 because the messages
   may promise what is persisted: a vote, or an acknowledgement that an entry is stored.
   Raft's persistent state must be "updated on stable storage before responding to RPCs"
   (Raft paper, Figure 2; thesis §3.8): a server that voted, crashed and forgot the vote
   could vote twice in one term (two leaders), and a follower that acknowledged an entry
   it then lost could let a leader commit an entry that a majority does not hold.  The
   order inside the write matters for a crash halfway through: a snapshot replaces the
   log prefix the entries follow, and the hard state goes last so that its commit index
   never points past what is stored (a torn write leaves a prefix of the three).
   Only new entries or a hard state with a new term or vote set ``must_sync``: a
   commit index alone is learnt again from the leader after a crash.  A received
   snapshot does not set it either (losing one only makes the leader send it again),
   but a disk storage writes snapshot files durably anyway.
2. **send** (``io.send(rd.messages)``): only now, as just said.  A leader may write its
   own entries in parallel with sending them (thesis §10.2.1), but it would then have
   to withhold its own acknowledgement; this simple order is always safe.
3. **restore, then apply** committed entries, in log order.  A snapshot in the Ready
   (``io.restore``) replaces the state machine first: the committed entries follow it.
   A ``CONF_CHANGE`` entry is applied to the core with ``node.apply_conf_change`` and
   the resulting configuration is passed to ``io.apply`` (to store with later
   snapshots); as in etcd, a configuration takes effect when its entry is applied
   rather than when it is appended (thesis §4.1 uses the appended one; applying is safe
   because the core allows only one pending change at a time, and joint consensus,
   thesis §4.3, covers the rest).  Entries committed in this same Ready may include
   the node's own entries from step 1: they are durable by now, so applying them cannot
   expose a write that a crash would take back.
4. **read states** (``io.read_states(rd.read_states)``): a ReadIndex read may be
   answered once the applied index reaches its index (thesis §6.4), so after step 3.
   Called for every Ready, even with no new read state, so the application can serve
   reads queued earlier that the entries just applied now cover.
5. **advance**: the Ready is done; the core marks its entries stable and its committed
   entries applied, and may build the next Ready.
6. **report unreachable** peers (``node.report_unreachable``) that ``io.send`` could not
   reach, so the leader probes them instead of pipelining into the void (etcd's
   ReportUnreachable).  This is input for the next Ready, hence after ``advance``.

``io.persist``, ``io.send`` and ``io.read_states`` are called once per Ready (possibly with
nothing to do); ``io.restore`` only for a non-empty snapshot and ``io.apply`` once per
committed entry.  An exception from the I/O propagates and leaves the Ready
unacknowledged: the node must then be discarded and rebuilt from its storage, exactly
like a crash (a half-handled Ready cannot be resumed).

Standard library only, like the rest of :mod:`rsm_shm.raft`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional, Protocol, Sequence

from .codec import decode_conf_change
from .types import ConfState, Entry, EntryType, Message, ReadState, Ready, Snapshot

if TYPE_CHECKING:
    from .core import RawNode

__all__ = ["ReadyIO", "handle_ready"]


class ReadyIO(Protocol):
    """The application's side of :func:`handle_ready` (see the module docstring for
    when each method is called and why in that order)."""

    def persist(self, rd: Ready) -> None:
        """Write ``rd.snapshot`` (if not None or empty), then ``rd.entries``, then
        ``rd.hard_state`` (if not None) to stable storage, with one sync (fsync) of
        all three when ``rd.must_sync``.  Returns only once they are durable."""
        ...

    def send(self, messages: Sequence[Message]) -> Iterable[int]:
        """Send ``messages`` (best effort: Raft tolerates loss) and return the ids of
        the peers that could not be reached at all."""
        ...

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the state machine by the one in ``snapshot`` (already persisted)."""
        ...

    def apply(self, entry: Entry, conf_state: Optional[ConfState]) -> None:
        """Apply one committed entry.  ``conf_state`` is the configuration now in force
        when ``entry`` is a CONF_CHANGE entry (already applied to the core), else None."""
        ...

    def read_states(self, states: Sequence[ReadState]) -> None:
        """Take the new ReadIndex results (possibly none); serve each read whose index
        the applied index has reached, keep the others for later."""
        ...


def handle_ready(node: "RawNode", io: ReadyIO) -> Ready:
    """Take ``node``'s next Ready and handle it completely through ``io``, in the order
    of the module docstring; returns the Ready (for its soft state, counters...).
    Call it only when ``node.has_ready()``."""
    rd = node.ready()
    io.persist(rd)
    unreachable = set(io.send(rd.messages))
    snap = rd.snapshot
    if snap is not None and not snap.is_empty():
        io.restore(snap)
    for e in rd.committed_entries:
        cs = node.apply_conf_change(decode_conf_change(e.data)) if e.type == EntryType.CONF_CHANGE else None
        io.apply(e, cs)
    io.read_states(rd.read_states)
    node.advance(rd)
    if unreachable:
        for peer in sorted(unreachable):
            node.report_unreachable(peer)
    return rd
