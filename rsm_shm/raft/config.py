"""Configuration of a Raft node (re-exported by :mod:`rsm_shm.raft.core`)."""

from __future__ import annotations

from dataclasses import dataclass

from .readonly import ReadOnlyOption

__all__ = ["Config", "ReadOnlyOption"]


@dataclass
class Config:
    """Tunables of a node, in ticks and bytes.

    * ``election_tick``: a follower that hears nothing from a leader for a randomized
      timeout in [election_tick, 2*election_tick) ticks starts an election (§5.2).
      Must be greater than ``heartbeat_tick`` (etcd suggests 10x).
    * ``heartbeat_tick``: a leader sends heartbeats every ``heartbeat_tick`` ticks.
    * ``max_size_per_msg``: byte limit of the entries in one AppendEntries (batching);
      a single larger entry is still sent alone.
    * ``max_inflight_msgs``: AppendEntries in flight to one follower in the replicate
      state (pipelining window).  ``max_inflight_bytes``: optional byte cap (0 = none).
    * ``pre_vote``: run a pre-election that does not bump terms (thesis §9.6), so a
      partitioned node rejoining cannot disrupt the cluster.
    * ``check_quorum``: a leader steps down when it has not heard from a quorum within
      an election timeout (thesis §6.2), and followers that heard from a leader within
      the election timeout ignore (pre-)vote requests (leader stickiness, thesis §4.2.3).
    * ``read_only_option``: SAFE (ReadIndex with a heartbeat round) or LEASE_BASED
      (assumes bounded clock drift; requires ``check_quorum``), see ``readonly``.
    * ``max_uncommitted_size``: byte cap of proposed-but-uncommitted entry payloads at
      the leader (0 = none); proposals over it raise ProposalDroppedError.
    * ``snapshot_chunk_size``: bytes of snapshot data per SNAP message;
      ``max_inflight_snapshot_chunks``: chunks sent ahead of the follower's acks.
    * ``applied``: the index the application had applied before a restart (entries up
      to it are not handed out again); 0 = the storage's snapshot index.
    * ``step_down_on_removal``: a leader that applies its own removal or demotion steps
      down (thesis §4.2.2).
    * ``broadcast_commit``: when the commit index moves, the leader sends every follower
      an AppendEntries carrying it at once (etcd's behaviour).  False: followers learn it
      with the next AppendEntries or heartbeat (within ``heartbeat_tick``), which saves
      a message and a response per follower per commit -- on a busy machine, two process
      wake-ups per follower on the path of the next command.  Only followers' apply
      lags; commit, safety and the leader's answers are unchanged.
    """

    election_tick: int = 10
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    pre_vote: bool = True
    check_quorum: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    max_uncommitted_size: int = 0
    snapshot_chunk_size: int = 64 * 1024
    applied: int = 0
    max_inflight_bytes: int = 0
    max_inflight_snapshot_chunks: int = 4
    step_down_on_removal: bool = True
    broadcast_commit: bool = True

    def validate(self) -> None:
        """Raise ValueError for an inconsistent configuration."""
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be greater than 0")
        if self.max_size_per_msg <= 0:
            raise ValueError("max_size_per_msg must be greater than 0")
        if self.snapshot_chunk_size <= 0:
            raise ValueError("snapshot_chunk_size must be greater than 0")
        if self.max_inflight_snapshot_chunks <= 0:
            raise ValueError("max_inflight_snapshot_chunks must be greater than 0")
        if self.max_uncommitted_size < 0 or self.applied < 0 or self.max_inflight_bytes < 0:
            raise ValueError("sizes and indexes must not be negative")
        if self.read_only_option == ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ValueError("read_only_option LEASE_BASED requires check_quorum")
