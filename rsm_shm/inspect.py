"""What the ``rsm-shm`` command knows about /dev/shm: segment records, decoders, attachers.

This module turns the files in /dev/shm into plain, JSON-ready records (dicts) that
``rsm_shm.cli`` prints, and decides what ``rsm-shm gc`` may remove.  Three parts:

* **Process discovery** (:func:`scan_processes`): one pass over every process's memory
  maps, indexing which processes map which /dev/shm file (by device and inode, so a
  process still mapping an unlinked predecessor of the same name does not count).  It
  costs one read of ``/proc/<pid>/maps`` per process, so a command does it once, never
  once per segment.  psutil enumerates the processes and names them; the maps are read
  directly from /proc because ``psutil.Process.memory_maps()`` reads ``smaps``, which
  makes the kernel walk every page table (about ten times slower).
* **Records** (:func:`describe`, :func:`collect`): the header is read with a bounded
  read and validated (:func:`rsm_shm.segment.read_header`: magic, layout version, kind,
  sizes against the file size, CRC).  Only a segment whose header validates *and* whose
  creator published it (``initialized == READY``) is ever attached to; everything else is
  reported with a status saying what is wrong and is never decoded.  Foreign files (no
  ``rsm_shm.`` prefix) are never opened at all.
* **Decoders** (:func:`decoder_for`): a segment is decoded by its kind's own class,
  named in :data:`rsm_shm.segment.KIND_CLASSES`: ``Class(name, create=False)`` attaches
  (neither initializing nor unlinking anything), the handle's public ``describe()``
  returns the detail dict, ``str(statistics())`` the one-phrase state, and ``close()``
  releases it right after.  This module reads no object's private attributes, so a new
  kind plugs in by adding its line to KIND_CLASSES and giving its class those methods;
  its module is imported only when such a segment is met, and one that fails to import
  only leaves its segments undecoded.  :func:`register` overrides a kind's decoder.

Failure modes: every per-segment problem (vanished, unreadable, corrupt, truncated,
unknown layout version, a body that does not decode) becomes a status in the record; no
function here raises for a bad segment.  Reading state that live processes are changing
gives a snapshot that may be slightly inconsistent between fields (e.g. a waiter count
and the queue's slots); it is for people and scripts to look at, not to synchronize on.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import importlib
import os
import stat
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import psutil

from ._native import lib
from .segment import (
    HEADER_SIZE,
    KIND_CLASSES,
    LAYOUT_VERSION,
    MAGIC,
    PREFIX,
    SHM_DIR,
    Kind,
    SegmentError,
    SegmentHeader,
    decode_header,
    read_header,
)

__all__ = [
    "SCHEMA_VERSION",
    "SegmentStatus",
    "KindDecoder",
    "DECODERS",
    "register",
    "ProcessIndex",
    "scan_processes",
    "list_entries",
    "resolve",
    "describe",
    "collect",
    "gc_verdict",
    "kind_label",
    "decoder_for",
]

#: Version of the JSON records produced here (documented in rsm_shm/cli.py).  Bump it on
#: any incompatible change; adding a field is compatible.
SCHEMA_VERSION = 1

#: ``gc --corrupt`` leaves a segment with an untrustworthy header alone until it has not
#: been modified for this long: a segment in the middle of creation is briefly all zeros.
CORRUPT_GRACE_S = 60.0

_MAPS_MARKER = b" " + SHM_DIR.encode() + b"/"
_DELETED_SUFFIX = b" (deleted)"
_UNBOUNDED_SIZE = 1 << 62  # a file size no header can exceed
_INIT_NAMES = {lib.RSM_INIT_BUILDING: "building", lib.RSM_INIT_READY: "ready", lib.RSM_INIT_FAILED: "failed"}


class SegmentStatus(str, enum.Enum):
    """What a record's ``status`` field says about a /dev/shm entry."""

    OK = "ok"  # valid header, published; state decoded if the kind is known
    BUILDING = "building"  # valid header, creator has not published it yet
    FAILED = "failed"  # the creator marked its creation failed
    UNDECODABLE = "undecodable"  # valid header, but attaching or decoding the body failed
    CORRUPT = "corrupt"  # our prefix, but the header does not validate
    TRUNCATED = "truncated"  # shorter than the header, or than the header says
    UNKNOWN_VERSION = "unknown-version"  # our magic, another layout version: not decoded
    UNREADABLE = "unreadable"  # no permission to read it
    FOREIGN = "foreign"  # not an rsm_shm segment (no prefix): never decoded


