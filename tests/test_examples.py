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


def test_readme_tour_runs(tmp_path, shm_token):
    """The README's code is executable documentation: run it (with test-unique names)."""
    import re

    with open(os.path.join(ROOT, "README.md")) as f:
        code = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
    script = tmp_path / "tour.py"
    script.write_text(code.replace('"jobs.', f'"{shm_token}.'))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "initialised once" in out.stdout and "<rsm_shm.Lock" in out.stdout
