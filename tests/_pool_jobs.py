"""Module-level jobs for the ProcessPool tests (workers import them by name)."""

from __future__ import annotations

import ctypes
import os
import signal

import rsm_shm

_initialised = None


def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def pid(_=None):
    return os.getpid()


def fail(x):
    raise ValueError(f"job {x} failed on purpose")


def raise_system_exit(_=None):
    raise SystemExit(3)


def unpicklable_result(_=None):
    return lambda: None


def wait_event(event_name: str, value=None, started_name: str | None = None):
    """Tell the test we started (a Semaphore), then block until the test sets the Event."""
    if started_name:
        started = rsm_shm.Semaphore(started_name, create=False)
        started.release()
        started.close()
    ev = rsm_shm.Event(event_name, create=False)
    try:
        if not ev.wait(60):
            raise TimeoutError("the test never set the event")
    finally:
        ev.close()
    return value


def kill_self(_=None):
    os.kill(os.getpid(), signal.SIGKILL)


def segfault(_=None):
    ctypes.string_at(0)


def kill_self_first_time(marker_path: str, value):
    """SIGKILL the worker on the first attempt (the marker file records it), succeed after."""
    try:
        fd = os.open(marker_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return value
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def set_initialised(value):
    global _initialised
    _initialised = value


def get_initialised(_=None):
    return _initialised, os.getpid()


def bad_initializer():
    raise RuntimeError("initializer failed on purpose")


class TaggedPickle:
    """A serializer (dumps/loads) that marks its bytes, to prove the pool uses it both ways."""

    MARK = b"TP1"

    @staticmethod
    def dumps(obj) -> bytes:
        import pickle

        return TaggedPickle.MARK + pickle.dumps(obj)

    @staticmethod
    def loads(data) -> object:
        import pickle

        data = bytes(data)
        if not data.startswith(TaggedPickle.MARK):
            raise ValueError("not a TaggedPickle payload")
        return pickle.loads(data[len(TaggedPickle.MARK) :])


def exit_now():
    os._exit(7)


def spin(x, us: int = 50):
    """Burn ``us`` microseconds of CPU (a job that is busy, not asleep), return x."""
    import time

    end = time.perf_counter_ns() + us * 1000
    while time.perf_counter_ns() < end:
        pass
    return x


def nap(x, seconds: float = 0.2):
    import time

    time.sleep(seconds)
    return x


def client_session(pool_name: str, out_path: str, n: int) -> None:
    """A process that is not the pool's owner: attach, map, submit, write what it got."""
    import json

    from rsm_shm.pool import ProcessPool, WorkerDiedError

    client = ProcessPool.attach(pool_name)
    try:
        squares = list(client.map(square, range(n), chunksize=7))
        single = client.submit(add, 1, 2, c=3).result(timeout=60)
        try:
            client.submit(kill_self).result(timeout=60)
            died = None
        except WorkerDiedError as e:
            died = [e.attempts, e.signal.name]
        try:
            client.submit(fail, 1).result(timeout=60)
            raised = None
        except ValueError as e:
            raised = str(e)
    finally:
        client.shutdown()
    with open(out_path, "w") as f:
        json.dump({"squares": squares, "single": single, "died": died, "raised": raised, "pid": os.getpid()}, f)


def block_first_time(marker_dir: str, x):
    """Block on the first attempt (until the test SIGKILLs this worker; 60 s at most), and
    return x at once when run again."""
    import time

    path = os.path.join(marker_dir, f"m{x}")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return x
    os.close(fd)
    time.sleep(60)
    return x


def torture_job(marker_dir: str, blocking: frozenset, x):
    return block_first_time(marker_dir, x) if x in blocking else spin(x, 20)


def own_a_pool_then_hang(pool_name: str, out_path: str, ready_name: str) -> None:
    """A pool owner the test SIGKILLs: start a pool, write its workers' pids, signal, wait."""
    import json
    import time

    from rsm_shm.pool import ProcessPool

    pool = ProcessPool(2, pool_name)
    assert pool.submit(square, 3).result(timeout=60) == 9
    with open(out_path, "w") as f:
        json.dump([w.pid for w in pool.statistics().workers], f)
    ready = rsm_shm.Event(ready_name, create=False)
    ready.set()
    ready.close()
    time.sleep(120)
