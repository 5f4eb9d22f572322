"""Process and thread liveness, as read from /proc.

Used to judge whether the owner of a lock, the creator of a segment or a waiter still
lives.  A task counts as dead when it does not exist, is a zombie, or exists with a
different start time than recorded (its id was reused).
"""

from __future__ import annotations

import os

__all__ = ["start_time", "task_alive", "process_alive"]


def _stat_fields(tid: int) -> list[str] | None:
    try:
        with open(f"/proc/{int(tid)}/stat", "rb") as f:
            data = f.read(4096)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    end = data.rfind(b")")
    if end < 0:
        return None
    return data[end + 2 :].decode("ascii", "replace").split()


def start_time(tid: int) -> int:
    """Start time of a process or thread in clock ticks after boot (0 if unknown)."""
    fields = _stat_fields(tid)
    if not fields or len(fields) < 20:
        return 0
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    except ValueError:
        return 0


def task_alive(tid: int, expected_start: int = 0) -> bool:
    """True if thread/process `tid` exists, is not a zombie, and (when `expected_start` is
    given) started at that time.  Works for thread ids of other processes too."""
    if tid <= 0:
        return False
    try:
        os.kill(tid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(tid)
    if fields is None:
        # /proc/<tid> is visible for any task in our pid namespace; if kill() reached it
        # but /proc does not show it, it is in the middle of exiting.
        return False
    if fields[0] in ("Z", "X", "x"):
        return False
    if expected_start and len(fields) >= 20:
        try:
            return int(fields[19]) == expected_start
        except ValueError:
            return True
    return True


def process_alive(pid: int, expected_start: int = 0) -> bool:
    """Alias of task_alive for process ids, for readability at call sites."""
    return task_alive(pid, expected_start)
