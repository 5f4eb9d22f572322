"""Test fixtures shared by every test: unique segment names and /dev/shm hygiene.

Every segment a test makes is named through the ``shm_name`` fixture, which embeds a
per-run and per-test token; after each test (pass or fail) every segment carrying that
test's token is unlinked, and the session checks /dev/shm holds nothing of ours that was
not there when it started.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import sys

import psutil
import pytest

from rsm_shm.segment import read_header

SHM_DIR = "/dev/shm"
PREFIX = "rsm_shm."
RUN_TOKEN = f"t{os.getpid()}{secrets.token_hex(3)}"
_test_counter = itertools.count()

# A shell starts background jobs with SIGINT ignored, and Python then leaves it ignored
# (no KeyboardInterrupt), as do the processes it starts.  The suite tests Ctrl-C, so it
# runs with Python's default handler however it was launched; children started after this
# get SIGINT's default disposition back at exec and install the same handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _ours() -> set[str]:
    try:
        return {e for e in os.listdir(SHM_DIR) if e.startswith(PREFIX)}
    except FileNotFoundError:
        return set()


def _unlink_matching(token: str) -> list[str]:
    removed = []
    for entry in _ours():
        if entry[len(PREFIX) :].startswith(token):
            try:
                os.unlink(os.path.join(SHM_DIR, entry))
                removed.append(entry)
            except FileNotFoundError:
                pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Every process the run starts inherits this (see _run_watchdog.py).
RUN_ENV = "RSM_SHM_TEST_RUN"
os.environ[RUN_ENV] = RUN_TOKEN


@pytest.fixture(scope="session", autouse=True)
def _run_watchdog():
    """If pytest is SIGKILLed, a watchdog process kills what the run started and removes
    its segments (tests/_run_watchdog.py); a run that ends normally leaves it nothing
    to do.  Linux only (it reads /proc)."""
    if not sys.platform.startswith("linux"):
        yield
        return
    import subprocess

    from tests import _run_watchdog

    r, w = os.pipe()  # both ends non-inheritable: no exec'd child keeps the write end
    # A forked child (no exec) inherits it, though: it must not hold the watchdog off.
    open_end = [w]
    os.register_at_fork(after_in_child=lambda: [_close_quietly(fd) for fd in open_end])
    env = {k: v for k, v in os.environ.items() if k != RUN_ENV}
    dog = subprocess.Popen(
        [sys.executable, _run_watchdog.__file__, RUN_ENV, RUN_TOKEN, SHM_DIR, PREFIX],
        stdin=r,
        env=env,
        start_new_session=True,
    )
    os.close(r)
    try:
        yield
    finally:
        try:
            os.write(w, b"done")
        except BrokenPipeError:  # the watchdog is gone (it failed to start?): nothing to tell
            pass
        open_end.clear()  # a later fork must not close whatever then has that number
        os.close(w)
        dog.wait(30)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


@pytest.fixture(scope="session", autouse=True)
def _dev_shm_is_left_as_found():
    before = _ours()
    yield
    _unlink_matching(RUN_TOKEN)
    # Anonymous segments of test processes that were killed (SIGKILL skips atexit).
    for entry in _ours() - before:
        parts = entry[len(PREFIX) :].split(".")
        if parts[0] == "anon" and len(parts) > 1 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            try:
                os.unlink(os.path.join(SHM_DIR, entry))
            except FileNotFoundError:
                pass
    # Judge only what this session made: its token, or a creator that is this process or
    # one of its live descendants.  Other runs on the same machine are not ours to judge.
    mine = {os.getpid()} | {c.pid for c in psutil.Process().children(recursive=True)}
    leaked = set()
    for entry in _ours() - before:
        name = entry[len(PREFIX) :]
        if name.startswith(RUN_TOKEN):
            leaked.add(entry)
            continue
        try:
            creator = read_header(name).creator_pid
        except (OSError, ValueError):
            continue
        if creator in mine:
            leaked.add(entry)
    assert not leaked, f"the test session leaked segments: {sorted(leaked)}"


# Python 3.12+ warns (an error in this suite) when a process with more than one OS thread
# forks: the child may inherit a lock some other thread held.  Older Pythons fork silently,
# so the suite checks the same condition itself, on every version: a fork from the pytest
# process while it runs threads (gRPC's core threads, a pool's collector, ...) fails the test.
_forks_with_threads: list[str] = []
_pytest_pid = 0


def _os_thread_names() -> list[str]:
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return names


def _before_fork() -> None:
    if os.getpid() != _pytest_pid or not os.path.isdir("/proc/self/task"):
        return
    names = _os_thread_names()
    if len(names) > 1:
        import threading

        py = [f"{t.name} ({getattr(t, '_target', None)})" for t in threading.enumerate()]
        _forks_with_threads.append(f"fork() with {len(names)} OS threads running: {names}; Python threads: {py}")


def pytest_configure(config) -> None:
    global _pytest_pid
    _pytest_pid = os.getpid()


os.register_at_fork(before=_before_fork)


@pytest.fixture
def single_threaded():
    """For a test that forks the pytest process itself: the threads earlier tests left are
    gone first.  The fsm default timer runs a thread for the life of the process once
    used (it is started again on next use), tqdm's monitor likewise; other threads (a pool's collector, gRPC's)
    must end by themselves once their objects are collected -- if they do not within
    10 s, that is a leak and the test fails naming them."""
    import gc
    import threading
    import time

    from rsm_shm.fsm import timer

    timer.stop_default_timer()
    # tqdm (rsm_shm.pool.progress draws with it) keeps a monitor thread once a bar was
    # shown; it starts a new one with the next bar.
    tqdm = sys.modules.get("tqdm")
    monitor = getattr(getattr(tqdm, "tqdm", None), "monitor", None)
    if monitor is not None:
        monitor.exit()
        tqdm.tqdm.monitor = None  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while len(_os_thread_names()) > 1:
        gc.collect()
        if time.monotonic() > deadline:
            pytest.fail(
                f"threads still running before a fork: {[t.name for t in threading.enumerate()]} "
                f"(OS threads: {_os_thread_names()})"
            )
        time.sleep(0.02)
    yield


@pytest.fixture(autouse=True)
def _no_fork_with_threads():
    yield
    if _forks_with_threads:
        found = list(_forks_with_threads)
        _forks_with_threads.clear()
        pytest.fail(
            "the test forked the pytest process while it had threads (use spawn or forkserver): " + "; ".join(found)
        )


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test():
    """Children registered with tests._workers.reap_after_test die with their test."""
    yield
    from tests._workers import CHILDREN

    while CHILDREN:
        p = CHILDREN.pop()
        if p.is_alive():
            p.kill()
        p.join(30)


@pytest.fixture
def shm_token():
    """The prefix every segment name of this test starts with."""
    token = f"{RUN_TOKEN}.{next(_test_counter)}"
    yield token
    _unlink_matching(token + ".")


@pytest.fixture
def shm_name(shm_token):
    """A factory of unique segment names for this test: shm_name() or shm_name("lock")."""
    counter = itertools.count()

    def make(label: str = "obj") -> str:
        return f"{shm_token}.{label}{next(counter)}"

    return make


@pytest.fixture
def objs(shm_name):
    """A factory of rsm_shm objects with unique names, closed and unlinked after the test:
    ``objs(rsm_shm.Lock, policy="fifo")``."""
    made = []

    def make(cls, **kw):
        obj = cls(shm_name(cls.__name__), create=True, **kw)
        made.append(obj)
        return obj

    yield make
    for obj in made:
        obj.close()
        obj.unlink()