def kind_label(kind: Kind) -> str:
    """The kind as shown and in JSON: ``Kind.BOUNDED_SEMAPHORE`` -> ``"bounded_semaphore"``."""
    return kind.name.lower()


# -- process discovery --------------------------------------------------------------------


@dataclass
class ProcessIndex:
    """Which live processes map which /dev/shm files, from one scan of /proc.

    ``unreadable`` holds processes whose maps could not be read (another user's when not
    running as root; non-dumpable ones, such as a container's init, even for root), with
    their real uid; :meth:`may_map` says which of them could have mapped a given file,
    which ``gc`` then treats as possibly attached unless told to ignore them.
    """

    by_file: dict[tuple[int, int], set[int]]  # (st_dev, st_ino) -> pids
    unreadable: dict[int, int]  # pid -> uid
    scanned: int
    seconds: float
    _names: dict[int, str] = dataclasses.field(default_factory=dict)

    def attached(self, st: os.stat_result) -> list[int]:
        """Pids of the live processes mapping the file ``st`` describes, sorted."""
        return sorted(self.by_file.get((st.st_dev, st.st_ino), ()))

    def may_map(self, st: os.stat_result) -> list[int]:
        """Unreadable processes that could have mapped the file: those of its owner, and
        any non-root one if the file grants group/other access.  Root's processes are
        assumed not to (otherwise gc could never run without root); a documented limit."""
        shared = bool(st.st_mode & (stat.S_IRWXG | stat.S_IRWXO))
        return sorted(pid for pid, uid in self.unreadable.items() if uid == st.st_uid or (shared and uid != 0))

    def name(self, pid: int) -> str:
        if pid not in self._names:
            try:
                self._names[pid] = psutil.Process(pid).name()
            except (psutil.Error, OSError):
                self._names[pid] = "?"
        return self._names[pid]


def _maps_entries(data: bytes) -> Iterable[tuple[int, int]]:
    """(st_dev, inode) of the /dev/shm files mapped in one /proc/<pid>/maps text."""
    for line in data.splitlines():
        if _MAPS_MARKER not in line or line.endswith(_DELETED_SUFFIX):
            continue
        # address perms offset dev inode pathname; dev is "major:minor" in hex
        fields = line.split(None, 5)
        if len(fields) < 6:
            continue
        try:
            major, minor = (int(x, 16) for x in fields[3].split(b":"))
            yield os.makedev(major, minor), int(fields[4])
        except ValueError:
            continue


def scan_processes() -> ProcessIndex:
    """Scan every process's memory maps once (this process excluded)."""
    t0 = time.monotonic()
    me = os.getpid()
    by_file: dict[tuple[int, int], set[int]] = {}
    unreadable: dict[int, int] = {}
    pids = psutil.pids()
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                data = f.read()
        except PermissionError:
            try:
                unreadable[pid] = psutil.Process(pid).uids().real
            except (psutil.Error, OSError):
                pass  # gone meanwhile
            continue
        except OSError:
            continue  # gone meanwhile (ENOENT/ESRCH)
        for key in set(_maps_entries(data)):
            by_file.setdefault(key, set()).add(pid)
    return ProcessIndex(by_file, unreadable, len(pids), time.monotonic() - t0)


# -- decoders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KindDecoder:
    """How to decode one kind.

    ``attach(name)`` returns a handle opened with ``create=False``; ``decode(handle,
    header)`` returns a JSON-ready dict; ``phrase(handle, detail)`` the one-phrase state
    for ``ls``; ``release(handle)`` unmaps it in this process only, right after, whatever
    happens.
    """

    attach: Callable[[str], Any]
    decode: Callable[[Any, SegmentHeader], dict[str, Any]]
    phrase: Callable[[Any, dict[str, Any]], str]
    release: Callable[[Any], None]


#: Decoders registered so far; :func:`decoder_for` fills it from
#: :data:`rsm_shm.segment.KIND_CLASSES` on first use of each kind.
DECODERS: dict[Kind, KindDecoder] = {}


