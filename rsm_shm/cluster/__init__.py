"""Replicated state machines: Raft peers as processes over shared-memory rings.

The public names (``from rsm_shm.cluster import ...``):

* :class:`StateMachine` -- the base class of a replicated application;
  :class:`KVStore` (``"rsm_shm.cluster:KVStore"``) a ready-made replicated dict.
* :class:`LocalCluster` -- start, watch, fault-inject and tear down peer processes.
* :class:`Client` -- ``propose`` (exactly once) and linearizable ``read`` from any
  process; :class:`KVClient` the typed client of a KVStore.
* :class:`PeerStatus` -- what each peer publishes in shared memory.
* :class:`CommandError`, :class:`SessionExpiredError` -- outcomes of ``propose``.

Modules: ``statemachine`` (StateMachine, KVStore, sessions), ``envelope`` (the wire
format between peers and clients), ``control`` (the cluster control block), ``status``
(status records), ``layout`` (names, sizes, timing, cluster.json), ``peer`` (the peer
process), ``client``, ``local`` (LocalCluster).  See docs/cluster.md.

Names are resolved lazily so that ``import rsm_shm.cluster`` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "StateMachine": "statemachine",
    "KVStore": "statemachine",
    "CommandError": "statemachine",
    "LocalCluster": "local",
    "Client": "client",
    "KVClient": "client",
    "SessionExpiredError": "client",
    "PeerStatus": "status",
    "Timing": "layout",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'rsm_shm.cluster' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)


def __dir__():
    return sorted(list(globals()) + __all__)
