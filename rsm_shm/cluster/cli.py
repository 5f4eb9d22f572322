"""The ``rsm-shm cluster ...`` and ``rsm-shm kv ...`` commands.

    rsm-shm cluster start NAME [--peers 3] --sm pkg.mod:Class [--data DIR] [--no-fsync]
    rsm-shm cluster serve NAME --id N --listen HOST:PORT --peer ID=HOST:PORT ... --sm pkg.mod:Class --data DIR
    rsm-shm cluster ls [--json]
    rsm-shm cluster status NAME [--json] [--watch [--interval S] [--count N]]
    rsm-shm cluster status [NAME] --remote HOST:PORT,... [--tls-cert F --tls-key F --tls-ca F]
    rsm-shm cluster add-peer ID HOST:PORT --remote HOST:PORT,... [--tls-... F] [--timeout S]
    rsm-shm cluster remove-peer ID --remote HOST:PORT,... [--tls-... F] [--timeout S]
    rsm-shm cluster kill|restart|pause|resume NAME PEER
    rsm-shm cluster partition NAME 1 / 2,3
    rsm-shm cluster heal NAME
    rsm-shm cluster stop NAME
    rsm-shm kv NAME put KEY VALUE | get KEY | delete KEY  [--timeout S] [--json]

``cluster start`` runs the cluster in the foreground: the peers are its child processes;
Ctrl-C (or SIGTERM, or ``cluster stop NAME`` from another shell) stops them gracefully
and the command exits 0.  Every other command controls a running cluster by name from
any process of the machine (``LocalCluster.attach``) and reads peer state from the
peers' shared-memory status records, without asking the peers anything.
``cluster status --remote`` also asks peers that serve the network (``cluster serve``)
for their status over gRPC -- the given addresses and every peer they name -- and shows
them beside the local ones, with the address each answered at (needs the ``[net]`` extra).

Exit codes follow the rest of ``rsm-shm``: 0 success; 1 not found or failed (no cluster
of that name, no such peer, ``kv get`` of a missing key, an operation whose outcome is
unknown after its timeout); 2 usage error.

``--json`` (read-only commands) prints one object with ``"schema": 1`` and ``"command"``:
``cluster ls`` -> ``{"clusters": [{"name", "peers", "leader", "data_dir"}]}``;
``cluster status`` -> ``{"name", "leader", "peers": [PEER, ...]}`` where PEER holds the
fields of :class:`rsm_shm.cluster.PeerStatus` (``--watch --json`` prints one such
object per line, a frame each); with ``--remote`` every PEER also has ``"address"``
("local" or the HOST:PORT it answered at) and the object has ``"unreachable"``
(``{address: why}``); ``kv get`` -> ``{"key", "value", "found"}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .._cliargs import positive_float as _positive_float
from .._cliargs import positive_int as _positive_int

if TYPE_CHECKING:
    from .local import LocalCluster
    from .net.tls import TLSConfig
    from .status import PeerStatus

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
SHM_DIR = "/dev/shm"
SEGMENT_PREFIX = "rsm_shm."
CONTROL_SUFFIX = ".ctl"


def _err(msg: str) -> None:
    print(f"rsm-shm: {msg}", file=sys.stderr)


def _peer_dict(st: PeerStatus) -> dict[str, Any]:
    if hasattr(st, "as_dict"):
        return st.as_dict()
    d = dataclasses.asdict(st)
    d["match"] = {str(k): v for k, v in d.get("match", {}).items()}
    return d


def cluster_names() -> list[str]:
    """The names of the clusters whose control segment exists on this machine."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted(
        e[len(SEGMENT_PREFIX) : -len(CONTROL_SUFFIX)]
        for e in entries
        if e.startswith(SEGMENT_PREFIX) and e.endswith(CONTROL_SUFFIX)
    )


