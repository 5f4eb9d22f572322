"""The build: the C core is linked once, into ``rsm_shm._native``; ``rsm_shm._fast`` (the
CPython-API entry points) reaches it through a table fetched at import (csrc/core_api.h),
so the core's globals -- the cached pid and thread ids, the fork handler -- exist once."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import rsm_shm._fast
import rsm_shm._native


def _dynamic_symbols(path: str, which: str) -> set[str]:
    out = subprocess.run(["nm", "-D", which, path], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils) to read the symbol tables")
def test_the_core_is_linked_only_into_native():
    fast, native = rsm_shm._fast.__file__, rsm_shm._native.__file__
    fast_symbols = _dynamic_symbols(fast, "--defined-only") | _dynamic_symbols(fast, "--undefined-only")
    assert sorted(s for s in fast_symbols if s.startswith("rsm_")) == []
    native_defined = _dynamic_symbols(native, "--defined-only")
    assert {"rsm_getpid", "rsm_gettid", "rsm_lock_acquire", "rsm_core_api_address"} <= native_defined


# A fresh single-threaded interpreter forks: the child's first lock calls, through _fast
# and through _native, must both see the child's ids (one cache, reset by one handler).
_FORK_CHILD = """
import os, sys, threading
import rsm_shm
from rsm_shm._native import lib

lock = rsm_shm.Lock({name!r}, create=False)
with lock:  # the parent's ids are cached now
    pass
assert lib.rsm_getpid() == os.getpid()
pid = os.fork()
if pid == 0:
    code = 0
    try:
        lock.acquire()  # _fast's path
        st = lock.statistics()
        lock.release()
        if (st.owner_pid, st.owner_tid) != (os.getpid(), threading.get_native_id()):
            print("fast path saw", st.owner_pid, st.owner_tid, "in child", os.getpid(), flush=True)
            code = 1
        if (lib.rsm_getpid(), lib.rsm_gettid()) != (os.getpid(), threading.get_native_id()):
            print("core saw", lib.rsm_getpid(), lib.rsm_gettid(), "in child", os.getpid(), flush=True)
            code = 1
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_fork_child_ids_are_fresh_on_both_paths(shm_name):
    lock = rsm_shm.Lock(shm_name("lock"), create=True)
    try:
        script = textwrap.dedent(_FORK_CHILD.format(name=lock.name))
        run = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=os.path.dirname(os.path.dirname(rsm_shm.__file__)),
        )
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        lock.close()
        lock.unlink()


def test_entry_points_call_python_only_through_what_bind_hands_them():
    # The protocol between the C entry types and their Python classes is their _bind
    # arguments (csrc/fast_sync.c, csrc/fast_ring.c): no method looked up by name.
    csrc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
    # fast_core.c is exempt: at import it asks rsm_shm._native for the core's table by name.
    names = [os.path.basename(p) for p in glob.glob(os.path.join(csrc, "fast*.c")) if not p.endswith("fast_core.c")]
    assert "fast_sync.c" in names and "fast_ring.c" in names, names
    for name in names:
        with open(os.path.join(csrc, name)) as f:
            text = f.read()
        assert "PyObject_CallMethod" not in text and "PyObject_VectorcallMethod" not in text, name
