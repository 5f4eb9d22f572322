"""The host side of an automaton: the loop that feeds the handler, and how an incarnation ends.

A host is a thread (Automaton.start("thread")), a multiprocessing child ("process") or a
``python -m rsm_shm.fsm._host`` subprocess; all of them run :func:`_run_host`, which
claims the automaton (IDLE -> RUNNING), delivers START, then the inbox in batches, DRAIN
when a drain is requested, EXIT once the inbox is finished, and publishes how it ended
(:func:`_finish_dead`).  It never raises for a handler error: the traceback is published
in the status block for whoever joins, in any process.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any

from .._native import lib
from . import _inbox
from ._core import DRAIN, EXIT, START, Handler, Machine, Op, Opcode
from ._status import (
    GEN_MASK,
    MODE_MASK,
    RESTART_PENDING,
    STATE_TEXT_MAX,
    ExitKind,
    HostKind,
    Mode,
    StatusBlock,
    generation_tag,
    mode_of,
    with_mode,
)

if TYPE_CHECKING:
    from ..ring import Ring
    from .automaton import Automaton

__all__ = ["current", "EXIT_STATUS_HANDLER_ERROR"]

#: Commands taken from the inbox per ring call.
BATCH = 64
#: How often an idle host looks at its mode word even without a ring wake-up (seconds):
#: covers a drain() whose caller died between the mode change and closing the inbox.
IDLE_POLL = 0.1

_IDLE, _RUNNING, _SIGNALED, _DRAINING, _DEAD = (int(m) for m in Mode)

_local = threading.local()


def _forget_current() -> None:
    # A process forked from inside a handler is not that automaton's host.
    _local.automaton = None


os.register_at_fork(after_in_child=_forget_current)


def current() -> "Automaton":
    """The automaton whose handler is running on this thread (to post, schedule, drain).

    It is the host's own handle: use it inside the handler, do not keep it or hand it to
    another thread (the host closes it when it ends).  Raises RuntimeError outside a handler.
    """
    a: Automaton | None = getattr(_local, "automaton", None)
    if a is None:
        raise RuntimeError("rsm_shm.fsm.current() was called outside an automaton's handler")
    return a


def _finish_dead(st: StatusBlock, generation: int, ring: Ring | None, kind: ExitKind, text: str) -> bool:
    """Publish the end of incarnation ``generation``: shut its inbox down, record the report,
    then CAS the mode to DEAD (with RESTART_PENDING if supervised and the end was not
    clean and it was not draining: a drained automaton is never restarted).  The commands
    it leaves behind -- still queued in ``ring``, or taken out of it and never delivered
    (``taken - commands``) -- are not moved anywhere: while it is DEAD, readers count
    them as dropped (StatusBlock.statistics), and a supervisor restart folds them into
    ``dropped`` before it publishes the next incarnation.  So the counters are final the
    moment DEAD is visible, however many processes race to declare the death.

    False, touching nothing, if that incarnation already ended or was replaced by a
    supervisor restart: a death noticed late must not end the next incarnation.
    """
    tag = generation_tag(generation)
    w = st.word()
    if w & GEN_MASK != tag or w & MODE_MASK == _DEAD:
        return False
    if ring is not None:
        try:
            ring.shutdown()
        except Exception:
            pass
    restartable = kind is not ExitKind.CLEAN and st.supervisor_alive()
    w = st.word()
    if w & GEN_MASK != tag or w & MODE_MASK == _DEAD:
        return False
    # Two processes noticing the same dead host may both get here: both write a report
    # (the same facts), only one wins the CAS.  A declarer descheduled between the check
    # above and this write while another one won and a supervisor restarted the automaton
    # leaves its report (the facts of the previous death) in the fields of the running
    # incarnation; they are read only once the mode says DEAD, and the next death
    # overwrites them.
    st.set_error(kind, text)
    while True:
        w = st.word()
        m = w & MODE_MASK
        if m == _DEAD or w & GEN_MASK != tag:
            return False
        pending = RESTART_PENDING if restartable and m in (_IDLE, _RUNNING) else 0
        if st.cas(w, with_mode(w, _DEAD) | pending):
            return True


# -- hosts ---------------------------------------------------------------------------------


def _run_host(name: str, generation: int, handler: Handler, state: Any) -> ExitKind:
    """The host loop: deliver START, then commands until drained, then EXIT.

    Runs on the host thread (thread host) or as the main of a host process.  Never raises:
    how it ended is published in the status block.
    """
    from .automaton import Automaton

    a = Automaton(name, create=False)
    st = a._status
    try:
        return _host_loop(a, st, generation, handler, state)
    finally:
        _local.automaton = None
        a.close()


def _claim(st: StatusBlock, name: str, generation: int) -> None:
    tag = generation_tag(generation)
    while True:
        w = st.word()
        m = w & MODE_MASK
        if w & GEN_MASK != tag:
            raise RuntimeError(
                f"automaton {name!r}: a host started for generation {generation} found "
                f"another incarnation in the mode word ({w:#x}); it leaves it alone"
            )
        if m == _IDLE:
            if st.cas(w, with_mode(w, _RUNNING)):
                return
            continue
        if m == _SIGNALED:
            return  # drained before it started: START, DRAIN, the queue, EXIT
        raise RuntimeError(f"automaton {name!r} is {mode_of(w, name).name}: it cannot be started again")


def _host_loop(a: "Automaton", st: StatusBlock, generation: int, handler: Handler, state: Any) -> ExitKind:
    p = st.p
    p.host_tid = threading.get_native_id()
    if p.host_kind == lib.RSM_FSM_HOST_PROCESS and p.host_pid != os.getpid():
        st.set_host(HostKind.PROCESS, os.getpid(), threading.get_native_id())
    if p.generation != generation:
        raise RuntimeError(
            f"automaton {a.name!r}: host started for generation {generation}, status says {p.generation}"
        )
    _claim(st, a.name, generation)
    # From here on the automaton is ours: whatever happens must end in a published DEAD.
    try:
        inbox = _inbox.open_inbox(a.name, generation, st.inbox_capacity, create=False)
    except Exception as exc:
        _finish_dead(
            st,
            generation,
            None,
            ExitKind.ERROR,
            f"automaton {a.name!r} (pid {os.getpid()}): its host could not open the inbox: "
            f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(),
        )
        return ExitKind.ERROR
    _local.automaton = a

    machine = Machine(handler, state)
    shown: list[object] = [_NOTHING]  # the state object whose repr the status block shows

    def sync() -> None:
        # The transition count and the state text are published once per batch (commands
        # are counted one by one, below): the CLI view of the state lags by at most one
        # batch, and a busy host does not pay a repr() for every transition.  (A state mutated in place, same object, shows at its next
        # replacement: the TRANSITION rule does not see in-place changes either.)
        if machine.transitions:
            p.transitions += machine.transitions
            machine.transitions = 0
        s = machine.state
        if s is not shown[0]:
            shown[0] = s
            st.set_state_text(_safe_repr(s, STATE_TEXT_MAX))

    try:
        sync()
        machine.deliver(START)
        sync()
        draining = False
        delivered = int(p.commands)
        while True:
            w = st.word()
            if not draining and w & MODE_MASK == _SIGNALED:
                draining = True
                st.cas(w, with_mode(w, _DRAINING))
                inbox.shutdown()  # in case whoever drained us died before shutting it down
                machine.deliver(DRAIN)
                sync()
            try:
                batch = inbox.get_many(BATCH, timeout=IDLE_POLL)
            except queue.Empty:
                continue
            except _inbox.ShutDown:
                if not draining:
                    # The inbox was shut down directly (not through drain()): drain all the same.
                    w = st.word()
                    while w & MODE_MASK in (_IDLE, _RUNNING, _SIGNALED) and not st.cas(w, with_mode(w, _DRAINING)):
                        w = st.word()
                    draining = True
                    machine.deliver(DRAIN)
                    sync()
                    continue
                break
            # The batch is out of the ring: say so before handling it, so that a reader (or
            # whoever finds this host killed) sees these commands as taken, not vanished.
            p.taken = delivered + len(batch)
            for payload in batch:
                delivered += 1
                p.commands = delivered  # counted as it reaches the handler (one that raises included)
                machine.deliver(Op(_CMD, payload))
            sync()
        machine.deliver(EXIT)
        sync()
        _finish_dead(st, generation, inbox, ExitKind.CLEAN, "")
        return ExitKind.CLEAN
    except BaseException as exc:
        # Everything a handler raises ends the automaton; the report travels in the status
        # block so that a joiner in any process can re-raise it.  The rest of the batch
        # (taken - commands) is counted as dropped by _finish_dead.
        what = (
            f"the handler raised {type(exc).__name__}"
            if isinstance(exc, Exception)
            else f"the host was stopped by {type(exc).__name__}"
        )  # Ctrl-C, sys.exit()
        text = (
            f"automaton {a.name!r} (pid {os.getpid()}, generation {generation}): "
            f"{what} in state {_safe_repr(machine.state)}\n" + traceback.format_exc()
        )
        try:
            sync()
        except Exception:
            pass  # the report matters more than the state text
        _finish_dead(st, generation, inbox, ExitKind.ERROR, text)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt / SystemExit keep their meaning for the host
        return ExitKind.ERROR
    finally:
        _inbox.release(inbox)


_NOTHING = object()
_CMD = Opcode.CMD


def _safe_repr(x: Any, limit: int = 200) -> str:
    try:
        r = repr(x)
    except Exception as e:
        return f"<unrepresentable state: {type(e).__name__}>"
    return r if len(r) <= limit else r[:limit] + "..."


#: Exit status of a host process whose handler raised (the report is in shared memory).
EXIT_STATUS_HANDLER_ERROR = 3


def _process_main(name: str, generation: int, handler: Handler, state: Any) -> None:
    """Main of a multiprocessing host."""
    kind = _run_host(name, generation, handler, state)
    if kind is not ExitKind.CLEAN:
        sys.exit(EXIT_STATUS_HANDLER_ERROR)
