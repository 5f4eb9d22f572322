"""``ClusterRecord``: any RAFT_STATUS segment, as ``rsm-shm ls/inspect`` shows it.

A cluster has two kinds of RAFT_STATUS segments (``csrc/raft_status.h``): the status
record of each peer (``NAME.s<id>``) and the control block (``NAME.ctl``).
:data:`rsm_shm.segment.KIND_CLASSES` names this class for the kind, so the inspector
attaches with ``ClusterRecord(name, create=False)``, calls :meth:`describe` (a JSON-ready
dict) and ``str(statistics())`` (one phrase), then :meth:`close`.  Reading never
changes anything; a record that a writer left torn, or a segment of this kind that is
neither record, raises SegmentError (the inspector reports it as undecodable).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentError, SegmentHeader
from .control import PEER_STATES, PPM, ControlBlock
from .status import MAX_PEER_ID, RECORD_CONTROL, RECORD_PEER, VERSION, decode_status

__all__ = ["ClusterRecord"]

_TRIES = 1000


class ClusterRecord:
    """A read-only view of one RAFT_STATUS segment (peer status or control block)."""

    def __init__(self, name: str, *, create: Optional[bool] = False) -> None:
        if create is not False:
            raise ValueError("ClusterRecord only attaches (create=False); peers and LocalCluster make the records")
        self._seg = Segment(name, Kind.RAFT_STATUS, 0, create=False, check=self._check)
        self.name = self._seg.name
        self.record = self._seg.header.params[0]

    @staticmethod
    def _check(h: SegmentHeader) -> None:
        p = h.params
        if len(p) < 2 or p[0] not in (RECORD_PEER, RECORD_CONTROL):
            raise SegmentError(
                f"segment {h.name!r} is a RAFT_STATUS segment of no known record type (params {list(p)})"
            )
        if p[1] != VERSION:
            raise SegmentError(
                f"segment {h.name!r} holds a cluster record of version {p[1]}; this rsm_shm reads version {VERSION}"
            )
        want = ffi.sizeof("rsm_raft_status_rec" if p[0] == RECORD_PEER else "rsm_raft_control_rec")
        if h.body_size < want:
            raise SegmentError(f"segment {h.name!r} is smaller than its record ({h.body_size} < {want} bytes)")

    def _load(self) -> Any:  # a loaded rsm_raft_status or rsm_raft_control
        if self.record == RECORD_PEER:
            out = ffi.new("rsm_raft_status *")
            rc = lib.rsm_raft_status_load(self._seg.body("rsm_raft_status_rec *"), out, _TRIES)
        else:
            out = ffi.new("rsm_raft_control *")
            rc = lib.rsm_raft_control_load(self._seg.body("rsm_raft_control_rec *"), out, _TRIES)
        if rc != lib.RSM_OK:
            raise SegmentError(f"segment {self.name!r}: the record is being rewritten or was left torn")
        return out

    def describe(self) -> Dict[str, Any]:
        raw = self._load()
        if self.record == RECORD_PEER:
            return {"record": "peer", **decode_status(raw, now_ns=time.monotonic_ns()).as_dict()}
        slots = ControlBlock.slots_of(raw)
        restarts = ControlBlock.restarts_of(raw)
        cuts = []
        for a in range(1, MAX_PEER_ID + 1):
            mask = int(raw.cut[a - 1])
            cuts += [[a, b] for b in range(1, MAX_PEER_ID + 1) if mask >> (b - 1) & 1]
        return {
            "record": "control",
            "cluster_id": int(raw.cluster_id),
            "owner_pid": int(raw.owner_pid),
            "data_dir": ControlBlock.data_dir_of(raw),
            "drop_rate": min(int(raw.drop_ppm), PPM) / PPM,
            "stopping": bool(raw.stopping),
            "next_peer_id": int(raw.next_peer_id),
            "peers": {
                str(i): {"state": PEER_STATES.get(st, "unknown"), "pid": pid, "restarts": restarts.get(i, 0)}
                for i, (st, pid, _s) in slots.items()
            },
            "restart_policy": (
                {"max_restarts": int(raw.restart_max), "window_s": int(raw.restart_window_ms) / 1000}
                if raw.restart_max
                else None
            ),
            "cut_links": cuts,
        }

    def statistics(self) -> str:
        d = self.describe()
        if d["record"] == "peer":
            s = (
                f"peer {d['id']} {d['role']}{'' if d['alive'] else ' (not running)'}, term {d['term']}, "
                f"leader {d['leader'] or '-'}, commit {d['commit']}, applied {d['applied']}"
            )
            return s
        running = sum(1 for p in d["peers"].values() if p["state"] == "running")
        s = f"cluster control, {len(d['peers'])} peers ({running} running)"
        if d["cut_links"]:
            s += f", {len(d['cut_links'])} links cut"
        if d["drop_rate"]:
            s += f", drop rate {d['drop_rate']:g}"
        return s

    def close(self) -> None:
        self._seg.close()

    @property
    def closed(self) -> bool:
        return self._seg.closed
