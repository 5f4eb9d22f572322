"""Liveness checks of a simulated cluster: once every node runs again and the network is
healed, a leader must emerge, finish what the chaos left pending and commit fresh
proposals on every member within bounded logical time (:func:`check_liveness`, also
:meth:`Simulator.check_liveness <rsm_shm.raft.sim.Simulator.check_liveness>`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Set, Tuple

from .formatting import format_conf_state

if TYPE_CHECKING:  # pragma: no cover
    from .simulator import Simulator

__all__ = ["COMMIT_TIMEOUTS", "LEADER_ELECTION_TIMEOUTS", "LivenessViolation", "check_liveness"]

# Election timeouts allowed for a leader to emerge once a majority is connected and the
# network is perfect.  Randomised timeouts make a split vote possible but each further
# round is ever less likely; 20 timeouts is far beyond anything a correct core needs.
LEADER_ELECTION_TIMEOUTS = 20
# Election timeouts allowed for an accepted proposal to commit on every member once a
# stable leader exists on a perfect network.
COMMIT_TIMEOUTS = 10


class LivenessViolation(Exception):
    """A liveness property failed where it must hold (healed network, connected majority)."""

    def __init__(self, prop: str, detail: str) -> None:
        super().__init__(f"{prop}: {detail}")
        self.prop = prop
        self.detail = detail


def check_liveness(sim: Simulator, proposals: int = 3) -> None:
    """Restart every crashed node, heal the network, and require on a perfect
    network: a leader within LEADER_ELECTION_TIMEOUTS election timeouts that applies
    its whole log (pending conf changes) within COMMIT_TIMEOUTS more, then
    ``proposals`` fresh proposals committed and applied by every member within
    COMMIT_TIMEOUTS more.  Raises LivenessViolation otherwise."""
    for nid in sorted(sim.nodes):
        if not sim.nodes[nid].alive:
            sim.do(("restart", nid))
    sim.do(("heal",))
    et = sim.options.election_tick
    _settle(sim, COMMIT_TIMEOUTS * et)
    targets: List[Tuple[int, bytes]] = []
    budget = COMMIT_TIMEOUTS * et
    ticks = 0
    while len(targets) < proposals:
        lid = _await_leader(sim, LEADER_ELECTION_TIMEOUTS * et)
        before = len(sim.accepted)
        sim.do(("propose", lid))
        if len(sim.accepted) > before:
            _, idx, data = sim.accepted[-1]
            targets.append((idx, data))
        else:
            _tick_round(sim)
            ticks += 1
            if ticks > budget:
                raise LivenessViolation("liveness-propose", f"leader {lid} keeps refusing proposals")
        sim.stabilize()
    while True:
        sim.stabilize()
        members = sim.members()
        lead = sim.leader()
        joint = lead is None or bool(sim.nodes[lead].running.status().conf_state.voters_outgoing)
        if not joint and all(_has_applied(sim, m, idx, data) for m in members for idx, data in targets):
            # Converged: every member applied the same state up to the same index.
            top = max(sim.nodes[m].sm.index for m in members)
            digests = {sim.nodes[m].sm.history.get(top) for m in members if sim.nodes[m].sm.index == top}
            if len(digests) > 1:
                raise LivenessViolation("convergence", f"members disagree on the state at {top}")
            return
        if ticks > budget:
            lagging = {m: sim.nodes[m].sm.index for m in members}
            raise LivenessViolation(
                "liveness-commit",
                f"proposals {[(i, d) for i, d in targets]} not applied by every member "
                f"within {budget} ticks, or the joint configuration not left; applied "
                f"indexes {lagging}, leader {lead}",
            )
        _tick_round(sim)
        ticks += 1
        if ticks % et == 0:
            # A runtime snapshots periodically.  That matters here: a member that joined
            # after the leader's newest snapshot refuses that snapshot (it is not in its
            # configuration, as in etcd) and can only catch up from a newer one.
            lead = sim.leader()
            if lead is not None:
                sim.do(("compact", lead))


def _settle(sim: Simulator, budget: int) -> None:
    """Let the chaos phase's leftovers finish: a leader that has applied its whole log
    (so pending conf changes, which may remove the leader itself, are done) and no
    joint configuration.  Only then must fresh proposals commit: until then a leader
    may legitimately step down and its uncommitted proposals be overwritten."""
    et = sim.options.election_tick
    asked_leave: Set[Tuple[int, int]] = set()
    ticks = 0
    while True:
        lid = _await_leader(sim, LEADER_ELECTION_TIMEOUTS * et)
        node = sim.nodes[lid]
        cs = node.running.status().conf_state
        if cs.voters_outgoing and not cs.auto_leave and (lid, node.running.leadership().term) not in asked_leave:
            # leave a joint configuration left behind by the chaos phase
            asked_leave.add((lid, node.running.leadership().term))
            sim.do(("conf", lid, ()))
            sim.stabilize()
        # A joint config with auto-leave may still be pending here: the core proposes
        # the leave when an entry is applied, and that proposal is dropped while a
        # leadership transfer is pending (as in etcd), so only the next applied entry
        # retries it.  The proposals below are such entries; leaving is checked after.
        if node.alive and node.sm.index >= node.storage.last_index() and (not cs.voters_outgoing or cs.auto_leave):
            return
        if ticks > budget:
            raise LivenessViolation(
                "liveness-settle",
                f"leader {lid} applied {node.sm.index} of {node.storage.last_index()} entries "
                f"({format_conf_state(cs)}) after {budget} ticks",
            )
        _tick_round(sim)
        ticks += 1


def _has_applied(sim: Simulator, nid: int, idx: int, data: bytes) -> bool:
    rec = sim.checker.applied_entries().get(idx)
    if rec is None or rec[2] != data:
        # the accepted proposal was replaced in the log: it did not commit
        return False
    return sim.nodes[nid].sm.index >= idx


def _tick_round(sim: Simulator) -> None:
    for nid in sim.live_ids():
        sim.do(("tick", nid))


def _await_leader(sim: Simulator, max_ticks: int) -> int:
    for _ in range(max_ticks + 1):
        sim.stabilize()
        lid = sim.leader()
        if lid is not None:
            members = [m for m in sim.members() if sim.nodes[m].alive]
            if all(sim.nodes[m].running.leadership().leader == lid for m in members):
                return lid
        _tick_round(sim)
    raise LivenessViolation(
        "liveness-election",
        f"no leader acknowledged by every member within {max_ticks} ticks "
        f"({max_ticks // sim.options.election_tick} election timeouts)",
    )
