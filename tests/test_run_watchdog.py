"""The run's watchdog (tests/_run_watchdog.py): when the process that started it is
SIGKILLed, everything that carries the run's token dies and the run's segments go; when
that process says ``done`` first, nothing is touched."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys

import psutil
import pytest

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog reads /proc"),
]

HERE = os.path.dirname(os.path.abspath(__file__))
WATCHDOG = os.path.join(HERE, "_run_watchdog.py")
ENV = "RSM_SHM_TEST_WATCHDOG_PROBE"  # not the real run's variable: this test's own run

# Plays pytest: starts the watchdog on a pipe, a child carrying the token (which could
# leak the pipe's write end, and must not), makes a "segment", prints, then waits.
_STARTER = """
import json, os, subprocess, sys, time
env_name, token, shm_dir, prefix, watchdog, say_done = sys.argv[1:7]
r, w = os.pipe()
dog = subprocess.Popen([sys.executable, watchdog, env_name, token, shm_dir, prefix], stdin=r,
                       start_new_session=True)
os.close(r)
env = dict(os.environ, **{env_name: token})
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
open(os.path.join(shm_dir, prefix + token + ".seg"), "wb").close()
print(json.dumps({"dog": dog.pid, "child": child.pid}), flush=True)
if say_done == "1":
    os.write(w, b"done")
    os.close(w)
    dog.wait(30)
    print("done", flush=True)
time.sleep(60)
"""


def _gone(pid: int, started: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() != started or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, started: float, what: str) -> None:
    import time

    deadline = time.monotonic() + 15
    while not _gone(pid, started):
        assert time.monotonic() < deadline, f"{what} still runs"
        time.sleep(0.02)


@pytest.mark.parametrize("finished", [False, True], ids=["starter-killed", "starter-done"])
def test_the_watchdog_reaps_only_after_a_hard_death(tmp_path, finished):
    token = "w" + secrets.token_hex(4)
    shm_dir, prefix = str(tmp_path), "rsm_shm."
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER, ENV, token, shm_dir, prefix, WATCHDOG, "1" if finished else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = None
    try:
        pids = json.loads(starter.stdout.readline())
        child = (pids["child"], psutil.Process(pids["child"]).create_time())
        dog = pids["dog"]
        seg = tmp_path / f"{prefix}{token}.seg"
        if finished:
            assert starter.stdout.readline() == "done\n"  # and the watchdog exited
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        if finished:
            # Nothing touched: the child runs on and the segment stays.
            assert not _gone(*child) and seg.exists()
        else:
            _wait_gone(*child, "the child that carries the token")
            dog_started = None
            try:
                dog_started = psutil.Process(dog).create_time()
            except psutil.NoSuchProcess:
                pass
            if dog_started is not None:
                _wait_gone(dog, dog_started, "the watchdog")
            assert not seg.exists()
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)
        starter.stdout.close()
        if child is not None and not _gone(*child):
            os.kill(child[0], signal.SIGKILL)
            _wait_gone(*child, "the child")
