"""Raft for rsm_shm.

``rsm_shm.raft.core`` is the pure protocol automaton (no I/O, no clock, no threads), in
the style of etcd's raft: drive a :class:`~rsm_shm.raft.core.RawNode` with ``tick()``,
``step()``, ``propose()``..., and act on its :class:`~rsm_shm.raft.types.Ready`.
``types``, ``codec`` and ``storage`` hold its values, wire format and storage interface.

Names are re-exported lazily so that ``import rsm_shm.raft`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RawNode": "core",
    "Config": "core",
    "NotLeaderError": "core",
    "ProposalDroppedError": "core",
    "ReadOnlyOption": "core",
    "Status": "core",
    "Message": "types",
    "MessageType": "types",
    "Entry": "types",
    "EntryType": "types",
    "HardState": "types",
    "ConfState": "types",
    "ConfChange": "types",
    "ConfChangeType": "types",
    "ConfChangeTransition": "types",
    "Snapshot": "types",
    "SnapshotMeta": "types",
    "Role": "types",
    "SoftState": "types",
    "ReadState": "types",
    "Ready": "types",
    "encode_message": "codec",
    "decode_message": "codec",
    "DecodeError": "codec",
    "Storage": "storage",
    "MemoryStorage": "storage",
    "CompactedError": "storage",
    "UnavailableError": "storage",
    "SnapshotTemporarilyUnavailable": "storage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'rsm_shm.raft' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
