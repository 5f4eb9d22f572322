"""A linearizability checker for histories of a key-value store (standard library only).

A *history* is what concurrent clients saw: for every operation, when it was invoked,
when it completed and what it returned.  The history is *linearizable* when every
operation can be given one instant between its invocation and its completion such that
executing the operations one at a time in the order of those instants, on a single copy
of the store, returns exactly what the clients saw (Herlihy & Wing, 1990).

The search is the Wing–Gong algorithm with the refinements of Lowe ("Testing for
linearizability", 2017) as used by Porcupine and Knossos:

* **P-compositionality**: a history of a key-value store is linearizable if and only if
  the sub-history of each key is, so each key is checked on its own (the search is
  exponential in the concurrency of one key, not of the whole history);
* **memoization**: the search remembers every (set of linearized operations, state) it
  has explored; reaching the same pair again by another order cannot succeed where the
  first one failed, so that branch is cut;
* a "dancing links" list of call and return events, so lifting an operation out of the
  history and putting it back are O(1).

**Unknown outcomes.**  An operation whose client gave up (a timeout, a crash) may or may
not have taken effect, and may take effect at any later time.  Record it with
``ret=math.inf`` and ``output=UNKNOWN``: the checker lets it take effect at any instant
after its invocation, or never (placing it after every other operation is the same as
never).  A read with an unknown result constrains nothing and is ignored.

Usage::

    from rsm_shm.cluster.linearizability import Operation, check_kv, UNKNOWN

    history = [
        Operation(client=1, kind="put", key="x", value="1", call=0.0, ret=1.0),
        Operation(client=2, kind="get", key="x", output="1", call=0.5, ret=1.5),
    ]
    result = check_kv(history)
    assert result.ok, result.explanation

Times are any comparable floats taken from one clock; between processes of one machine
use ``time.monotonic()`` (CLOCK_MONOTONIC is system-wide on Linux).  :class:`Recorder`
takes the times for you.  Two operations whose intervals merely touch (one completes at
the very instant the other is invoked) are treated as concurrent, the lenient reading:
a clock's coarse resolution must not produce a false alarm.

The model is pluggable: :func:`check` takes any object with ``partition``, ``init`` and
``step`` (see :class:`KVModel`), as Porcupine's ``Model`` does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Protocol, Sequence, Tuple

__all__ = [
    "UNKNOWN",
    "Operation",
    "CheckResult",
    "Model",
    "KVModel",
    "check",
    "check_kv",
    "Recorder",
]


class _Unknown:
    """The output of an operation whose outcome nobody saw (it timed out)."""

    _instance: "_Unknown | None" = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> Tuple[Callable[[], "_Unknown"], Tuple[()]]:
        # Histories are gathered from client processes: the singleton must survive pickling.
        return (_Unknown, ())


UNKNOWN: Any = _Unknown()

_KINDS = ("put", "get", "delete", "cas")


@dataclass(frozen=True)
class Operation:
    """One operation of a history of a key-value store.

    ``kind`` is ``"put"`` (write ``value``), ``"get"`` (``output`` is the value read,
    ``None`` when the key is absent), ``"delete"`` or ``"cas"`` (if the current value
    equals ``expected`` -- ``None`` meaning absent -- replace it with ``value``;
    ``output`` is whether it did).  ``call`` and ``ret`` are the invocation and
    completion times; ``ret=math.inf`` with ``output=UNKNOWN`` is an operation whose
    outcome is unknown.  The output of ``put`` is ignored; the output of ``delete`` is
    checked only when it is a bool (whether the key existed).
    """

    client: int
    kind: str
    key: Hashable
    call: float
    ret: float = math.inf
    value: Any = None
    expected: Any = None
    output: Any = UNKNOWN

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Operation: kind must be one of {_KINDS}, got {self.kind!r}")
        if not self.ret >= self.call:
            raise ValueError(
                f"Operation {self.kind} {self.key!r} of client {self.client}: "
                f"completes at {self.ret!r} before it is invoked at {self.call!r}"
            )

    @property
    def unknown(self) -> bool:
        """True when nobody saw the outcome (the client gave up)."""
        return self.output is UNKNOWN

    def __str__(self) -> str:
        if self.kind == "put":
            what = f"put({self.key!r}, {self.value!r})"
        elif self.kind == "cas":
            what = f"cas({self.key!r}, {self.expected!r} -> {self.value!r})"
        else:
            what = f"{self.kind}({self.key!r})"
        out = "?" if self.unknown else repr(self.output)
        ret = "inf" if self.ret == math.inf else f"{self.ret:.6f}"
        return f"client {self.client}: {what} -> {out}  [{self.call:.6f}, {ret}]"


@dataclass
class CheckResult:
    """The verdict of :func:`check`.

    ``ok`` is True (linearizable), False (not linearizable) or None (the time budget ran
    out first: nothing is known).  ``bool(result)`` is True only for a proven ``ok``.
    On failure, ``key`` is the key whose sub-history has no linearization,
    ``linearized`` the longest prefix the search could order, ``stuck_at`` the
    operation that could not be placed after it, and ``explanation`` says so in words.
    """

    ok: bool | None
    operations: int = 0
    key: Hashable = None
    linearized: list[Operation] = field(default_factory=list)
    stuck_at: Operation | None = None
    explanation: str = ""
    elapsed: float = 0.0

    def __bool__(self) -> bool:
        return self.ok is True


class Model(Protocol):
    """What :func:`check` needs to know about the object whose history it checks."""

    def partition(self, history: Sequence[Operation]) -> Iterable[Sequence[Operation]]:
        """Split a history into independent sub-histories (each checked on its own)."""

    def init(self) -> Hashable:
        """The initial state (hashable: it is memoized)."""

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        """Apply ``op`` to ``state``: (whether its output is possible, the next state)."""


class KVModel:
    """A dictionary whose keys are independent; the state of one key is its value or None."""

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        by_key: dict[Hashable, list[Operation]] = {}
        for op in history:
            if op.kind == "get" and op.unknown:
                continue  # a read nobody saw constrains nothing
            by_key.setdefault(op.key, []).append(op)
        return list(by_key.values())

    def init(self) -> Hashable:
        return None

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        kind = op.kind
        if kind == "put":
            return True, op.value
        if kind == "get":
            return (op.unknown or op.output == state), state
        if kind == "delete":
            if isinstance(op.output, bool) and op.output != (state is not None):
                return False, state
            return True, None
        # cas
        swapped = state == op.expected
        if not op.unknown and bool(op.output) != swapped:
            return False, state
        return True, (op.value if swapped else state)


class _Timeout(Exception):
    pass


def _check_one(ops: Sequence[Operation], model: Model, deadline: float | None) -> CheckResult:
    """Wing–Gong search with memoization over one independent sub-history."""
    n = len(ops)
    # Events: 2*i is the call of ops[i], 2*i+1 its return.  Sorted by time, a call
    # before a return at the same instant (touching intervals count as concurrent).
    events = sorted(range(2 * n), key=lambda e: ((ops[e >> 1].ret if e & 1 else ops[e >> 1].call), e & 1))
    # Doubly linked list over event ids; node 2n is the head sentinel.
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    last = head
    for e in events:
        nxt[last] = e
        prv[e] = last
        last = e
    nxt[last] = -1

    def lift(call_ev: int) -> None:
        ret_ev = call_ev | 1
        nxt[prv[call_ev]] = nxt[call_ev]
        if nxt[call_ev] != -1:
            prv[nxt[call_ev]] = prv[call_ev]
        nxt[prv[ret_ev]] = nxt[ret_ev]
        if nxt[ret_ev] != -1:
            prv[nxt[ret_ev]] = prv[ret_ev]

    def unlift(call_ev: int) -> None:
        # The inverse of lift, in the reverse order (dancing links).
        ret_ev = call_ev | 1
        if nxt[ret_ev] != -1:
            prv[nxt[ret_ev]] = ret_ev
        nxt[prv[ret_ev]] = ret_ev
        if nxt[call_ev] != -1:
            prv[nxt[call_ev]] = call_ev
        nxt[prv[call_ev]] = call_ev

    # Operations with a known completion must all be linearized; once only operations
    # of unknown outcome remain, placing them last (or never) always succeeds.
    finite_left = sum(1 for op in ops if op.ret != math.inf)
    state = model.init()
    linearized = 0  # bitset of linearized operation indices
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[int, Hashable]] = []  # (call event, state before it)
    best_depth, best_stack, stuck = -1, [], None
    step = model.step
    steps = 0
    entry = nxt[head]
    while finite_left:
        steps += 1
        if deadline is not None and steps & 1023 == 0 and time.monotonic() > deadline:
            raise _Timeout
        if not entry & 1:  # a call: try to linearize it here
            i = entry >> 1
            ok, new_state = step(state, ops[i])
            if ok:
                bits = linearized | (1 << i)
                if (bits, new_state) not in seen:
                    seen.add((bits, new_state))
                    stack.append((entry, state))
                    state, linearized = new_state, bits
                    if ops[i].ret != math.inf:
                        finite_left -= 1
                    lift(entry)
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:  # a return whose operation is not placed yet
            if len(stack) > best_depth:
                best_depth, best_stack, stuck = len(stack), [c >> 1 for c, _ in stack], entry >> 1
            if not stack:
                break
            call_ev, state = stack.pop()
            i = call_ev >> 1
            linearized &= ~(1 << i)
            if ops[i].ret != math.inf:
                finite_left += 1
            unlift(call_ev)
            entry = nxt[call_ev]
    if not finite_left:
        return CheckResult(ok=True, operations=n)
    order = [ops[i] for i in best_stack]
    culprit = ops[stuck] if stuck is not None else None
    key = culprit.key if culprit is not None else None
    lines = [
        f"key {key!r}: the {n} operations on it have no linearization.",
        f"The longest linearizable prefix orders {len(order)} of them" + (", ending with:" if order else "."),
    ]
    lines += [f"  {op}" for op in order[-5:]]
    if culprit is not None:
        lines.append("and then this operation cannot take effect anywhere in its interval:")
        lines.append(f"  {culprit}")
    return CheckResult(
        ok=False, operations=n, key=key, linearized=order, stuck_at=culprit, explanation="\n".join(lines)
    )


def check(history: Iterable[Operation], model: Model, timeout: float | None = None) -> CheckResult:
    """Whether ``history`` is linearizable with respect to ``model``.

    Each sub-history of ``model.partition`` is searched on its own; the first one that
    has no linearization decides.  With ``timeout`` (seconds) the search gives up and
    returns ``ok=None`` when the budget is spent (a very concurrent history can make the
    search exponential); with ``None`` it runs to the end.
    """
    history = list(history)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    total = 0
    # Smallest sub-histories first: a violation in a small one is found cheaply.
    for part in sorted(model.partition(history), key=len):
        try:
            result = _check_one(part, model, deadline)
        except _Timeout:
            return CheckResult(
                ok=None,
                operations=len(history),
                elapsed=time.monotonic() - start,
                explanation=f"gave up after {timeout} s: undecided",
            )
        total += result.operations
        if result.ok is False:
            result.elapsed = time.monotonic() - start
            return result
    return CheckResult(
        ok=True, operations=total, elapsed=time.monotonic() - start, explanation=f"{total} operations are linearizable"
    )


def check_kv(history: Iterable[Operation], timeout: float | None = None) -> CheckResult:
    """:func:`check` with :class:`KVModel`: the model of a ``KVStore``."""
    return check(history, KVModel(), timeout)


class Recorder:
    """Records the operations one client performs, with their times, into ``ops``.

    ``recorder.run("put", key, lambda: kv.put(key, v), value=v)`` calls the function
    between two readings of ``time.monotonic()`` and records its result; a
    ``TimeoutError`` is recorded as an unknown outcome (``ret=inf``) and returned as
    :data:`UNKNOWN` instead of raised.  Any other exception propagates, and the
    operation is recorded as unknown too: it may have taken effect.
    """

    def __init__(self, client: int, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.ops: list[Operation] = []
        self._clock = clock

    def run(self, kind: str, key: Hashable, fn: Callable[[], Any], *, value: Any = None, expected: Any = None) -> Any:
        call = self._clock()
        try:
            output = fn()
        except TimeoutError:
            self.ops.append(Operation(self.client, kind, key, call, math.inf, value, expected, UNKNOWN))
            return UNKNOWN
        except BaseException:
            self.ops.append(Operation(self.client, kind, key, call, math.inf, value, expected, UNKNOWN))
            raise
        ret = self._clock()
        self.ops.append(
            Operation(self.client, kind, key, call, ret, value, expected, None if kind == "put" else output)
        )
        return output
