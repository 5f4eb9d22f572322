"""Names, sizes, timing defaults and the on-disk configuration of a cluster, in one place.

Segments of cluster ``NAME`` (all removed by ``LocalCluster.destroy()``):

==================  ================================================================
``NAME.ctl``        control block (``control.py``); ``NAME.lock`` serializes its writers
``NAME.s<id>``      status record of peer ``id`` (``status.py``)
``NAME.i<id>``      inbox ring of peer ``id``: every envelope to that peer
``NAME.c<...>``     a client's reply ring (removed by ``Client.close()``)
==================  ================================================================

The data directory holds ``cluster.json`` (format, name, cluster id, state machine,
initial peers, fsync, timing) and one ``peer<id>/`` directory per peer for its log.

Message sizes derive from the inbox capacity: a ring message is at most
``INBOX_CAPACITY - 16`` bytes; the core's ``max_size_per_msg`` (bytes of entries per
AppendEntries) is an eighth of that, so several full appends fit in a ring at once and
one message never monopolizes it; a batch entry made by a leader never exceeds
``MAX_ENTRY_BYTES``, and a single client command must fit in one
(``MAX_COMMAND_BYTES``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

from ..ring import RECORD_HEADER, ShutDown
from ..segment import PREFIX, SHM_DIR
from .envelope import HEADER_SIZE
from .statemachine import OP_OVERHEAD

__all__ = [
    "Timing",
    "inbox_name",
    "reply_ring_prefix",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "INBOX_CAPACITY",
    "MAX_SIZE_PER_MSG",
    "MAX_ENTRY_BYTES",
    "MAX_COMMAND_BYTES",
    "read_config",
    "write_config",
    "segment_pattern",
    "remove_segments",
]

INBOX_CAPACITY = 1 << 22
REPLY_CAPACITY = 1 << 21
RING_MAX_MESSAGE = INBOX_CAPACITY - RECORD_HEADER
MAX_SIZE_PER_MSG = RING_MAX_MESSAGE // 8
MAX_ENTRY_BYTES = MAX_SIZE_PER_MSG
_BATCH_HEADER = 5
MAX_COMMAND_BYTES = MAX_ENTRY_BYTES - _BATCH_HEADER - OP_OVERHEAD
# A reply envelope must fit in a client's reply ring: results are capped below that.
MAX_RESULT_BYTES = REPLY_CAPACITY - RECORD_HEADER - HEADER_SIZE - 64

# What a ring raises once shut down.
RING_SHUTDOWN = (ShutDown,)

CONFIG_FILE = "cluster.json"
FORMAT_VERSION = 1


@dataclass
class Timing:
    """Timing and sizing knobs of a cluster (``LocalCluster(..., **timing)``).

    * ``tick``: seconds per Raft tick (each peer ticks from its own monotonic clock;
      after a pause it resumes with one tick, never a burst).
    * ``heartbeat_tick`` / ``election_tick``: in ticks (elections after a randomized
      ``[election_tick, 2*election_tick)`` ticks without a leader).  Defaults: 10 ms
      ticks, heartbeats every 2 ticks (an idle peer costs half the CPU of heartbeats
      every tick, and failover detection moves by at most a tick; reads and appends
      do not wait for heartbeats), elections after 100-200 ms.  A leader whose process
      died is not waited for that long: its followers see it gone at their next tick
      and elect at once (see :mod:`rsm_shm.cluster.peer`); the election timeout is what
      a paused, starved or cut-off leader costs.
    * ``snapshot_commands`` / ``snapshot_bytes``: a peer takes a snapshot (and compacts
      its log) once it has applied that many client commands, or that many bytes of
      log entries, since its last snapshot -- whichever comes first.  Counted in
      commands, not log entries, because a leader packs every command of a loop turn
      into one entry (thousands under load).  What a restarted peer applies again is
      bounded by these two (defaults: 100,000 commands, as etcd's snapshot count, or
      64 MiB); a lower bound costs more snapshots, each one a ``StateMachine.snapshot()``
      of the whole state.
    * ``snapshot_keep``: log entries kept behind a snapshot so that a slightly slow
      follower catches up from the log rather than a snapshot; at most
      ``snapshot_bytes`` of them.
    * ``max_sessions``: client sessions remembered for exactly-once (see statemachine).
    """

    tick: float = 0.01
    heartbeat_tick: int = 2
    election_tick: int = 10
    snapshot_commands: int = 100_000
    snapshot_bytes: int = 64 << 20
    snapshot_keep: int = 1000
    max_sessions: int = 4096

    @classmethod
    def from_kwargs(cls, kw: Dict[str, Any]) -> "Timing":
        names = {f.name for f in fields(cls)}
        bad = sorted(set(kw) - names)
        if bad:
            hint = (
                "; snapshot_every (log entries) became snapshot_commands and snapshot_bytes"
                if "snapshot_every" in bad
                else ""
            )
            raise TypeError(f"unknown timing option(s) {', '.join(bad)}; known: {', '.join(sorted(names))}{hint}")
        t = cls(**kw)
        t.validate()
        return t

    def validate(self) -> None:
        if not (isinstance(self.tick, (int, float)) and 0.0005 <= self.tick <= 10):
            raise ValueError(f"tick must be between 0.0005 and 10 seconds, not {self.tick!r}")
        if not (isinstance(self.heartbeat_tick, int) and self.heartbeat_tick >= 1):
            raise ValueError(f"heartbeat_tick must be a positive int, not {self.heartbeat_tick!r}")
        if not (isinstance(self.election_tick, int) and self.election_tick > self.heartbeat_tick):
            raise ValueError(f"election_tick must be an int greater than heartbeat_tick, not {self.election_tick!r}")
        for name in ("snapshot_commands", "snapshot_bytes", "snapshot_keep", "max_sessions"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be a positive int, not {v!r}")

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, d: Dict[str, Any]) -> "Timing":
        """The timing recorded in a ``cluster.json`` (one written before
        ``snapshot_every`` was replaced still opens: that key is ignored)."""
        return cls(**{k: v for k, v in d.items() if k != "snapshot_every"})


def inbox_name(cluster: str, peer_id: int) -> str:
    return f"{cluster}.i{peer_id}"


def reply_ring_prefix(cluster: str) -> str:
    return f"{cluster}.c"


def segment_pattern(cluster: str) -> "re.Pattern[str]":
    """Matches the names (without the rsm_shm. prefix) of every segment of ``cluster``."""
    return re.compile(re.escape(cluster) + r"\.(ctl|lock|s\d+|i\d+|c[0-9a-f]+\.[0-9a-f]+)")


def remove_segments(cluster: str) -> None:
    """Unlink every segment of ``cluster`` on this host (those already gone are skipped)."""
    pattern = segment_pattern(cluster)
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return
    for e in entries:
        if e.startswith(PREFIX) and pattern.fullmatch(e[len(PREFIX) :]):
            try:
                os.unlink(os.path.join(SHM_DIR, e))
            except FileNotFoundError:
                pass


def read_config(data_dir: str) -> Optional[Dict[str, Any]]:
    """The cluster.json of ``data_dir`` (None if there is none).  Raises ValueError for
    a file that is not one, or of a newer format."""
    path = os.path.join(data_dir, CONFIG_FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        cfg = json.loads(raw)
    except ValueError:
        raise ValueError(f"{path} is not a cluster configuration (not JSON)") from None
    if not isinstance(cfg, dict) or "format" not in cfg or "name" not in cfg:
        raise ValueError(f"{path} is not an rsm_shm cluster configuration")
    if not isinstance(cfg["format"], int) or cfg["format"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format {cfg['format']!r}, newer than this rsm_shm reads ({FORMAT_VERSION}); "
            f"use a newer rsm_shm or another data directory"
        )
    return cfg


def write_config(data_dir: str, cfg: Dict[str, Any]) -> None:
    """Write cluster.json atomically (temp file, fsync, rename, directory fsync)."""
    path = os.path.join(data_dir, CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
