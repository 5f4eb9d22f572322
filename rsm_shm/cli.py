"""``rsm-shm``: list, inspect, watch and garbage-collect rsm_shm shared-memory segments.

Commands (also ``python -m rsm_shm``)::

    rsm-shm ls [--all] [--prefix P] [--json]
    rsm-shm inspect NAME [--json]
    rsm-shm watch [NAME ...] [--all] [--prefix P] [--interval S] [--count N] [--json]
    rsm-shm gc [--dry-run] [--prefix P] [--corrupt] [--json]
    rsm-shm cluster start|ls|status|kill|restart|pause|resume|partition|heal|stop ...
    rsm-shm kv NAME put|get|delete KEY [VALUE]

(``cluster`` and ``kv`` are documented in ``rsm_shm/cluster/cli.py``.)

``ls`` prints one line per segment: name, kind, size, creator pid and whether it lives,
the processes mapping it, age and a one-phrase state.  ``--all`` adds foreign files in
/dev/shm (marked, never decoded).  ``inspect`` prints everything about one segment: the
header, the decoded state (lock word, owner and its liveness, waiter queue, tag, counts,
generations, ...) and the attached processes.  ``watch`` repeats the ``ls`` view every
``--interval`` seconds (the screen is cleared with ANSI codes only when stdout is a
terminal; otherwise frames follow each other); ``--count N`` stops after N frames.
``gc`` removes a segment only when its creator is dead (pid *and* start time, so a reused
pid does not count as alive) and no live process maps it; it never touches foreign
files; ``--dry-run`` only says what it would do; each segment gets a reason.  A segment
whose header cannot be trusted is kept unless ``--corrupt`` is given (then it is removed
if unmapped and unmodified for a minute).  ``--prefix P`` restricts any command to the
segments whose name (without ``rsm_shm.``) starts with P — scripts and tests use it to
touch only their own segments.

Exit codes: 0 success; 1 not found / nothing matched (``inspect`` of a missing name; a
``--prefix`` or NAME filter that matched nothing; a ``gc`` removal that failed);
2 usage error (bad arguments or an impossible name).

A corrupt, truncated, foreign or unknown-version segment never crashes a command: it is
listed with a status saying so and is never attached to (see ``rsm_shm.inspect``).

JSON schema, version 1
======================

Every ``--json`` document is one JSON object (``watch`` prints one per line, a frame
each) with ``"schema": 1`` and ``"command"``.  Fields are only ever added within a
schema version; anything incompatible bumps ``schema``.  Times are seconds since the
epoch (floats); durations are seconds.

``ls``::

    {"schema": 1, "command": "ls", "time": float,
     "scan": {"processes": int, "seconds": float},   # the one /proc scan
     "segments": [SEGMENT, ...]}                      # sorted by file name

``inspect``::

    {"schema": 1, "command": "inspect", "time": float, "scan": {...}, "segment": SEGMENT}

``watch`` (one line per frame)::

    {"schema": 1, "command": "watch", "frame": int (0-based), "time": float, "scan": {...},
     "segments": [SEGMENT, ...]}

``gc``::

    {"schema": 1, "command": "gc", "time": float, "dry_run": bool, "scan": {...},
     "results": [{"name": str, "path": str, "status": STATUS,
                  "action": "removed" | "would-remove" | "kept" | "failed",
                  "reason": str}, ...]}

SEGMENT (every key is always present; null when unknown or not applicable)::

    {"name": str,            # without the "rsm_shm." prefix; a foreign file's own name
     "path": str,            # /dev/shm/...
     "foreign": bool,        # true: not ours, never decoded
     "status": STATUS,
     "problem": str | null,  # what is wrong, for people
     "kind": str | null,     # "lock", "rlock", "semaphore", "bounded_semaphore", "event",
                             # "auto_reset_event", "condition", "barrier", "rwlock", "gate",
                             # "once", "countdown", "ring", "queue", "automaton", "raft_status"
     "size": int | null,     # file size in bytes
     "mode": str | null,     # octal permission bits, e.g. "0600"
     "uid": int | null,      # owner of the file
     "inode": int | null,
     "modified": float | null,   # file mtime
     "created": float | null,    # from the header (validated headers only)
     "age": float | null,        # seconds since "created"
     "creator": {"pid": int, "start": int, "alive": bool} | null,
                             # start: clock ticks after boot (/proc/pid/stat field 22), 0 unknown
     "attached": [{"pid": int, "name": str}, ...],   # live processes mapping it (this one excluded)
     "unverified": [{"pid": int, "name": str}, ...],
                             # processes whose maps could not be read but that could map it
     "state": str | null,    # the one-phrase state, e.g. "locked by 4121/4121 (alive), 3 waiting"
     "header": HEADER | null,    # validated headers only
     "detail": object | null}    # the kind's decoded state (below); status "ok" only

STATUS: "ok" | "building" (creator has not published it yet) | "failed" (creation
failed) | "undecodable" (valid header, body would not decode; see problem) | "corrupt" |
"truncated" | "unknown-version" | "unreadable" | "foreign".

HEADER::

    {"version": int, "kind": str, "initialized": "building" | "ready" | "failed" | int,
     "creator_pid": int, "creator_start": int, "created": float, "header_size": int,
     "body_size": int, "flags": int, "anonymous": bool, "params": [int, ...],
     "ref_name": str | null}

"detail" by kind (QUEUE is a wait queue: {"nslots": int, "nwaiters": int,
"noverflow": int, "slots": [{"slot", "phase", "kind", "token", "pid", "tid", "ticket",
"alive"}, ...]}, the occupied slots in arrival order)::

    lock, rlock:  {"locked", "owner_tid", "owner_pid", "owner_alive" (bool|null), "count",
                   "waiters", "tag", "policy", "owner_died", "recovered" ({"pid","tid"}|null),
                   "queue": QUEUE}
    semaphore, bounded_semaphore, auto_reset_event:
                  {"value", "max_value" (int|null), "waiters", "disabled", "policy", "robust",
                   "holders" ([[pid, permits], ...], robust only), "untracked", "queue"}
    event, gate, countdown:
                  {"kind", "is_set", "count", "waiters", "generation", "queue"}
    once:         {"done", "running", "runner_tid", "runner_pid", "runner_alive",
                   "waiters", "taken_over_from", "queue"}
    rwlock:       {"readers", "writer_tid", "writer_pid", "writer_alive", "waiting_readers",
                   "waiting_writers", "prefer", "owner_died", "reader_pids", "untracked_readers",
                   "queue"}
    condition:    {"waiters", "queue", "lock": {"embedded", "name", "type", <lock fields>}}
    barrier:      {"state": "filling"|"draining"|"resetting"|"broken", "waiting", "parties",
                   "generation", "queue", "lock": {<lock fields>}}
    automaton:    rsm_shm.fsm.AutomatonStatistics: {"name", "mode" ("idle"|"running"|"signaled"|
                   "draining"|"dead"), "restart_pending", "exit_kind" ("none"|"clean"|"error"|
                   "killed"), "host" ("none"|"thread"|"process"), "host_pid", "host_alive",
                   "generation", "restarts", "supervisor_pid", "commands" (delivered),
                   "transitions", "dropped", "in_hand" (taken from the inbox, not yet
                   delivered), "host_died" (true: the host is gone but the stored "mode" still
                   says it runs; nobody recorded the death yet), "inbox_depth" (-1: unknown),
                   "inbox_capacity", "state" (repr of the handler's state), "error",
                   "started", "ended"}
    ring, queue:  rsm_shm.ring.RingStatistics: {"capacity", "max_message", "used_bytes",
                   "messages", "head", "read", "tail", "is_shutdown", "blocked_producers",
                   "blocked_consumers", "single_producer", "single_consumer"}, plus
                   "fill" (percent of capacity used, float), "consumer_queue": QUEUE,
                   "producer_queue": QUEUE (a producer's slot kind is its size class)

Enumerations inside "detail" are lower-case names ("policy": "fifo", "mode": "running").

Kinds without a decoder in this version have "detail": null and a "state" saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

from . import inspect as insp
from ._cliargs import positive_float as _positive_float
from ._cliargs import positive_int as _positive_int
from .segment import PREFIX, SHM_DIR

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2

DEFAULT_INTERVAL = 1.0
_CLEAR_SCREEN = "\x1b[H\x1b[2J"
_MAX_PIDS_SHOWN = 3
_UNITS = ("B", "K", "M", "G", "T")
_KIB = 1024.0


# -- formatting ---------------------------------------------------------------------------


def human_size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if value < _KIB or unit == _UNITS[-1]:
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= _KIB
    return str(n)  # unreachable


def human_age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


_MAX_STATE_CHARS = 160


def printable(text: str, limit: Optional[int] = None) -> str:
    """Text from shared memory made safe for a terminal: control characters (an escape
    sequence planted by a hostile or buggy writer) are shown escaped, and long text cut."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit is not None and len(out) > limit:
        out = out[: limit - 3] + "..."
    return out