def register(
    kind: Kind,
    attach: Callable[[str], Any],
    decode: Optional[Callable[[Any, SegmentHeader], dict[str, Any]]] = None,
    phrase: Optional[Callable[[Any, dict[str, Any]], str]] = None,
    release: Optional[Callable[[Any], None]] = None,
) -> None:
    """Add (or replace) the decoder of a kind.  ``decode`` defaults to
    ``handle.describe()``, ``phrase`` to ``str(handle.statistics())``, ``release`` to
    ``handle.close()``.

    A kind of rsm_shm itself needs no call here: naming its class in
    :data:`rsm_shm.segment.KIND_CLASSES` is enough (the class provides ``describe()``,
    ``statistics()`` and ``close()``).  ``register`` is for decoders that cannot follow
    that contract, and for tests.
    """
    DECODERS[Kind(kind)] = KindDecoder(
        attach,
        decode or (lambda obj, header: obj.describe()),
        phrase or (lambda obj, detail: str(obj.statistics())),
        release or (lambda obj: obj.close()),
    )


def _class_of(kind: Kind) -> Optional[Callable[..., Any]]:
    """The class KIND_CLASSES names for a kind, imported now; None if none or if its
    module does not import (a broken module elsewhere must not break ``rsm-shm ls``)."""
    spec = KIND_CLASSES.get(kind)
    if spec is None:
        return None
    module, _, attr = spec.partition(":")
    try:
        cls: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return cls
    except Exception:  # ImportError, or an API that moved: list such segments undecoded
        return None


_TRIED: set[Kind] = set()


def decoder_for(kind: Kind) -> Optional[KindDecoder]:
    """The decoder of a kind, registered from KIND_CLASSES on first use; None if none."""
    if kind not in DECODERS and kind not in _TRIED:
        _TRIED.add(kind)
        cls = _class_of(kind)
        if cls is not None:
            register(kind, lambda name: cls(name, create=False))
    return DECODERS.get(kind)


# -- records ------------------------------------------------------------------------------


def list_entries(include_foreign: bool = False) -> list[tuple[str, bool]]:
    """Regular files in /dev/shm as (file name, foreign) pairs, sorted by file name."""
    try:
        names = sorted(os.listdir(SHM_DIR))
    except OSError:
        return []
    out = []
    for entry in names:
        foreign = not entry.startswith(PREFIX)
        if foreign and not include_foreign:
            continue
        out.append((entry, foreign))
    return out


