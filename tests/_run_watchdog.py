"""The test run's watchdog (started by tests/conftest.py, one per pytest process).

A SIGKILLed pytest runs no teardown: the peers, clusters and client processes its
tests started would run on, orphaned, and their segments stay in /dev/shm.  This
process blocks reading its stdin, a pipe whose other end only pytest holds.  At EOF
without the word ``done`` before it (pytest died instead of finishing), it SIGKILLs
every process whose environment carries this run's token -- the descendants of the
run, wherever they were reparented -- and removes the run's segments.  A run that ends
normally writes ``done`` first, and nothing is touched.

    python tests/_run_watchdog.py ENV_NAME TOKEN SHM_DIR PREFIX
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _carriers(needle: bytes) -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone, or not ours to read
            continue
    return found


def main() -> None:
    env_name, token, shm_dir, prefix = sys.argv[1:5]
    if sys.stdin.buffer.read() == b"done":
        return
    needle = f"{env_name}={token}".encode()
    # A process may start another while we kill: look again until nobody is left.
    for _ in range(20):
        pids = _carriers(needle)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.1)
    try:
        entries = os.listdir(shm_dir)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(prefix + token):
            try:
                os.unlink(os.path.join(shm_dir, entry))
            except OSError:
                pass


if __name__ == "__main__":
    main()