def _creator_cell(rec: dict[str, Any]) -> str:
    c = rec.get("creator")
    if not c:
        return "-"
    return f"{c['pid']} {'alive' if c['alive'] else 'dead'}"


def _attached_cell(rec: dict[str, Any]) -> str:
    pids = [str(a["pid"]) for a in rec.get("attached") or []]
    if not pids:
        return "-"
    shown = ",".join(pids[:_MAX_PIDS_SHOWN])
    if len(pids) > _MAX_PIDS_SHOWN:
        shown += f",+{len(pids) - _MAX_PIDS_SHOWN}"
    return f"{len(pids)}: {shown}"


def _state_cell(rec: dict[str, Any]) -> str:
    status = rec.get("status")
    if status == insp.SegmentStatus.FOREIGN.value:
        return "foreign (not decoded)"
    if status in (insp.SegmentStatus.OK.value, insp.SegmentStatus.BUILDING.value, insp.SegmentStatus.FAILED.value):
        return printable(rec.get("state") or "-", _MAX_STATE_CHARS)
    return printable(f"{str(status).upper()}: {rec.get('problem') or ''}".rstrip(": "), _MAX_STATE_CHARS)


def render_table(records: Sequence[dict[str, Any]]) -> str:
    """The ``ls``/``watch`` table: one line per record, columns sized to fit."""
    header = ("NAME", "KIND", "SIZE", "CREATOR", "ATTACHED", "AGE", "STATE")
    rows = [header]
    for r in records:
        kind = "foreign" if r.get("foreign") else (r.get("kind") or "?")
        rows.append(
            (
                printable(r["name"]),
                kind,
                human_size(r.get("size")),
                _creator_cell(r),
                _attached_cell(r),
                human_age(r.get("age")),
                _state_cell(r),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _when(t: Optional[float]) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


_QUEUE_KEYS = {"nslots", "nwaiters", "noverflow", "slots"}


def _queue_lines(q: dict[str, Any], indent: str) -> list[str]:
    out = [f"{indent}{q['nwaiters']} waiting in slots, {q['noverflow']} overflowed, {q['nslots']} slots"]
    if q["slots"]:
        out.append(f"{indent}  {'SLOT':>4}  {'TICKET':>8}  {'PID':>7}  {'TID':>7}  PHASE     KIND  TOKEN  PROCESS")
        for s in q["slots"]:
            out.append(
                f"{indent}  {s['slot']:>4}  {s['ticket']:>8}  {s['pid']:>7}  {s['tid']:>7}  "
                f"{s['phase']:<8}  {s['kind']:>4}  {s['token']:>5}  {'alive' if s['alive'] else 'dead'}"
            )
    return out


def _detail_lines(detail: dict[str, Any], indent: str = "  ") -> list[str]:
    out = []
    for key, value in detail.items():
        if isinstance(value, dict) and _QUEUE_KEYS <= set(value):
            out.append(f"{indent}{key.replace('_', ' ').replace('queue', 'wait queue')}:")
            out.extend(_queue_lines(value, indent + "  "))
        elif isinstance(value, dict):
            out.append(f"{indent}{key}:")
            out.extend(_detail_lines(value, indent + "  "))
        else:
            if key == "tag" and isinstance(value, int):
                value = f"{value} ({value:#x})"
            out.append(f"{indent}{key}: {'-' if value is None else printable(str(value))}")
    return out


def render_inspect(rec: dict[str, Any]) -> str:
    lines = [
        f"name:       {printable(rec['name'])}",
        f"path:       {printable(rec['path'])}",
        f"status:     {rec['status']}" + (f" -- {printable(rec['problem'])}" if rec.get("problem") else ""),
        f"kind:       {'foreign (not decoded)' if rec['foreign'] else rec.get('kind') or '?'}",
        f"size:       {human_size(rec.get('size'))} ({rec.get('size')} bytes, mode {rec.get('mode')}, "
        f"uid {rec.get('uid')})",
    ]
    if rec.get("created") is not None:
        lines.append(f"created:    {_when(rec['created'])} ({human_age(rec.get('age'))} ago)")
    c = rec.get("creator")
    if c:
        lines.append(f"creator:    pid {c['pid']} ({'alive' if c['alive'] else 'dead'}; start time {c['start']})")
    attached = rec.get("attached") or []
    lines.append("attached:   " + (", ".join(f"{a['pid']} ({printable(a['name'])})" for a in attached) or "none"))
    if rec.get("unverified"):
        lines.append(
            "unverified: could not read the maps of "
            + ", ".join(f"{u['pid']} ({printable(u['name'])})" for u in rec["unverified"])
        )
    h = rec.get("header")
    if h:
        lines.append(
            f"header:     layout v{h['version']}, {h['initialized']}, body {h['body_size']} bytes, "
            f"params {h['params']}, flags {h['flags']:#x}"
            + (", anonymous" if h["anonymous"] else "")
            + (f", ref {printable(h['ref_name'])}" if h["ref_name"] else "")
        )
    lines.append(f"state:      {printable(rec.get('state') or '-')}")
    if rec.get("detail"):
        lines.append("detail:")
        lines.extend(_detail_lines(rec["detail"]))
    return "\n".join(lines)


# -- commands -----------------------------------------------------------------------------


def _scan_info(procs: insp.ProcessIndex) -> dict[str, Any]:
    return {"processes": procs.scanned, "seconds": round(procs.seconds, 6)}


def _emit_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, sort_keys=False) + "\n")


