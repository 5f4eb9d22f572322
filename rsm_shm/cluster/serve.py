"""One peer per command, on any host: ``rsm-shm cluster serve`` and :class:`Peer`.

    rsm-shm cluster serve NAME --id 2 --listen HOST:PORT --peer 1=HOST:PORT --peer 3=HOST:PORT \\
        --sm pkg.mod:Class --data DIR [--tls-cert F --tls-key F --tls-ca F] [--insecure]
        [--no-fsync] [--cluster-id N] [--join HOST:PORT,...] [--timing KEY=VALUE ...]

runs peer ``--id`` of cluster ``NAME`` in the foreground until SIGTERM or Ctrl-C (or
``rsm-shm cluster stop NAME`` on its host).  The other peers are named with ``--peer
ID=HOST:PORT`` (reached over gRPC, see :mod:`rsm_shm.cluster.net.transport`) or
``--peer ID=local`` (another served peer of the same NAME on this host, reached through
its inbox ring).  The peer ids given (with ``--id``) are the cluster's initial voters.
A new peer of a running cluster starts with ``--join HOST:PORT,...`` instead and is
admitted with ``rsm-shm cluster add-peer`` (see :mod:`rsm_shm.cluster.net.members`:
membership changes carry the peers' addresses).

The **cluster id** (every envelope and every peer stream carries it; a peer refuses
anything of another id) is derived from NAME unless ``--cluster-id`` is given, so every
host that runs NAME agrees without coordination; it is recorded in ``DIR/cluster.json``
at the first start and a later start with another id (or name, or state machine) is
refused.  Give two clusters with the same name different ``--cluster-id`` values (and,
better, different CAs).

Security: ``--tls-cert/--tls-key/--tls-ca`` switch both directions to mutual TLS, and
then a peer's certificate must name it (URI SAN ``rsm-shm://NAME/peer/ID``, see
:mod:`rsm_shm.cluster.net.tls`); without them the peer listens on loopback addresses only unless ``--insecure``.

On its host a served peer looks like a peer of a :class:`~rsm_shm.cluster.LocalCluster`:
it publishes its status record ``NAME.s<id>`` and its inbox ring ``NAME.i<id>`` in
/dev/shm and registers in the control block ``NAME.ctl`` (created by the first served
peer of NAME on the host, joined by the others), so ``rsm-shm cluster ls/status`` and a
local ``Client(NAME)`` see it, and the control block's link table and drop rate apply to
its sends (a partition cuts gRPC links too).  The slots of the peers it only knows by
address are registered as absent (so ``partition`` accepts their ids).  Its segments are
kept across restarts (local clients hold handles to them); the last served peer of NAME
on the host to stop removes every segment of NAME.

:class:`Peer` is the same from Python: ``Peer(name, id, listen=..., peers={1: "h:p"},
state_machine=..., data_dir=...)`` with :meth:`Peer.run` (foreground, this process) or
:meth:`Peer.start` (a child process; :meth:`Peer.stop`, :meth:`Peer.kill`,
:meth:`Peer.pause`, :meth:`Peer.resume`).  Other modules can add gRPC services to every
served peer's server with :func:`add_service_factory`.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from .. import _proc
from ..ring import Ring
from ..segment import validate_name
from .control import PEER_ABSENT, PEER_RUNNING, PEER_STOPPED, ControlBlock, set_data_dir, set_slot
from .layout import (
    FORMAT_VERSION,
    INBOX_CAPACITY,
    Timing,
    inbox_name,
    read_config,
    remove_segments,
    reply_ring_prefix,
    write_config,
)
from .statemachine import load_state_machine
from .status import MAX_PEER_ID, StatusRecord, status_segment_name

__all__ = [
    "Peer",
    "derive_cluster_id",
    "add_service_factory",
    "reclaim_reply_rings",
    "main",
    "add_arguments",
    "EXIT_WITH_PARENT_ENV",
    "exit_with_parent_if_asked",
]

log = logging.getLogger("rsm_shm.cluster.net")

LOCAL = "local"
_START_TIMEOUT = 60.0

#: When this environment variable holds the pid of the process that starts a served
#: peer, the peer asks Linux to SIGKILL it as soon as that process ends (see
#: :func:`exit_with_parent_if_asked`).  Unset (the default), a peer outlives its starter.
EXIT_WITH_PARENT_ENV = "RSM_SHM_PEER_EXIT_WITH_PARENT"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_STOP_GRACE = 5.0
_SERVE_MAIN = "import sys; del sys.path[0]; from rsm_shm.cluster.serve import main; sys.exit(main(sys.argv[1:]))"

# Callables (served peer) -> iterable of grpc.GenericRpcHandler, run when a served peer
# builds its server (e.g. the client-facing service).
_SERVICE_FACTORIES: List[Callable[["ServedPeer"], Iterable[Any]]] = []


def add_service_factory(factory: Callable[["ServedPeer"], Iterable[Any]]) -> None:
    """Register ``factory(served_peer) -> [generic handlers]``: every peer served in this
    process afterwards adds those handlers to its gRPC server."""
    if factory not in _SERVICE_FACTORIES:
        _SERVICE_FACTORIES.append(factory)


def derive_cluster_id(name: str) -> int:
    """The default cluster id of cluster ``name``: 63 bits of BLAKE2b of the name."""
    d = hashlib.blake2b(name.encode(), digest_size=8, person=b"rsm_shm.cid").digest()
    return (int.from_bytes(d, "big") & ((1 << 63) - 1)) or 1


class Peer:
    """A peer of cluster ``name`` served on ``listen`` (see the module docstring).

    ``peers``: ``{id: "host:port" or "local"}`` of the other initial peers.  ``join``:
    addresses of peers of a running cluster that this new peer joins (it learns the
    members' addresses from them and waits to be admitted, see
    :mod:`rsm_shm.cluster.net.members`); then ``peers`` may be empty.  TLS: all
    of ``tls_cert``, ``tls_key``, ``tls_ca`` (PEM file paths) or none.  ``timing``:
    :class:`~rsm_shm.cluster.Timing` options.  Nothing runs until :meth:`run` or
    :meth:`start`; the arguments are checked here (ValueError / TypeError naming them).
    """

    def __init__(
        self,
        name: str,
        peer_id: int,
        *,
        listen: str = "127.0.0.1:0",
        peers: Optional[Mapping[int, str]] = None,
        state_machine: str,
        data_dir: str,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        tls_ca: Optional[str] = None,
        insecure: bool = False,
        fsync: bool = True,
        cluster_id: Optional[int] = None,
        join: Sequence[str] = (),
        **timing: Any,
    ) -> None:
        self.name = validate_name(name)
        if not isinstance(peer_id, int) or not 1 <= peer_id <= MAX_PEER_ID:
            raise ValueError(f"peer id must be an int between 1 and {MAX_PEER_ID}, not {peer_id!r}")
        self.id = peer_id
        if not isinstance(state_machine, str) or ":" not in state_machine:
            raise TypeError(f"state_machine must be an import path 'package.module:Class', not {state_machine!r}")
        self.state_machine = state_machine
        self.listen = listen
        self.peers: Dict[int, str] = {}
        for pid, addr in dict(peers or {}).items():
            if not isinstance(pid, int) or not 1 <= pid <= MAX_PEER_ID or pid == peer_id:
                raise ValueError(f"peers: {pid!r} is not another peer's id (1..{MAX_PEER_ID}, not {peer_id})")
            if not isinstance(addr, str) or not (addr == LOCAL or ":" in addr):
                raise ValueError(f"peers[{pid}] must be 'HOST:PORT' or {LOCAL!r}, not {addr!r}")
            self.peers[pid] = addr
        if isinstance(join, str):
            raise TypeError(f"join must be a list of 'HOST:PORT' strings, not the string {join!r}")
        self.join: List[str] = [str(a) for a in join]
        for a in self.join:
            if ":" not in a:
                raise ValueError(f"join: {a!r} is not HOST:PORT")
        self.data_dir = os.path.abspath(data_dir)
        self.tls_files = (tls_cert, tls_key, tls_ca)
        if any(self.tls_files) and not all(self.tls_files):
            raise ValueError("mutual TLS needs tls_cert, tls_key and tls_ca (all three)")
        self.insecure = bool(insecure)
        self.fsync = bool(fsync)
        if cluster_id is not None and (not isinstance(cluster_id, int) or not 1 <= cluster_id < 1 << 63):
            raise ValueError(f"cluster_id must be an int in 1..2**63-1, not {cluster_id!r}")
        self.cluster_id = cluster_id if cluster_id is not None else derive_cluster_id(self.name)
        self.timing = Timing.from_kwargs(timing)
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._served: Optional[ServedPeer] = None
        self._stop_asked: List[bool] = []

    # ------------------------------------------------------------------ foreground
    def run(self) -> None:
        """Serve in this process until SIGTERM/SIGINT (handled here when called from the
        main thread; the previous handlers are restored on return) or until
        :meth:`stop` is called from another thread."""
        box: List[ServedPeer] = []
        asked: List[bool] = []

        def on_signal(*_args: object) -> None:
            asked.append(True)
            for served in box:
                served.stop()

        # Installed first: a SIGTERM while the peer is still starting stops it cleanly.
        previous = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: the caller stops it with stop()
            pass
        self._stop_asked = asked
        try:
            served = ServedPeer(self)
            box.append(served)
            self._served = served
            try:
                if not asked:
                    served.run()
            finally:
                served.close()
                self._served = None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ------------------------------------------------------------------ child process
    def argv(self) -> List[str]:
        """The ``rsm-shm cluster serve`` arguments of this peer."""
        out = [
            self.name,
            "--id",
            str(self.id),
            "--listen",
            self.listen,
            "--sm",
            self.state_machine,
            "--data",
            self.data_dir,
            "--cluster-id",
            str(self.cluster_id),
        ]
        for pid, addr in sorted(self.peers.items()):
            out += ["--peer", f"{pid}={addr}"]
        if all(self.tls_files):
            out += [
                "--tls-cert",
                str(self.tls_files[0]),
                "--tls-key",
                str(self.tls_files[1]),
                "--tls-ca",
                str(self.tls_files[2]),
            ]
        if self.insecure:
            out.append("--insecure")
        if self.join:
            out += ["--join", ",".join(self.join)]
        if not self.fsync:
            out.append("--no-fsync")
        for k, v in self.timing.as_dict().items():
            out += ["--timing", f"{k}={v}"]
        return out

    def start(self, timeout: float = _START_TIMEOUT) -> "Peer":
        """Run the peer in a child process (a fresh interpreter, no fork); return once it
        published its status.  Its output goes to ``DATA/peer<id>.log``."""
        if self.alive:
            raise RuntimeError(f"peer {self.id} of {self.name!r} is already running (pid {self.pid})")
        os.makedirs(self.data_dir, exist_ok=True)
        addr_file = _address_file(self.data_dir, self.id)
        try:
            os.unlink(addr_file)
        except FileNotFoundError:
            pass
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
        with open(os.path.join(self.data_dir, f"peer{self.id}.log"), "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _SERVE_MAIN, *self.argv()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                close_fds=True,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while not os.path.exists(addr_file):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"peer {self.id} of {self.name!r} exited with status {self._proc.returncode} "
                    f"while starting:\n{self.log_tail(12)}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"peer {self.id} of {self.name!r} did not start in {timeout} s:\n{self.log_tail(12)}"
                )
            time.sleep(0.005)
        return self

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def address(self) -> str:
        """The address the running peer listens on (with the port it bound)."""
        try:
            with open(_address_file(self.data_dir, self.id)) as f:
                return f.read().strip()
        except FileNotFoundError:
            raise RuntimeError(f"peer {self.id} of {self.name!r} is not serving") from None

    def stop(self, timeout: float = _STOP_GRACE) -> Optional[int]:
        """SIGTERM the child (SIGKILL after ``timeout``); its exit status.  For a peer
        running in this process (:meth:`run` in another thread): ask it to stop at the
        end of its current turn and return None."""
        proc = self._proc
        if proc is None:
            self._stop_asked.append(True)  # also when run() is still starting
            served = self._served
            if served is not None:
                served.stop()
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the child (its segments stay until it starts again)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP the child."""
        if not self.alive:
            raise RuntimeError(f"peer {self.id} of {self.name!r} is not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the child."""
        if not self.alive:
            raise RuntimeError(f"peer {self.id} of {self.name!r} is not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.data_dir, f"peer{self.id}.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> "Peer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<rsm_shm.cluster.Peer {self.name!r} id={self.id} listen={self.listen!r} pid={self.pid}>"


def _address_file(data_dir: str, peer_id: int) -> str:
    return os.path.join(data_dir, f"peer{peer_id}.addr")


class ServedPeer:
    """A running served peer inside this process: segments, gRPC server, transport and
    the Raft loop (what :meth:`Peer.run` drives).  ``node`` is the peer loop."""

    def __init__(self, spec: Peer) -> None:
        # The [net] extra is needed from here on; the error names it.
        from .net.server import PeerServer
        from .net.tls import TLSConfig, peer_dns_name, peer_identity_problem, peer_uri
        from .net.members import AddressBook, MembersService, Membership, discover
        from .net.transport import GrpcTransport, PeerStreamService
        from .net.client_service import serve_clients
        from .peer import Peer as PeerLoop
        from .transport import RingTransport

        self.spec = spec
        name, me = spec.name, spec.id
        tls = TLSConfig.from_options(*spec.tls_files)
        if tls is not None and not tls.names(peer_uri(name, me)):
            raise ValueError(
                f"the certificate {spec.tls_files[0]} is not peer {me}'s of {name!r}: a peer certificate "
                f"carries the URI subject alternative name {peer_uri(name, me)} (see docs/cluster-net.md)"
            )
        load_state_machine(spec.state_machine)  # a wrong import path fails here, clearly
        # The peers named at start: on the command line, and (joining) by a running peer.
        # --join matters at the first start only: later the log and members.json say who
        # the members are (the peers named by --join may be gone by then).
        first = read_config(spec.data_dir) is None if os.path.isdir(spec.data_dir) else True
        self.given: Dict[int, str] = {**(discover(spec, tls) if spec.join and first else {}), **spec.peers}
        self.given.pop(me, None)
        self._prepare_data_dir()
        self.server = PeerServer(spec.listen, tls=tls, insecure=spec.insecure)
        self.ctl: Optional[ControlBlock] = None
        self._joined = False
        self.node: Any = None
        self.transport: Any = None
        try:
            self._join_control()
            reclaim_reply_rings(name)
            # Made by the first run, kept across restarts (as a LocalCluster keeps its
            # peers' segments): clients on this host hold handles to them.
            inbox_ring = Ring(inbox_name(name, me), create=None, capacity=INBOX_CAPACITY)
            StatusRecord(status_segment_name(name, me), create=None).close()
            # Who this peer talks to: the peers given, and those it learned from the log
            # (membership changes carry their addresses) in earlier runs.
            self.book = book = AddressBook(spec.data_dir, me)
            book.merge(self.given)
            # Certificates with DNS identities (CertificateAuthority's, or the recipe's):
            # dial each peer by its identity, so that an impostor at its address fails
            # the handshake.  Decided by this peer's own certificate (one CA, one policy).
            server_name = None
            if tls is not None and tls.names_dns(peer_dns_name(name, me)):
                server_name = functools.partial(peer_dns_name, name)
                log.info("dialing the other peers by their certificate identity (ID.peer.%s.rsm-shm)", name)
            self.transport = GrpcTransport(
                spec.cluster_id, me, {}, tls=tls, local=RingTransport(name), server_name=server_name
            )
            self.node = PeerLoop(name, me, transport=self.transport, data_dir=spec.data_dir)
            self.membership = Membership(self, book)
            self.node.on_conf_change = self.membership.on_conf_change
            # Streams to the members of the configuration the log holds now (none for a
            # joining peer that is not admitted yet: the others would refuse them).
            self.membership.on_conf_change(None, self.node.conf_state)
            # A stream from or to the leader that breaks makes the peer loop forget it
            # (faster failover: see Peer.peer_lost).
            self.transport.on_lost = self.node.peer_lost
            # With mutual TLS a stream's peer id must be the one its certificate names.
            authorize = (lambda ctx, frm: peer_identity_problem(ctx, name, frm)) if tls is not None else None
            self.service = PeerStreamService(
                spec.cluster_id, me, inbox_ring, book.ids, on_lost=self.node.peer_lost, authorize=authorize
            )
            self._inbox_for_service = inbox_ring
            self.server.add_handlers([self.service.handler()])
            self.server.add_handlers(serve_clients(self))  # remote clients (Client.connect)
            node = self.node
            self.members_service = MembersService(
                name, me, spec.cluster_id, tls=tls is not None, conf_state=lambda: node.conf_state
            )
            self.server.add_handlers([self.members_service.handler()])
            for factory in list(_SERVICE_FACTORIES):
                self.server.add_handlers(factory(self))
            self._folded: Dict[str, int] = {"net_bad": 0, "net_inbox_full": 0}
            self._wrap_publish()
        except BaseException:
            self.close()
            raise

    def client_addresses(self) -> Dict[int, str]:
        """The peer map the client service hands to clients: every peer reached over the
        network, as this peer knows them now, and this peer's own listen address."""
        book = getattr(self, "book", None)
        known = book.addresses() if book is not None else dict(self.given)
        out = {pid: a for pid, a in known.items() if a != LOCAL}
        out[self.spec.id] = self.server.address
        return out

    def _prepare_data_dir(self) -> None:
        spec = self.spec
        os.makedirs(spec.data_dir, exist_ok=True)
        cfg = read_config(spec.data_dir)
        # A joining peer is not among the initial voters: it waits to be admitted.
        initial = sorted(set(self.given)) if spec.join else sorted(set(spec.peers) | {spec.id})
        if cfg is None:
            cfg = {
                "format": FORMAT_VERSION,
                "name": spec.name,
                "cluster_id": spec.cluster_id,
                "state_machine": spec.state_machine,
                "peers": initial,
            }
        else:
            for key, want in (
                ("name", spec.name),
                ("cluster_id", spec.cluster_id),
                ("state_machine", spec.state_machine),
            ):
                if cfg.get(key) != want:
                    raise ValueError(f"{spec.data_dir} holds a cluster with {key} {cfg.get(key)!r}, not {want!r}")
        # The membership is the logs' business after the first start; timing, fsync and
        # addresses may change between runs.
        cfg["fsync"] = spec.fsync
        cfg["timing"] = spec.timing.as_dict()
        cfg["served"] = {
            "id": spec.id,
            "listen": spec.listen,
            "peers": {str(k): v for k, v in spec.peers.items()},
            "join": spec.join,
        }
        write_config(spec.data_dir, cfg)

    def _join_control(self) -> None:
        spec = self.spec
        me, pid = spec.id, os.getpid()
        start = _proc.start_time(pid)
        try:
            ctl = ControlBlock(spec.name, create=True)
        except FileExistsError:
            ctl = ControlBlock(spec.name)
        self.ctl = ctl
        problem: List[str] = []

        def join(rec: Any) -> None:
            slots = ControlBlock.slots_of(rec)
            live = {i for i, (st, p, s) in slots.items() if p and i != me and _proc.process_alive(p, s)}
            if live and int(rec.cluster_id) != spec.cluster_id:
                problem.append(
                    f"another cluster named {spec.name!r} (cluster id {int(rec.cluster_id)}) runs on "
                    f"this host with peers {sorted(live)}"
                )
                return
            st, p, s = slots.get(me, (PEER_ABSENT, 0, 0))
            if p and _proc.process_alive(p, s):
                problem.append(f"peer {me} of {spec.name!r} already runs on this host (pid {p})")
                return
            if not live:  # first (or only) one here: a fresh record
                owner_alive = _proc.process_alive(int(rec.owner_pid), int(rec.owner_start))
                if owner_alive and int(rec.owner_pid) != pid:
                    problem.append(f"a cluster named {spec.name!r} is managed by pid {int(rec.owner_pid)} here")
                    return
                rec.cluster_id = spec.cluster_id
                rec.owner_pid = pid
                rec.owner_start = start
                rec.stopping = 0
                rec.drop_ppm = 0
                for i in range(MAX_PEER_ID):
                    rec.cut[i] = 0
                    rec.peers[i].id = 0
                set_data_dir(rec, spec.data_dir)
            for other in self.given:
                if rec.peers[other - 1].id == 0:
                    set_slot(rec, other, PEER_ABSENT)
            set_slot(rec, me, PEER_RUNNING, pid, start)
            rec.next_peer_id = max(int(rec.next_peer_id), max(list(self.given) + [me]) + 1)

        ctl.update(join)
        if problem:
            raise RuntimeError(problem[0])
        self._joined = True

    def _wrap_publish(self) -> None:
        """Fold the receiving service's drop counters into the peer's published ones
        (the peer loop is the only writer of its counters)."""
        node = self.node
        inner = node.publish_status
        folded = self._folded
        service = self.service

        def publish_status(force: bool = False, stopped: bool = False) -> None:
            st = service.stats.snapshot()
            bad = st["net_bad"] - folded["net_bad"]
            full = st["net_inbox_full"] - folded["net_inbox_full"]
            if bad:
                node.c["msgs_bad"] += bad
                folded["net_bad"] += bad
            if full:
                node.c["msgs_dropped"] += full
                folded["net_inbox_full"] += full
            inner(force, stopped)

        node.publish_status = publish_status

    def run(self) -> None:
        self.server.start()
        # The address file tells Peer.start() the peer is up: the status record must show
        # this process first, or a caller looking right after start() sees the dead pid
        # of the peer's previous run (not alive) and leaves the peer out.
        self.node.publish_status(force=True)
        addr_file = _address_file(self.spec.data_dir, self.spec.id)
        tmp = addr_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.server.address + "\n")
        os.replace(tmp, addr_file)
        log.info(
            "peer %d of %r (cluster id %d) serving on %s",
            self.spec.id,
            self.spec.name,
            self.spec.cluster_id,
            self.server.address,
        )
        self.node.run()

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()

    def close(self) -> None:
        """Stop serving, release everything, remove this peer's segments (and the
        control block when no other served peer of NAME runs here).  Idempotent."""
        spec = self.spec
        self.server.stop(0.2)
        try:
            os.unlink(_address_file(spec.data_dir, spec.id))
        except FileNotFoundError:
            pass
        membership = getattr(self, "membership", None)
        if membership is not None:
            membership.close()
        if self.transport is not None:
            self.transport.close()
            log.info(
                "peer %d stopping; transport %s; receiving %s",
                spec.id,
                self.transport.counters(),
                self.service.stats.snapshot() if hasattr(self, "service") else {},
            )
            self.transport = None
        if self.node is not None:
            self.node.close()  # closes its transport (again: idempotent) and segments
            self.node = None
        inbox = getattr(self, "_inbox_for_service", None)
        if inbox is not None:
            inbox.close()
        members = getattr(self, "members_service", None)
        if members is not None:
            members.close()
        ctl = self.ctl
        if ctl is None or ctl.closed:
            return
        if not self._joined:  # refused at start: the slot and segments are another's
            ctl.close()
            self.ctl = None
            return
        me = spec.id
        last: List[bool] = []

        def leave(rec: Any) -> None:
            set_slot(rec, me, PEER_STOPPED)
            slots = ControlBlock.slots_of(rec)
            live = [(p, s) for i, (_st, p, s) in slots.items() if p and i != me and _proc.process_alive(p, s)]
            if live and int(rec.owner_pid) == os.getpid():
                rec.owner_pid, rec.owner_start = live[0]  # hand the control block on
            last.append(not live)

        try:
            ctl.update(leave)
        finally:
            ctl.close()
            self.ctl = None
        if last and last[0]:
            # The last served peer of NAME here: remove every segment of NAME.
            remove_segments(spec.name)


def reclaim_reply_rings(cluster: str) -> List[str]:
    """Remove the reply rings of ``cluster`` on this host that a dead process left (a
    SIGKILLed served peer's client service, a killed local client); their names.

    The judgment is ``rsm-shm gc --ignore-unreadable``'s
    (:func:`rsm_shm.inspect.gc_verdict`): a ring goes only when the creator its header
    names (pid and start time) is dead and no live process we can see maps it.  A
    served peer calls this as it starts, so a peer restarted after a SIGKILL takes back
    what its previous run left."""
    from .. import inspect as insp

    prefix = reply_ring_prefix(cluster)
    pattern = re.compile(re.escape(prefix) + r"[0-9a-f]+\.[0-9a-f]+")
    records, _procs = insp.collect(prefix=prefix, decode=False)
    removed = []
    for rec in records:
        if not pattern.fullmatch(rec["name"]):
            continue  # another cluster whose name starts like ours (NAME.cX)
        # Processes whose memory maps we cannot read (another user's, a container's
        # init) are disregarded: a reply ring is read by its creator alone, and whoever
        # else maps it is a peer of ours that wrote answers into it.
        remove, _why = insp.gc_verdict(rec, ignore_unreadable=True)
        if not remove:
            continue
        try:
            if os.lstat(rec["path"]).st_ino != rec["inode"]:
                continue  # replaced by a new ring of the same name meanwhile
            os.unlink(rec["path"])
        except FileNotFoundError:
            continue
        removed.append(rec["name"])
    if removed:
        log.info("removed %d reply ring(s) of %r left by dead processes", len(removed), cluster)
    return removed


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` flags (shared by ``rsm-shm cluster serve`` and ``python -m``)."""
    p.add_argument("name", help="cluster name (the same on every host)")
    p.add_argument("--id", type=int, required=True, help="this peer's id (1..64)")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to serve on (default 127.0.0.1:0)")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="ID=HOST:PORT",
        help="another peer: ID=HOST:PORT (gRPC) or ID=local (same host, same NAME); repeat",
    )
    p.add_argument("--sm", required=True, help="state machine import path pkg.mod:Class")
    p.add_argument("--data", required=True, help="this peer's data directory")
    p.add_argument("--tls-cert", help="PEM certificate chain of this peer (mutual TLS)")
    p.add_argument("--tls-key", help="PEM private key of this peer")
    p.add_argument("--tls-ca", help="PEM CA bundle every peer and client certificate must chain to")
    p.add_argument("--insecure", action="store_true", help="allow plaintext on a non-loopback address")
    p.add_argument(
        "--join",
        default="",
        metavar="HOST:PORT,...",
        help="join a running cluster through these peers (then admit it with rsm-shm cluster add-peer)",
    )
    p.add_argument("--no-fsync", action="store_true", help="never sync the log (NOT durable: tests only)")
    p.add_argument("--cluster-id", type=int, default=None, help="cluster id (default: derived from NAME)")
    p.add_argument(
        "--timing",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Timing option, e.g. tick=0.01 or election_tick=10; repeat",
    )


def peer_from_args(args: argparse.Namespace) -> Peer:
    """Build a :class:`Peer` from parsed ``serve`` flags (ValueError on a bad one)."""
    peers: Dict[int, str] = {}
    for item in args.peer:
        pid, sep, addr = item.partition("=")
        if not sep or not pid.strip().isdigit() or not addr:
            raise ValueError(f"--peer takes ID=HOST:PORT or ID=local, not {item!r}")
        if int(pid) in peers:
            raise ValueError(f"--peer {pid} is given twice")
        peers[int(pid)] = addr.strip()
    timing: Dict[str, Any] = {}
    for item in args.timing:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--timing takes KEY=VALUE, not {item!r}")
        try:
            timing[key] = int(value)
        except ValueError:
            try:
                timing[key] = float(value)
            except ValueError:
                raise ValueError(f"--timing {key}: {value!r} is not a number") from None
    return Peer(
        args.name,
        args.id,
        listen=args.listen,
        peers=peers,
        state_machine=args.sm,
        data_dir=args.data,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        insecure=args.insecure,
        join=[a.strip() for a in args.join.split(",") if a.strip()],
        fsync=not args.no_fsync,
        cluster_id=args.cluster_id,
        **timing,
    )


def exit_with_parent_if_asked() -> None:
    """Tie this process's life to its starter's when :data:`EXIT_WITH_PARENT_ENV` asks.

    For harnesses (the test suite sets it): a peer started by a process that is itself
    SIGKILLed would otherwise serve on, orphaned, for ever.  With the variable set to
    the starter's pid, this sets Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG,
    SIGKILL)``) and then checks that the parent is still that pid (it may have died
    before the request took effect: RuntimeError).  SIGKILL rather than SIGTERM because
    a SIGSTOPped (paused) peer would never act on SIGTERM; the dead peers' segments are
    left as after any SIGKILL (``rsm-shm gc`` removes them).  Linux delivers the signal
    when the *thread* that started the peer ends, so start such peers from a thread that
    lives as long as they should.  Not Linux: RuntimeError.  Unset or empty: nothing.
    """
    value = os.environ.get(EXIT_WITH_PARENT_ENV, "")
    if not value:
        return
    try:
        parent = int(value)
    except ValueError:
        raise ValueError(
            f"{EXIT_WITH_PARENT_ENV} must be the pid of the process that starts the peer, not {value!r}"
        ) from None
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"{EXIT_WITH_PARENT_ENV} needs Linux's PR_SET_PDEATHSIG; this is {sys.platform}")
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent:
        raise RuntimeError(
            f"{EXIT_WITH_PARENT_ENV}={parent}, but this peer's parent is pid {os.getppid()} "
            "(the starter is gone, or did not start this peer itself)"
        )


def _setup_logging(peer_id: int) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format=f"%(asctime)s peer {peer_id} %(levelname)s %(name)s: %(message)s",
        )


def serve(args: argparse.Namespace) -> int:
    """Run a parsed ``serve`` command in the foreground; the exit code."""
    try:
        peer = peer_from_args(args)
    except (ValueError, TypeError) as e:
        print(f"rsm-shm: {e}", file=sys.stderr)
        return 2
    _setup_logging(peer.id)
    try:
        exit_with_parent_if_asked()  # before the peer makes anything
        peer.run()
    except (ValueError, RuntimeError, OSError, ImportError) as e:
        print(f"rsm-shm: peer {peer.id} of {peer.name!r}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="rsm-shm cluster serve", description=__doc__.split("\n")[0])
    add_arguments(ap)
    return serve(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
