"""Named shared-memory segments: create, attach, validate, unlink.

Every rsm_shm object lives in one POSIX shared-memory segment named ``rsm_shm.<name>``
(``/dev/shm/rsm_shm.<name>`` on Linux) that starts with the header described field by
field in ``csrc/segment.h``.  This module is the only code that creates, maps or unlinks
segments.

Design notes:

* Segments are opened with ``shm_open`` and mapped with ``mmap`` directly instead of
  through ``multiprocessing.shared_memory``: the latter registers every *attached*
  segment with the resource tracker on Python < 3.13, which unlinks it when any attaching
  process exits, and it offers no permission mode.  Nothing here touches the tracker.
* Creation is race-safe.  ``create=None`` tries ``O_CREAT | O_EXCL`` and, on losing the
  race, opens the winner's segment and waits on the header's ``initialized`` futex word.
* Attaching validates everything before the body is used: magic, layout version, kind,
  header and body sizes against the file size, and a CRC32 of the immutable header bytes.
"""

from __future__ import annotations

import atexit
import enum
import itertools
import mmap
import os
import re
import secrets
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import _posixshmem

from . import _proc
from ._errors import SegmentError
from ._fast import Pins
from ._native import ffi, lib

__all__ = [
    "PREFIX",
    "Kind",
    "KIND_CLASSES",
    "Segment",
    "SegmentHeader",
    "SegmentError",
    "decode_header",
    "read_header",
    "shm_path",
    "validate_name",
]

PREFIX = "rsm_shm."
SHM_DIR = "/dev/shm"
HEADER_SIZE = lib.RSM_HEADER_SIZE
MAGIC = lib.RSM_SEGMENT_MAGIC
LAYOUT_VERSION = lib.RSM_LAYOUT_VERSION
NPARAMS = lib.RSM_NPARAMS
REF_NAME_MAX = lib.RSM_REF_NAME_MAX
MAX_NAME_LEN = 200  # NAME_MAX is 255; leave room for the prefix
MAX_BODY_SIZE = (1 << 32) - 1  # the header's body_size field is 32 bits (csrc/segment.h)
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")

# Header layout (csrc/segment.h); tests/test_layout.py checks it against the C struct.
_HEADER = struct.Struct("<IHHIiQqIIII8Q128sI12x")
_CRC_SPANS = ((0, 8), (12, 240))
assert _HEADER.size == HEADER_SIZE  # internal invariant of this module, not a user check

#: How long a loser of the creation race waits for the winner to publish the header.
CREATE_WAIT_TIMEOUT = 10.0
#: How long a zero magic may stay zero before the segment is judged foreign.
MAGIC_WAIT_TIMEOUT = 0.5


class Kind(enum.IntEnum):
    """Segment kinds, the header's ``kind`` field (RSM_KIND_* in csrc/segment.h)."""

    LOCK = lib.RSM_KIND_LOCK
    RLOCK = lib.RSM_KIND_RLOCK
    SEMAPHORE = lib.RSM_KIND_SEMAPHORE
    BOUNDED_SEMAPHORE = lib.RSM_KIND_BOUNDED_SEMAPHORE
    EVENT = lib.RSM_KIND_EVENT
    AUTO_RESET_EVENT = lib.RSM_KIND_AUTO_RESET_EVENT
    CONDITION = lib.RSM_KIND_CONDITION
    BARRIER = lib.RSM_KIND_BARRIER
    RWLOCK = lib.RSM_KIND_RWLOCK
    GATE = lib.RSM_KIND_GATE
    ONCE = lib.RSM_KIND_ONCE
    COUNTDOWN = lib.RSM_KIND_COUNTDOWN
    RING = lib.RSM_KIND_RING
    QUEUE = lib.RSM_KIND_QUEUE
    AUTOMATON = lib.RSM_KIND_AUTOMATON
    RAFT_STATUS = lib.RSM_KIND_RAFT_STATUS
    POOL = lib.RSM_KIND_POOL


