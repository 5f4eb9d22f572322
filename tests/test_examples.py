"""Every example runs, as a user would run it, and succeeds."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(180)
def test_worker_pool_example():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "worker_pool.py"), "--jobs", "20"],
                         capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr
    assert "total = 2870 (expected 2870)" in out.stdout
    assert out.stdout.count("initialises the model, once") == 1
    assert out.stdout.count("finished the last job") == 1
