#!/usr/bin/env python3
"""Run the test suite against an installed wheel on every supported CPython.

For each interpreter this builds a wheel of the working tree (``pip wheel .``), installs
it with the ``[test]`` extra into a fresh virtual environment, copies ``tests/``,
``examples/``, ``tools/``, ``docs/`` and ``csrc/`` (for the sanitizer builds; but not the ``rsm_shm/`` sources) into a scratch
directory, and runs pytest there — so it also proves that the wheel installs and works
without the source tree.  The fork-with-threads DeprecationWarning of Python 3.12+ is
turned into an error.

    python tools/test_matrix.py                      # 3.10, 3.11, 3.12 and 3.13 if found
    python tools/test_matrix.py --python python3.13  # one interpreter
    python tools/test_matrix.py -- -x -k ring        # extra pytest arguments after --

Interpreters are looked up on PATH and in pyenv's versions directory.  Exit status is 0
only if every interpreter passed; a summary line per interpreter is printed at the end.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSIONS = ("3.10", "3.11", "3.12", "3.13")
COPIED = ("tests", "examples", "tools", "docs", "csrc", "README.md", "pyproject.toml")
FORK_WARNING = "error:This process:DeprecationWarning"


def find_python(version: str) -> str | None:
    exe = shutil.which(f"python{version}")
    if exe and subprocess.run([exe, "--version"], capture_output=True).returncode == 0:
        return exe
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin", f"python{version}")))
    return found[-1] if found else None


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def test_one(python: str, scratch: str, pytest_args: list[str]) -> tuple[bool, str]:
    venv = os.path.join(scratch, "venv")
    run([python, "-m", "venv", venv])
    vpy = os.path.join(venv, "bin", "python")
    run([vpy, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    wheels = os.path.join(scratch, "wheels")
    run([vpy, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT])
    (wheel,) = glob.glob(os.path.join(wheels, "rsm_shm-*.whl"))
    run([vpy, "-m", "pip", "install", "-q", f"{wheel}[test]"])
    work = os.path.join(scratch, "work")
    os.makedirs(work)
    for item in COPIED:
        src = os.path.join(ROOT, item)
        dst = os.path.join(work, item)
        if os.path.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "_build"))
        elif os.path.exists(src):
            shutil.copy2(src, dst)
    start = time.monotonic()
    proc = subprocess.run([vpy, "-m", "pytest", "-q", "-W", FORK_WARNING, *pytest_args], cwd=work)
    elapsed = time.monotonic() - start
    return proc.returncode == 0, f"pytest exit {proc.returncode} in {elapsed:.0f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", action="append", help="an interpreter to test (repeatable); default: 3.10-3.13")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directories")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()
    targets = args.python or [p for p in (find_python(v) for v in VERSIONS) if p] or []
    if not targets:
        print("no interpreter found", file=sys.stderr)
        return 2
    results = []
    for python in targets:
        scratch = tempfile.mkdtemp(prefix="rsm_matrix.")
        try:
            ok, what = test_one(python, scratch, args.pytest_args)
        except subprocess.CalledProcessError as e:
            ok, what = False, f"setup failed: {' '.join(e.cmd)}"
        finally:
            if not args.keep:
                shutil.rmtree(scratch, ignore_errors=True)
        results.append((python, ok, what))
    print()
    for python, ok, what in results:
        print(f"{'PASS' if ok else 'FAIL'}  {python}: {what}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