#: The class that opens each kind, as ``"module:Class"``, for tools that meet a segment by
#: name (``rsm-shm ls/inspect``).  The contract: ``Class(name, create=False)`` attaches
#: without initializing anything, ``describe()`` returns a JSON-ready dict,
#: ``statistics()`` a record whose ``str()`` is a one-phrase state, ``close()`` unmaps.
#: A new kind plugs into the command line by adding its line here; its module is imported
#: only when such a segment is inspected.  (``rsm_shm.inspect.register`` overrides.)
KIND_CLASSES: dict[Kind, str] = {
    Kind.LOCK: "rsm_shm.sync:Lock",
    Kind.RLOCK: "rsm_shm.sync:RLock",
    Kind.SEMAPHORE: "rsm_shm.sync:Semaphore",
    Kind.BOUNDED_SEMAPHORE: "rsm_shm.sync:BoundedSemaphore",
    Kind.EVENT: "rsm_shm.sync:Event",
    Kind.AUTO_RESET_EVENT: "rsm_shm.sync:AutoResetEvent",
    Kind.CONDITION: "rsm_shm.sync:Condition",
    Kind.BARRIER: "rsm_shm.sync:Barrier",
    Kind.RWLOCK: "rsm_shm.sync:RWLock",
    Kind.GATE: "rsm_shm.sync:Gate",
    Kind.ONCE: "rsm_shm.sync:Once",
    Kind.COUNTDOWN: "rsm_shm.sync:Countdown",
    Kind.RING: "rsm_shm.ring:Ring",
    Kind.QUEUE: "rsm_shm.ring:Queue",
    Kind.AUTOMATON: "rsm_shm.fsm:Automaton",
    Kind.POOL: "rsm_shm.pool:PoolTable",
    Kind.RAFT_STATUS: "rsm_shm.cluster.records:ClusterRecord",
}


@dataclass(frozen=True)
class SegmentHeader:
    """A decoded, validated segment header."""

    name: str
    kind: Kind
    version: int
    initialized: int
    creator_pid: int
    creator_start: int
    created: float  # seconds since the epoch
    header_size: int
    body_size: int
    flags: int
    params: tuple[int, ...]
    ref_name: str

    @property
    def anonymous(self) -> bool:
        return bool(self.flags & lib.RSM_SEG_ANONYMOUS)

    @property
    def creator_alive(self) -> bool:
        return _proc.process_alive(self.creator_pid, self.creator_start)


def validate_name(name: str) -> str:
    """Check a user-visible object name; returns it.  Raises ValueError if unusable."""
    if not isinstance(name, str):
        raise TypeError(f"segment name must be a str, not {type(name).__name__}")
    if name.startswith(PREFIX):
        name = name[len(PREFIX) :]  # accept the full /dev/shm name too
    if not name:
        raise ValueError("segment name must not be empty")
    if len(name) > MAX_NAME_LEN:
        raise ValueError(f"segment name is {len(name)} characters long; the limit is {MAX_NAME_LEN}")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid segment name {name!r}: use letters, digits, '_', '.', '-' (not starting with '.' or '-')"
        )
    return name


def shm_path(name: str) -> str:
    """The file backing the named segment, e.g. /dev/shm/rsm_shm.jobs."""
    return os.path.join(SHM_DIR, PREFIX + validate_name(name))


def _crc(raw: bytes) -> int:
    crc = 0
    for lo, hi in _CRC_SPANS:
        crc = zlib.crc32(raw[lo:hi], crc)
    return crc


def decode_header(name: str, raw: bytes, file_size: int, *, check_ready: bool = True) -> SegmentHeader:
    """Decode and validate a header read as ``raw`` from a file of ``file_size`` bytes;
    raises SegmentError describing what is wrong.  ``check_ready=False`` accepts a
    header whose creator has not published it (yet)."""
    where = f"segment {name!r}"
    if len(raw) < HEADER_SIZE or file_size < HEADER_SIZE:
        raise SegmentError(f"{where} is truncated: {file_size} bytes, a header needs {HEADER_SIZE}")
    (
        magic,
        version,
        kind,
        initialized,
        creator_pid,
        creator_start,
        created_ns,
        header_size,
        body_size,
        flags,
        nparams,
        *rest,
    ) = _HEADER.unpack_from(raw, 0)
    params = tuple(rest[:NPARAMS])
    ref_raw, crc = rest[NPARAMS], rest[NPARAMS + 1]
    if magic != MAGIC:
        raise SegmentError(f"{where} is not an rsm_shm segment (magic {magic:#010x})")
    if version != LAYOUT_VERSION:
        raise SegmentError(f"{where} has layout version {version}; this rsm_shm reads version {LAYOUT_VERSION}")
    if check_ready and initialized != lib.RSM_INIT_READY:
        state = {lib.RSM_INIT_BUILDING: "still being built", lib.RSM_INIT_FAILED: "marked failed by its creator"}
        raise SegmentError(f"{where} is {state.get(initialized, f'in unknown state {initialized}')}")
    if crc != _crc(raw[:HEADER_SIZE]):
        raise SegmentError(f"{where} has a corrupt header (checksum mismatch)")
    if header_size != HEADER_SIZE:
        raise SegmentError(f"{where} has a corrupt header (header size {header_size})")
    if header_size + body_size > file_size:
        raise SegmentError(f"{where} is truncated: header says {header_size + body_size} bytes, file has {file_size}")
    try:
        kind_enum = Kind(kind)
    except ValueError:
        raise SegmentError(f"{where} has an unknown kind {kind}") from None
    if nparams > NPARAMS:
        raise SegmentError(f"{where} has a corrupt header ({nparams} parameters)")
    ref_name = ref_raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return SegmentHeader(
        name=name,
        kind=kind_enum,
        version=version,
        initialized=initialized,
        creator_pid=creator_pid,
        creator_start=creator_start,
        created=created_ns / 1e9,
        header_size=header_size,
        body_size=body_size,
        flags=flags,
        params=params[:nparams],
        ref_name=ref_name,
    )


