"""Every example runs, as a user would run it, and succeeds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(180)
def test_worker_pool_example():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "worker_pool.py"), "--jobs", "20"],
        capture_output=True,
        text=True,
        timeout=170,
    )
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


@pytest.mark.timeout(120)
def test_replicated_kv_example_loses_nothing_and_leaves_nothing(tmp_path, shm_token):
    """The README's first command: a leader SIGKILLed mid-stream, nothing lost, all clean."""
    import psutil

    name = f"{shm_token}.demo"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "replicated_kv.py"), "--name", name, "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SIGKILL the leader" in out.stdout and "each holds the last acknowledged value" in out.stdout
    assert "0 lost" in out.stdout and "failover" in out.stdout
    # Nothing left behind: no segment, no temporary data directory, no peer process.
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"rsm_shm.{name}.")]
    assert not os.listdir(tmp)
    leftovers = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(name in part for part in (p.info["cmdline"] or [])):
                leftovers.append(p.pid)
        except psutil.Error:
            pass
    assert not leftovers


@pytest.mark.timeout(180)
def test_pool_example():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "pool.py"), "--jobs", "600"],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert out.returncode == 0, out.stderr
    assert "600 results, complete and in order: True" in out.stdout
    assert "a crashing job fails alone" in out.stdout and "SIGSEGV" in out.stdout
    assert "the pool still serves: work(7) = 91" in out.stdout
