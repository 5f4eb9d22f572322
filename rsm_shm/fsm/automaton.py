"""Automaton: a finite-state-machine actor whose inbox and status live in shared memory.

An automaton is named.  Its status block (segment ``<name>``, kind AUTOMATON) holds the
mode word and what the CLI shows; its inbox is a Ring (``<name>.inbox.<generation>``).
Any process can attach by name to ``post()`` commands, ``drain()`` it, ``join()`` it or
read ``statistics()``; only a handle built with a handler can ``start()`` a host for it.

Commands are bytes (``bytes``, ``bytearray`` or ``memoryview``; a handler receives
``bytes``).  The state is any Python value: it never leaves the host, so it need not be
picklable for a thread host; for a process host the *initial* state and the handler are
pickled to the child (``spawn`` pickles the handler by its import path).  ``repr()`` of the
state, truncated, is published for the CLI after START, DRAIN, EXIT and every batch of
commands that replaced the state object (a state mutated in place shows at its next
replacement).

Failure model: a handler exception ends the automaton DEAD with the traceback recorded in
shared memory; a process host that dies without ending (SIGKILL) is declared DEAD (KILLED)
by whoever notices first (a joiner, a poster, the supervisor).  Commands still in the inbox
of an incarnation that died, or taken out of it by its host and not yet delivered, are
counted in ``dropped``, never delivered.  A command whose
``post()`` raced with the death of the host (accepted by the ring just before the death was
noticed) is lost with it: once the death is noticed, every post fails.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Concatenate, Iterable, Optional, ParamSpec, TypeVar, Union

from .._describe import plain_record
from .._native import lib
from ..segment import MAX_NAME_LEN, validate_name
from ..sync import _base
from . import _inbox
from ._core import Handler
from ._runner import _finish_dead, _process_main, _run_host, _safe_repr, current
from ._runner import _local as _runner_local
from ._status import (
    GEN_MASK,
    MODE_MASK,
    RESTART_PENDING,
    STATE_TEXT_MAX,
    AutomatonStatistics,
    ExitKind,
    HostKind,
    Mode,
    StatusBlock,
    generation_tag,
    mode_of,
    with_mode,
)
from .errors import AutomatonShutDown, AutomatonFailed

if TYPE_CHECKING:
    from ..ring import Ring
    from .timer import TimerHandle, TimerService

__all__ = ["Automaton", "current", "post", "DEFAULT_INBOX_CAPACITY", "HOSTS"]

#: Inbox size in bytes when none is given (the Ring's capacity: each command takes its
#: payload plus a 16-byte record header, rounded up to 16 bytes).
DEFAULT_INBOX_CAPACITY = 1 << 18
#: A poster blocked on a full inbox checks the host's liveness this often (seconds).
POST_SLICE = 0.1
#: A poster checks that a process host still lives at most this often (ns).
LIVENESS_CHECK_NS = 5_000_000
#: Characters an automaton's name leaves for its inbox suffix (".inbox.<generation>").
INBOX_SUFFIX_ROOM = 24
#: Host kinds accepted by start().
HOSTS = ("thread", "process", "subprocess")
DEFAULT_START_METHOD = "spawn"

_IDLE, _RUNNING, _SIGNALED, _DRAINING, _DEAD = (int(m) for m in Mode)
_fsm_load = lib.rsm_fsm_load


def _remove_anonymous(pid: int, name: str) -> None:
    if os.getpid() == pid:  # not in fork children, which inherit the atexit list
        _inbox.remove_inboxes(name)


def _attach(name: str) -> "Automaton":
    return Automaton(name, create=False)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _pinned(method: Callable[Concatenate[Automaton, _P], _R]) -> Callable[Concatenate[Automaton, _P], _R]:
    """Run an Automaton method holding a pin on its status segment (ValueError once this
    handle is closed): a close() from another thread never unmaps under a running call."""

    def wrapper(self: Automaton, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._status.seg.pins:
            return method(self, *args, **kwargs)

    functools.update_wrapper(wrapper, method)
    return wrapper


class Automaton:
    """A finite-state-machine actor: ``Automaton(name=None, handler=None, state=None, *,
    create=None, capacity=DEFAULT_INBOX_CAPACITY, mode=0o600)``.

    ``create`` follows the segments' rule (None: open or create; True: must create; False:
    must exist).  A handle opened without a handler can post, drain, join and inspect, but
    not start.  ``name=None`` makes an anonymous automaton, removed when this process exits.

    The handler is called ``handler(state, op) -> next_state`` (see ``rsm_shm.fsm._core``
    for the opcodes and the TRANSITION rule).  Handles pickle as their name.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        handler: Optional[Handler] = None,
        state: Any = None,
        *,
        create: Optional[bool] = None,
        capacity: int = DEFAULT_INBOX_CAPACITY,
        mode: int = 0o600,
    ) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"an automaton handler must be callable, not {type(handler).__name__}")
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"inbox capacity must be a positive int, not {capacity!r}")
        self._handler = handler
        self._initial_state = state
        self._inbox: Optional[Ring] = None
        self._inbox_gen = -1
        # (generation, host) of the last host this handle started: a threading.Thread,
        # multiprocessing.Process or subprocess.Popen.  One tuple, replaced whole, so a
        # thread reading it never pairs one incarnation's generation with another's host.
        self._hosted: tuple[int, Any] = (-1, None)
        self._host_kind: Optional[str] = None
        self._start_method: Optional[str] = None
        self._daemon = True
        self._next_liveness_check = 0
        if name is not None and len(validate_name(name)) > MAX_NAME_LEN - INBOX_SUFFIX_ROOM:
            raise ValueError(
                f"automaton name {name!r} is too long: its inbox rings need "
                f"{INBOX_SUFFIX_ROOM} more characters within the {MAX_NAME_LEN}-character limit"
            )
        self._status = StatusBlock(
            name, create=create, mode=mode, inbox_capacity=capacity, on_create=self._create_first_inbox
        )
        if self._status.seg.created and self._status.seg.header.anonymous:
            # The status block of an anonymous automaton goes when this process exits; its
            # inbox rings are named after it and must go with it.
            atexit.register(_remove_anonymous, os.getpid(), self._status.seg.name)

    @property
    def _host(self) -> Any:
        return self._hosted[1]

    def _create_first_inbox(self, name: str, capacity: int) -> None:
        # Runs before the status segment is published: attachers always find generation 0.
        _inbox.remove_inboxes(name)  # a stale ring of an earlier automaton of this name
        ring = _inbox.open_inbox(name, 0, capacity, create=True)
        self._inbox, self._inbox_gen = ring, 0

    # -- identity ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._status.name

    @property
    @_pinned
    def mode(self) -> Mode:
        return self._status.mode()

    @property
    def closed(self) -> bool:
        return self._status.seg.closed

    def _check_open(self) -> None:
        if self._status.seg.closed:
            raise ValueError(f"Automaton {self._status.seg.name!r} is closed")

    def __reduce__(self) -> tuple[Callable[[str], Automaton], tuple[str]]:
        return (_attach, (self.name,))

    def __repr__(self) -> str:
        if self.closed:
            return f"<rsm_shm.fsm.Automaton {self._status.seg.name!r} closed>"
        try:
            stats: object = self.statistics()
        except Exception as e:  # a repr must never raise
            stats = f"unreadable: {e}"
        return f"<rsm_shm.fsm.Automaton {self.name!r} {stats}>"

    # -- the inbox -----------------------------------------------------------------------

    def _current_inbox(self, create: Optional[bool] = False) -> Optional[Ring]:
        """The ring of the current generation (re-opened after a restart), or None if gone."""
        gen = self._status.p.generation
        if gen != self._inbox_gen or self._inbox is None:
            try:
                ring = _inbox.open_inbox(self.name, gen, self._status.inbox_capacity, create=create)
            except FileNotFoundError:
                return None
            self._inbox, self._inbox_gen = ring, gen
        return self._inbox

    def _accepting_inbox(self) -> Ring:
        st = self._status
        w = st.word()
        m = w & MODE_MASK
        if m != _IDLE and m != _RUNNING:
            raise AutomatonShutDown(self.name, mode_of(w, self.name), self._closed_detail(w))
        now = time.monotonic_ns()
        if now >= self._next_liveness_check:
            self._next_liveness_check = now + LIVENESS_CHECK_NS
            if self._host_gone(w):
                self._declare_host_dead(w)
                w = st.word()
                if w & MODE_MASK == _DEAD:
                    raise AutomatonShutDown(self.name, mode_of(w, self.name), self._closed_detail(w))
        ring = self._current_inbox()
        if ring is None:
            raise AutomatonShutDown(self.name, mode_of(st.word(), self.name), "its inbox ring is gone")
        return ring

    def _closed_detail(self, w: int) -> str:
        if w & MODE_MASK != _DEAD:
            return ""
        if w & RESTART_PENDING:
            return "its supervisor is restarting it"
        kind = self._status.exit_kind()
        return {
            ExitKind.CLEAN: "it was drained",
            ExitKind.ERROR: "its handler raised",
            ExitKind.KILLED: "its host process died",
        }.get(kind, "")

    def post(self, payload: Union[bytes, bytearray, memoryview], timeout: Optional[float] = None) -> None:
        """Queue one command (bytes) for the handler; blocks while the inbox is full.

        Raises AutomatonShutDown if the automaton is draining or dead (nothing queued),
        queue.Full if the inbox stayed full for ``timeout`` seconds, TypeError for a
        payload that is not bytes-like.
        """
        # Fast path: the mode accepts commands, the cached ring is the current generation's
        # and the liveness check is not due: one mode load, one field read, one ring put
        # that never blocks (a full inbox goes the slow way, which watches the host).
        ring = self._inbox
        with self._status.seg.pins:  # ValueError once closed
            p = self._status.p
            if ring is not None and p is not None:
                if (
                    (_fsm_load(p) & MODE_MASK) <= _RUNNING
                    and p.generation == self._inbox_gen
                    and time.monotonic_ns() < self._next_liveness_check
                ):
                    try:
                        ring.put(payload, 0)
                        return
                    except (queue.Full, _inbox.ShutDown):
                        pass
            self._post_slow(payload, timeout)

    @_pinned
    def _post_slow(self, payload: Union[bytes, bytearray, memoryview], timeout: Optional[float]) -> None:
        self._put_blocking(lambda ring, left: ring.put(payload, left), timeout)

    @_pinned
    def post_many(
        self, payloads: Iterable[Union[bytes, bytearray, memoryview]], timeout: Optional[float] = None
    ) -> None:
        """Queue several commands in order, with one ring call per batch that fits.

        Blocks while the inbox is full, like post().  On timeout raises queue.Full whose
        ``sent`` attribute counts the commands queued (a prefix).  If the automaton starts
        draining or dies meanwhile, raises AutomatonShutDown; a prefix of the commands
        may have been queued (and is delivered, or counted as dropped, like any other).
        """
        items = [b if type(b) is bytes else bytes(b) for b in payloads]
        if not items:
            return
        sent = 0

        def put(ring: Ring, left: Optional[float]) -> None:
            nonlocal sent
            try:
                ring.put_many(items[sent:], left)
            except queue.Full as e:
                sent += getattr(e, "sent", 0)
                raise

        try:
            self._put_blocking(put, timeout)
        except queue.Full:
            full = queue.Full(f"{sent} of {len(items)} commands queued")
            full.sent = sent  # type: ignore[attr-defined]
            raise full from None

    def _put_blocking(self, put: Callable[[Any, float], None], timeout: Optional[float]) -> None:
        """The blocking loop of post() and post_many(): ``put(ring, seconds)`` into the
        current generation's inbox one slice at a time, so that a poster waiting on the
        full inbox of a host that was killed notices the death instead of waiting forever."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        failed = None  # the ring whose put raised ShutDown
        while True:
            if self._status.seg.closed:
                raise ValueError(f"Automaton {self.name!r} was closed while this thread waited on it")
            ring = self._accepting_inbox()  # raises if draining or dead (host death included)
            if ring is failed:
                # The ring we just failed on is still the current one: it was shut down by a
                # drain or a death that the mode word now shows (or is about to).
                w = self._status.word()
                raise AutomatonShutDown(
                    self.name, mode_of(w, self.name), self._closed_detail(w) or "its inbox is shut down"
                )
            left = POST_SLICE if deadline is None else min(POST_SLICE, max(deadline - time.monotonic(), 0.0))
            try:
                put(ring, left)
                return
            except _inbox.ShutDown:
                failed = ring  # drained or died since we looked, or restarted: look again
            except queue.Full:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                self._next_liveness_check = 0  # check the host before the next slice

    def post_nowait(self, payload: Union[bytes, bytearray, memoryview]) -> None:
        """post() without blocking: queue.Full at once if the inbox is full."""
        self.post(payload, timeout=0)

    @_pinned
    def qsize(self) -> int:
        """Commands waiting in the inbox (-1 if the inbox cannot be opened)."""
        ring = self._current_inbox()
        return -1 if ring is None else ring.qsize()

    # -- timers --------------------------------------------------------------------------

    @_pinned
    def after(self, delay: float, payload: bytes, timer: Optional[TimerService] = None) -> TimerHandle:
        """Post ``payload`` to this automaton after ``delay`` seconds (this process's shared
        timer unless ``timer`` is given); returns the timer handle (``.cancel()``)."""
        from .timer import default_timer

        return (timer or default_timer()).schedule(delay, self, payload)

    @_pinned
    def every(self, interval: float, payload: bytes, timer: Optional[TimerService] = None) -> TimerHandle:
        """Post ``payload`` to this automaton every ``interval`` seconds until the handle is
        cancelled or the automaton stops accepting commands (see TimerService.schedule_every)."""
        from .timer import default_timer

        return (timer or default_timer()).schedule_every(interval, self, payload)

    @_pinned
    def drain_after(self, delay: float, timer: Optional[TimerService] = None) -> TimerHandle:
        """drain() this automaton after ``delay`` seconds; returns the timer handle."""
        from .timer import default_timer

        return (timer or default_timer()).schedule_drain(delay, self)

    # -- lifecycle -----------------------------------------------------------------------

    @_pinned
    def drain(self) -> None:
        """Stop taking commands and let the automaton finish: the handler gets DRAIN, every
        command already queued, then EXIT, and the automaton ends DEAD (clean).

        Returns at once (``join()`` waits); idempotent.  Posts fail with
        AutomatonShutDown from the moment this returns.  Drained before it started, an
        automaton delivers START, DRAIN, the queue and EXIT when started.  On a dead
        automaton it only makes the death final: a supervisor will not restart it (nor one
        that fails while draining).
        """
        st = self._status
        while True:
            w = st.word()
            m = w & MODE_MASK
            if m == _DEAD and w & RESTART_PENDING:
                if st.cas(w, w & ~RESTART_PENDING):
                    break
                continue
            if m != _IDLE and m != _RUNNING:
                break
            if st.cas(w, with_mode(w, _SIGNALED)):
                break
        if st.word() & MODE_MASK in (_SIGNALED, _DRAINING):
            ring = self._current_inbox()
            if ring is not None:
                ring.shutdown()  # producers fail at once; the host's get() wakes up

    @_pinned
    def start(self, host: str = "thread", *, start_method: Optional[str] = None, daemon: bool = True) -> "Automaton":
        """Start a host running the handler: ``host`` is "thread" (in this process),
        "process" (a multiprocessing child; ``start_method`` spawn (default), fork or
        forkserver) or "subprocess" (``python -m rsm_shm.fsm._host``; the handler must be
        importable by name).  Returns self.

        Raises RuntimeError if this handle has no handler or the automaton already has a
        host or has ended.
        """
        if self._handler is None:
            raise RuntimeError(f"automaton {self.name!r}: this handle has no handler (it was attached by name)")
        if host not in HOSTS:
            raise ValueError(f"host must be one of {HOSTS}, not {host!r}")
        st = self._status
        w = st.word()
        if w & MODE_MASK not in (_IDLE, _SIGNALED) or st.p.host_kind != lib.RSM_FSM_HOST_NONE:
            raise RuntimeError(f"automaton {self.name!r} was already started ({mode_of(w, self.name).name})")
        self._host_kind, self._start_method, self._daemon = host, start_method, daemon
        self._launch()
        return self

    def _launch(self) -> None:
        """Start a host for the current generation (start() and supervisor restarts)."""
        st = self._status
        st.begin_incarnation(_safe_repr(self._initial_state, STATE_TEXT_MAX))
        name, gen = self.name, st.p.generation
        if self._host_kind == "thread":
            st.set_host(HostKind.THREAD, os.getpid())
            t = threading.Thread(
                target=_run_host,
                args=(name, gen, self._handler, self._initial_state),
                name=f"automaton {name}",
                daemon=True,
            )
            self._hosted = (gen, t)
            t.start()
            return
        if self._host_kind == "process":
            ctx = multiprocessing.get_context(self._start_method or DEFAULT_START_METHOD)
            args = (name, gen, self._handler, self._initial_state)
            p = ctx.Process(  # type: ignore[attr-defined]
                target=_process_main,
                args=args,
                name=f"automaton {name}",
                daemon=self._daemon,
            )
            try:
                p.start()
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                raise TypeError(
                    f"automaton {name!r}: a process host needs a handler and an initial state that "
                    f"pickle (a module-level function, not a lambda or a closure): {e}"
                ) from e
        else:
            try:
                blob = pickle.dumps((self._handler, self._initial_state))
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                raise TypeError(
                    f"automaton {name!r}: a subprocess host needs a handler and an initial state that "
                    f"pickle (an importable module-level function): {e}"
                ) from e
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(x for x in sys.path if x)
            p = subprocess.Popen(
                [sys.executable, "-m", "rsm_shm.fsm._host", name, str(gen)], stdin=subprocess.PIPE, env=env
            )
            try:
                p.stdin.write(blob)  # type: ignore[union-attr]
                p.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass  # the child died at once; join() reports it
        self._hosted = (gen, p)
        st.set_host(HostKind.PROCESS, p.pid)

    # -- death detection -----------------------------------------------------------------

    def _host_gone(self, w: int) -> bool:
        """True if the host of the incarnation that mode word ``w`` names is gone while
        ``w`` says it should run.  (The shared host record may already name a newer
        incarnation's host; then the tagged CAS in _declare_host_dead fails harmlessly.)"""
        if w & MODE_MASK == _DEAD:
            return False
        gen, h = self._hosted
        if h is not None and generation_tag(gen) == w & GEN_MASK:
            # Our own child: its exit status is authoritative (and polling reaps it; a
            # zombie child would look alive to /proc).
            if isinstance(h, subprocess.Popen):
                if h.poll() is not None:
                    return True
            elif not isinstance(h, threading.Thread):
                if h.exitcode is not None:
                    return True
        return not self._status.host_alive()

    def _host_exit_description(self, generation: int) -> str:
        gen, h = self._hosted
        code = None
        if gen == generation:
            if isinstance(h, subprocess.Popen):
                code = h.poll()
            elif h is not None and not isinstance(h, threading.Thread):
                code = h.exitcode
        pid = self._status.p.host_pid
        if code is None:
            return f"host process {pid} died"
        if code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:
                sig = f"signal {-code}"
            return f"host process {pid} was killed by {sig}"
        return f"host process {pid} exited with status {code} without ending the automaton"

    def _declare_host_dead(self, w: int) -> bool:
        """Record that the host of the incarnation named by mode word ``w`` died and
        publish DEAD (KILLED); True if this call did.  Does nothing if that incarnation
        ended meanwhile or was replaced by a restart (the tag in ``w`` no longer matches),
        so that however many threads and processes notice one death, it is one death."""
        st = self._status
        generation = int(st.p.generation)
        if generation_tag(generation) != w & GEN_MASK:
            return False  # a restart is under way (the generation moves before the word)
        text = f"automaton {self.name!r}: {self._host_exit_description(generation)} (generation {generation})"
        try:
            ring = _inbox.open_inbox(self.name, generation, st.inbox_capacity, create=False)
        except FileNotFoundError:
            ring = None
        try:
            return _finish_dead(st, generation, ring, ExitKind.KILLED, text)
        finally:
            if ring is not None:
                _inbox.release(ring)

    @_pinned
    def check_host(self) -> bool:
        """Declare the automaton DEAD if its host process died unnoticed; True if this call
        did.  Any number of threads and processes may call it at once, also while a
        supervisor restarts the automaton: one death is declared once.

        join(), post() and supervisors call this; it is public for monitors.
        """
        w = self._status.word()
        return self._host_gone(w) and self._declare_host_dead(w)

    @_pinned
    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL the host process (for a handler stuck for good) and publish the death:
        the automaton ends DEAD (KILLED) as if the process had been killed from outside,
        and a supervisor restarts it.  Raises RuntimeError for a thread host (a thread
        cannot be killed) and TimeoutError if the process is still there after ``timeout``.
        """
        st = self._status
        p = st.p
        if p.host_kind != lib.RSM_FSM_HOST_PROCESS or p.host_pid <= 0:
            raise RuntimeError(f"automaton {self.name!r} has no host process to kill")
        if st.word() & MODE_MASK == _DEAD:
            return
        if st.host_alive():  # checks the start time: never signal a recycled pid
            try:
                os.kill(p.host_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            w = st.word()
            if w & MODE_MASK == _DEAD:
                return
            if self._host_gone(w):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"automaton {self.name!r}: host process {p.host_pid} survived SIGKILL")
            time.sleep(0.001)
        self._declare_host_dead(w)

    # -- waiting -------------------------------------------------------------------------

    @_pinned
    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until the automaton has ended for good; True if it ended cleanly (drained).

        Returns False if ``timeout`` seconds passed first.  Raises AutomatonFailed (with the
        recorded traceback or death report) if it ended by a handler exception or the death
        of its host.  While a supervisor may restart it (DEAD with a restart pending), join
        keeps waiting; if the supervisor's process died, the death is final.
        """
        me = getattr(_runner_local, "automaton", None)
        if me is not None and me.name == self.name:
            raise RuntimeError(f"automaton {self.name!r} cannot join itself from its own handler (it would never end)")
        st = self._status
        deadline = _base.deadline(timeout, _base.RULE_WAIT)  # threading.Thread.join's rules
        while True:
            w = st.word()
            m = w & MODE_MASK
            if m == _DEAD:
                if not w & RESTART_PENDING or not st.supervisor_alive():
                    return self._outcome()
            elif self._host_gone(w):
                self._declare_host_dead(w)
                continue
            if deadline == _base.DEADLINE_TOO_LARGE:
                raise _base.too_large()  # only once it must wait, as threading does
            if st.seg.closed:
                raise ValueError(f"Automaton {self.name!r} was closed while this thread waited on it")
            r = st.wait_change(w, deadline)
            if r == lib.RSM_TIMEOUT:
                return False

    def _outcome(self) -> bool:
        h = self._host
        if h is not None and not isinstance(h, threading.Thread):
            # Reap an ended host process without blocking (it exits right after DEAD).
            if isinstance(h, subprocess.Popen):
                h.poll()
            else:
                h.exitcode  # noqa: B018 -- the property polls waitpid
        kind = self._status.exit_kind()
        if kind is ExitKind.CLEAN:
            return True
        raise AutomatonFailed(self.name, kind, self._status.error_text() or "ended without a report")

    @_pinned
    def exception(self) -> Optional[AutomatonFailed]:
        """The failure that ended it (None while running or if it ended cleanly)."""
        w = self._status.word()
        if w & MODE_MASK != _DEAD or self._status.exit_kind() is ExitKind.CLEAN:
            return None
        return AutomatonFailed(self.name, self._status.exit_kind(), self._status.error_text())

    def stop(self, timeout: Optional[float] = None) -> bool:
        """drain() then join(timeout)."""
        self.drain()
        return self.join(timeout)

    # -- introspection and lifetime ------------------------------------------------------

    @_pinned
    def statistics(self) -> AutomatonStatistics:
        """A frozen snapshot of the status block (mode, state, inbox depth, counters, error)."""
        try:
            depth = self.qsize()
        except Exception:
            depth = -1
        return self._status.statistics(depth)

    def describe(self) -> dict[str, Any]:
        """:meth:`statistics` as JSON-ready data (what ``rsm-shm inspect`` shows)."""
        return plain_record(self.statistics())

    def close(self) -> None:
        """Unmap this handle (idempotent); the automaton itself is unaffected."""
        ring, self._inbox = self._inbox, None
        if ring is not None:
            _inbox.release(ring)
        self._status.close()

    def unlink(self) -> None:
        """Remove the automaton's names (status block and every inbox ring); idempotent.
        Running hosts keep their mappings; nobody can attach any more."""
        self._status.seg.unlink()
        _inbox.remove_inboxes(self._status.seg.name)

    def __enter__(self) -> "Automaton":
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- posting by name -----------------------------------------------------------------------

_handles: dict[str, Automaton] = {}
_handles_lock = threading.Lock()


def _forget_handles() -> None:
    global _handles_lock
    # A fork child starts afresh: the parent's handles are fine to drop, and the lock may
    # have been held by a thread that does not exist here.
    _handles.clear()
    _handles_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_handles)