def _doc(command: str, procs: insp.ProcessIndex, **fields: Any) -> dict[str, Any]:
    return {"schema": insp.SCHEMA_VERSION, "command": command, "time": time.time(), "scan": _scan_info(procs), **fields}


def cmd_ls(args: argparse.Namespace) -> int:
    records, procs = insp.collect(include_foreign=args.all, prefix=args.prefix)
    if args.json:
        _emit_json(_doc("ls", procs, segments=records))
    elif records:
        print(render_table(records))
    else:
        print("no rsm_shm segments" + (f" matching prefix {args.prefix!r}" if args.prefix else ""))
    return EXIT_NOT_FOUND if args.prefix is not None and not records else EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        hit = insp.resolve(args.name)
    except ValueError as e:
        print(f"rsm-shm inspect: {e}", file=sys.stderr)
        return EXIT_USAGE
    procs = insp.scan_processes()
    rec = insp.describe(*hit, procs) if hit else None
    if rec is None:
        print(f"rsm-shm inspect: no segment named {args.name!r} in {SHM_DIR}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        _emit_json(_doc("inspect", procs, segment=rec))
    else:
        print(render_inspect(rec))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    names = args.names or None
    frame = 0
    matched = True
    next_at = time.monotonic()
    try:
        while args.count is None or frame < args.count:
            records, procs = insp.collect(include_foreign=args.all, prefix=args.prefix, names=names)
            matched = bool(records)
            if args.json:
                _emit_json(_doc("watch", procs, frame=frame, segments=records))
            else:
                out = []
                if tty:
                    out.append(_CLEAR_SCREEN)
                elif frame:
                    out.append("\n")
                out.append(
                    f"rsm-shm watch  {_when(time.time())}  every {args.interval:g}s  "
                    f"frame {frame + 1}{'' if args.count is None else f'/{args.count}'}\n"
                )
                missing = [n for n in names or () if not any(_matches(r, n) for r in records)]
                out.append((render_table(records) if records else "no matching segments") + "\n")
                if missing:
                    out.append("not found: " + ", ".join(missing) + "\n")
                sys.stdout.write("".join(out))
            sys.stdout.flush()
            frame += 1
            if args.count is not None and frame >= args.count:
                break
            next_at += args.interval
            time.sleep(max(next_at - time.monotonic(), 0.0))
    except KeyboardInterrupt:
        if not args.json:
            sys.stdout.write("\n")
        return EXIT_OK
    filtered = names is not None or args.prefix is not None
    return EXIT_NOT_FOUND if filtered and not matched else EXIT_OK


def _matches(rec: dict[str, Any], name: str) -> bool:
    bare = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    return rec["name"] in (name, bare)


def _remove(rec: dict[str, Any]) -> tuple[str, str]:
    """Unlink one segment, unless the file was replaced since it was judged."""
    path = rec["path"]
    try:
        if os.lstat(path).st_ino != rec["inode"]:
            return "kept", "replaced by a new segment of the same name meanwhile"
        os.unlink(path)
    except FileNotFoundError:
        return "kept", "already gone"
    except OSError as e:
        return "failed", f"could not remove it: {e.strerror}"
    return "removed", ""


def cmd_gc(args: argparse.Namespace) -> int:
    # Decoding is not needed to judge; skipping it means gc never attaches to anything.
    records, procs = insp.collect(prefix=args.prefix, decode=False)
    now = time.time()
    results = []
    for rec in records:
        remove, why = insp.gc_verdict(rec, corrupt=args.corrupt, ignore_unreadable=args.ignore_unreadable, now=now)
        action = "kept"
        if remove:
            if args.dry_run:
                action = "would-remove"
            else:
                action, extra = _remove(rec)
                why = extra if action != "removed" else why
        results.append(
            {"name": rec["name"], "path": rec["path"], "status": rec["status"], "action": action, "reason": why}
        )
    if args.json:
        _emit_json(_doc("gc", procs, dry_run=args.dry_run, results=results))
    else:
        width = max((len(printable(r["name"])) for r in results), default=0)
        for r in results:
            print(f"{r['action']:<12}  {printable(r['name']):<{width}}  {printable(r['reason'])}")
        counts = {a: sum(1 for r in results if r["action"] == a) for a in ("removed", "would-remove", "kept", "failed")}
        print(", ".join(f"{n} {a}" for a, n in counts.items() if n) or "no rsm_shm segments")
    if any(r["action"] == "failed" for r in results):
        return EXIT_NOT_FOUND
    return EXIT_NOT_FOUND if args.prefix is not None and not records else EXIT_OK


# -- argument parsing ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsm-shm",
        description="List, inspect, watch and garbage-collect rsm_shm shared-memory segments.",
        epilog="Exit codes: 0 ok, 1 not found / nothing matched, 2 usage error.  "
        "The --json schema is documented in rsm_shm/cli.py.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, json_help: str = "machine-readable output (schema 1)") -> None:
        p.add_argument("--json", action="store_true", help=json_help)

    def prefix(p: argparse.ArgumentParser) -> None:
        p.add_argument("--prefix", metavar="P", help="only segments whose name (without 'rsm_shm.') starts with P")

    p = sub.add_parser("ls", help="one line per segment")
    p.add_argument("--all", action="store_true", help="also list foreign files in /dev/shm (never decoded)")
    prefix(p)
    common(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("inspect", help="everything about one segment")
    p.add_argument("name", metavar="NAME", help="segment name, with or without 'rsm_shm.'")
    common(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("watch", help="a refreshing view of the segments")
    p.add_argument("names", metavar="NAME", nargs="*", help="only these segments")
    p.add_argument("--all", action="store_true", help="also list foreign files in /dev/shm")
    prefix(p)
    p.add_argument(
        "--interval",
        type=_positive_float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between frames (default {DEFAULT_INTERVAL:g})",
    )
    p.add_argument("--count", type=_positive_int, default=None, metavar="N", help="stop after N frames")
    common(p, json_help="one JSON document per frame, one per line (schema 1)")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("gc", help="remove segments whose creator is dead and that no live process maps")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed and why; remove nothing")
    p.add_argument(
        "--corrupt",
        action="store_true",
        help=f"also remove unmapped segments with an untrustworthy header, unmodified for {insp.CORRUPT_GRACE_S:g} s",
    )
    p.add_argument(
        "--ignore-unreadable",
        action="store_true",
        help="treat processes whose memory maps cannot be read (non-dumpable ones, even for root) "
        "as not mapping anything",
    )
    prefix(p)
    common(p)
    p.set_defaults(func=cmd_gc)

    # `cluster ...` and `kv ...` live with the runtime they drive.
    from .cluster.cli import add_commands as add_cluster_commands

    add_cluster_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "prefix", None) is not None and ("/" in args.prefix or not args.prefix):
        parser.error(f"--prefix {args.prefix!r}: must be a non-empty name prefix without '/'")
    if getattr(args, "names", None) and (args.prefix is not None or args.all):
        parser.error("watch: give segment NAMEs or --prefix/--all, not both")
    try:
        status: int = args.func(args)
        return status
    except BrokenPipeError:
        # `rsm-shm ls | head`: the reader left; exit quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
