"""Safety checkers of the Raft simulator (:mod:`rsm_shm.raft.sim`).

The simulator reports what it observes to a :class:`SafetyChecker`, which raises
:class:`SafetyViolation` the moment one of Raft's safety properties (Raft paper,
Figure 3) fails:

* **Election safety** -- at most one leader per term (:meth:`SafetyChecker.observe_role`).
* **Log matching** -- two logs holding an entry with the same index and term hold the
  same entry there and agree on every earlier entry.  Checked incrementally: every
  persisted entry ``(index, term)`` must carry the same data, type and *predecessor
  term* as every other persisted entry with that ``(index, term)``; by induction on the
  index this is exactly log matching, at O(1) per persisted entry.
* **Leader completeness** -- an entry known committed is in the log of every leader of a
  later term.  Checked on a leader's persisted log when it has nothing left to persist
  (``has_ready()`` is false), because before that its newest entries may still be in
  memory only.  An entry is "known committed" when a node's commit index covers it; the
  term of that node at that time over-approximates the commit term, which only weakens
  the check (it never raises a false alarm).
* **State machine safety** -- no two nodes apply different entries at the same index.
* **Persistent state** -- the persisted term and commit index never go back, and a
  vote once persisted is never changed within its term (:meth:`observe_hard_state`).
* **No duplicates** -- a command proposed once is never committed at two indexes.
* **Applied monotonicity** -- within one incarnation of a node, committed entries are
  applied in order without gaps, and the applied index never goes backwards.  A crash
  loses the volatile state machine; the restarted node resumes from its snapshot.
* **Linearizable reads** -- a ReadIndex result must not be below the highest index any
  node had applied (so possibly acknowledged to a client) when the read was issued.

The checker knows nothing of the core's internals: it sees statuses, the persisted
storage and what the Ready hands to the application.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from ..types import Entry, EntryType, HardState, Role

#: The term of a node's persisted entry at an index, None when unknown (compacted away).
TermOf = Callable[[int], Optional[int]]

__all__ = ["SafetyViolation", "SafetyChecker"]

# How far below its commit index a node's committed entries are re-compared with the
# recorded ones at each observation (the newest ones are where divergence shows first;
# rescanning the whole committed log at every step would make long runs quadratic).
COMMIT_RECHECK_WINDOW = 64


class SafetyViolation(Exception):
    """A Raft safety property failed.  ``prop`` names the property (a short tag such as
    ``"election-safety"``), ``detail`` explains the evidence."""

    def __init__(self, prop: str, detail: str) -> None:
        super().__init__(f"{prop}: {detail}")
        self.prop = prop
        self.detail = detail


@dataclass
class _LeaderCheck:
    """Progress of the leader-completeness check of one (node, term) leadership."""

    checked: int = 0  # number of entries of SafetyChecker._committed_order already checked


@dataclass
class SafetyChecker:
    """Accumulates observations and raises :class:`SafetyViolation` on the first breach.

    Set ``check_reads=False`` for lease-based reads in a simulation whose clocks are not
    synchronised: their safety rests on a clock assumption the simulator breaks on
    purpose, so a stale lease read is then not a bug of the core.
    """

    check_reads: bool = True
    # election safety: term -> leader id
    leaders: Dict[int, int] = field(default_factory=dict)
    # log matching: (index, term) -> (type, data, previous term)
    _entries: Dict[Tuple[int, int], Tuple[int, bytes, Optional[int]]] = field(default_factory=dict)
    # known committed entries: index -> (term, term of the first observer)
    _committed: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    _committed_order: List[int] = field(default_factory=list)
    _leader_checks: Dict[Tuple[int, int], _LeaderCheck] = field(default_factory=dict)
    # state machine safety: index -> (term, type, data) first applied
    _applied: Dict[int, Tuple[int, int, bytes]] = field(default_factory=dict)
    # per node: last applied index of the current incarnation
    _node_applied: Dict[int, int] = field(default_factory=dict)
    # highest index applied anywhere (a client may have been answered up to it)
    max_applied: int = 0
    # commands proposed once each: data -> index where it was applied
    _unique: Dict[bytes, int] = field(default_factory=dict)
    # reads in flight: context -> lowest admissible read index
    _reads: Dict[bytes, int] = field(default_factory=dict)
    reads_checked: int = 0
    # how much was verified (coverage figures for reports)
    leader_entries_checked: int = 0
    applies_checked: int = 0

    # ------------------------------------------------------------------ election safety
    def observe_role(self, node: int, term: int, role: Role) -> None:
        """Record that ``node`` is in ``role`` at ``term`` (after a step)."""
        if role != Role.LEADER:
            return
        prev = self.leaders.setdefault(term, node)
        if prev != node:
            raise SafetyViolation("election-safety", f"two leaders in term {term}: node {prev} and node {node}")

    # ------------------------------------------------------------------- hard state
    def observe_hard_state(self, node: int, old: HardState, new: HardState) -> None:
        """``node`` persists hard state ``new`` over ``old``: the term never goes back, a
        vote once cast in a term never changes (one vote per term, Figure 2), and the
        commit index never goes back."""
        if new.term < old.term:
            raise SafetyViolation("term-monotonic", f"node {node} persists term {new.term} after {old.term}")
        if new.term == old.term and old.vote != 0 and new.vote != old.vote:
            raise SafetyViolation(
                "vote-once", f"node {node} changes its vote in term {new.term} from {old.vote} to {new.vote}"
            )
        if new.commit < old.commit:
            raise SafetyViolation("commit-monotonic", f"node {node} persists commit {new.commit} after {old.commit}")

    # ---------------------------------------------------------------------- log matching
    def observe_persisted(self, node: int, entries: List[Entry], prev_term_of: TermOf) -> None:
        """Record ``entries`` just appended to ``node``'s stable log.  ``prev_term_of(i)``
        returns the persisted term at index ``i`` (or None when compacted away)."""
        prev: Optional[int] = None
        for k, e in enumerate(entries):
            if k == 0:
                prev = prev_term_of(e.index - 1)
            key = (e.index, e.term)
            rec = (int(e.type), e.data, prev)
            old = self._entries.get(key)
            if old is None:
                self._entries[key] = rec
            else:
                same_prev = old[2] is None or rec[2] is None or old[2] == rec[2]
                if old[0] != rec[0] or old[1] != rec[1] or not same_prev:
                    raise SafetyViolation(
                        "log-matching",
                        f"node {node} persisted entry {e.index}/t{e.term} "
                        f"(type={rec[0]} data={rec[1]!r} prev-term={rec[2]}) but another log has "
                        f"(type={old[0]} data={old[1]!r} prev-term={old[2]}) at the same index and term",
                    )
                if old[2] is None and rec[2] is not None:
                    self._entries[key] = rec
            prev = e.term

    # ------------------------------------------------------------------ commit knowledge
    def observe_commit(self, node: int, node_term: int, upto: int, term_of: TermOf) -> None:
        """``node`` (at ``node_term``) has commit index ``upto``; ``term_of(i)`` gives the
        term of its entry ``i`` or None if unknown (compacted)."""
        start = self._committed_order[-1] + 1 if self._committed_order else 1
        # Entries below the highest known-committed index were recorded already; re-check
        # the ones this node can still see so a diverging committed prefix is caught.
        for i in range(start, upto + 1):
            t = term_of(i)
            if t is None:
                continue
            if i not in self._committed:
                self._committed[i] = (t, node_term)
                self._committed_order.append(i)
        # Cross-check what this node believes committed against what others did.
        lo = max(1, upto - COMMIT_RECHECK_WINDOW)
        for i in range(lo, upto + 1):
            rec = self._committed.get(i)
            if rec is None:
                continue
            t = term_of(i)
            if t is not None and t != rec[0]:
                raise SafetyViolation(
                    "commit-safety",
                    f"node {node} has committed entry {i} with term {t} but entry {i} was "
                    f"committed with term {rec[0]} before",
                )

    def check_leader_log(self, node: int, term: int, term_of: TermOf, snapshot_index: int) -> None:
        """Leader completeness for ``node``, leader of ``term``, whose whole log is persisted.
        ``term_of(i)`` returns its term at ``i`` or None if ``i`` is past its last index."""
        lc = self._leader_checks.setdefault((node, term), _LeaderCheck())
        order = self._committed_order
        while lc.checked < len(order):
            i = order[lc.checked]
            lc.checked += 1
            t_entry, t_commit = self._committed[i]
            if t_commit >= term or i <= snapshot_index:
                # Only leaders of later terms are bound; a compacted prefix was committed.
                continue
            self.leader_entries_checked += 1
            t = term_of(i)
            if t != t_entry:
                raise SafetyViolation(
                    "leader-completeness",
                    f"node {node} leads term {term} but its log has "
                    f"{'no entry' if t is None else f'term {t}'} at index {i}, where an entry "
                    f"of term {t_entry} was committed by term {t_commit}",
                )

    # ------------------------------------------------------------- state machine safety
    def node_restarted(self, node: int, applied: int) -> None:
        """A new incarnation of ``node`` starts with its state machine at ``applied``."""
        self._node_applied[node] = applied

    def observe_snapshot_applied(self, node: int, index: int) -> None:
        """``node``'s state machine was replaced by a snapshot at ``index``."""
        cur = self._node_applied.get(node, 0)
        if index < cur:
            raise SafetyViolation(
                "applied-monotonic", f"node {node} restored a snapshot at {index} below its applied index {cur}"
            )
        self._node_applied[node] = index

    def observe_apply(self, node: int, e: Entry) -> None:
        """``node`` applies committed entry ``e`` to its state machine."""
        cur = self._node_applied.get(node, 0)
        if e.index != cur + 1:
            raise SafetyViolation(
                "applied-monotonic",
                f"node {node} applied index {cur} and is now handed entry {e.index} (expected {cur + 1})",
            )
        self._node_applied[node] = e.index
        self.applies_checked += 1
        rec = (e.term, int(e.type), e.data)
        old = self._applied.setdefault(e.index, rec)
        if old != rec:
            raise SafetyViolation(
                "state-machine-safety",
                f"node {node} applies {e.index}/t{e.term} data={e.data!r} but {e.index}/t{old[0]} "
                f"data={old[2]!r} was applied elsewhere",
            )
        if e.index > self.max_applied:
            self.max_applied = e.index
        at = self._unique.get(e.data)
        if at is not None and e.type == EntryType.NORMAL:
            if at == 0:
                self._unique[e.data] = e.index
            elif at != e.index:
                raise SafetyViolation(
                    "no-duplicates",
                    f"command {e.data!r}, proposed once, is applied at index {at} and at index {e.index}",
                )

    def proposed_once(self, data: bytes) -> None:
        """``data`` was proposed exactly once: it must never be committed at two indexes
        (a core that re-appended or re-sent an entry as a new one would do that)."""
        self._unique.setdefault(data, 0)

    def applied(self, node: int) -> int:
        return self._node_applied.get(node, 0)

    # --------------------------------------------------------------------------- reads
    def read_issued(self, ctx: bytes) -> None:
        """A read with context ``ctx`` starts now: it must observe every applied write."""
        self._reads[ctx] = self.max_applied

    def read_returned(self, node: int, index: int, ctx: bytes) -> None:
        """The core returned ReadState(index, ctx) at ``node``."""
        low = self._reads.pop(ctx, None)
        if low is None:
            # A duplicate answer for the same request is harmless; an unknown one is not ours.
            return
        self.reads_checked += 1
        if self.check_reads and index < low:
            raise SafetyViolation(
                "linearizable-read",
                f"node {node} returned read {ctx!r} at index {index}, but index {low} had "
                f"already been applied (and possibly acknowledged) when the read started",
            )

    # ------------------------------------------------------------------------- summary
    def coverage(self) -> Dict[str, int]:
        """How much each check verified so far."""
        return {
            "terms_with_leader": len(self.leaders),
            "distinct_entries_persisted": len(self._entries),
            "committed_entries": len(self._committed),
            "leader_log_entries_checked": self.leader_entries_checked,
            "applies_checked": self.applies_checked,
            "reads_checked": self.reads_checked,
        }

    @property
    def committed_index(self) -> int:
        return self._committed_order[-1] if self._committed_order else 0

    def applied_entries(self) -> Dict[int, Tuple[int, int, bytes]]:
        return self._applied

    @staticmethod
    def is_noop(e: Entry) -> bool:
        return e.type == EntryType.NORMAL and not e.data
