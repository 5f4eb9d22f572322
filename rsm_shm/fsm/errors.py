"""Errors of the automata: posting to one that no longer takes commands, and failures."""

from __future__ import annotations

from .._errors import RsmError, ShutDown
from ._status import ExitKind, Mode

__all__ = ["AutomatonError", "AutomatonShutDown", "AutomatonFailed"]


class AutomatonError(RsmError):
    """Base class of the automata's errors."""


class AutomatonShutDown(AutomatonError, ShutDown, RuntimeError):
    """A command was posted to an automaton that no longer accepts commands: it is
    draining (SIGNALED, DRAINING) or ended (DEAD).  Nothing was queued.

    An :class:`rsm_shm.ShutDown`, as a put to a shut-down ring is ("closed" is kept for a
    handle that was unmapped, which raises ValueError).

    ``name`` and ``mode`` say which automaton and where it was.
    """

    def __init__(self, name: str, mode: Mode, detail: str = "") -> None:
        self.name = name
        self.mode = mode
        what = {Mode.SIGNALED: "is draining", Mode.DRAINING: "is draining", Mode.DEAD: "is dead"}.get(
            mode, f"is {mode.name}"
        )
        msg = f"automaton {name!r} {what} ({mode.name}): it accepts no more commands"
        super().__init__(msg + (f"; {detail}" if detail else ""))


class AutomatonFailed(AutomatonError):
    """The automaton ended because its handler raised (``kind`` ERROR) or its host process
    died (``kind`` KILLED).  ``text`` is the recorded report: the handler's traceback as
    formatted in the host, or how the host died.  Raised by ``join()`` and ``wait_all()``.
    """

    def __init__(self, name: str, kind: ExitKind, text: str) -> None:
        self.name = name
        self.kind = kind
        self.text = text
        last = text.strip().splitlines()[-1] if text.strip() else "no report recorded"
        super().__init__(f"automaton {name!r} failed ({kind.name}): {last}")