def _on_attached(command: Callable[[argparse.Namespace, LocalCluster], int]) -> Callable[[argparse.Namespace], int]:
    """The command ``cmd(args)`` that runs ``command(args, cluster)`` on the running cluster
    ``args.name``: attached from this process (exit 1, after saying why, when there is no
    such cluster) and unmapped afterwards (the cluster keeps running)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from .local import LocalCluster

        try:
            cluster = LocalCluster.attach(args.name)
        except (FileNotFoundError, LookupError) as exc:
            _err(f"no cluster named {args.name!r} ({exc})")
            return EXIT_FAILED
        try:
            return command(args, cluster)
        finally:
            cluster.close()

    return run


def _leader_of(statuses: Iterable[PeerStatus]) -> int | None:
    leaders = [s for s in statuses if s.alive and s.role == "leader"]
    if not leaders:
        return None
    return max(leaders, key=lambda s: s.term).id


# -- commands ---------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    from .local import LocalCluster

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    try:
        cluster = LocalCluster(
            args.name,
            args.sm,
            peers=args.peers,
            data_dir=args.data,
            fsync=not args.no_fsync,
            restart_failed=args.restart_failed,
        )
    except (ValueError, FileExistsError, ImportError) as exc:
        _err(f"cluster start {args.name}: {exc}")
        return EXIT_FAILED
    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        try:
            cluster.start()
        except Exception as exc:
            _err(f"cluster start {args.name}: {exc}")
            cluster.stop()
            return EXIT_FAILED
        try:
            leader = cluster.wait_leader(timeout=args.timeout)
        except TimeoutError:
            leader = None
        where = f", data in {args.data}" if args.data else " (temporary data directory)"
        print(
            f"cluster {args.name}: {cluster.peers} peers running {args.sm}{where}; "
            f"leader {leader if leader is not None else 'not elected yet'}",
            flush=True,
        )
        print("Ctrl-C stops it", flush=True)
        while not stop.wait(0.2):
            if _stopped_elsewhere(args.name):
                break
        print(f"cluster {args.name}: stopping", flush=True)
        return EXIT_OK
    finally:
        if args.data:
            cluster.stop()
        else:
            cluster.destroy()  # a temporary directory is the cluster's own: remove it
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _remote_options(args: argparse.Namespace) -> "tuple[TLSConfig | None, list[str]]":
    """``--tls-*`` and ``--remote HOST:PORT,...`` checked: ImportError without the [net]
    extra, ValueError (a usage error) for a bad option."""
    from .net.server import parse_address
    from .net.tls import TLSConfig

    tls = TLSConfig.from_options(args.tls_cert, args.tls_key, args.tls_ca)
    addresses = [a.strip() for a in args.remote.split(",") if a.strip()]
    if not addresses:
        raise ValueError("--remote needs at least one HOST:PORT")
    for a in addresses:
        parse_address(a)
    return tls, addresses


def cmd_membership(args: argparse.Namespace) -> int:
    """``cluster add-peer`` / ``remove-peer``: membership of served peers, over gRPC."""
    what = f"cluster {args.command_name}"
    try:
        from .net.members import add_peer, remove_peer

        tls, addresses = _remote_options(args)
        if not 1 <= args.id <= 64:
            raise ValueError(f"peer id must be between 1 and 64, not {args.id}")
    except ImportError as exc:
        _err(f"{what}: {exc}")
        return EXIT_FAILED
    except (ValueError, TypeError) as exc:
        _err(f"{what}: {exc}")
        return EXIT_USAGE
    try:
        if args.command_name == "add-peer":
            add_peer(addresses, args.id, args.address, tls=tls, timeout=args.timeout)
            print(f"peer {args.id} at {args.address} is a voter")
        else:
            remove_peer(addresses, args.id, tls=tls, timeout=args.timeout)
            print(f"peer {args.id} left the cluster")
    except (TimeoutError, ConnectionError, PermissionError, ValueError) as exc:
        _err(f"{what} {args.id}: {exc}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """One peer in the foreground (see rsm_shm.cluster.serve); Ctrl-C/SIGTERM stop it."""
    from .serve import serve

    return serve(args)


def _stopped_elsewhere(name: str) -> bool:
    """`cluster stop NAME` from another process asked this foreground cluster to end."""
    from .control import ControlBlock

    try:
        ctl = ControlBlock(name, create=False)
    except (FileNotFoundError, OSError, ValueError):
        return True
    try:
        return bool(ctl.load().stopping)
    except Exception:
        return False
    finally:
        ctl.close()


def cmd_ls(args: argparse.Namespace) -> int:
    from .local import LocalCluster

    rows: list[dict[str, Any]] = []
    for name in cluster_names():
        cluster = None
        try:
            cluster = LocalCluster.attach(name)
            statuses = cluster.status()
            rows.append(
                {
                    "name": name,
                    "peers": len(statuses),
                    "leader": _leader_of(statuses),
                    "alive": sum(1 for s in statuses if s.alive),
                    "data_dir": getattr(cluster, "data_dir", None),
                }
            )
        except Exception as exc:  # a cluster being torn down: list it, say so
            rows.append({"name": name, "peers": 0, "leader": None, "alive": 0, "data_dir": None, "error": str(exc)})
        finally:
            if cluster is not None:
                cluster.close()
    if args.json:
        print(json.dumps({"schema": 1, "command": "cluster ls", "time": time.time(), "clusters": rows}))
        return EXIT_OK
    if not rows:
        print("no clusters")
        return EXIT_OK
    print(f"{'NAME':30} {'PEERS':>5} {'ALIVE':>5} {'LEADER':>6}  DATA")
    for r in rows:
        leader = "-" if r["leader"] is None else str(r["leader"])
        print(f"{r['name']:30} {r['peers']:>5} {r['alive']:>5} {leader:>6}  {r.get('data_dir') or r.get('error', '')}")
    return EXIT_OK


def _status_table(name: str, statuses: Sequence[PeerStatus], where: dict[int, str] | None = None) -> str:
    """The status table; ``where`` (peer id -> "local" or the address it answered at)
    adds an ADDRESS column (``--remote``)."""
    addr_head = f" {'ADDRESS':<21}" if where is not None else ""
    lines = [
        f"cluster {name}: leader {_leader_of(statuses) or '-'}",
        f"{'PEER':>4}{addr_head} {'PID':>7} {'ALIVE':>5} {'ROLE':>13} {'TERM':>5} {'COMMIT':>8} {'APPLIED':>8} "
        f"{'FIRST':>7} {'LAST':>8} {'IN':>8} {'OUT':>8} {'DROP':>6} {'BAD':>4} {'FSYNCS':>7} {'CONTACT':>8} "
        f"{'STATE':>8} {'RESTARTS':>8}",
    ]
    for s in statuses:
        contact = "-" if s.last_contact is None else f"{s.last_contact:.2f}s"
        addr = f" {where.get(s.id, '-'):<21}" if where is not None else ""
        lines.append(
            f"{s.id:>4}{addr} {s.pid:>7} {'yes' if s.alive else 'no':>5} {s.role:>13} {s.term:>5} "
            f"{s.commit:>8} {s.applied:>8} {s.first_index:>7} {s.last_index:>8} {s.msgs_in:>8} "
            f"{s.msgs_out:>8} {s.msgs_dropped:>6} {s.msgs_bad:>4} {s.fsyncs:>7} {contact:>8} "
            f"{s.state or '-':>8} {s.restarts:>8}"
        )
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    if not args.remote:
        if not args.name:
            _err("cluster status: give NAME (a cluster on this machine), --remote HOST:PORT,..., or both")
            return EXIT_USAGE
        return _local_status(args)
    try:
        from .net.client import fetch_statuses, peer_status_from_dict

        tls, addresses = _remote_options(args)
    except ImportError as exc:
        _err(f"cluster status --remote: {exc}")
        return EXIT_FAILED
    except (ValueError, TypeError) as exc:
        _err(f"cluster status --remote: {exc}")
        return EXIT_USAGE
    local = None
    if args.name:
        from .local import LocalCluster

        try:
            local = LocalCluster.attach(args.name)
        except (FileNotFoundError, LookupError):
            local = None  # no such cluster on this machine: the remote peers only
    try:
        frame = 0
        while True:
            answers, errors = fetch_statuses(addresses, tls=tls, timeout=args.timeout)
            rows: dict[int, PeerStatus] = {}
            where: dict[int, str] = {}
            if local is not None:
                for st in local.status():
                    rows[st.id], where[st.id] = st, "local"
            names = {str(info.get("cluster")) for info in answers.values()}
            for addr, info in answers.items():
                st = peer_status_from_dict(dict(info.get("status") or {}, id=int(info["id"])))
                if st.id not in rows or not rows[st.id].alive:
                    rows[st.id], where[st.id] = st, addr
            statuses = [rows[i] for i in sorted(rows)]
            name = args.name or ",".join(sorted(names)) or "?"
            if args.json:
                peers = [dict(_peer_dict(st), address=where[st.id]) for st in statuses]
                print(
                    json.dumps(
                        {
                            "schema": 1,
                            "command": "cluster status",
                            "time": time.time(),
                            "frame": frame,
                            "name": name,
                            "leader": _leader_of(statuses),
                            "peers": peers,
                            "unreachable": errors,
                        }
                    ),
                    flush=True,
                )
            else:
                if args.watch and sys.stdout.isatty():
                    sys.stdout.write("\x1b[H\x1b[2J")
                print(_status_table(name, statuses, where), flush=True)
                for addr, why in errors.items():
                    print(f"unreachable {addr}: {why}", flush=True)
            frame += 1
            if not args.watch or (args.count is not None and frame >= args.count):
                return EXIT_OK if answers or statuses else EXIT_FAILED
            if not args.json and not sys.stdout.isatty():
                print()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if local is not None:
            local.close()


@_on_attached
def _local_status(args: argparse.Namespace, cluster: LocalCluster) -> int:
    try:
        frame = 0
        while True:
            statuses = cluster.status()
            if args.json:
                print(
                    json.dumps(
                        {
                            "schema": 1,
                            "command": "cluster status",
                            "time": time.time(),
                            "frame": frame,
                            "name": args.name,
                            "leader": _leader_of(statuses),
                            "peers": [_peer_dict(s) for s in statuses],
                        }
                    ),
                    flush=True,
                )
            else:
                if args.watch and sys.stdout.isatty():
                    sys.stdout.write("\x1b[H\x1b[2J")
                print(_status_table(args.name, statuses), flush=True)
            frame += 1
            if not args.watch or (args.count is not None and frame >= args.count):
                return EXIT_OK
            if not args.json and not sys.stdout.isatty():
                print()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK


@_on_attached
def _peer_action(args: argparse.Namespace, cluster: LocalCluster) -> int:
    try:
        ids = {s.id for s in cluster.status()}
        if args.peer not in ids:
            _err(f"cluster {args.name} has no peer {args.peer} (peers: {', '.join(map(str, sorted(ids)))})")
            return EXIT_FAILED
        getattr(cluster, args.action)(args.peer)
        done = {"kill": "killed", "restart": "restarted", "pause": "paused", "resume": "resumed"}
        print(f"cluster {args.name}: peer {args.peer} {done[args.action]}")
        return EXIT_OK
    except (ValueError, RuntimeError) as exc:
        _err(f"cluster {args.action} {args.name} {args.peer}: {exc}")
        return EXIT_FAILED


def parse_groups(tokens: Sequence[str]) -> list[list[int]]:
    """``["1", "/", "2,3"]`` or ``["1/2,3"]`` -> [[1], [2, 3]]."""
    text = " ".join(tokens).replace(" ", "")
    groups = []
    for part in text.split("/"):
        if not part:
            raise ValueError(f"empty group in {' '.join(tokens)!r}")
        try:
            groups.append([int(p) for p in part.split(",") if p])
        except ValueError:
            raise ValueError(f"groups are peer ids like '1 / 2,3', got {' '.join(tokens)!r}") from None
    if len(groups) < 2:
        raise ValueError(f"a partition needs at least two groups separated by '/', got {' '.join(tokens)!r}")
    return groups


def cmd_partition(args: argparse.Namespace) -> int:
    try:
        args.groups = parse_groups(args.groups)
    except ValueError as exc:
        _err(f"cluster partition: {exc}")
        return EXIT_USAGE
    return _partition(args)


@_on_attached
def _partition(args: argparse.Namespace, cluster: LocalCluster) -> int:
    groups: list[list[int]] = args.groups
    ids = {s.id for s in cluster.status()}
    unknown = sorted({p for g in groups for p in g} - ids)
    if unknown:
        _err(f"cluster {args.name} has no peer {', '.join(map(str, unknown))}")
        return EXIT_FAILED
    cluster.partition(*groups)
    print(f"cluster {args.name}: partitioned " + " / ".join(",".join(map(str, g)) for g in groups))
    return EXIT_OK


@_on_attached
def cmd_heal(args: argparse.Namespace, cluster: LocalCluster) -> int:
    cluster.heal()
    print(f"cluster {args.name}: healed")
    return EXIT_OK


@_on_attached
def cmd_stop(args: argparse.Namespace, cluster: LocalCluster) -> int:
    cluster.stop()
    print(f"cluster {args.name}: stopped")
    return EXIT_OK


def cmd_kv(args: argparse.Namespace) -> int:
    from .client import KVClient

    if args.op == "put" and args.value is None:
        _err("kv put needs a KEY and a VALUE")
        return EXIT_USAGE
    if args.op != "put" and args.value is not None:
        _err(f"kv {args.op} takes a KEY only")
        return EXIT_USAGE
    if args.name not in cluster_names():
        _err(f"no cluster named {args.name!r}")
        return EXIT_FAILED
    try:
        with KVClient(args.name) as kv:
            if args.op == "put":
                kv.put(args.key, args.value, timeout=args.timeout)
                return EXIT_OK
            if args.op == "delete":
                kv.delete(args.key, timeout=args.timeout)
                return EXIT_OK
            value = kv.get(args.key, timeout=args.timeout)
    except TimeoutError:
        _err(f"kv {args.op} {args.key!r} on {args.name}: no answer in {args.timeout} s (outcome unknown)")
        return EXIT_FAILED
    if args.json:
        print(
            json.dumps({"schema": 1, "command": "kv get", "key": args.key, "value": value, "found": value is not None})
        )
    elif value is not None:
        print(value)
    return EXIT_OK if value is not None else EXIT_FAILED


# -- wiring -----------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cluster`` and ``kv`` to the ``rsm-shm`` sub-command parser ``sub``."""
    cl = sub.add_parser("cluster", help="start, watch and poke a local Raft cluster")
    csub = cl.add_subparsers(dest="cluster_command", metavar="ACTION")

    def cluster_usage(args: argparse.Namespace) -> int:
        cl.print_help(sys.stderr)
        return EXIT_USAGE

    cl.set_defaults(func=cluster_usage)

    p = csub.add_parser("start", help="run a cluster in the foreground (Ctrl-C stops it)")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--peers",
        type=_positive_int,
        default=None,
        help="number of peers (default 3; a reused --data directory keeps its own)",
    )
    p.add_argument(
        "--sm",
        required=True,
        metavar="pkg.mod:Class",
        help="the state machine's import path, e.g. rsm_shm.cluster:KVStore",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="data directory (kept after stop); default: a temporary one, removed at stop",
    )
    p.add_argument("--no-fsync", action="store_true", help="do not fsync the logs (NOT durable: tests only)")
    p.add_argument("--timeout", type=_positive_float, default=30.0, help="seconds to wait for a leader")
    p.add_argument(
        "--restart-failed",
        action="store_true",
        help="restart a peer whose process dies unasked (backoff; at most 5 times a minute, then it is "
        "marked failed); 'cluster kill' still leaves a peer dead",
    )
    p.set_defaults(func=cmd_start)

    p = csub.add_parser("serve", help="run one peer of a cluster across hosts (gRPC; needs rsm_shm[net])")
    from .serve import add_arguments as add_serve_arguments

    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = csub.add_parser("ls", help="the clusters running on this machine")
    p.add_argument("--json", action="store_true", help="machine-readable output (schema 1)")
    p.set_defaults(func=cmd_ls)

    p = csub.add_parser("status", help="each peer's role, term, indexes and counters")
    p.add_argument(
        "name", metavar="NAME", nargs="?", default=None, help="a cluster on this machine (optional with --remote)"
    )
    p.add_argument(
        "--remote",
        metavar="HOST:PORT,...",
        default=None,
        help="also ask served peers at these addresses (and every peer they name), over gRPC",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="seconds to wait for each remote peer (with --remote)",
    )
    p.add_argument("--tls-cert", metavar="FILE", default=None, help="client certificate for --remote (mutual TLS)")
    p.add_argument("--tls-key", metavar="FILE", default=None, help="its private key")
    p.add_argument("--tls-ca", metavar="FILE", default=None, help="the cluster's CA certificate")
    p.add_argument("--json", action="store_true", help="machine-readable output (schema 1)")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="S", help="seconds between frames")
    p.add_argument("--count", type=_positive_int, default=None, metavar="N", help="stop after N frames")
    p.set_defaults(func=cmd_status)

    for command, text in (
        ("add-peer", "admit a served peer started with --join (learner, caught up, then voter)"),
        ("remove-peer", "remove a served peer from the cluster"),
    ):
        p = csub.add_parser(command, help=text)
        p.add_argument("id", metavar="ID", type=_positive_int, help="the peer's id")
        if command == "add-peer":
            p.add_argument("address", metavar="HOST:PORT", help="where the new peer listens (as the others dial it)")
        p.add_argument("--remote", metavar="HOST:PORT,...", required=True, help="peers of the cluster (one is enough)")
        p.add_argument(
            "--timeout", type=_positive_float, default=60.0, metavar="S", help="seconds before giving up (default 60)"
        )
        p.add_argument("--tls-cert", metavar="FILE", default=None, help="certificate naming this cluster (mutual TLS)")
        p.add_argument("--tls-key", metavar="FILE", default=None, help="its private key")
        p.add_argument("--tls-ca", metavar="FILE", default=None, help="the cluster's CA certificate")
        p.set_defaults(func=cmd_membership, command_name=command)

    for action, text in (
        ("kill", "SIGKILL a peer"),
        ("restart", "start a stopped or killed peer again"),
        ("pause", "SIGSTOP a peer"),
        ("resume", "SIGCONT a paused peer"),
    ):
        p = csub.add_parser(action, help=text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("peer", metavar="PEER", type=_positive_int)
        p.set_defaults(func=_peer_action, action=action)

    p = csub.add_parser("partition", help="cut the links between groups of peers: 1 / 2,3")
    p.add_argument("name", metavar="NAME")
    p.add_argument("groups", metavar="GROUPS", nargs="+", help="peer ids, groups separated by '/'")
    p.set_defaults(func=cmd_partition)

    p = csub.add_parser("heal", help="restore every link")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_heal)

    p = csub.add_parser("stop", help="stop a running cluster gracefully")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("kv", help="put, get or delete a key of a KVStore cluster")
    p.add_argument("name", metavar="NAME")
    p.add_argument("op", choices=("put", "get", "delete"))
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE", nargs="?")
    p.add_argument("--timeout", type=_positive_float, default=5.0, help="seconds before the outcome is unknown")
    p.add_argument("--json", action="store_true", help="machine-readable output of get (schema 1)")
    p.set_defaults(func=cmd_kv)
