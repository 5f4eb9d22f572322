"""Replicated state machines: Raft peers as processes over shared-memory rings.

The public names (``from rsm_shm.cluster import ...``):

* :class:`StateMachine` -- the base class of a replicated application;
  :class:`KVStore` (``"rsm_shm.cluster:KVStore"``) a ready-made replicated dict.
* :class:`LocalCluster` -- start, watch, fault-inject and tear down peer processes;
  :class:`RestartPolicy` how it restarts peers that crash (``restart_failed=``).
* :class:`Peer` -- one peer of a cluster across hosts, served over gRPC
  (``rsm-shm cluster serve``; the ``[net]`` extra).
* :class:`Client` -- ``propose`` (exactly once) and linearizable ``read`` from any
  process; :class:`KVClient` the typed client of a KVStore.
* :class:`PeerStatus` -- what each peer publishes in shared memory.
* :class:`CommandError`, :class:`SessionExpiredError` -- outcomes of ``propose``.

Modules: ``statemachine`` (StateMachine, KVStore, sessions), ``envelope`` (the wire
format between peers and clients), ``control`` (the cluster control block), ``status``
(status records), ``layout`` (names, sizes, timing, cluster.json), ``peer`` (the peer
process), ``client``, ``local`` (LocalCluster), ``restarts`` (automatic restart).  See docs/cluster.md.

Names are resolved lazily so that ``import rsm_shm.cluster`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "StateMachine": ".statemachine",
    "KVStore": ".statemachine",
    "CommandError": ".statemachine",
    "LocalCluster": ".local",
    "RestartPolicy": ".restarts",
    "Peer": ".serve",
    "Client": ".client",
    "KVClient": ".client",
    "SessionExpiredError": ".client",
    "PeerStatus": ".status",
    "Timing": ".layout",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # static view for type checkers and IDEs ("X as X": re-exported)
    from .client import Client as Client
    from .client import KVClient as KVClient
    from .client import SessionExpiredError as SessionExpiredError
    from .layout import Timing as Timing
    from .local import LocalCluster as LocalCluster
    from .restarts import RestartPolicy as RestartPolicy
    from .serve import Peer as Peer
    from .statemachine import CommandError as CommandError
    from .statemachine import KVStore as KVStore
    from .statemachine import StateMachine as StateMachine
    from .status import PeerStatus as PeerStatus
