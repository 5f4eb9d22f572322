#!/usr/bin/env python3
"""Run the test suite against an installed wheel on every supported CPython.

For each interpreter this builds a wheel of the working tree (``pip wheel .``), installs
it with the ``[test]`` extra into a fresh virtual environment, copies ``tests/``,
``examples/``, ``tools/``, ``docs/`` and ``csrc/`` (for the sanitizer builds; but not the
``rsm_shm/`` sources) into a scratch directory, and runs pytest there — so it also proves
that the wheel and its dependencies (grpcio, trustme, ...) install for that Python and that
the package works without the source tree.  A test that forks while it has threads fails
on every version (tests/conftest.py's at-fork check; the 3.12+ DeprecationWarning itself is
raised inside os.fork(), where no ``-W error`` can turn it into a failure).

    python tools/test_matrix.py                       # 3.10, 3.11, 3.12 and 3.13 if found
    python tools/test_matrix.py --python 3.13         # one interpreter (a version or a path)
    python tools/test_matrix.py --python 3.12 -- -x -k ring   # pytest arguments after --
    python tools/test_matrix.py --log-dir /tmp/matrix # keep each interpreter's full output

Interpreters are looked up on PATH and in pyenv's versions directory.  The interpreters run
one after the other (the suite itself starts many processes).  At the end one line per
interpreter gives pytest's counts (passed/skipped/failed/errors), the time of the test run
and of the setup (venv, wheel, install).  Exit status is 0 only if every interpreter passed.
The versions here are the ones pyproject.toml's classifiers name (tests/test_toolchain.py
checks that the two lists agree).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSIONS = ("3.10", "3.11", "3.12", "3.13")
COPIED = ("tests", "examples", "tools", "docs", "csrc", "README.md", "pyproject.toml")
# pytest's closing line, e.g. "3 failed, 700 passed, 12 skipped, 1 error in 301.22s (0:05:01)"
SUMMARY = re.compile(r"^=*\s*(?P<counts>(?:\d+ \w+(?:, )?)+) in (?P<secs>[\d.]+)s")


def find_python(version: str) -> str | None:
    exe = shutil.which(f"python{version}")
    if exe and subprocess.run([exe, "--version"], capture_output=True).returncode == 0:
        return exe
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin", f"python{version}")))
    return found[-1] if found else None


def run(cmd: list[str], log, **kw) -> None:
    print("+", " ".join(cmd), file=log, flush=True)
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, **kw)


def parse_counts(output: str) -> dict[str, int]:
    """pytest's closing counts as {"passed": n, "skipped": n, ...} ({} if there is none)."""
    for line in reversed(output.splitlines()):
        m = SUMMARY.match(line.strip())
        if m:
            counts = {}
            for part in m.group("counts").split(", "):
                n, what = part.split(" ", 1)
                counts[{"error": "errors"}.get(what, what)] = int(n)
            return counts
    return {}


def test_one(python: str, scratch: str, pytest_args: list[str], log) -> dict:
    """Set up a venv for `python` in `scratch` and run pytest; the outcome as a dict."""
    setup_start = time.monotonic()
    venv = os.path.join(scratch, "venv")
    run([python, "-m", "venv", venv], log)
    vpy = os.path.join(venv, "bin", "python")
    run([vpy, "-m", "pip", "install", "-q", "--upgrade", "pip"], log)
    wheels = os.path.join(scratch, "wheels")
    run([vpy, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT], log)
    (wheel,) = glob.glob(os.path.join(wheels, "rsm_shm-*.whl"))
    run([vpy, "-m", "pip", "install", "-q", f"{wheel}[test]"], log)
    versions = subprocess.run(
        [vpy, "-c", "import sys, grpc; print(sys.version.split()[0], grpc.__version__)"], capture_output=True, text=True
    )
    work = os.path.join(scratch, "work")
    os.makedirs(work)
    for item in COPIED:
        src = os.path.join(ROOT, item)
        dst = os.path.join(work, item)
        if os.path.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "_build", "*.so", "*.o"))
        elif os.path.exists(src):
            shutil.copy2(src, dst)
    setup = time.monotonic() - setup_start
    start = time.monotonic()
    cmd = [vpy, "-m", "pytest", "-q", *pytest_args]
    print("+", " ".join(cmd), file=log, flush=True)
    # The output goes to the terminal (or log) as it comes, and is kept for the counts.
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        log.write(line)
        log.flush()
    proc.wait()
    return {
        "ok": proc.returncode == 0,
        "exit": proc.returncode,
        "counts": parse_counts("".join(lines)),
        "secs": time.monotonic() - start,
        "setup": setup,
        "version": versions.stdout.strip() or "?",
    }


def describe(result: dict) -> str:
    if "error" in result:
        return result["error"]
    counts = ", ".join(f"{n} {what}" for what, n in result["counts"].items()) or "no pytest summary"
    return (
        f"{counts}; pytest exit {result['exit']} in {result['secs']:.0f} s (setup {result['setup']:.0f} s); "
        f"Python, grpcio: {result['version']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--python",
        action="append",
        help="an interpreter to test: a version such as 3.12, or a path (repeatable); default: 3.10-3.13",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch directories (their paths are printed)")
    ap.add_argument(
        "--log-dir", help="write each interpreter's full output to DIR/<version>.log instead of the terminal"
    )
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()
    targets = []
    for wanted in args.python or VERSIONS:
        exe = find_python(wanted) if re.fullmatch(r"\d+\.\d+", wanted) else wanted
        if exe:
            targets.append(exe)
        elif args.python:
            print(f"no interpreter found for --python {wanted}", file=sys.stderr)
            return 2
    if not targets:
        print("no interpreter found", file=sys.stderr)
        return 2
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    results = []
    for python in targets:
        scratch = tempfile.mkdtemp(prefix="rsm_matrix.")
        name = os.path.basename(python)
        log = open(os.path.join(args.log_dir, f"{name}.log"), "w") if args.log_dir else sys.stdout
        try:
            result = test_one(python, scratch, args.pytest_args, log)
        except subprocess.CalledProcessError as e:
            result = {"ok": False, "error": f"setup failed: {' '.join(e.cmd)}"}
        finally:
            if log is not sys.stdout:
                log.close()
            if args.keep:
                print(f"kept {scratch}")
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        results.append((python, result))
        print(f"{'PASS' if result['ok'] else 'FAIL'}  {python}: {describe(result)}", flush=True)
    print("\nsummary:")
    for python, result in results:
        print(f"{'PASS' if result['ok'] else 'FAIL'}  {python}: {describe(result)}")
    return 0 if all(result["ok"] for _, result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
