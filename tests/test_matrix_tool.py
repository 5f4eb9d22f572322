"""tools/test_matrix.py (the suite on every supported CPython) and what pyproject.toml says
about those versions stay in step; the suite's own fork-with-threads check works on every
Python, not only where Python warns (3.12+)."""

from __future__ import annotations

import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _matrix_module():
    spec = importlib.util.spec_from_file_location(
        "test_matrix_tool_under_test", os.path.join(ROOT, "tools", "test_matrix.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classifiers_name_exactly_the_versions_the_matrix_tests():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    classified = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', text)
    matrix = _matrix_module()
    assert tuple(classified) == matrix.VERSIONS
    (floor,) = re.findall(r'^requires-python = ">=(3\.\d+)"$', text, re.M)
    assert floor == matrix.VERSIONS[0]


def test_the_matrix_reads_pytest_closing_counts():
    parse = _matrix_module().parse_counts
    assert parse("....\n== 2 failed, 1100 passed, 14 skipped, 1 error in 301.22s (0:05:01) ==\n") == {
        "failed": 2,
        "passed": 1100,
        "skipped": 14,
        "errors": 1,
    }
    assert parse("1 passed, 3 warnings in 0.50s\n") == {"passed": 1, "warnings": 3}
    assert parse("ERROR: file or directory not found: nope\n") == {}


_FORKS_WITH_A_THREAD = """
import multiprocessing
import threading


def _nothing():
    pass


def test_forks_while_a_thread_runs():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        p = multiprocessing.get_context("fork").Process(target=_nothing)
        p.start()
        p.join(30)
    finally:
        stop.set()
        t.join()


def test_forks_alone():
    p = multiprocessing.get_context("fork").Process(target=_nothing)
    p.start()
    p.join(30)
"""


def test_the_suite_fails_a_fork_with_threads_on_every_python(tmp_path):
    # tests/conftest.py checks what Python 3.12+ warns about, so CI on an older Python
    # catches a test that forks the pytest process while threads run (gRPC's, a pool's).
    import shutil
    import subprocess
    import sys

    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_forks.py").write_text(_FORKS_WITH_A_THREAD)
    # The 3.12+ warning itself is let through here: the conftest's own check is tested.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
            "-o",
            "filterwarnings=",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )  # the conftest imports tests._workers
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "2 passed, 1 error" in out, out
    assert "test_forks_while_a_thread_runs" in out and "forked the pytest process while it had threads" in out, out
