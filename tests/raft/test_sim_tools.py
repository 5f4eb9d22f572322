"""tools/raft_fuzz.py and tools/bench_raft_core.py stay runnable (smoke runs; no speed
is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


def _run(*args: str, timeout: int = 100) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.timeout(120)
def test_fuzz_smoke():
    out = _run(os.path.join(ROOT, "tools", "raft_fuzz.py"), "--seeds", "6", "--steps", "200", "--procs", "2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "done: seeds=6" in out.stdout and "violations=0" in out.stdout


@pytest.mark.timeout(120)
def test_fuzz_replay_prints_a_transcript():
    out = _run(os.path.join(ROOT, "tools", "raft_fuzz.py"), "--replay", "3", "--steps", "100", "--profile", "calm")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "seed=3 profile=calm" in out.stdout and "->" in out.stdout


@pytest.mark.timeout(120)
def test_bench_smoke():
    out = _run(
        os.path.join(ROOT, "tools", "bench_raft_core.py"), "--entries", "200", "--repeat", "1", "--batches", "1,8"
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "entries/s" in out.stdout and len(out.stdout.strip().splitlines()) == 2 + 2 * 2
