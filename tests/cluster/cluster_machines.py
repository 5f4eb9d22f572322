"""State machines the cluster tests run in peer processes (imported by path)."""

from __future__ import annotations

import struct

from rsm_shm.cluster import StateMachine


class Counter(StateMachine):
    """b"inc" adds one and returns the new count (8 bytes); b"boom" raises; query returns
    the count.  Every applied command is also logged, so tests can check exactly-once."""

    def __init__(self) -> None:
        self.count = 0

    def apply(self, command: bytes) -> bytes:
        if command == b"boom":
            raise ValueError("boom at %d" % self.count)
        if command != b"inc":
            raise ValueError(f"unknown command {command!r}")
        self.count += 1
        return struct.pack("<Q", self.count)

    def query(self, query: bytes) -> bytes:
        return struct.pack("<Q", self.count)

    def snapshot(self) -> bytes:
        return struct.pack("<Q", self.count)

    def restore(self, data: bytes) -> None:
        self.count = struct.unpack("<Q", data)[0]


class NotAMachine:
    pass


class ApplyCounter(StateMachine):
    """Counts applied commands (any bytes) and, separately, the ``apply`` calls made in
    this process since it started (not restored from a snapshot): a query returns both,
    so a test can see how much a restarted peer applied again."""

    def __init__(self) -> None:
        self.count = 0
        self.applied_here = 0

    def apply(self, command: bytes) -> bytes:
        self.count += 1
        self.applied_here += 1
        return b""

    def query(self, query: bytes) -> bytes:
        return struct.pack("<QQ", self.count, self.applied_here)

    def snapshot(self) -> bytes:
        return struct.pack("<Q", self.count)

    def restore(self, data: bytes) -> None:
        self.count = struct.unpack("<Q", data)[0] if data else 0


class OnlyInTheTestProcess(Counter):
    """Builds only in the process whose pid is ``RSM_SHM_TEST_MANAGER_PID``: it imports in
    the manager (which checks the import path at start) and fails in every peer."""

    def __init__(self) -> None:
        import os

        if str(os.getpid()) != os.environ.get("RSM_SHM_TEST_MANAGER_PID"):
            raise RuntimeError("OnlyInTheTestProcess refuses to run in a peer process")
        super().__init__()
