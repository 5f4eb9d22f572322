"""A deterministic simulator of Raft clusters, for testing the protocol core.

Modules (standard library only, like the core):

``simulator``   :class:`Simulator`: N nodes, logical time, a hostile network, actions
``node``        a simulated server (:class:`SimNode`, :class:`SimOptions`) and its Ready I/O
``liveness``    the liveness checks run once the network is healed
``world``       the simulated network and the tiny hash-chain state machine
``check``       :class:`SafetyChecker`: Raft's safety properties, checked every step
``fuzz``        seeded random runs, replay and shrinking (used by ``tools/raft_fuzz.py``)
``formatting``  one-line renderings of messages, entries and configurations

Each node's Ready is handled by :func:`rsm_shm.raft.driver.handle_ready`, the same
function a real peer process runs, so the simulator tests the exact order of the runtime.
"""

from __future__ import annotations

from .formatting import format_conf_change, format_conf_state, format_entry, format_message
from .liveness import COMMIT_TIMEOUTS, LEADER_ELECTION_TIMEOUTS, LivenessViolation
from .node import SimNode, SimOptions
from .simulator import Simulator
from .world import Network, StateMachine

__all__ = [
    "COMMIT_TIMEOUTS",
    "LEADER_ELECTION_TIMEOUTS",
    "LivenessViolation",
    "Network",
    "SimNode",
    "SimOptions",
    "Simulator",
    "StateMachine",
    "format_conf_change",
    "format_conf_state",
    "format_entry",
    "format_message",
]
