"""Automata: finite-state-machine actors across processes.

An :class:`Automaton` is a handler ``handler(state, op) -> next_state`` plus a mode
machine (IDLE -> RUNNING -> SIGNALED -> DRAINING -> DEAD) and an inbox Ring in shared
memory, hosted on a thread or in its own process.  Any process posts commands (bytes) to
it by name; ``drain()`` finishes it cleanly; ``join()`` waits and re-raises a failure
recorded in shared memory; a :class:`TimerService` posts delayed commands; a
:class:`Supervisor` restarts automata that die, within a :class:`RestartPolicy`.

Quick start::

    from rsm_shm.fsm import Automaton, Opcode

    def counter(n, op):                 # module level: a process host imports it
        if op.code is Opcode.CMD:
            return n + int(op.payload)
        return n

    a = Automaton("counter", counter, 0).start("process")
    a.post(b"5")                        # from any process: rsm_shm.fsm.post("counter", b"5")
    a.drain()                           # no more commands; finish the inbox, then EXIT
    a.join()                            # True; AutomatonFailed if the handler raised or the host was killed
    a.unlink()

The contract, in short:

* Opcodes (``op.code``): START first; CMD per command (``op.payload``: bytes); TRANSITION
  after any operation that changed the state (``op.previous``: the state before); DRAIN
  once a drain is requested; EXIT last.  See ``rsm_shm.fsm._core``.
* Commands are bytes.  The state is any Python value and stays in the host; a process
  host receives the handler and *initial* state by pickle.  ``repr(state)`` (truncated)
  is published for ``rsm-shm ls/inspect`` together with the mode and the inbox depth.
* Posting to a draining or dead automaton raises AutomatonShutDown; nothing is queued.
* A handler exception, or the death of a process host (SIGKILL included; detected by pid
  and start time), ends the automaton DEAD with a report that ``join()`` raises as
  AutomatonFailed in any process.  Commands left in its inbox, or taken out of it and
  never delivered, are counted as dropped.
* Timers (one-shot, periodic ticks, delayed drains) fire on a thread of the process that
  scheduled them (``default_timer()`` is shared by everything in a process); the target
  may live in any process.  A Supervisor restarts failed automata within a RestartPolicy.
"""

from ._core import MAX_TRANSITION_CHAIN, Op, Opcode, TransitionLoopError
from ._status import AutomatonStatistics, ExitKind, HostKind, Mode
from .automaton import DEFAULT_INBOX_CAPACITY, Automaton, current, post, wait_all
from .errors import AutomatonError, AutomatonFailed, AutomatonShutDown
from .supervisor import RestartPolicy, Supervisor, SupervisorStatistics
from .timer import TimerHandle, TimerService, TimerStatistics, default_timer

__all__ = [
    "Automaton",
    "AutomatonError",
    "AutomatonFailed",
    "AutomatonShutDown",
    "AutomatonStatistics",
    "DEFAULT_INBOX_CAPACITY",
    "ExitKind",
    "HostKind",
    "MAX_TRANSITION_CHAIN",
    "Mode",
    "Op",
    "Opcode",
    "RestartPolicy",
    "Supervisor",
    "SupervisorStatistics",
    "TimerHandle",
    "TimerService",
    "TimerStatistics",
    "TransitionLoopError",
    "current",
    "default_timer",
    "post",
    "wait_all",
]
