"""The pure part of an automaton: opcodes, the operation record and the step rule.

No shared memory, no clock, no I/O here: :class:`Machine` only feeds operations to the
user's handler and applies the TRANSITION rule, so it can be driven by a test directly.

The handler protocol
--------------------
A handler is any callable ``handler(state, op) -> next_state``.  ``op`` is an
:class:`Op` with ``op.code`` one of the :class:`Opcode` members:

* ``START`` once, first, when a host starts the automaton (again after a supervisor
  restart, with the initial state);
* ``CMD`` for every command taken from the inbox, ``op.payload`` its bytes;
* ``TRANSITION`` right after any operation whose handler returned a state different
  (``!=``) from the one it was given; ``op.previous`` is the state before.  Its result may
  change the state again, which delivers another TRANSITION (at most
  MAX_TRANSITION_CHAIN in a row: a longer chain is a bug and raises);
* ``DRAIN`` once, when the host sees that ``drain()`` was requested; commands already in
  the inbox still follow;
* ``EXIT`` last, once the inbox is finished; its result is the final state.

Whatever the handler raises ends the automaton (mode DEAD, the traceback recorded).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, NamedTuple, Optional

__all__ = ["Opcode", "Op", "Handler", "Machine", "MAX_TRANSITION_CHAIN", "TransitionLoopError"]

#: More TRANSITIONs than this after one operation means the handler never settles.
MAX_TRANSITION_CHAIN = 64


class Opcode(enum.IntEnum):
    """What the handler is being told (the seed's opcodes)."""

    START = 1
    CMD = 2
    TRANSITION = 3
    DRAIN = 4
    EXIT = 5


class Op(NamedTuple):
    """One operation for the handler: ``code``; ``payload`` (CMD); ``previous`` (TRANSITION)."""

    code: Opcode
    payload: bytes = b""
    previous: Any = None


START = Op(Opcode.START)
DRAIN = Op(Opcode.DRAIN)
EXIT = Op(Opcode.EXIT)

Handler = Callable[[Any, Op], Any]
_EXIT = Opcode.EXIT
_TRANSITION = Opcode.TRANSITION


class TransitionLoopError(RuntimeError):
    """The handler kept changing the state on TRANSITION (MAX_TRANSITION_CHAIN in a row)."""


def _changed(old: Any, new: Any) -> bool:
    if new is old:
        return False
    try:
        return bool(new != old)
    except Exception:
        # Values that cannot be compared (or whose != is not a bool) count as a change.
        return True


class Machine:
    """A handler and its current state; ``deliver(op)`` runs one operation to completion.

    ``on_change(state)`` is called after every state change (before its TRANSITION is
    delivered), e.g. to publish the state for the CLI.  Exceptions propagate unchanged.
    """

    __slots__ = ("handler", "state", "transitions", "_on_change")

    def __init__(self, handler: Handler, state: Any, on_change: Optional[Callable[[Any], None]] = None) -> None:
        if not callable(handler):
            raise TypeError(f"an automaton handler must be callable, not {type(handler).__name__}")
        self.handler = handler
        self.state = state
        self.transitions = 0
        self._on_change = on_change

    def deliver(self, op: Op) -> Any:
        """Call the handler with ``op``, then the TRANSITION chain; returns the new state."""
        handler = self.handler
        old = self.state
        new = handler(old, op)
        self.state = new
        if new is old or op.code is _EXIT:
            return new  # unchanged (the common case), or EXIT: nothing follows it
        chain = 0
        while _changed(old, new):
            chain += 1
            if chain > MAX_TRANSITION_CHAIN:
                raise TransitionLoopError(
                    f"handler {getattr(handler, '__qualname__', handler)!r} changed the state on "
                    f"{MAX_TRANSITION_CHAIN} TRANSITIONs in a row (last: {old!r} -> {new!r})"
                )
            self.transitions += 1
            if self._on_change is not None:
                self._on_change(new)
            old, new = new, handler(new, Op(_TRANSITION, b"", old))
            self.state = new
        return new
