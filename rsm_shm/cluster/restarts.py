"""Automatic restart of crashed peers: :class:`RestartPolicy` and the thread that applies it.

``LocalCluster(..., restart_failed=True)`` (or a :class:`RestartPolicy`) makes the process
that started the cluster watch its peers: a peer whose process dies although nobody asked
it to (a crash, the OOM killer, a ``kill -9`` from outside) is marked ``crashed`` and
started again from its log after a backoff; its count of automatic restarts shows in
:meth:`LocalCluster.status` (``PeerStatus.restarts``) and ``rsm-shm cluster status``.
A peer that crashes more than ``max_restarts`` times within ``window`` seconds is a
crash loop: it is marked ``failed`` and left dead (its log file says why) until
:meth:`LocalCluster.restart` starts it by hand -- a loop is shown, never hidden.

What is never restarted: a peer stopped or killed through the cluster's own API
(:meth:`LocalCluster.kill`, ``rsm-shm cluster kill`` from any process: fault injection
stays in force), a paused peer that died (it was not running by the user's wish), a
removed peer, and every peer once the cluster is stopping.  The rule is the control
block's slot state: only a slot still marked ``running`` whose process is gone is a
crash, and every deliberate stop changes the slot before it signals the process.

The watcher is a daemon thread of the owning process (the one that called ``start()``,
e.g. the foreground ``rsm-shm cluster start --restart-failed``): it polls the slots every
``interval`` seconds (a liveness check of each process in ``/proc``, no round trip to
any peer) and starts peers the way ``start()`` does, with ``subprocess``: a fresh
interpreter is exec'ed straight from C (CPython uses vfork where it can), so no Python
code ever runs in a forked copy of this threaded process.  An attached handle
(:meth:`LocalCluster.attach`) never watches, and once the owner dies nobody restarts
anything.
"""

from __future__ import annotations

import collections
import math
import threading
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Deque, Dict, Optional, Set

from .. import _proc
from .control import PEER_CRASHED, PEER_FAILED, PEER_RUNNING, ControlBlock, RawControl, set_slot

if TYPE_CHECKING:
    import subprocess

__all__ = ["RestartPolicy", "RestartWatcher"]


@dataclass(frozen=True)
class RestartPolicy:
    """How the owner of a :class:`~rsm_shm.cluster.LocalCluster` restarts crashed peers.

    * ``max_restarts``: automatic restarts of one peer allowed within ``window`` seconds;
      the crash after that marks it ``failed`` and leaves it dead.
    * ``backoff``: seconds from noticing a crash to the restart; doubled for every
      restart of that peer already within the window, up to ``max_backoff``.
    * ``interval``: seconds between two looks at the peers' processes (how long a crash
      may go unnoticed).

    ``restart_failed=True`` means ``RestartPolicy()``: 5 restarts a minute, 0.1 s backoff
    doubling up to 5 s, a look every 50 ms.
    """

    max_restarts: int = 5
    window: float = 60.0
    backoff: float = 0.1
    max_backoff: float = 5.0
    interval: float = 0.05

    def __post_init__(self) -> None:
        if not isinstance(self.max_restarts, int) or isinstance(self.max_restarts, bool) or self.max_restarts < 1:
            raise ValueError(f"RestartPolicy: max_restarts must be a positive int, not {self.max_restarts!r}")
        for name in ("window", "backoff", "max_backoff", "interval"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"RestartPolicy: {name} must be a finite number of seconds >= 0, not {v!r}")
        if self.window <= 0 or self.interval <= 0:
            raise ValueError(f"RestartPolicy: window and interval must be > 0, not {self.window!r}, {self.interval!r}")

    def delay(self, recent: int) -> float:
        """The backoff before a restart, after ``recent`` restarts within the window."""
        return min(self.max_backoff, self.backoff * 2.0 ** min(recent, 60))


