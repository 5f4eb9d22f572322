"""``rsm-shm cluster ...`` and ``rsm-shm kv ...`` end to end, as a user types them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cluster_harness import wait_until

pytestmark = pytest.mark.timeout(120)


def cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "rsm_shm", *args], capture_output=True, text=True, timeout=timeout)


def ours(name):
    return sorted(e for e in os.listdir("/dev/shm") if e.startswith(f"rsm_shm.{name}."))


@pytest.fixture
def running(shm_name, tmp_path, cluster_env):
    """A cluster started by ``rsm-shm cluster start`` in the foreground; its name."""
    yield from _foreground(shm_name("cli"), tmp_path)


@pytest.fixture
def running_restarting(shm_name, tmp_path, cluster_env):
    """The same, started with ``--restart-failed``."""
    yield from _foreground(shm_name("cli"), tmp_path, "--restart-failed")


def _foreground(name, tmp_path, *extra):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rsm_shm",
            "cluster",
            "start",
            name,
            "--peers",
            "3",
            "--sm",
            "rsm_shm.cluster:KVStore",
            "--data",
            str(tmp_path / "data"),
            "--no-fsync",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "leader" in line, line + proc.stderr.read() if proc.poll() is not None else line
        yield name, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def status(name):
    """The cluster's state as `cluster status --json` reports it, read in-process (the
    waits below poll it; spawning the command for every poll would only be slower)."""
    from rsm_shm.cluster import LocalCluster
    from rsm_shm.cluster.cli import _leader_of, _peer_dict

    if name not in _attached:
        _attached[name] = LocalCluster.attach(name)
    st = _attached[name].status()
    return {"leader": _leader_of(st), "peers": [_peer_dict(s) for s in st]}


_attached: dict = {}  # one handle per cluster for the whole test process


def leader(name):
    return wait_until(lambda: status(name)["leader"], 15, "a leader")


def test_cluster_commands_end_to_end(running):
    name, proc = running
    out = cli("cluster", "ls", "--json")
    assert out.returncode == 0
    assert name in [c["name"] for c in json.loads(out.stdout)["clusters"]]
    assert name in cli("cluster", "ls").stdout

    out = cli("cluster", "status", name, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1 and len(doc["peers"]) == 3 and doc["leader"] in (1, 2, 3)
    assert {p["id"] for p in doc["peers"]} == {1, 2, 3}
    table = cli("cluster", "status", name)
    assert table.returncode == 0 and "leader" in table.stdout and "COMMIT" in table.stdout

    # kv
    assert cli("kv", name, "put", "colour", "blue").returncode == 0
    got = cli("kv", name, "get", "colour")
    assert (got.returncode, got.stdout.strip()) == (0, "blue")
    got = cli("kv", name, "get", "colour", "--json")
    assert json.loads(got.stdout)["value"] == "blue"
    assert cli("kv", name, "get", "nothing-here").returncode == 1
    assert cli("kv", name, "delete", "colour").returncode == 0
    assert cli("kv", name, "get", "colour").returncode == 1

    # faults
    first = leader(name)
    assert cli("cluster", "kill", name, str(first)).returncode == 0
    wait_until(lambda: not {p["id"]: p for p in status(name)["peers"]}[first]["alive"], 10, "the kill")
    wait_until(lambda: status(name)["leader"] not in (None, first), 15, "a new leader")
    assert cli("kv", name, "put", "after", "kill").returncode == 0
    assert cli("cluster", "restart", name, str(first)).returncode == 0
    wait_until(lambda: {p["id"]: p for p in status(name)["peers"]}[first]["alive"], 10, "the restart")

    other = next(p for p in (1, 2, 3) if p != leader(name))
    assert cli("cluster", "pause", name, str(other)).returncode == 0
    assert cli("kv", name, "put", "while", "paused").returncode == 0
    assert cli("cluster", "resume", name, str(other)).returncode == 0

    lead = leader(name)
    rest = ",".join(str(p) for p in (1, 2, 3) if p != lead)
    out = cli("cluster", "partition", name, str(lead), "/", rest)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: status(name)["leader"] not in (None, lead), 15, "a leader in the majority")
    assert cli("kv", name, "put", "while", "partitioned").returncode == 0
    assert cli("cluster", "heal", name).returncode == 0
    got = cli("kv", name, "get", "while")
    assert got.stdout.strip() == "partitioned"

    frames = cli("cluster", "status", name, "--watch", "--count", "2", "--interval", "0.1", "--json")
    assert frames.returncode == 0
    assert [json.loads(line)["frame"] for line in frames.stdout.splitlines()] == [0, 1]

    # stop from another shell: the foreground command ends cleanly
    assert cli("cluster", "stop", name).returncode == 0
    assert proc.wait(30) == 0
    wait_until(lambda: not ours(name), 10, "the cluster's segments to go")


def test_the_foreground_cluster_restarts_crashed_peers_but_not_killed_ones(running_restarting):
    """``cluster start --restart-failed``: a peer SIGKILLed behind the cluster's back is
    restarted by the foreground command and counted; one killed with ``cluster kill``
    (another process) stays dead."""
    name, proc = running_restarting

    def peers():
        return {p["id"]: p for p in status(name)["peers"]}

    def restarted(pid, old):
        p = peers()[pid]
        return p["alive"] and p["pid"] != old and p["restarts"] == 1 and p["state"] == "running"

    old = peers()[1]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: restarted(1, old), 30, "peer 1 to be restarted")
    assert cli("cluster", "kill", name, "2").returncode == 0
    old = peers()[3]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: restarted(3, old), 30, "peer 3 to be restarted")
    p2 = peers()[2]
    assert (p2["alive"], p2["state"], p2["restarts"]) == (False, "killed", 0)
    doc = json.loads(cli("cluster", "status", name, "--json").stdout)
    assert {p["id"]: p["restarts"] for p in doc["peers"]} == {1: 1, 2: 0, 3: 1}
    table = cli("cluster", "status", name).stdout.splitlines()
    assert table[1].split()[-2:] == ["STATE", "RESTARTS"]
    assert [line.split()[-2:] for line in table[2:]] == [["running", "1"], ["killed", "0"], ["running", "1"]]
    out = cli("inspect", f"{name}.ctl", "--json")
    assert out.returncode == 0, out.stderr
    ctl = json.loads(out.stdout)["segment"]["detail"]
    assert ctl["restart_policy"] == {"max_restarts": 5, "window_s": 60.0}
    assert {k: v["restarts"] for k, v in ctl["peers"].items()} == {"1": 1, "2": 0, "3": 1}
    assert proc.poll() is None


def test_ctrl_c_stops_the_foreground_cluster_cleanly(running):
    name, proc = running
    leader(name)
    pids = [p["pid"] for p in status(name)["peers"]]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    for pid in pids:
        wait_until(
            lambda: (
                not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z"
            ),
            10,
            f"peer {pid} to exit",
        )
    wait_until(lambda: not ours(name), 10, "the cluster's segments to go")


def test_errors_and_exit_codes(shm_name):
    missing = shm_name("none")
    for args in (
        ("cluster", "status", missing),
        ("cluster", "kill", missing, "1"),
        ("cluster", "heal", missing),
        ("cluster", "stop", missing),
        ("kv", missing, "get", "k"),
    ):
        out = cli(*args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert missing in out.stderr
    assert cli("cluster", "partition", missing, "1").returncode == 2  # one group only
    assert cli("cluster", "partition", missing, "1", "/", "x").returncode == 2
    assert cli("kv", missing, "put", "k").returncode == 2  # no value
    assert cli("cluster", "kill", missing, "zero").returncode == 2
    out = cli("cluster", "start", shm_name("bad"), "--sm", "no.such.module:Thing", "--no-fsync")
    assert out.returncode == 1 and "no.such.module" in out.stderr
    assert cli("cluster", "ls", "--json").returncode == 0


def test_peer_commands_refuse_an_unknown_peer(running):
    name, _ = running
    out = cli("cluster", "kill", name, "9")
    assert out.returncode == 1 and "no peer 9" in out.stderr
    out = cli("cluster", "partition", name, "1", "/", "9")
    assert out.returncode == 1 and "9" in out.stderr
