"""The benchmarks stay runnable: a smoke run of each (no speed is asserted here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(240)
def test_bench_sync_smoke(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (for --plot) is in the [test] and [plots] extras")
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "bench_sync.py"),
            "--quick",
            "--only",
            "uncontended,recovery",
            "--json",
            str(tmp_path / "sync.json"),
            "--plot",
            str(tmp_path / "img"),
        ],
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "rsm Lock" in out.stdout and "recovery" in out.stdout
    figures = ["sync_recovery.png", "sync_uncontended.png"]
    assert sorted(os.listdir(tmp_path / "img")) == figures
    # The same figures again from the saved JSON, without running the benchmark.
    again = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "_plot.py"),
            "bench_sync",
            str(tmp_path / "sync.json"),
            str(tmp_path / "again"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "again")) == figures
    for name in figures:
        with open(tmp_path / "again" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(120)
def test_bench_wal_smoke(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "bench_wal.py"),
            "--entries",
            "20000",
            "--seconds",
            "0.3",
            "--batches",
            "1,8",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "reopen a 20,000-entry log" in out.stdout
    assert os.listdir(tmp_path) == []  # the data directories are removed


@pytest.mark.timeout(240)
def test_bench_cluster_smoke():
    """The rsm_shm side of the cluster benchmark runs end to end (PySyncObj is an optional
    [bench] extra and is left out here)."""
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "bench_cluster.py"),
            "--quick",
            "--only",
            "rsm",
            "--ops",
            "600",
            "--inflight",
            "200",
            "--seq",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "pipelined commits/s, fsync=True" in out.stdout and "failover" in out.stdout


@pytest.mark.timeout(240)
def test_bench_pool_smoke():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench_pool.py"), "--quick", "--only", "rsm"],
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "rsm ProcessPool" in out.stdout and "SIGKILL -> job running again" in out.stdout
