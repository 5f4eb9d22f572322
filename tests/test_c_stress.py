"""The C layer alone, under AddressSanitizer + UBSan and ThreadSanitizer (csrc/stress/stress.c)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("sanitizer", ["address,undefined", "thread"])
def test_c_stress_under_sanitizer(tmp_path, sanitizer):
    sources = [p for p in glob.glob(os.path.join(CSRC, "*.c")) if not os.path.basename(p).startswith("fast")]
    exe = tmp_path / "stress"
    build = subprocess.run(
        [
            "gcc",
            "-std=c11",
            "-O1",
            "-g",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-fsanitize={sanitizer}",
            "-D_GNU_SOURCE",
            "-DITERS=40000",
            f"-I{CSRC}",
            os.path.join(CSRC, "stress", "stress.c"),
            *sources,
            "-lpthread",
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and "sanitize" in build.stderr and "cannot find" in build.stderr:
        pytest.skip(f"{sanitizer} sanitizer runtime not installed")
    assert build.returncode == 0, build.stderr
    run = subprocess.run(
        [str(exe)],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "TSAN_OPTIONS": "halt_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "-> OK" in run.stdout and "WARNING" not in run.stderr