def read_header(name: str) -> SegmentHeader:
    """Read and validate a segment's header without mapping it (for the CLI).

    Raises FileNotFoundError if it does not exist and SegmentError if it is not a valid
    rsm_shm segment.  Reads at most HEADER_SIZE bytes; never trusts the contents.
    """
    name = validate_name(name)
    fd = os.open(os.path.join(SHM_DIR, PREFIX + name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        raw = os.pread(fd, HEADER_SIZE, 0)
    finally:
        os.close(fd)
    return decode_header(name, raw, st.st_size, check_ready=False)


_anon_counter = itertools.count()
_anon_lock = threading.Lock()
_anon_owned: dict[str, int] = {}  # anonymous segments this process created -> creator pid


def _unlink_anonymous_at_exit() -> None:
    pid = os.getpid()
    with _anon_lock:
        names = [n for n, p in _anon_owned.items() if p == pid]
        _anon_owned.clear()
    for n in names:
        try:
            _posixshmem.shm_unlink("/" + PREFIX + n)
        except OSError:
            pass


atexit.register(_unlink_anonymous_at_exit)
_exit_hooked_pid = 0


def _hook_multiprocessing_exit() -> None:
    """A multiprocessing child leaves through os._exit(), skipping atexit, but runs the
    finalizers of multiprocessing.util first: register ours there too (once per process)."""
    global _exit_hooked_pid
    if _exit_hooked_pid == os.getpid():
        return
    _exit_hooked_pid = os.getpid()
    from multiprocessing import util

    util.Finalize(None, _unlink_anonymous_at_exit, exitpriority=-10)


def _anonymous_name() -> str:
    return f"anon.{os.getpid()}.{next(_anon_counter)}.{secrets.token_hex(4)}"


class Segment:
    """One mapped rsm_shm segment.

    ``create=None`` opens the segment if it exists and creates it otherwise (race-safe);
    ``create=True`` must create it (``FileExistsError`` otherwise); ``create=False`` must
    open an existing one (``FileNotFoundError`` otherwise).  ``name=None`` makes an
    anonymous segment, unlinked when the creating process exits (or by ``rsm-shm gc`` if it
    is killed).  Named segments live until ``unlink()``.

    ``init(segment)`` fills a freshly created body before attachers can see it;
    ``check(header)`` validates the parameters of an existing one (raise SegmentError).
    """

    def __init__(
        self,
        name: Optional[str],
        kind: Kind,
        body_size: int,
        *,
        create: Optional[bool] = None,
        mode: int = 0o600,
        params: Sequence[int] = (),
        ref_name: str = "",
        init: Optional[Callable[["Segment"], None]] = None,
        check: Optional[Callable[[SegmentHeader], None]] = None,
        body_size_of: Optional[Callable[[SegmentHeader], int]] = None,
    ) -> None:
        self._mmap: Optional[mmap.mmap] = None
        self._buf = None
        #: Every call that hands pointers into the mapping to C holds a pin (``with
        #: seg.pins:``); close() unmaps when the last pin goes.  See :meth:`begin_use`.
        self.pins = Pins(self._unmap, f"rsm_shm segment {name!r}")
        if create not in (None, True, False):
            raise TypeError(f"create must be None, True or False, not {create!r}")
        if not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be a permission mode between 0 and 0o777, not {mode!r}")
        if not isinstance(body_size, int) or not 0 <= body_size <= MAX_BODY_SIZE:
            raise ValueError(f"segment body size {body_size!r} is out of range (0 to {MAX_BODY_SIZE} bytes)")
        if len(params) > NPARAMS:
            raise ValueError(f"at most {NPARAMS} parameters")
        for p in params:
            if not isinstance(p, int) or not 0 <= p < 1 << 64:
                raise ValueError(f"segment parameter {p!r} is out of range")
        ref = ref_name.encode()
        if len(ref) >= REF_NAME_MAX:
            raise ValueError(f"referenced name {ref_name!r} is too long")
        anonymous = name is None
        if name is None:
            if create is False:
                raise ValueError("an anonymous object (name=None) can only be created")
            name, create = _anonymous_name(), True
        self.name: str = validate_name(name)
        self.pins.label = f"rsm_shm segment {self.name!r}"
        self._shm_name = "/" + PREFIX + self.name
        self.kind = Kind(kind)
        self.created = False
        if create is not False:
            try:
                fd = _posixshmem.shm_open(self._shm_name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode)
            except FileExistsError:
                if create:
                    raise FileExistsError(f"rsm_shm segment {self.name!r} already exists") from None
            else:
                self._build(fd, body_size, mode, params, ref, anonymous, init)
                return
        try:
            fd = _posixshmem.shm_open(self._shm_name, os.O_RDWR, 0)
        except FileNotFoundError:
            raise FileNotFoundError(f"no rsm_shm segment named {self.name!r}") from None
        self._attach(fd, check, body_size_of)

    # -- creation and attachment -------------------------------------------------------

    def _build(
        self,
        fd: int,
        body_size: int,
        mode: int,
        params: Sequence[int],
        ref: bytes,
        anonymous: bool,
        init: Optional[Callable[[Segment], None]],
    ) -> None:
        try:
            os.fchmod(fd, mode)  # shm_open's mode is filtered by the umask
            os.ftruncate(fd, HEADER_SIZE + body_size)
            self._map(fd, HEADER_SIZE + body_size)
        except BaseException:
            os.close(fd)
            _posixshmem.shm_unlink(self._shm_name)
            raise
        os.close(fd)
        try:
            flags = lib.RSM_SEG_ANONYMOUS if anonymous else 0
            padded = list(params) + [0] * (NPARAMS - len(params))
            fields = [
                MAGIC,
                LAYOUT_VERSION,
                int(self.kind),
                lib.RSM_INIT_BUILDING,
                os.getpid(),
                _proc.start_time(os.getpid()),
                time.time_ns(),
                HEADER_SIZE,
                body_size,
                flags,
                len(params),
                *padded,
                ref,
                0,
            ]
            raw = bytearray(_HEADER.pack(*fields))
            struct.pack_into("<I", raw, 240, _crc(bytes(raw)))
            self._mmap[:HEADER_SIZE] = bytes(raw)  # type: ignore[index]
            self.header = decode_header(self.name, bytes(raw), HEADER_SIZE + body_size, check_ready=False)
            if init is not None:
                init(self)
        except BaseException:
            lib.rsm_segment_publish(self._header_ptr(), lib.RSM_INIT_FAILED)
            self.close()
            _posixshmem.shm_unlink(self._shm_name)
            raise
        if anonymous:
            with _anon_lock:
                _anon_owned[self.name] = os.getpid()
            _hook_multiprocessing_exit()
        self.created = True
        lib.rsm_segment_publish(self._header_ptr(), lib.RSM_INIT_READY)
        self.header = decode_header(self.name, self._header_bytes(), HEADER_SIZE + body_size)

    def _attach(
        self,
        fd: int,
        check: Optional[Callable[[SegmentHeader], None]],
        body_size_of: Optional[Callable[[SegmentHeader], int]],
    ) -> None:
        try:
            deadline = time.monotonic() + CREATE_WAIT_TIMEOUT
            st = os.fstat(fd)
            size = st.st_size
            while size < HEADER_SIZE:
                # The winner of the creation race sizes the file microseconds after creating
                # it: wait for that only while the empty file is that young.  An older empty
                # file was left by a creator that died first (or is not ours): say so now.
                if size == 0 and time.time() - st.st_mtime < MAGIC_WAIT_TIMEOUT and time.monotonic() < deadline:
                    time.sleep(0.001)
                    st = os.fstat(fd)
                    size = st.st_size
                    continue
                if size == 0:
                    raise SegmentError(
                        f"segment {self.name!r} is empty (0 bytes) and nobody is creating it: its creator "
                        f"died before sizing it, or it is not ours; unlink it (rsm_shm's unlink() or "
                        f"rm {shm_path(self.name)})"
                    )
                raise SegmentError(f"segment {self.name!r} is truncated: {size} bytes")
            sized_at = st.st_mtime
            self._map(fd, size)
        finally:
            os.close(fd)
        try:
            self._await_ready(deadline, sized_at)
            self.header = decode_header(self.name, self._header_bytes(), size)
            if self.header.kind != self.kind:
                raise SegmentError(f"segment {self.name!r} holds a {self.header.kind.name}, not a {self.kind.name}")
            if body_size_of is not None and self.header.body_size < body_size_of(self.header):
                raise SegmentError(f"segment {self.name!r} is smaller than its parameters require")
            if check is not None:
                check(self.header)
        except BaseException:
            self.close()
            raise

    def _await_ready(self, deadline: float, sized_at: float) -> None:
        """Wait until the creator published the header; fail fast on foreign or orphaned ones.

        ``sized_at``: when the file got its size (its mtime).  The creator writes the magic
        microseconds after that, so a zero magic is waited for only while that is recent."""
        hdr = self._header_ptr()
        magic_deadline = time.monotonic() + max(MAGIC_WAIT_TIMEOUT - (time.time() - sized_at), 0)
        while True:
            magic, _, _, state, pid, start = struct.unpack_from("<IHHIiQ", self._mmap, 0)  # type: ignore[arg-type]
            if magic != MAGIC:
                # A zero magic that stays zero, or any other value, is not ours.
                if magic != 0 or time.monotonic() >= magic_deadline:
                    raise SegmentError(f"segment {self.name!r} is not an rsm_shm segment (magic {magic:#010x})")
                time.sleep(0.001)
                continue
            if state != lib.RSM_INIT_BUILDING:
                return  # READY or FAILED: decode_header reports the latter
            # The start time tells a reused pid from the creator (0: unknown, pid only).
            if not _proc.process_alive(pid, start):
                raise SegmentError(
                    f"segment {self.name!r} was never finished by its creator (pid {pid}, dead); "
                    f"remove it with `rsm-shm gc` or unlink it"
                )
            if time.monotonic() >= deadline:
                raise SegmentError(
                    f"segment {self.name!r} is still being built by pid {pid} after {CREATE_WAIT_TIMEOUT} s"
                )
            # One slice at a time, so a creator that dies while we wait is seen within ~50 ms.
            slice_end = min(deadline, time.monotonic() + lib.RSM_SLICE_NS / 1e9)
            lib.rsm_segment_wait_ready(hdr, int(slice_end * 1e9))

    def _map(self, fd: int, size: int) -> None:
        self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._buf = ffi.from_buffer(self._mmap)
        self.size = size

    def _header_bytes(self) -> bytes:
        assert self._mmap is not None  # internal: only called while mapped
        return bytes(self._mmap[:HEADER_SIZE])

    def _header_ptr(self) -> Any:  # a cffi "rsm_segment_header *"
        return ffi.cast("rsm_segment_header *", self._buf)

    # -- access ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return bool(self.pins.closed)

    def _check_open(self) -> None:
        if self.pins.closed:
            raise ValueError(f"{self.pins.label} is closed")

    def body(self, ctype: str, offset: int = 0) -> Any:
        """A cffi pointer of type ``ctype`` (e.g. ``"rsm_lock *"``) at ``offset`` in the body.

        Use it only while holding a pin (or in the constructor): it dangles once unmapped."""
        self._check_open()
        return ffi.cast(ctype, self._buf + HEADER_SIZE + offset)

    # -- lifetime ----------------------------------------------------------------------

    def begin_use(self) -> None:
        """Pin the mapping: raw pointers into it stay valid until :meth:`end_use`.

        Raises ValueError if the segment is closed.  Every call that hands pointers into
        the segment to C holds a pin for its whole duration (a cffi call releases the GIL,
        so another thread may call close() meanwhile); ``with seg.pins:`` is the same.
        The C entry points (csrc/fast_pins.c) pin through the same object."""
        self.pins.__enter__()

    def end_use(self) -> None:
        self.pins.__exit__(None, None, None)

    def close(self) -> None:
        """Unmap the segment in this process (idempotent).  The segment itself remains.

        New calls raise ValueError at once; threads of this process blocked in the object
        notice within a slice (~50 ms) and raise ValueError; the mapping goes away when
        the last call using it has left, never under a running C call.
        """
        self.pins.close()

    def _unmap(self) -> None:
        if self._buf is not None:
            ffi.release(self._buf)
            self._buf = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                # A buffer export of the mmap is still alive; the mapping goes when it is released.
                pass
            self._mmap = None

    def unlink(self) -> None:
        """Remove the segment's name (idempotent); mappings stay valid until closed."""
        try:
            _posixshmem.shm_unlink(self._shm_name)
        except FileNotFoundError:
            pass
        with _anon_lock:
            _anon_owned.pop(self.name, None)

    def __repr__(self) -> str:
        state = "closed" if self.pins.closed else f"{self.size} bytes"
        return f"<Segment {self.name!r} {self.kind.name} {state}>"
