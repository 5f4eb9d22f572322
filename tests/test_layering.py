"""The layering rule (docs/architecture.md): the Raft core imports nothing but the standard library."""
from __future__ import annotations

import subprocess
import sys


def test_raft_core_loads_no_native_or_shared_memory_code():
    code = (
        "import sys, rsm_shm.raft.core, rsm_shm.raft.driver, rsm_shm.raft.sim; "
        "bad = sorted(m for m in sys.modules if m.startswith('rsm_shm') and not m.startswith('rsm_shm.raft')"
        " and m != 'rsm_shm'); "
        "bad += [m for m in ('_cffi_backend', 'psutil', 'mmap') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_top_level_names_resolve():
    import rsm_shm

    for name in rsm_shm.__all__:
        assert getattr(rsm_shm, name) is not None, name
