"""How a peer's Raft messages reach the other peers: the :class:`Transport` protocol.

A peer has exactly one receive path, its inbox ring (``NAME.i<id>``): whatever carries
messages between peers ends by putting envelopes into the destination's inbox.  The
send side is pluggable:

* :class:`RingTransport` puts straight into the destination's inbox ring on this
  machine (what :class:`~rsm_shm.cluster.LocalCluster` peers use).
* ``rsm_shm.cluster.net.transport.GrpcTransport`` (the ``[net]`` extra) streams them to
  a peer on another host, whose gRPC server puts them into its inbox ring; a
  ``MixedTransport`` there routes each destination to one or the other.

The contract every transport keeps:

* ``send(to, payload) -> bool`` never blocks the peer loop.  ``False`` means the
  envelope was dropped (full, missing, shut-down or unreachable destination); the
  caller counts it and reports the peer unreachable, and Raft retransmits.  ``True``
  means handed on, not delivered: a transport may still lose it later (it counts that
  in its own counters).
* Cut links and the drop rate of the cluster's link table are applied by the *sender*
  before ``send`` (the peer does so for every transport alike), so a partition cuts a
  gRPC link exactly as it cuts a ring.
* ``counters()`` returns transport-specific counters (a flat ``{name: int}``);
  ``close()`` releases everything (idempotent).
"""

from __future__ import annotations

import queue
from typing import Dict, Protocol, runtime_checkable

from ..ring import Ring
from .layout import RING_SHUTDOWN, inbox_name

__all__ = ["Transport", "RingTransport"]


@runtime_checkable
class Transport(Protocol):
    """What a peer needs to send envelopes to other peers (see the module docstring)."""

    def send(self, to: int, payload: bytes) -> bool:
        """Hand ``payload`` (an envelope) on towards peer ``to`` without blocking;
        False if it was dropped."""
        ...

    def counters(self) -> Dict[str, int]:
        """Transport-specific counters."""
        ...

    def close(self) -> None:
        """Release every connection and handle (idempotent)."""
        ...


class RingTransport:
    """Sends by putting into the destination peer's inbox ring on this machine.

    A full ring drops the envelope (``put_nowait``: never block on a slow peer); a
    missing, closed or shut-down ring drops it and forgets the handle, so the ring of
    a restarted peer is opened afresh at the next send.
    """

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self._rings: Dict[int, Ring] = {}
        self.dropped_full = 0
        self.dropped_missing = 0

    def send(self, to: int, payload: bytes) -> bool:
        ring = self._rings.get(to)
        try:
            if ring is None:
                ring = self._rings[to] = Ring(inbox_name(self.cluster, to), create=False)
            ring.put_nowait(payload)
            return True
        except queue.Full:
            self.dropped_full += 1
            return False
        except (FileNotFoundError, ValueError, *RING_SHUTDOWN):
            self.dropped_missing += 1
            bad = self._rings.pop(to, None)
            if bad is not None:
                bad.close()
            return False

    def counters(self) -> Dict[str, int]:
        return {"ring_dropped_full": self.dropped_full, "ring_dropped_missing": self.dropped_missing}

    def close(self) -> None:
        for r in self._rings.values():
            r.close()
        self._rings.clear()

    def __repr__(self) -> str:
        return f"<rsm_shm.cluster.RingTransport {self.cluster!r} open={sorted(self._rings)}>"