def post(
    name: Union[str, Automaton], payload: Union[bytes, bytearray, memoryview], timeout: Optional[float] = None
) -> None:
    """Post a command to the automaton called ``name`` from any process (handles are cached
    per process).  Same errors as Automaton.post; FileNotFoundError if no such automaton."""
    if isinstance(name, Automaton):
        name.post(payload, timeout)
        return
    a = _handles.get(name)
    if a is None or a.closed:
        with _handles_lock:
            a = _handles.get(name)
            if a is None or a.closed:
                a = _handles[name] = Automaton(name, create=False)
    try:
        a.post(payload, timeout)
    except AutomatonShutDown:
        # The cached handle may map an automaton that was since removed and created anew
        # under the same name: if so, post to the new one.
        fresh = _replaced(a)
        if fresh is None:
            raise
        with _handles_lock:
            _handles[name] = fresh
        fresh.post(payload, timeout)


def _replaced(a: Automaton) -> Optional[Automaton]:
    """A handle on the automaton now called ``a.name`` if it is another one than ``a``'s
    (unlinked and created again), else None."""
    try:
        fresh = Automaton(a.name, create=False)
    except (FileNotFoundError, ValueError):
        return None
    if (
        fresh._status.seg.header.created == a._status.seg.header.created
        and fresh._status.seg.header.creator_pid == a._status.seg.header.creator_pid
    ):
        fresh.close()
        return None
    return fresh


def wait_all(automata: Iterable[Union[Automaton, str]], timeout: Optional[float] = None) -> bool:
    """Wait until every automaton has ended for good (the seed's group guard).

    Returns True when all ended cleanly and False if ``timeout`` passed first.  Failures do
    not stop the wait: once all have ended, the first AutomatonFailed is raised (its
    ``others`` attribute lists the rest).
    """
    opened = []
    handles = []
    for a in automata:
        if not isinstance(a, Automaton):
            a = Automaton(a, create=False)
            opened.append(a)
        handles.append(a)
    deadline = None if timeout is None else time.monotonic() + timeout
    failures = []
    try:
        for a in handles:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                if not a.join(left):
                    return False
            except AutomatonFailed as e:
                failures.append(e)
    finally:
        for a in opened:
            a.close()
    if failures:
        first = failures[0]
        first.others = failures[1:]  # type: ignore[attr-defined]
        raise first
    return True