def resolve(name: str) -> Optional[tuple[str, bool]]:
    """The /dev/shm entry a user's NAME means: ``jobs`` or ``rsm_shm.jobs`` (ours), else a
    foreign file called NAME.  None if neither exists.  Raises ValueError for a name that
    cannot be a file name in /dev/shm."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise ValueError(f"{name!r} cannot be a shared-memory segment name")
    bare = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    for entry, foreign in ((PREFIX + bare, False), (name, not name.startswith(PREFIX))):
        try:
            if stat.S_ISREG(os.lstat(os.path.join(SHM_DIR, entry)).st_mode):
                return entry, foreign
        except OSError:
            continue
    return None


def _header_dict(h: SegmentHeader) -> dict[str, Any]:
    return {
        "version": h.version,
        "kind": kind_label(h.kind),
        "initialized": _INIT_NAMES.get(h.initialized, h.initialized),
        "creator_pid": h.creator_pid,
        "creator_start": h.creator_start,
        "created": h.created,
        "header_size": h.header_size,
        "body_size": h.body_size,
        "flags": h.flags,
        "anonymous": h.anonymous,
        "params": list(h.params),
        "ref_name": h.ref_name or None,
    }


def _classify_invalid(name: str, path: str, size: int) -> SegmentStatus:
    """Why a header failed validation, from its first HEADER_SIZE bytes (never trusted)."""
    if size < HEADER_SIZE:
        return SegmentStatus.TRUNCATED
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            raw = os.pread(fd, HEADER_SIZE, 0)
        finally:
            os.close(fd)
    except OSError:
        return SegmentStatus.CORRUPT
    if len(raw) < HEADER_SIZE:
        return SegmentStatus.TRUNCATED
    magic = int.from_bytes(raw[:4], "little")
    version = int.from_bytes(raw[4:6], "little")
    if magic == MAGIC and version != LAYOUT_VERSION:
        return SegmentStatus.UNKNOWN_VERSION
    # A header that validates (checksum included) against an unbounded file size failed
    # only because the file is shorter than it says.
    try:
        decode_header(name, raw, _UNBOUNDED_SIZE, check_ready=False)
    except SegmentError:
        return SegmentStatus.CORRUPT
    return SegmentStatus.TRUNCATED


def _base_record(entry: str, foreign: bool, st: Optional[os.stat_result], procs: ProcessIndex) -> dict[str, Any]:
    """Every field of the schema, filled from the directory entry alone."""
    return {
        "name": entry if foreign else entry[len(PREFIX) :],
        "path": os.path.join(SHM_DIR, entry),
        "foreign": foreign,
        "status": SegmentStatus.FOREIGN.value if foreign else SegmentStatus.OK.value,
        "problem": None,
        "kind": None,
        "size": st.st_size if st else None,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}" if st else None,
        "uid": st.st_uid if st else None,
        "inode": st.st_ino if st else None,
        "modified": st.st_mtime if st else None,
        "created": None,
        "age": None,
        "creator": None,
        "attached": [{"pid": pid, "name": procs.name(pid)} for pid in procs.attached(st)] if st else [],
        "unverified": [{"pid": pid, "name": procs.name(pid)} for pid in procs.may_map(st)] if st else [],
        "state": None,
        "header": None,
        "detail": None,
    }


def describe(
    entry: str, foreign: bool, procs: ProcessIndex, *, decode: bool = True, now: Optional[float] = None
) -> Optional[dict[str, Any]]:
    """The record of one /dev/shm entry (schema in rsm_shm/cli.py), or None if it vanished.

    ``decode=False`` skips attaching (header and processes only).  Never raises for a bad
    segment: what is wrong goes into ``status`` and ``problem``.
    """
    now = time.time() if now is None else now
    path = os.path.join(SHM_DIR, entry)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        rec = _base_record(entry, foreign, None, procs)
        rec.update(status=SegmentStatus.UNREADABLE.value, problem=f"cannot stat it: {e.strerror}")
        return rec
    if not stat.S_ISREG(st.st_mode):
        return None
    rec = _base_record(entry, foreign, st, procs)
    if foreign:
        return rec
    name = rec["name"]
    try:
        header = read_header(name)
    except FileNotFoundError:
        return None
    except PermissionError as e:
        rec.update(status=SegmentStatus.UNREADABLE.value, problem=f"cannot read it: {e.strerror}")
        return rec
    except (SegmentError, ValueError, OSError) as e:  # ValueError: a name we would never create
        status = _classify_invalid(name, path, st.st_size) if isinstance(e, SegmentError) else SegmentStatus.CORRUPT
        if isinstance(e, OSError) and e.errno == errno.ENOENT:
            return None
        rec.update(status=status.value, problem=str(e))
        return rec
    alive = header.creator_alive
    rec.update(
        kind=kind_label(header.kind),
        created=header.created,
        age=max(now - header.created, 0.0),
        creator={"pid": header.creator_pid, "start": header.creator_start, "alive": alive},
        header=_header_dict(header),
    )
    if header.initialized == lib.RSM_INIT_BUILDING:
        rec.update(
            status=SegmentStatus.BUILDING.value,
            state="being created" if alive else "abandoned during creation (creator died)",
        )
        return rec
    if header.initialized != lib.RSM_INIT_READY:
        what = _INIT_NAMES.get(header.initialized, f"in unknown state {header.initialized}")
        rec.update(status=SegmentStatus.FAILED.value, state=f"creation {what}")
        return rec
    decoder = decoder_for(header.kind)
    if decoder is None:
        rec["state"] = f"no decoder for {kind_label(header.kind)} in this rsm_shm"
        return rec
    if decode and not _decode_into(rec, name, header, decoder):
        return None
    return rec


def _decode_into(rec: dict[str, Any], name: str, header: SegmentHeader, decoder: KindDecoder) -> bool:
    """Attach, decode, close.  False if the segment vanished meanwhile (drop the record)."""
    obj = None
    try:
        obj = decoder.attach(name)
        detail = decoder.decode(obj, header)
        rec.update(detail=detail, state=decoder.phrase(obj, detail))
    except FileNotFoundError as e:
        if not os.path.exists(rec["path"]):
            return False
        # e.g. a Condition whose external lock segment was removed
        rec.update(status=SegmentStatus.UNDECODABLE.value, problem=f"a part is missing: {e}")
    except Exception as e:  # a hostile body must never crash the command
        rec.update(status=SegmentStatus.UNDECODABLE.value, problem=f"{type(e).__name__}: {e}")
    finally:
        if obj is not None:
            try:
                decoder.release(obj)
            except Exception:
                pass
    return True


def collect(
    *,
    include_foreign: bool = False,
    prefix: Optional[str] = None,
    names: Optional[list[str]] = None,
    decode: bool = True,
    procs: Optional[ProcessIndex] = None,
) -> tuple[list[dict[str, Any]], ProcessIndex]:
    """Records of the selected /dev/shm entries and the process index used for them.

    ``prefix`` keeps our segments whose name starts with it (foreign ones are dropped);
    ``names`` keeps exactly those (each resolved as :func:`resolve` does).
    """
    procs = scan_processes() if procs is None else procs
    now = time.time()
    if names is not None:
        entries = []
        for n in names:
            try:
                hit = resolve(n)
            except ValueError:
                hit = None
            if hit is not None and hit not in entries:
                entries.append(hit)
    else:
        entries = list_entries(include_foreign)
        if prefix is not None:
            bare = prefix[len(PREFIX) :] if prefix.startswith(PREFIX) else prefix
            entries = [(e, f) for e, f in entries if not f and e[len(PREFIX) :].startswith(bare)]
    records = []
    for entry, foreign in entries:
        rec = describe(entry, foreign, procs, decode=decode, now=now)
        if rec is not None:
            records.append(rec)
    return records, procs


# -- gc policy ----------------------------------------------------------------------------


def gc_verdict(
    rec: dict[str, Any], *, corrupt: bool = False, ignore_unreadable: bool = False, now: Optional[float] = None
) -> tuple[bool, str]:
    """(remove?, why) for one record: the whole gc policy, a pure function of the record.

    A segment is removed only if it is ours, nobody alive maps it (and no process whose
    maps could not be read might), and either its validated header names a creator that
    is dead (pid and start time), or -- with ``corrupt`` -- its header cannot be trusted
    and it has not been modified for CORRUPT_GRACE_S seconds.

    Processes whose memory maps cannot be read (non-dumpable ones, e.g. a container's
    init, are unreadable even to root) might map anything they may open; by default they
    keep the segment, ``ignore_unreadable`` disregards them.
    """
    now = time.time() if now is None else now
    if rec.get("foreign"):
        return False, "foreign: not an rsm_shm segment"
    attached = rec.get("attached") or []
    if attached:
        pids = ", ".join(str(a["pid"]) for a in attached)
        return False, f"mapped by live process{'es' if len(attached) > 1 else ''} {pids}"
    unverified = rec.get("unverified") or []
    if unverified and not ignore_unreadable:
        pids = ", ".join(f"{u['pid']} ({u['name']})" for u in unverified)
        return False, (
            f"cannot read the memory maps of pid {pids}, which could map it "
            f"(--ignore-unreadable disregards such processes)"
        )
    status = rec.get("status")
    creator = rec.get("creator")
    if creator is not None and status in (
        SegmentStatus.OK.value,
        SegmentStatus.BUILDING.value,
        SegmentStatus.FAILED.value,
        SegmentStatus.UNDECODABLE.value,
    ):
        if creator["alive"]:
            return False, f"creator pid {creator['pid']} is alive"
        return True, f"creator pid {creator['pid']} is dead and no live process maps it"
    if status in (SegmentStatus.CORRUPT.value, SegmentStatus.TRUNCATED.value, SegmentStatus.UNKNOWN_VERSION.value):
        if not corrupt:
            return False, f"{status} header, creator unknown (gc --corrupt removes unmapped ones)"
        idle = now - (rec.get("modified") or now)
        if idle < CORRUPT_GRACE_S:
            return False, f"{status} header, but modified {idle:.0f} s ago (may be being created)"
        return True, f"{status} header, unmodified for {idle:.0f} s and no live process maps it"
    return False, f"{status}: {rec.get('problem') or 'cannot judge it'}"
