"""The contributor toolchain configured in pyproject.toml: ruff's lint and format, and mypy, stay clean.

Both run on the source tree; when the suite runs against an installed wheel without it
(tools/test_matrix.py), there is nothing to lint and the tests say so.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = os.path.join(ROOT, "rsm_shm")

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not os.path.isfile(os.path.join(SOURCES, "__init__.py")),
        reason="no rsm_shm source tree next to the tests (running against an installed wheel)",
    ),
]


def _run_tool(module: str, *args: str) -> subprocess.CompletedProcess:
    pytest.importorskip(module, reason=f"{module} is not installed (it is in the [test] extra)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=280)


def test_ruff_check_is_clean():
    r = _run_tool("ruff", "check", "--no-cache", "rsm_shm", "tests", "tools", "examples")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_tree_is_formatted():
    # `ruff format rsm_shm tests tools examples docs/conf.py` fixes a failure here.
    r = _run_tool("ruff", "format", "--check", "--no-cache", "rsm_shm", "tests", "tools", "examples", "docs/conf.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_is_clean_at_the_configured_level():
    # The level and the modules still exempted are in pyproject.toml ([tool.mypy]).
    r = _run_tool("mypy", "--cache-dir", os.path.join(ROOT, ".mypy_cache"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_c_extension_stub_matches_the_built_module():
    # rsm_shm/_fast.pyi (what mypy knows of csrc/fast_*.c) against the module as built:
    # a method added to or removed from the C tables fails here until the stub follows.
    r = _run_tool("mypy.stubtest", "--mypy-config-file", "pyproject.toml", "rsm_shm._fast")
    assert r.returncode == 0, r.stdout + r.stderr