class RestartWatcher:
    """The thread that applies a :class:`RestartPolicy` for the cluster's owner.

    ``spawn(peer_id)`` starts a peer process and returns it; ``reap(peer_id)`` collects
    the exit status of a child that died (so no zombie lingers); ``note(peer_id, text)``
    appends a line to the peer's log.  ``lock`` is the owner's lock around fault
    injection, held while the watcher decides and acts, so an in-process ``kill()``
    never looks like a crash.
    """

    def __init__(
        self,
        name: str,
        ctl: ControlBlock,
        policy: RestartPolicy,
        lock: "threading.RLock",
        spawn: Callable[[int], "subprocess.Popen[bytes]"],
        reap: Callable[[int], None],
        note: Callable[[int, str], None],
    ) -> None:
        self.name = name
        self.policy = policy
        self._ctl = ctl
        self._lock = lock
        self._spawn = spawn
        self._reap = reap
        self._note = note
        self._recent: Dict[int, Deque[float]] = {}  # peer -> times of its restarts in the window
        self._due: Dict[int, float] = {}  # crashed peer -> when to restart it
        self._given_up: Set[int] = set()  # peers marked failed by this watcher
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None  # the last unexpected error (the thread goes on)

    def start(self) -> None:
        def change(rec: RawControl) -> None:
            rec.restart_max = self.policy.max_restarts
            rec.restart_window_ms = int(self.policy.window * 1000)

        self._ctl.update(change)
        self._thread = threading.Thread(target=self._run, name=f"rsm_shm restarts {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (idempotent); returns once the thread has ended."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()
        self._thread = None

    def forget(self, peer: int) -> None:
        """The user restarted ``peer`` by hand: its crash history starts again."""
        self._recent.pop(peer, None)
        self._due.pop(peer, None)
        self._given_up.discard(peer)

    def _run(self) -> None:
        while not self._stop.wait(self.policy.interval):
            try:
                self.check()
            except Exception as exc:  # e.g. a torn control block: look again next time
                self.error = exc

    def check(self) -> None:
        """One look at every peer: mark the crashed, restart those whose backoff ended."""
        with self._lock:
            if self._stop.is_set():
                return
            rec = self._ctl.load()
            if rec.stopping:
                return
            now = time.monotonic()
            for peer, (state, pid, start) in ControlBlock.slots_of(rec).items():
                if peer in self._given_up and state != PEER_FAILED:
                    self.forget(peer)  # restarted by hand, maybe from another process
                if state == PEER_RUNNING and pid and not _proc.process_alive(pid, start):
                    self._crashed(peer, pid, start, now)
                elif state == PEER_CRASHED and now >= self._due.get(peer, 0.0):
                    self._restart(peer)

    def _crashed(self, peer: int, pid: int, start: int, now: float) -> None:
        self._reap(peer)
        recent = self._recent.setdefault(peer, collections.deque())
        while recent and now - recent[0] > self.policy.window:
            recent.popleft()
        give_up = len(recent) >= self.policy.max_restarts
        marked = []

        def change(rec: RawControl) -> None:
            s = rec.peers[peer - 1]
            # Still the process we saw die, and nobody stopped, killed or paused it since.
            if rec.stopping or s.state != PEER_RUNNING or s.pid != pid or s.start_time != start:
                return
            set_slot(rec, peer, PEER_FAILED if give_up else PEER_CRASHED)
            marked.append(True)

        self._ctl.update(change)
        if not marked:
            return
        if give_up:
            self._given_up.add(peer)
            w = self.policy.window
            msg = (
                f"cluster {self.name!r}: peer {peer} died {len(recent) + 1} times within {w:g} s; "
                f"not restarted again (restart({peer}) starts it by hand)"
            )
            self._note(peer, "rsm_shm: " + msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=1)
            return
        delay = self.policy.delay(len(recent))
        self._note(peer, f"rsm_shm: peer {peer} (pid {pid}) died unasked; restarting it in {delay:.3g} s")
        self._due[peer] = now + delay

    def _restart(self, peer: int) -> None:
        self._due.pop(peer, None)
        started = []

        def change(rec: RawControl) -> None:
            if rec.stopping or rec.peers[peer - 1].state != PEER_CRASHED:
                return  # restarted, killed or stopped by someone else meanwhile
            proc = self._spawn(peer)
            set_slot(rec, peer, PEER_RUNNING, proc.pid, _proc.start_time(proc.pid))
            rec.restarts[peer - 1] += 1
            started.append(proc)

        self._ctl.update(change)
        if started:
            self._recent.setdefault(peer, collections.deque()).append(time.monotonic())
