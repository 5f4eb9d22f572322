"""Raft for rsm_shm.

``rsm_shm.raft.core`` is the pure protocol automaton (no I/O, no clock, no threads), in
the style of etcd's raft: drive a :class:`~rsm_shm.raft.core.RawNode` with ``tick()``,
``step()``, ``propose()``..., and act on its :class:`~rsm_shm.raft.types.Ready`.
``types``, ``codec`` and ``storage`` hold its values, wire format and storage interface.

Modules of the core (standard library only; no I/O, clocks or threads):

``types``        messages, entries, hard/soft state, ConfState, Snapshot, Ready
``codec``        versioned binary wire format (never pickle), DecodeError
``storage``      the Storage interface and its error contract; MemoryStorage
``core``         RawNode (the entry point), Config, Status, errors
``protocol``     the Raft protocol itself: roles, ticks, message dispatch
``election``     timeouts, pre-vote, campaigns, votes, leader stickiness
``replication``  AppendEntries, heartbeats, chunked InstallSnapshot
``membership``   conf changes (joint consensus, learners), snapshot install, transfer
``readonly``     ReadIndex and lease-based reads
``driver``       handle_ready: the order in which a runtime handles a Ready
``log``          the Raft log over unstable entries and Storage
``tracker``, ``quorum``, ``confchange``   progress, quorum arithmetic, config changes

The subpackage ``sim`` is a deterministic simulator that drives the core through
``driver`` under a hostile network and checks Raft's safety properties every step.

Names are re-exported lazily so that ``import rsm_shm.raft`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "RawNode": ".core",
    "Config": ".core",
    "NotLeaderError": ".core",
    "ProposalDroppedError": ".core",
    "ReadOnlyOption": ".core",
    "Status": ".core",
    "Message": ".types",
    "MessageType": ".types",
    "Entry": ".types",
    "EntryType": ".types",
    "HardState": ".types",
    "ConfState": ".types",
    "ConfChange": ".types",
    "ConfChangeType": ".types",
    "ConfChangeTransition": ".types",
    "Snapshot": ".types",
    "SnapshotMeta": ".types",
    "Role": ".types",
    "SoftState": ".types",
    "ReadState": ".types",
    "Ready": ".types",
    "encode_message": ".codec",
    "decode_message": ".codec",
    "DecodeError": ".codec",
    "Storage": ".storage",
    "StorageWriter": ".storage",
    "MemoryStorage": ".storage",
    "CompactedError": ".storage",
    "UnavailableError": ".storage",
    "SnapshotTemporarilyUnavailable": ".storage",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # static view for type checkers and IDEs ("X as X": re-exported)
    from .codec import DecodeError as DecodeError
    from .codec import decode_message as decode_message
    from .codec import encode_message as encode_message
    from .core import Config as Config
    from .core import NotLeaderError as NotLeaderError
    from .core import ProposalDroppedError as ProposalDroppedError
    from .core import RawNode as RawNode
    from .core import ReadOnlyOption as ReadOnlyOption
    from .core import Status as Status
    from .storage import CompactedError as CompactedError
    from .storage import MemoryStorage as MemoryStorage
    from .storage import SnapshotTemporarilyUnavailable as SnapshotTemporarilyUnavailable
    from .storage import Storage as Storage
    from .storage import StorageWriter as StorageWriter
    from .storage import UnavailableError as UnavailableError
    from .types import ConfChange as ConfChange
    from .types import ConfChangeTransition as ConfChangeTransition
    from .types import ConfChangeType as ConfChangeType
    from .types import ConfState as ConfState
    from .types import Entry as Entry
    from .types import EntryType as EntryType
    from .types import HardState as HardState
    from .types import Message as Message
    from .types import MessageType as MessageType
    from .types import ReadState as ReadState
    from .types import Ready as Ready
    from .types import Role as Role
    from .types import Snapshot as Snapshot
    from .types import SnapshotMeta as SnapshotMeta
    from .types import SoftState as SoftState
