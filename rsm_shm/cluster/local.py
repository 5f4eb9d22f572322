"""``LocalCluster``: start, watch, fault-inject and tear down a cluster of peer processes.

``LocalCluster(name, state_machine, peers=None, data_dir=None, fsync=True,
restart_failed=False, **timing)`` describes a cluster (``peers``: 3 unless given, or the data directory records them);
:meth:`start` (or ``with``) creates its segments (control block,
one inbox ring and one status record per peer; see :mod:`rsm_shm.cluster.layout`),
writes ``cluster.json`` into the data directory and starts one process per peer
(``python -m rsm_shm.cluster.peer``, via ``subprocess``: no fork).  Peer ids are 1..N.

Errors at start, each a clear exception before any peer runs: a state machine import
path that does not import (ValueError naming it), a running cluster with the same name
(RuntimeError naming the managing process; the leftovers of a dead one are reclaimed),
a data directory that belongs to another cluster or was written by a newer rsm_shm
(ValueError naming the file), and a ``peers`` count other than the one a reused data
directory was created with (ValueError: the membership of an existing cluster lives in
its peers' logs and changes only through :meth:`add_peer` / :meth:`remove_peer`).

Fault injection acts on real processes and the shared control block: :meth:`kill`
(SIGKILL), :meth:`restart`, :meth:`pause`/:meth:`resume` (SIGSTOP/SIGCONT),
:meth:`partition` (the peers drop what they would send across groups),
:meth:`set_drop_rate`.  Membership: :meth:`add_peer` (a learner that catches up from a
snapshot and is then promoted to voter), :meth:`remove_peer`, and
:meth:`transfer_leadership`.

Automatic restart (off by default): with ``restart_failed=True`` or a
:class:`~rsm_shm.cluster.restarts.RestartPolicy`, the process that called :meth:`start`
restarts every peer whose process dies unasked (a crash, an outside ``kill -9``), after a
backoff, at most ``max_restarts`` times per ``window``; then the peer is marked
``failed`` and left dead.  :meth:`kill` and ``rsm-shm cluster kill`` are fault
injection and are *not* undone: a peer killed through the API stays dead until
:meth:`restart`.  Counts show in :meth:`status` (``PeerStatus.restarts``; state
``crashed`` while a restart is pending, ``failed`` once given up).  See
:mod:`rsm_shm.cluster.restarts`.

:meth:`stop` stops the peers gracefully (SIGTERM; SIGKILL after a grace period) and
removes the segments; the data directory stays, and a later :meth:`start` with the same
directory carries on from the peers' logs.  :meth:`destroy` stops and removes the data
directory too.  ``with LocalCluster(...)`` destroys on exit when the data directory was
temporary, else stops.  :meth:`attach` controls a running cluster from another process
(the CLI does so); an attached handle does everything but owns no child process.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from .. import _proc
from ..ring import Ring
from ..segment import SHM_DIR, PREFIX, validate_name
from . import envelope as ev
from .client import Client
from .control import (
    PEER_ABSENT,
    PEER_KILLED,
    PEER_PAUSED,
    PEER_REMOVED,
    PEER_RUNNING,
    PEER_STATES,
    PEER_STOPPED,
    PPM,
    ControlBlock,
    RawControl,
    set_data_dir,
    set_partition,
    set_slot,
)
from .layout import (
    FORMAT_VERSION,
    INBOX_CAPACITY,
    Timing,
    inbox_name,
    read_config,
    remove_segments,
    write_config,
)
from .restarts import RestartPolicy, RestartWatcher
from .statemachine import load_state_machine
from .storage import NotDurableWarning
from .status import MAX_PEER_ID, PeerStatus, StatusRecord, status_segment_name

__all__ = ["LocalCluster"]

_STOP_GRACE = 5.0
_START_TIMEOUT = 60.0
_LINKS_TIMEOUT = 1.0
_POLL = 0.005


# The peer's entry point.  Not `python -m`: that puts the working directory first on the
# module path, ahead of PYTHONPATH, so a checkout of rsm_shm in the working directory
# (uncompiled, as after `pip install .` from it) would shadow the installed package the
# manager runs.  Dropping that entry leaves exactly the manager's search path.
_PEER_MAIN = "import sys; del sys.path[0]; from rsm_shm.cluster.peer import main; sys.exit(main(sys.argv[1:]))"


class LocalCluster:
    """A cluster of peer processes on this machine (see the module docstring)."""

    def __init__(
        self,
        name: str,
        state_machine: str,
        peers: Optional[int] = None,
        data_dir: Optional[str] = None,
        fsync: bool = True,
        restart_failed: Union[bool, RestartPolicy] = False,
        **timing: float,
    ) -> None:
        self.name = validate_name(name)
        if not isinstance(state_machine, str):
            raise TypeError(f"state_machine must be an import path 'package.module:Class', not {state_machine!r}")
        if peers is not None and (not isinstance(peers, int) or not 1 <= peers <= MAX_PEER_ID):
            raise ValueError(f"peers must be an int between 1 and {MAX_PEER_ID}, not {peers!r}")
        if isinstance(restart_failed, RestartPolicy):
            self.restart_policy: Optional[RestartPolicy] = restart_failed
        elif isinstance(restart_failed, bool):
            self.restart_policy = RestartPolicy() if restart_failed else None
        else:
            raise TypeError(f"restart_failed must be a bool or a RestartPolicy, not {restart_failed!r}")
        self.state_machine = state_machine
        self._peers_given = peers is not None
        self.peers = 3 if peers is None else peers
        self.fsync = bool(fsync)
        self.timing = Timing.from_kwargs(timing)
        self._temp = data_dir is None
        self.data_dir: Optional[str] = None if data_dir is None else os.path.abspath(data_dir)
        self._ctl: Optional[ControlBlock] = None
        self._procs: Dict[int, subprocess.Popen[bytes]] = {}
        self._clients: List[Client] = []
        self._admin_client: Optional[Client] = None
        self._records: Dict[int, StatusRecord] = {}
        self._attached = False
        self._served = False  # attached to peers run by `rsm-shm cluster serve`
        self._started = False
        # Held by fault injection and by the restart watcher while it decides and acts,
        # so that kill() in this process never looks like a crash to the watcher.
        self._lock = threading.RLock()
        self._watcher: Optional[RestartWatcher] = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def attach(cls, name: str) -> "LocalCluster":
        """A handle on the running cluster ``name`` (started by another process).
        Raises FileNotFoundError if it does not run."""
        name = validate_name(name)
        try:
            ctl = ControlBlock(name)
        except FileNotFoundError:
            raise FileNotFoundError(f"no running cluster named {name!r}") from None
        try:
            data_dir = ControlBlock.data_dir_of(ctl.load())
            cfg = read_config(data_dir)
            if cfg is None:
                raise FileNotFoundError(f"cluster {name!r}: no {data_dir}/cluster.json")
        except BaseException:
            ctl.close()
            raise
        self = cls.__new__(cls)
        self.name = name
        self.state_machine = cfg["state_machine"]
        self.peers = len(cfg["peers"])
        self._peers_given = False
        self.fsync = bool(cfg["fsync"])
        self.timing = Timing.from_config(cfg["timing"])
        self._temp = False
        self.data_dir = data_dir
        self._ctl = ctl
        self._procs = {}
        self._clients = []
        self._admin_client = None
        self._records = {}
        self._attached = True
        self._served = "served" in cfg
        self._started = True
        self.restart_policy = None  # only the process that started the cluster restarts peers
        self._lock = threading.RLock()
        self._watcher = None
        return self

    def start(self) -> "LocalCluster":
        """Create the segments and start every peer.  Returns self."""
        if self._started:
            raise RuntimeError(f"cluster {self.name!r} is already started")
        load_state_machine(self.state_machine)  # a wrong import path fails here, clearly
        if not self.fsync:
            warnings.warn(
                f"cluster {self.name!r} runs with fsync=False: its peers never sync their logs, so an OS "
                "crash or power loss can lose acknowledged writes.  For tests and benchmarks only.",
                NotDurableWarning,
                stacklevel=2,
            )
        made_dir = False
        if self.data_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix=f"rsm_shm-{self.name}-")
            made_dir = True
        else:
            os.makedirs(self.data_dir, exist_ok=True)
        try:
            cfg = self._prepare_config()
            self._create_control(cfg)
        except BaseException:
            if made_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir = None
            raise
        self._started = True
        try:
            for pid in cfg["peers"]:
                self._make_peer_segments(pid)
            for pid in cfg["peers"]:
                self._spawn(pid)
            self._await_started(cfg["peers"], time.monotonic() + _START_TIMEOUT)
            if self.restart_policy is not None:
                self._watcher = RestartWatcher(
                    self.name,
                    self._check_started(),
                    self.restart_policy,
                    self._lock,
                    self._spawn_process,
                    self._reap,
                    self._note,
                )
                self._watcher.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _await_started(self, ids: Iterable[int], deadline: float) -> None:
        """Wait until every peer in ``ids`` published its status (it opened its log and
        runs); a peer that exits first fails the start with its last words."""
        waiting = set(ids)
        while waiting:
            for pid in sorted(waiting):
                proc = self._procs[pid]
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"cluster {self.name!r}: peer {pid} exited with status {proc.returncode} while starting:\n"
                        f"{self.peer_log(pid, 12)}"
                    )
                try:
                    rec = StatusRecord(status_segment_name(self.name, pid), create=False)
                except (FileNotFoundError, ValueError):
                    continue
                try:
                    raw = rec.load()
                finally:
                    rec.close()
                if raw is not None and raw.pid == proc.pid:
                    waiting.discard(pid)
            if waiting and time.monotonic() >= deadline:
                raise TimeoutError(f"cluster {self.name!r}: peers {sorted(waiting)} did not start in time")
            time.sleep(_POLL)

    def _dir(self) -> str:
        """The data directory (set by start(), or given)."""
        if self.data_dir is None:
            raise RuntimeError(f"cluster {self.name!r} has no data directory (not started)")
        return self.data_dir

    def _prepare_config(self) -> Dict[str, Any]:
        cfg = read_config(self._dir())
        if cfg is None:
            cfg = {
                "format": FORMAT_VERSION,
                "name": self.name,
                "cluster_id": secrets.randbits(63) or 1,
                "state_machine": self.state_machine,
                "peers": list(range(1, self.peers + 1)),
                "fsync": self.fsync,
                "timing": self.timing.as_dict(),
            }
            write_config(self._dir(), cfg)
            return cfg
        if cfg["name"] != self.name:
            raise ValueError(f"{self.data_dir} holds the data of cluster {cfg['name']!r}, not {self.name!r}")
        if cfg["state_machine"] != self.state_machine:
            raise ValueError(
                f"{self.data_dir} holds a cluster of state machine {cfg['state_machine']!r}, not {self.state_machine!r}"
            )
        # Timing and fsync may change between runs; the membership is the logs' business.
        if self._peers_given and self.peers != len(cfg["peers"]):
            raise ValueError(
                f"{self.data_dir} holds cluster {self.name!r} created with {len(cfg['peers'])} peers, not "
                f"peers={self.peers}: leave peers unset to restart it, or use another data directory "
                f"(a running cluster changes its membership with add_peer / remove_peer)"
            )
        cfg["fsync"] = self.fsync
        cfg["timing"] = self.timing.as_dict()
        write_config(self._dir(), cfg)
        self.peers = len(cfg["peers"])
        return cfg

    def _create_control(self, cfg: Dict[str, Any]) -> None:
        try:
            ctl = ControlBlock(self.name, create=True)
        except FileExistsError:
            old = ControlBlock(self.name)
            try:
                rec = old.load()
                if old.owner_alive(rec):
                    raise RuntimeError(
                        f"a cluster named {self.name!r} is already running (managed by pid {int(rec.owner_pid)})"
                    )
                # The manager died without cleaning up: kill its orphans, reclaim the names.
                for _id, (state, pid, start) in ControlBlock.slots_of(rec).items():
                    if pid and _proc.process_alive(pid, start):
                        os.kill(pid, signal.SIGKILL)
            finally:
                old.close()
            remove_segments(self.name)
            ctl = ControlBlock(self.name, create=True)
        me = os.getpid()
        peers = cfg["peers"]
        nxt = max(peers) + 1

        data_dir = self._dir()

        def init(rec: RawControl) -> None:
            rec.cluster_id = cfg["cluster_id"]
            rec.owner_pid = me
            rec.owner_start = _proc.start_time(me)
            rec.next_peer_id = nxt
            set_data_dir(rec, data_dir)
            for p in peers:
                set_slot(rec, p, PEER_STOPPED)

        ctl.update(init)
        self._ctl = ctl

    def _make_peer_segments(self, peer_id: int) -> None:
        for make in (
            lambda: Ring(inbox_name(self.name, peer_id), create=None, capacity=INBOX_CAPACITY),
            lambda: StatusRecord(status_segment_name(self.name, peer_id), create=None),
        ):
            obj = make()
            obj.close()

    def _spawn(self, peer_id: int) -> None:
        proc = self._spawn_process(peer_id)
        start = _proc.start_time(proc.pid)
        self._check_started().update(lambda rec: set_slot(rec, peer_id, PEER_RUNNING, proc.pid, start))

    def _spawn_process(self, peer_id: int) -> "subprocess.Popen[bytes]":
        """Start peer ``peer_id``'s process (the caller records it in the control block)."""
        log = open(os.path.join(self._dir(), f"peer{peer_id}.log"), "ab")
        # The peer imports the state machine with the import path this process checked
        # at start(): give it the same module search path.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _PEER_MAIN, "--cluster", self.name, "--id", str(peer_id)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                env=env,
            )
        finally:
            log.close()
        self._procs[peer_id] = proc
        return proc

    def _reap(self, peer_id: int) -> None:
        """Collect the exit status of peer ``peer_id``'s process if it is our child and
        has died (no zombie is left behind)."""
        proc = self._procs.get(peer_id)
        if proc is not None and proc.poll() is not None:
            self._procs.pop(peer_id, None)

    def _note(self, peer_id: int, text: str) -> None:
        """Append a line to peer ``peer_id``'s log (what the manager did to it)."""
        try:
            with open(os.path.join(self._dir(), f"peer{peer_id}.log"), "a") as f:
                f.write(text + "\n")
        except (OSError, RuntimeError):
            pass

    def stop(self) -> None:
        """Stop every peer (SIGTERM, then SIGKILL after a grace period) and remove the
        cluster's segments.  The data directory stays.  Idempotent."""
        if not self._started:
            return
        if self._watcher is not None:
            self._watcher.stop()  # first: no restart races the stop
            self._watcher = None
        self._started = False
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self._admin_client is not None:
            self._admin_client.close()
            self._admin_client = None
        ctl = self._ctl
        if ctl is not None and not ctl.closed:
            try:
                ctl.update(lambda rec: setattr(rec, "stopping", 1))
                slots = ControlBlock.slots_of(ctl.load())
            except Exception:
                slots = {}
            for pid, (state, ospid, start) in slots.items():
                if ospid and _proc.process_alive(ospid, start):
                    try:
                        os.kill(ospid, signal.SIGCONT)
                        os.kill(ospid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + _STOP_GRACE
            for pid, (state, ospid, start) in slots.items():
                self._await_exit(pid, ospid, start, deadline)
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._procs.clear()
        self._close_handles()
        remove_segments(self.name)

    def _close_handles(self) -> None:
        for rec in self._records.values():
            rec.close()
        self._records.clear()
        if self._ctl is not None:
            self._ctl.close()
        self._ctl = None

    def close(self) -> None:
        """Release this handle (its control block mapping, status records and clients)
        without stopping anything: for a handle from :meth:`attach`.  The handle that
        started the cluster should :meth:`stop` it instead (closing it also ends its
        restart watcher: nobody restarts crashed peers afterwards).  Idempotent."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self._admin_client is not None:
            self._admin_client.close()
            self._admin_client = None
        self._close_handles()
        self._started = False

    def _await_exit(self, peer_id: int, ospid: int, start: int, deadline: float) -> None:
        proc = self._procs.get(peer_id)
        if proc is not None and proc.pid == ospid:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return
        while ospid and _proc.process_alive(ospid, start):
            if time.monotonic() >= deadline:
                try:
                    os.kill(ospid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + _STOP_GRACE
            time.sleep(_POLL)

    def destroy(self) -> None:
        """:meth:`stop`, then remove the data directory (and every segment)."""
        self.stop()
        remove_segments(self.name)
        if self.data_dir is not None and os.path.isdir(self.data_dir):
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._temp:
            self.destroy()
        else:
            self.stop()

    def __repr__(self) -> str:
        return f"<rsm_shm.cluster.LocalCluster {self.name!r} peers={self.peers} started={self._started}>"

    # ------------------------------------------------------------------ observing
    def _check_started(self) -> ControlBlock:
        if not self._started or self._ctl is None:
            raise RuntimeError(f"cluster {self.name!r} is not started")
        return self._ctl

    def _slots(self) -> Dict[int, Tuple[int, int, int]]:
        return ControlBlock.slots_of(self._check_started().load())

    def status(self) -> List[PeerStatus]:
        """Every peer's :class:`PeerStatus` (removed peers excluded), by id, with what
        the manager did to it (``state``, ``restarts``)."""
        out = []
        records = self._records
        rec = self._check_started().load()
        restarts = ControlBlock.restarts_of(rec)
        for pid, (state, ospid, start) in sorted(ControlBlock.slots_of(rec).items()):
            if state in (PEER_ABSENT, PEER_REMOVED):
                old = records.pop(pid, None)
                if old is not None:
                    old.close()
                continue
            sr = records.get(pid)
            n = restarts.get(pid, 0)
            if sr is None:
                try:
                    sr = records[pid] = StatusRecord(status_segment_name(self.name, pid), create=False)
                except (FileNotFoundError, ValueError):
                    out.append(PeerStatus(id=pid, state=PEER_STATES.get(state, "?"), restarts=n))
                    continue
            out.append(sr.read(state=PEER_STATES.get(state, "?"), peer_id=pid, restarts=n))
        return out

    def leader(self) -> Optional[int]:
        """The current leader as the status records show it (None: no live leader).  A
        live peer claiming leadership in an older term than another live peer's is not
        it (it was deposed and does not know yet)."""
        sts = [s for s in self.status() if s.alive]
        if not sts:
            return None
        top = max(s.term for s in sts)
        leaders = [s for s in sts if s.role == "leader" and s.term == top]
        return leaders[0].id if leaders else None

    def wait_leader(self, timeout: float = 10.0) -> int:
        """Wait until a live leader exists; return its id.  TimeoutError otherwise (with
        the peers' last log lines when processes died)."""
        deadline = time.monotonic() + timeout
        while True:
            lead = self.leader()
            if lead is not None:
                return lead
            if time.monotonic() >= deadline:
                raise TimeoutError(f"cluster {self.name!r}: no leader after {timeout} s{self._died_note()}")
            time.sleep(_POLL)

    def _died_note(self) -> str:
        notes = []
        for pid, proc in sorted(self._procs.items()):
            if proc.poll() is not None and proc.returncode not in (0, -signal.SIGKILL):
                notes.append(f"peer {pid} exited with {proc.returncode}: {self.peer_log(pid, 5)!r}")
        return ("; " + "; ".join(notes)) if notes else ""

    def peer_log(self, peer: int, lines: int = 20) -> str:
        """The last ``lines`` lines of peer ``peer``'s output (its log file; "" if there is
        none, as before start() or after destroy())."""
        if self.data_dir is None:
            return ""
        try:
            with open(os.path.join(self.data_dir, f"peer{peer}.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def client(self) -> Client:
        """A new :class:`Client` of this cluster (closed by :meth:`stop`)."""
        self._check_started()
        c = Client(self.name)
        self._clients.append(c)
        return c

    # ------------------------------------------------------------------ faults
    def _peer_slot(self, peer: int) -> Tuple[int, int, int]:
        slots = self._slots()
        if peer not in slots or slots[peer][0] in (PEER_ABSENT, PEER_REMOVED):
            raise ValueError(f"cluster {self.name!r} has no peer {peer!r} (peers: {sorted(slots)})")
        return slots[peer]

    def _signal(self, peer: int, sig: int) -> bool:
        state, ospid, start = self._peer_slot(peer)
        if ospid and _proc.process_alive(ospid, start):
            os.kill(ospid, sig)
            return True
        return False

    def kill(self, peer: int) -> None:
        """SIGKILL peer ``peer`` (and reap it).  Fault injection: the peer stays dead
        until :meth:`restart`, also under ``restart_failed`` (the slot is marked killed
        before the signal, so the owner's restart watcher, in whatever process, never
        takes the death for a crash)."""
        with self._lock:
            state, ospid, start = self._peer_slot(peer)
            ctl = self._check_started()
            ctl.update(lambda rec: set_slot(rec, peer, PEER_KILLED, ospid, start))
            if self._signal(peer, signal.SIGKILL):
                self._await_exit(peer, ospid, start, time.monotonic() + _STOP_GRACE)
            self._procs.pop(peer, None)
            ctl.update(lambda rec: set_slot(rec, peer, PEER_KILLED, 0, 0))

    def restart(self, peer: int) -> None:
        """Start peer ``peer`` again from its log (killing it first if it runs).  Also
        brings back a peer the restart policy gave up on (state ``failed``).

        Not for served peers (a handle from :meth:`attach` on a cluster whose peers run
        ``rsm-shm cluster serve``): each has its own command line and data directory,
        which this handle does not know, so this raises RuntimeError; run the peer's
        ``serve`` command (or :meth:`rsm_shm.cluster.Peer.start`) again instead."""
        if self._served:
            raise RuntimeError(
                f"cluster {self.name!r}: peer {peer} is a served peer; restart it by running its "
                "`rsm-shm cluster serve` command (or Peer.start()) again"
            )
        with self._lock:
            state, ospid, start = self._peer_slot(peer)
            if ospid and _proc.process_alive(ospid, start):
                self.kill(peer)
            if self._watcher is not None:
                self._watcher.forget(peer)
            self._spawn(peer)
            self._await_started([peer], time.monotonic() + _START_TIMEOUT)

    def pause(self, peer: int) -> None:
        """SIGSTOP peer ``peer``: its clock stops with it."""
        with self._lock:
            state, ospid, start = self._peer_slot(peer)
            if not self._signal(peer, signal.SIGSTOP):
                raise RuntimeError(f"cluster {self.name!r}: peer {peer} is not running")
            self._check_started().update(lambda rec: set_slot(rec, peer, PEER_PAUSED, ospid, start))

    def resume(self, peer: int) -> None:
        """SIGCONT peer ``peer``."""
        with self._lock:
            state, ospid, start = self._peer_slot(peer)
            if not self._signal(peer, signal.SIGCONT):
                raise RuntimeError(f"cluster {self.name!r}: peer {peer} is not running")
            self._check_started().update(lambda rec: set_slot(rec, peer, PEER_RUNNING, ospid, start))

    def partition(self, *groups: Union[int, Iterable[int]]) -> None:
        """Cut every link between peers of different groups, both ways.  Peers named in
        no group form one more group together.  Replaces any earlier partition."""
        slots = self._slots()
        gl = [[g] if isinstance(g, int) else [int(p) for p in g] for g in groups]
        named = {p for g in gl for p in g}
        for p in named:
            if p not in slots:
                raise ValueError(f"cluster {self.name!r} has no peer {p!r}")
        rest = [p for p in slots if p not in named]
        if rest:
            gl.append(rest)
        self._set_links(lambda rec: set_partition(rec, gl))

    def heal(self) -> None:
        """Restore every link."""
        self._set_links(lambda rec: set_partition(rec, []))

    def set_drop_rate(self, p: float) -> None:
        """Drop each message between peers with probability ``p`` (0 <= p <= 1)."""
        if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"drop rate must be between 0 and 1, not {p!r}")
        ppm = round(p * PPM)
        self._set_links(lambda rec: setattr(rec, "drop_ppm", ppm))

    def _set_links(self, change: Callable[[RawControl], None]) -> None:
        """Update the link table; return once every running peer applies it (peers
        that are paused, dead or starved for longer than a second apply it when they
        next run)."""
        ctl = self._check_started()
        ctl.update(change)
        seq = ctl.seq()
        deadline = time.monotonic() + _LINKS_TIMEOUT
        while time.monotonic() < deadline:
            if all(s.control_seq >= seq for s in self.status() if s.alive and s.state == "running"):
                return
            time.sleep(_POLL)

    # ------------------------------------------------------------------ membership
    def _admin(self, op: int, arg: int, timeout: float) -> None:
        self._check_started()
        if self._admin_client is None:
            self._admin_client = Client(self.name)
        self._admin_client._admin(op, arg, timeout)

    def add_peer(self, timeout: float = 30.0) -> int:
        """Start a new peer, add it as a learner, wait until it caught up (from a
        snapshot), promote it to voter; returns its id."""
        deadline = time.monotonic() + timeout
        ctl = self._check_started()
        box: Dict[str, int] = {}

        def take(rec: RawControl) -> None:
            box["id"] = int(rec.next_peer_id)
            rec.next_peer_id += 1
            set_slot(rec, box["id"], PEER_STOPPED)

        ctl.update(take)
        new = box["id"]
        if new > MAX_PEER_ID:
            raise RuntimeError(f"cluster {self.name!r}: no peer ids left (at most {MAX_PEER_ID})")
        self._make_peer_segments(new)
        with self._lock:
            self._spawn(new)
        # Admit it once it runs: until then the leader would ship the snapshot into its
        # inbox at every heartbeat.
        self._await_started([new], deadline)
        self._admin(ev.ADMIN_ADD_LEARNER, new, max(0.0, deadline - time.monotonic()))
        # Caught up: its applied index reached the leader's commit index of now.
        lead = self.wait_leader(max(0.0, deadline - time.monotonic()))
        target = next(s.commit for s in self.status() if s.id == lead)
        self._wait(
            lambda: any(s.id == new and s.applied >= target for s in self.status()),
            deadline,
            f"peer {new} to catch up to index {target}",
        )
        self._admin(ev.ADMIN_PROMOTE, new, max(0.0, deadline - time.monotonic()))
        self._wait(
            lambda: any(s.is_leader and new in s.voters for s in self.status()), deadline, f"peer {new} to be a voter"
        )
        self.peers += 1
        return new

    def remove_peer(self, peer: int, timeout: float = 30.0) -> None:
        """Remove ``peer`` from the membership, then stop its process and remove its
        segments (its log stays in the data directory)."""
        deadline = time.monotonic() + timeout
        state, ospid, start = self._peer_slot(peer)
        self._admin(ev.ADMIN_REMOVE, peer, max(0.0, deadline - time.monotonic()))
        self._wait(
            lambda: any(s.is_leader and s.id != peer and peer not in s.voters + s.learners for s in self.status()),
            deadline,
            f"peer {peer} to leave the configuration",
        )
        with self._lock:
            # Marked removed before the signal: its exit is no crash to restart.
            ctl = self._check_started()
            ctl.update(lambda rec: set_slot(rec, peer, PEER_REMOVED, ospid, start))
            if ospid and _proc.process_alive(ospid, start):
                os.kill(ospid, signal.SIGCONT)
                os.kill(ospid, signal.SIGTERM)
                self._await_exit(peer, ospid, start, time.monotonic() + _STOP_GRACE)
            self._procs.pop(peer, None)
            ctl.update(lambda rec: set_slot(rec, peer, PEER_REMOVED, 0, 0))
        old = self._records.pop(peer, None)
        if old is not None:
            old.close()
        self.peers -= 1
        for name in (inbox_name(self.name, peer), status_segment_name(self.name, peer)):
            try:
                os.unlink(os.path.join(SHM_DIR, PREFIX + name))
            except FileNotFoundError:
                pass

    def transfer_leadership(self, to: int, timeout: float = 5.0) -> None:
        """Ask the leader to hand leadership to ``to``; wait until ``to`` leads."""
        deadline = time.monotonic() + timeout
        self._peer_slot(to)
        while True:
            if self.leader() == to:
                return
            try:
                self._admin(ev.ADMIN_TRANSFER, to, max(0.0, min(1.0, deadline - time.monotonic())))
            except TimeoutError:
                pass
            try:
                self._wait(lambda: self.leader() == to, min(deadline, time.monotonic() + 1.0), "")
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"cluster {self.name!r}: leadership did not move to peer {to}") from None

    def _wait(self, cond: Callable[[], bool], deadline: float, what: str) -> None:
        while not cond():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"cluster {self.name!r}: timed out waiting for {what}")
            time.sleep(_POLL)
