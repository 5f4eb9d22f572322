"""The automaton's shared status block: modes, exit kinds and the record the CLI shows.

The block is one ``rsm_automaton`` (csrc/automaton.h, described there field by field) in
a segment of kind AUTOMATON.  This module owns every read and write of it; the rest of
the package goes through :class:`StatusBlock`.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .. import _proc
from .._native import ffi, lib
from ..segment import Kind, Segment, SegmentError, SegmentHeader

__all__ = [
    "Mode",
    "mode_of",
    "ExitKind",
    "HostKind",
    "AutomatonStatistics",
    "StatusBlock",
    "STATE_TEXT_MAX",
    "ERROR_TEXT_MAX",
    "generation_tag",
    "with_mode",
]

STATE_TEXT_MAX: int = lib.RSM_FSM_STATE_TEXT_MAX
ERROR_TEXT_MAX: int = lib.RSM_FSM_ERROR_TEXT_MAX
MODE_MASK: int = lib.RSM_FSM_MODE_MASK
RESTART_PENDING: int = lib.RSM_FSM_RESTART_PENDING
GEN_MASK: int = lib.RSM_FSM_GEN_MASK
_GEN_SHIFT: int = lib.RSM_FSM_GEN_SHIFT
#: Header parameter slots of an AUTOMATON segment.
PARAM_INBOX_CAPACITY = 0
NPARAMS = 1


class Mode(enum.IntEnum):
    """Where an automaton is in its life (the mode word, RSM_FSM_* in csrc/automaton.h).

    IDLE -> RUNNING -> SIGNALED -> DRAINING -> DEAD; IDLE -> SIGNALED when drained before it
    started; any mode -> DEAD when a handler raises or the host process dies.
    """

    IDLE = lib.RSM_FSM_IDLE
    RUNNING = lib.RSM_FSM_RUNNING
    SIGNALED = lib.RSM_FSM_SIGNALED
    DRAINING = lib.RSM_FSM_DRAINING
    DEAD = lib.RSM_FSM_DEAD


def mode_of(word: int, name: str) -> Mode:
    """The mode in a mode word; SegmentError if the word is not one we write (corrupt)."""
    try:
        return Mode(word & MODE_MASK)
    except ValueError:
        raise SegmentError(f"automaton {name!r} has a corrupt status block (mode word {word:#x})") from None


def generation_tag(generation: int) -> int:
    """The mode-word bits that name incarnation ``generation`` (see csrc/automaton.h)."""
    return (int(generation) << _GEN_SHIFT) & GEN_MASK


def with_mode(word: int, mode: int) -> int:
    """``word`` moved to ``mode`` in the same incarnation (RESTART_PENDING cleared)."""
    return (word & GEN_MASK) | int(mode)


class ExitKind(enum.IntEnum):
    """How the last incarnation ended."""

    NONE = lib.RSM_FSM_EXIT_NONE  # not ended
    CLEAN = lib.RSM_FSM_EXIT_CLEAN  # drained, EXIT delivered
    ERROR = lib.RSM_FSM_EXIT_ERROR  # a handler raised
    KILLED = lib.RSM_FSM_EXIT_KILLED  # the host process died (SIGKILL, crash)


class HostKind(enum.IntEnum):
    NONE = lib.RSM_FSM_HOST_NONE
    THREAD = lib.RSM_FSM_HOST_THREAD
    PROCESS = lib.RSM_FSM_HOST_PROCESS


@dataclass(frozen=True)
class AutomatonStatistics:
    """A snapshot of an automaton's status block (what ``rsm-shm inspect`` shows).

    ``state`` is ``repr()`` of the handler's current state, truncated to STATE_TEXT_MAX
    bytes; ``error`` is the text (a traceback) that ended it, empty if none.
    ``inbox_depth`` (commands queued) is -1 when unknown: the inbox ring cannot be opened
    (removed, or being replaced) or the reader did not look.  ``inbox_capacity`` is the
    ring's size in bytes (each command takes its length plus 16, rounded up to 16).

    Every command posted is, at any moment, queued (``inbox_depth``), taken out of the
    inbox by the host but not yet given to the handler (``in_hand``: the host takes
    commands in batches), delivered (``commands``, counted as each one reaches the
    handler), or ``dropped`` (left behind by an incarnation that died).  The fields are
    read one by one, not as one atomic snapshot: a sum taken while commands move can be
    off by a batch for an instant.

    ``host_died`` is True when the mode says the automaton runs (or waits to start) but
    its host process is gone and nobody has recorded the death yet (the first joiner,
    poster or ``check_host()`` will).  Reading never records it: ``mode`` is the stored
    mode, and ``str()`` leads with DEAD.
    """

    name: str
    mode: Mode
    restart_pending: bool
    exit_kind: ExitKind
    host: HostKind
    host_pid: int
    host_alive: bool
    generation: int
    restarts: int
    supervisor_pid: int
    commands: int
    transitions: int
    dropped: int
    in_hand: int
    host_died: bool
    inbox_depth: int
    inbox_capacity: int
    state: str
    error: str
    started: float  # seconds since the epoch, 0.0 if never started
    ended: float  # seconds since the epoch, 0.0 while running

    def __str__(self) -> str:
        if self.host_died:
            s = f"DEAD (host process {self.host_pid} gone, still marked {self.mode.name})"
        elif self.mode is Mode.DEAD and self.exit_kind is ExitKind.CLEAN:
            s = "FINISHED (drained)"  # the normal end: DEAD alone would read as a failure
        else:
            s = self.mode.name
            if self.restart_pending:
                s += " (restart pending)"
            if self.mode is Mode.DEAD and self.exit_kind is not ExitKind.NONE:
                s += f" ({self.exit_kind.name.lower()})"
        depth = "?" if self.inbox_depth < 0 else str(self.inbox_depth)
        s += f", state {self.state}, {depth} queued ({_size(self.inbox_capacity)} inbox)"
        if self.in_hand:
            s += f", {self.in_hand} taken"
        s += f", {self.commands} commands"
        if self.host is not HostKind.NONE:
            s += f", {self.host.name.lower()} host pid {self.host_pid}"
        if self.restarts:
            s += f", {self.restarts} restarts"
        if self.dropped:
            s += f", {self.dropped} dropped"
        return s


def _size(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB"):
        if x < 1024:
            return f"{x:g} {unit}" if unit == "B" else f"{x:.3g} {unit}"
        x /= 1024
    return f"{x:.3g} GiB"


def _body_size(header: SegmentHeader) -> int:
    return int(ffi.sizeof("rsm_automaton"))


def _check(header: SegmentHeader) -> None:
    if len(header.params) < NPARAMS or header.params[PARAM_INBOX_CAPACITY] < 1:
        raise SegmentError(f"automaton segment {header.name!r} has no valid inbox capacity")


def _clamped_text(buf: Any, length: int, size: int) -> str:
    # The writer may have died mid-write: clamp, and decode leniently.
    n = max(0, min(int(length), size))
    return bytes(ffi.buffer(buf, n)).decode("utf-8", "replace")


def _encode_text(text: str, size: int) -> bytes:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= size:
        return raw
    # Keep the end of a long traceback (the exception itself) and mark the cut.
    marker = b"...[truncated]...\n"
    tail = raw[-(size - len(marker)) :]
    return marker + tail.decode("utf-8", "ignore").encode("utf-8")


class StatusBlock:
    """One mapped automaton status block (create or attach by name)."""

    def __init__(
        self,
        name: Optional[str],
        *,
        create: Optional[bool],
        mode: int,
        inbox_capacity: int,
        on_create: Optional[Callable[[str, int], None]] = None,
    ) -> None:
        """``on_create(name, inbox_capacity)`` runs when this call creates the block, before
        any other process can attach to it (it creates the first inbox)."""

        def init(seg: Segment) -> None:
            p = seg.body("rsm_automaton *")
            ffi.memmove(p, b"\0" * ffi.sizeof("rsm_automaton"), ffi.sizeof("rsm_automaton"))
            p.mode = lib.RSM_FSM_IDLE
            if on_create is not None:
                on_create(seg.name, inbox_capacity)

        self.seg = Segment(
            name,
            Kind.AUTOMATON,
            ffi.sizeof("rsm_automaton"),
            create=create,
            mode=mode,
            params=(inbox_capacity,),
            init=init,
            check=_check,
            body_size_of=_body_size,
        )
        self.p = self.seg.body("rsm_automaton *")
        self.inbox_capacity = int(self.seg.header.params[PARAM_INBOX_CAPACITY])

    @property
    def name(self) -> str:
        return self.seg.name

    # -- the mode word -------------------------------------------------------------------

    def word(self) -> int:
        return int(lib.rsm_fsm_load(self.p))

    def mode(self) -> Mode:
        return mode_of(lib.rsm_fsm_load(self.p), self.name)

    def cas(self, expected: int, desired: int) -> bool:
        return bool(lib.rsm_fsm_cas(self.p, expected, desired))

    def wait_change(self, seen: int, deadline_ns: int) -> int:
        """One slice of waiting for the word to leave ``seen``: RSM_OK, RSM_TIMEOUT or RSM_SLICE."""
        return int(lib.rsm_fsm_wait(self.p, seen, deadline_ns))

    # -- fields --------------------------------------------------------------------------

    def set_host(self, kind: HostKind, pid: int, tid: int = 0) -> None:
        p = self.p
        start = _proc.start_time(pid) if pid else 0
        if kind is HostKind.NONE:
            p.host_kind = int(kind)  # first: readers stop judging the old process at once
        p.host_pid = pid
        p.host_tid = tid
        p.host_start = start
        p.host_kind = int(kind)  # last: a reader that sees the kind sees the process it names

    def begin_incarnation(self, state_text: str) -> None:
        """A host is being started: clear what the previous incarnation left and show the
        initial state (before the host can publish RUNNING, so no reader pairs the new
        mode with the old state)."""
        p = self.p
        p.exit_kind = lib.RSM_FSM_EXIT_NONE
        p.started_ns = time.time_ns()
        p.ended_ns = 0
        self.set_state_text(state_text)

    def host_alive(self) -> bool:
        """False only if the recorded host process is known to be gone: it does not exist,
        is a zombie, or its pid was reused (start time differs).  Thread hosts count as
        alive while their process does."""
        p = self.p
        if p.host_kind == lib.RSM_FSM_HOST_NONE or p.host_pid <= 0:
            return True
        return _proc.process_alive(p.host_pid, p.host_start)

    def supervisor_alive(self) -> bool:
        p = self.p
        return p.supervisor_pid > 0 and _proc.process_alive(p.supervisor_pid, p.supervisor_start)

    def set_supervisor(self, pid: int) -> None:
        self.p.supervisor_start = _proc.start_time(pid) if pid else 0
        self.p.supervisor_pid = pid

    def set_state_text(self, text: str) -> None:
        raw = _encode_text(text, STATE_TEXT_MAX)
        p = self.p
        p.state_len = 0  # a reader racing the copy sees an empty text, not a torn one
        ffi.memmove(p.state_text, raw, len(raw))
        p.state_len = len(raw)

    def state_text(self) -> str:
        return _clamped_text(self.p.state_text, self.p.state_len, STATE_TEXT_MAX)

    def set_error(self, kind: ExitKind, text: str) -> None:
        """Record how this incarnation ended; publish it with a CAS to DEAD afterwards."""
        raw = _encode_text(text, ERROR_TEXT_MAX)
        p = self.p
        p.error_len = 0
        ffi.memmove(p.error_text, raw, len(raw))
        p.error_len = len(raw)
        p.exit_kind = int(kind)
        p.ended_ns = time.time_ns()

    def error_text(self) -> str:
        return _clamped_text(self.p.error_text, self.p.error_len, ERROR_TEXT_MAX)

    def exit_kind(self) -> ExitKind:
        try:
            return ExitKind(self.p.exit_kind)
        except ValueError:
            return ExitKind.KILLED  # hostile or torn memory: report the worst, never crash

    def inbox_depth(self) -> int:
        """Commands queued in the current generation's inbox; -1 if it cannot be read."""
        try:
            from ._inbox import open_inbox, release

            ring = open_inbox(self.name, self.p.generation, self.inbox_capacity, create=False)
        except Exception:
            return -1
        try:
            return int(ring.qsize())
        except Exception:
            return -1
        finally:
            release(ring)

    def fold_dropped(self, queued: int) -> tuple[int, int]:
        """A supervisor restart: count what the dead incarnation left (``queued`` in its
        inbox, and taken - commands in its host's hands) into ``dropped`` for good.  Only
        the supervisor calls it, while the mode word is DEAD|RESTART_PENDING; returns the
        previous (dropped, taken) to undo it with if the restart is called off."""
        p = self.p
        before = (int(p.dropped), int(p.taken))
        commands = int(p.commands)
        p.dropped = before[0] + max(before[1] - commands, 0) + max(queued, 0)
        p.taken = commands
        return before

    def statistics(self, inbox_depth: Optional[int] = None) -> AutomatonStatistics:
        """The record; ``inbox_depth=None`` opens the inbox ring to count (-1 if it can't)."""
        if inbox_depth is None:
            inbox_depth = self.inbox_depth()
        p = self.p
        w = self.word()
        mode = mode_of(w, self.name)
        try:
            host = HostKind(p.host_kind)
        except ValueError:
            host = HostKind.NONE
        commands = int(p.commands)  # before taken: the host raises taken first, then commands
        in_hand = max(int(p.taken) - commands, 0)
        dropped = int(p.dropped)
        if mode is Mode.DEAD:
            # What the dead incarnation left -- in its host's hands, or still in its inbox
            # -- will never be delivered: it is dropped (a restart folds it into the field).
            dropped += in_hand + max(inbox_depth, 0)
            in_hand = 0
            inbox_depth = min(inbox_depth, 0)
        alive = self.host_alive()
        return AutomatonStatistics(
            name=self.name,
            mode=mode,
            restart_pending=bool(w & RESTART_PENDING),
            exit_kind=self.exit_kind(),
            host=host,
            host_pid=p.host_pid,
            host_alive=alive,
            generation=p.generation,
            restarts=p.restarts,
            supervisor_pid=p.supervisor_pid,
            commands=commands,
            transitions=p.transitions,
            dropped=dropped,
            in_hand=in_hand,
            host_died=mode is not Mode.DEAD and host is not HostKind.NONE and not alive,
            inbox_depth=inbox_depth,
            inbox_capacity=self.inbox_capacity,
            state=self.state_text(),
            error=self.error_text(),
            started=p.started_ns / 1e9,
            ended=p.ended_ns / 1e9,
        )

    def close(self) -> None:
        # self.p stays: calls still running on other threads hold pins on self.seg, which
        # keep the mapping until they leave (segment.Segment.close); new calls are refused.
        self.seg.close()
