"""Automata: finite-state-machine actors across processes.

An :class:`Automaton` is a handler ``handler(state, op) -> next_state`` plus a mode
machine (IDLE -> RUNNING -> SIGNALED -> DRAINING -> DEAD) and an inbox Ring in shared
memory, hosted on a thread or in its own process.  Any process posts commands (bytes) to
it by name; ``drain()`` finishes it cleanly; ``join()`` waits and re-raises a failure
recorded in shared memory; a :class:`TimerService` posts delayed commands; a
:class:`Supervisor` restarts automata that die, within a :class:`RestartPolicy`.

Quick start::

    from rsm_shm.fsm import Automaton, Opcode

    def counter(n, op):
        if op.code is Opcode.CMD:
            return n + int(op.payload)
        return n

    a = Automaton("counter", counter, 0).start("process")
    a.post(b"5")
    a.drain()
    a.join()          # True; AutomatonFailed if the handler raised or the host was killed
    a.unlink()
"""
from ._core import MAX_TRANSITION_CHAIN, Op, Opcode, TransitionLoopError
from ._status import AutomatonStatistics, ExitKind, HostKind, Mode
from .automaton import DEFAULT_INBOX_CAPACITY, Automaton, current, post, wait_all
from .errors import AutomatonClosedError, AutomatonError, AutomatonFailed
from .supervisor import RestartPolicy, Supervisor, SupervisorStatistics
from .timer import TimerHandle, TimerService, TimerStatistics, default_timer

__all__ = [
    "Automaton", "AutomatonClosedError", "AutomatonError", "AutomatonFailed", "AutomatonStatistics",
    "DEFAULT_INBOX_CAPACITY", "ExitKind", "HostKind", "MAX_TRANSITION_CHAIN", "Mode", "Op", "Opcode",
    "RestartPolicy", "Supervisor", "SupervisorStatistics", "TimerHandle", "TimerService", "TimerStatistics",
    "TransitionLoopError", "current", "default_timer", "post", "wait_all",
]
