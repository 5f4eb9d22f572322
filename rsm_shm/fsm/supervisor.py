"""Supervisor: restart automata that died, within a bounded restart policy.

A supervisor is a thread in the process that owns the automata's handles (it needs their
handlers to start new hosts).  It marks each automaton's status block as supervised, so
an incarnation that dies (handler exception, or host process killed) publishes
``DEAD | RESTART_PENDING`` instead of a final DEAD, and joiners keep waiting.  The
supervisor then either restarts it -- a new generation with a fresh inbox ring, the
*initial* state, START delivered again -- or, when the policy is exhausted, gives up and
clears RESTART_PENDING: joiners then get the last failure.

It polls (every POLL_INTERVAL) rather than sleeping on each automaton, so one thread
watches any number of automata and also notices hosts killed by SIGKILL, which publish
nothing.  If the supervisor's process dies, joiners see its pid gone and treat a pending
restart as final.

Other threads and processes may watch too (``join()``, ``check_host()``, posting) while
a restart is under way: each death is declared once and restarted once.  The restart
publishes the new generation's tag in the mode word with the CAS to IDLE, and a death is
declared by a CAS from the word read before the host was judged, so a late declaration
about the old incarnation fails (see csrc/automaton.h).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass
from typing import Optional

from . import _inbox
from ._status import MODE_MASK, RESTART_PENDING, ExitKind, HostKind, Mode, generation_tag
from .automaton import Automaton

__all__ = ["RestartPolicy", "Supervisor", "SupervisorStatistics"]

#: How often the supervisor looks at its automata (seconds).
POLL_INTERVAL = 0.01
_DEAD = int(Mode.DEAD)
_IDLE = int(Mode.IDLE)


@dataclass(frozen=True)
class RestartPolicy:
    """At most ``max_restarts`` restarts within any ``window`` seconds; the failure after
    that is final.  ``max_restarts=0`` never restarts (supervision only reports)."""

    max_restarts: int = 3
    window: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ValueError(f"max_restarts must be a non-negative int, not {self.max_restarts!r}")
        if not self.window > 0:
            raise ValueError(f"window must be positive, not {self.window!r}")


@dataclass(frozen=True)
class SupervisorStatistics:
    watched: int  # automata this supervisor watches now
    restarts: int  # restarts it made since it was created
    gave_up: int  # deaths it left final because the restart budget was spent


class _Watch:
    __slots__ = ("automaton", "restarts")

    def __init__(self, automaton: Automaton) -> None:
        self.automaton = automaton
        self.restarts: collections.deque[float] = collections.deque()


class Supervisor:
    """Watch automata and restart the ones that die: ``Supervisor(policy=RestartPolicy())``.

    ``watch(automaton)`` (a handle that has a handler, before or after ``start()``); the
    automaton is restarted on the same kind of host it was started on.  ``stop()`` stops
    watching: pending restarts become final failures.  The supervisor thread uses the
    handles it watches: ``unwatch()`` a handle (or stop the supervisor) before closing it.
    """

    def __init__(self, policy: RestartPolicy = RestartPolicy(), *, name: str = "rsm_shm supervisor") -> None:
        if not isinstance(policy, RestartPolicy):
            raise TypeError(f"policy must be a RestartPolicy, not {type(policy).__name__}")
        self.policy = policy
        self._name = name
        self._lock = threading.Lock()  # guards the watch list and the counters
        self._busy = threading.Lock()  # held while the thread checks or restarts one automaton
        self._watches: dict[str, _Watch] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._restarts = 0
        self._gave_up = 0

    def watch(self, automaton: Automaton) -> Automaton:
        """Supervise ``automaton``; returns it.  Raises RuntimeError for a handle without a
        handler (nothing to restart it with)."""
        if automaton._handler is None:
            raise RuntimeError(f"automaton {automaton.name!r}: a supervisor needs a handle that has a handler")
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError(f"{self._name} is stopped")
            automaton._status.set_supervisor(os.getpid())
            self._watches[automaton.name] = _Watch(automaton)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return automaton

    def unwatch(self, automaton: Automaton) -> None:
        """Stop supervising ``automaton`` (a pending restart becomes final).  Returns once
        the supervisor thread no longer uses the handle: it may be closed then."""
        with self._busy:  # waits for a check or restart of it in progress
            with self._lock:
                w = self._watches.pop(automaton.name, None)
            if w is not None and not w.automaton.closed:
                self._release(w.automaton)

    def _release(self, a: Automaton) -> None:
        st = a._status
        st.set_supervisor(0)
        word = st.word()
        if word & RESTART_PENDING:
            st.cas(word, word & ~RESTART_PENDING)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            with self._lock:
                watches = list(self._watches.values())
            for w in watches:
                with self._busy:
                    if self._watches.get(w.automaton.name) is not w:
                        continue  # unwatched meanwhile
                    try:
                        self._check(w)
                    except Exception as e:  # never let one automaton stop the others' supervision
                        self._give_up(w, f"the supervisor failed to restart it: {type(e).__name__}: {e}")

    def _check(self, w: _Watch) -> None:
        # Pin the watched handle's status block: the user may close() that handle at any
        # moment, and the mapping must outlive this check (see segment.Segment.close).
        try:
            w.automaton._status.seg.begin_use()
        except ValueError:
            return  # closed: nothing to watch through this handle
        try:
            self._check_pinned(w)
        finally:
            w.automaton._status.seg.end_use()

    def _check_pinned(self, w: _Watch) -> None:
        a = w.automaton
        st = a._status
        word = st.word()
        if word & MODE_MASK != _DEAD:
            if a._host_gone(word):
                a._declare_host_dead(word)
            return
        if not word & RESTART_PENDING:
            return
        now = time.monotonic()
        while w.restarts and now - w.restarts[0] > self.policy.window:
            w.restarts.popleft()
        if len(w.restarts) >= self.policy.max_restarts:
            self._give_up(
                w,
                f"{self._name} gave up: {len(w.restarts)} restarts within "
                f"{self.policy.window:g} s (policy {self.policy})",
            )
            return
        w.restarts.append(now)
        self._restart(a, word)

    def _restart(self, a: Automaton, word: int) -> None:
        st = a._status
        _reap(a._host)
        p = st.p
        gen = p.generation + 1
        # The new generation's ring exists before the status block names it, and the dead
        # host is forgotten before IDLE is published (else a joiner would see a dead host
        # "running" and declare it killed again).  The CAS that publishes IDLE also
        # publishes the new generation's tag: from then on, a death noticed late for the
        # old generation (by any thread or process) fails its CAS instead of ending this
        # one, so each death is counted, and restarted, once.
        _inbox.release(_inbox.open_inbox(a.name, gen, st.inbox_capacity, create=True))
        try:
            old_ring = _inbox.open_inbox(a.name, gen - 1, st.inbox_capacity, create=False)
        except FileNotFoundError:
            queued = 0
        else:
            queued = max(old_ring.qsize(), 0)
            _inbox.release(old_ring)
        old_host = (p.host_kind, p.host_pid, p.host_tid, p.host_start)
        # Readers count a DEAD incarnation's leftovers as dropped; from IDLE on they must
        # be in the field.  (A reader in between may see them twice for an instant.)
        old_counts = st.fold_dropped(queued)
        p.generation = gen
        p.restarts += 1
        st.set_host(HostKind.NONE, 0)
        if not st.cas(word, generation_tag(gen) | _IDLE):
            # drain() made the death final meanwhile: undo, the automaton stays DEAD.
            p.host_kind, p.host_pid, p.host_tid, p.host_start = old_host
            p.dropped, p.taken = old_counts
            p.restarts -= 1
            p.generation = gen - 1
            _inbox.unlink_generation(a.name, gen)
            return
        _inbox.unlink_generation(a.name, gen - 1)
        with self._lock:
            self._restarts += 1
        a._launch()

    def _give_up(self, w: _Watch, note: str) -> None:
        st = w.automaton._status
        word = st.word()
        if word & MODE_MASK != _DEAD or not word & RESTART_PENDING:
            return
        text = st.error_text()
        st.set_error(
            st.exit_kind() if st.exit_kind() is not ExitKind.NONE else ExitKind.ERROR, f"{note}\n{text}"
        )  # the note first: the last line stays the error itself
        with self._lock:
            self._gave_up += 1  # counted before joiners can wake
        st.cas(word, word & ~RESTART_PENDING)

    # -- lifetime ------------------------------------------------------------------------

    def statistics(self) -> SupervisorStatistics:
        with self._lock:
            return SupervisorStatistics(watched=len(self._watches), restarts=self._restarts, gave_up=self._gave_up)

    def stop(self, timeout: Optional[float] = 5.0) -> None:
        """Stop supervising (idempotent): pending restarts become final failures."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        for w in watches:
            if not w.automaton.closed:
                self._release(w.automaton)

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<rsm_shm.fsm.Supervisor {self._name!r} {self.statistics()} {self.policy}>"


def _reap(host: object) -> None:
    """Wait briefly for a dead host to finish (a thread ends right after publishing DEAD)."""
    if host is None:
        return
    if hasattr(host, "join"):
        host.join(1.0)
    elif hasattr(host, "wait"):
        try:
            host.wait(1.0)
        except Exception:
            pass
