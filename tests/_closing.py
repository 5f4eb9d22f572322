"""Child process of tests/test_closed_handles.py: use closed handles, close under waiters.

Run as ``python -m tests._closing MODE CLASS PREFIX [METHOD]``.  Every line it prints is a
JSON record; the parent checks them and, above all, that this process did not die of a
signal (a use of unmapped memory is SIGSEGV, rc -11).

The classes come from the packages' own ``__all__`` (see :func:`handle_classes`), so a
new class is covered as soon as it is exported; the blocking scenarios are a table that
the parent checks against the classes' public methods.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
import time

import rsm_shm
import rsm_shm.fsm
import rsm_shm.ring

#: Members that must keep working on a closed handle: identity and lifetime, and values
#: fixed at creation that the handle keeps in Python (a Ring's capacity, the lock object of
#: a Condition, a Queue's ring): none of them touches shared memory.
ALWAYS_ALLOWED = {"close", "unlink", "closed", "name", "capacity", "max_message", "lock", "ring"}
#: A context manager whose __exit__ only closes: closing again is fine (as a file's).
ALLOWED_BY_CLASS = {"Automaton": {"__exit__"}}
#: multiprocessing.Queue's no-op compatibility methods (they touch nothing).
NO_OPS = {"join_thread", "cancel_join_thread"}
#: Sample values for the required parameters of public methods, by parameter name.
SAMPLES = {
    "fn": lambda: None,
    "data": b"x",
    "obj": 1,
    "items": [b"x"],
    "objs": [1],
    "max_items": 1,
    "n": 1,
    "count": 1,
    "payload": b"x",
    "payloads": [b"x"],
    "predicate": lambda: True,
    "timeout": 0.01,
    "delay": 0.01,
    "interval": 0.01,
    "value": 1,
}


def handle_classes() -> dict[str, type]:
    """Every exported class that owns a segment: it has close() and unlink()."""
    found = {}
    for module in (rsm_shm, rsm_shm.ring, rsm_shm.fsm):
        for name in module.__all__:
            obj = getattr(module, name)
            if (
                inspect.isclass(obj)
                and callable(getattr(obj, "close", None))
                and callable(getattr(obj, "unlink", None))
            ):
                found[obj.__name__] = obj
    return found


def public_members(cls: type) -> list[str]:
    names = [n for n in dir(cls) if not n.startswith("_")] + ["__enter__", "__exit__"]
    skip = ALWAYS_ALLOWED | NO_OPS | ALLOWED_BY_CLASS.get(cls.__name__, set())
    return sorted(n for n in names if hasattr(cls, n) and n not in skip)


def make(cls: type, name: str):
    return cls(name, create=True)


def call_member(obj, member: str):
    """Call (or read) one public member with sample arguments."""
    attr = inspect.getattr_static(type(obj), member)
    if isinstance(attr, property):
        return getattr(obj, member)
    fn = getattr(obj, member)
    if member == "__exit__":
        return fn(None, None, None)
    args = []
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a C method without a signature: no required args
        sig = None
    if sig is not None:
        for p in sig.parameters.values():
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                args.append(SAMPLES[p.name])
    result = fn(*args)
    if hasattr(result, "__enter__") and hasattr(result, "__exit__"):  # RWLock.read() and the like
        with result:
            pass
    return result


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def after_close(cls_name: str, prefix: str) -> None:
    """Every public member of a closed handle: ValueError, never a signal."""
    cls = handle_classes()[cls_name]
    for i, member in enumerate(public_members(cls)):
        obj = make(cls, f"{prefix}.{i}")
        obj.close()
        emit(event="start", member=member)
        try:
            call_member(obj, member)
        except ValueError as e:
            emit(event="done", member=member, outcome="ValueError", message=str(e))
        except Exception as e:  # noqa: BLE001 -- reported to the parent, which fails
            emit(event="done", member=member, outcome=type(e).__name__, message=str(e))
        else:
            emit(event="done", member=member, outcome="returned")
        obj.unlink()


# -- close while another thread blocks -------------------------------------------------------
# Each scenario: (setup(obj) -> None, the blocking call(obj)), run on a fresh handle.  The
# setup makes the call block (a held lock, an empty ring ...) from another thread when the
# primitive is thread-owned, so that the blocking thread is never the owner.


def _hold_in_thread(acquire):
    """Run ``acquire`` on a helper thread that then stays alive (so the owner lives)."""
    held = threading.Event()
    stay = threading.Event()

    def run():
        acquire()
        held.set()
        stay.wait(30)

    threading.Thread(target=run, daemon=True).start()
    held.wait(10)


def _fill(ring):
    while True:
        try:
            ring.put_nowait(b"x" * 64)
        except Exception:  # queue.Full
            return


def _fill_queue(q):
    while True:
        try:
            q.put_nowait(b"x" * 64)
        except Exception:
            return


def _fill_inbox(a):
    while True:
        try:
            a.post_nowait(b"x" * 64)
        except Exception:  # queue.Full
            return


def _once_running(once):
    started = threading.Event()

    def run():
        try:
            once.call(lambda: (started.set(), time.sleep(1.0)))
        except ValueError:
            pass

    threading.Thread(target=run, daemon=True).start()
    started.wait(10)


def _cond_wait(c):
    with c:
        return c.wait(30)


def _cond_wait_for(c):
    with c:
        return c.wait_for(lambda: False, 30)


BLOCKING = {
    "Lock": {
        "acquire": (lambda o: o.acquire(), lambda o: o.acquire(timeout=30)),
        "__enter__": (lambda o: o.acquire(), lambda o: o.__enter__()),
    },
    "RLock": {
        "acquire": (lambda o: _hold_in_thread(o.acquire), lambda o: o.acquire(timeout=30)),
        "__enter__": (lambda o: _hold_in_thread(o.acquire), lambda o: o.__enter__()),
    },
    "RWLock": {
        "acquire_write": (lambda o: _hold_in_thread(o.acquire_read), lambda o: o.acquire_write(timeout=30)),
        "acquire_read": (lambda o: _hold_in_thread(o.acquire_write), lambda o: o.acquire_read(timeout=30)),
        "write": (lambda o: _hold_in_thread(o.acquire_read), lambda o: o.write(30).__enter__()),
        "read": (lambda o: _hold_in_thread(o.acquire_write), lambda o: o.read(30).__enter__()),
    },
    "Semaphore": {
        "acquire": (lambda o: o.acquire(), lambda o: o.acquire(timeout=30)),
        "__enter__": (lambda o: o.acquire(), lambda o: o.__enter__()),
    },
    "BoundedSemaphore": {"acquire": (lambda o: o.acquire(), lambda o: o.acquire(timeout=30))},
    "AutoResetEvent": {
        "wait": (lambda o: None, lambda o: o.wait(30)),
        "acquire": (lambda o: None, lambda o: o.acquire(timeout=30)),
    },
    "Event": {"wait": (lambda o: None, lambda o: o.wait(30))},
    "Gate": {"wait": (lambda o: None, lambda o: o.wait(30)), "enter": (lambda o: None, lambda o: o.enter(30))},
    "Countdown": {"wait": (lambda o: None, lambda o: o.wait(30))},
    "Condition": {
        "wait": (lambda o: None, _cond_wait),
        "wait_for": (lambda o: None, _cond_wait_for),
        "acquire": (lambda o: _hold_in_thread(o.acquire), lambda o: o.acquire(timeout=30)),
    },
    "Barrier": {"wait": (lambda o: None, lambda o: o.wait(30))},
    "Once": {"call": (_once_running, lambda o: o.call(lambda: None, timeout=30))},
    "Ring": {
        "get": (lambda o: None, lambda o: o.get(30)),
        "get_many": (lambda o: None, lambda o: o.get_many(4, 30)),
        "put": (_fill, lambda o: o.put(b"y" * 64, 30)),
        "put_many": (_fill, lambda o: o.put_many([b"y" * 64], 30)),
    },
    "Queue": {
        "get": (lambda o: None, lambda o: o.get(timeout=30)),
        "get_many": (lambda o: None, lambda o: o.get_many(4, 30)),
        "put": (_fill_queue, lambda o: o.put(b"y" * 64, timeout=30)),
        "put_many": (_fill_queue, lambda o: o.put_many([b"y" * 64], 30)),
    },
    "Automaton": {
        "join": (lambda o: None, lambda o: o.join(30)),
        "post": (_fill_inbox, lambda o: o.post(b"y" * 64, 30)),
        "post_many": (_fill_inbox, lambda o: o.post_many([b"y" * 64], 30)),
    },
}
#: Constructor arguments where the defaults would not block (a ring small enough to fill).
MAKE_KW = {
    "Ring": {"capacity": 4096},
    "Queue": {"capacity": 4096},
    "Barrier": {"parties": 2},
    "Automaton": {"capacity": 4096},
    "Semaphore": {"value": 1},
    "BoundedSemaphore": {"value": 1},
}


def _sleeps_in_futex(tid: int, until: float) -> bool:
    """Wait until thread ``tid`` sleeps in the kernel on a futex (our slice wait), as seen
    in /proc: state S and wchan futex_*, three reads in a row (it wakes every ~50 ms)."""
    streak = 0
    while time.monotonic() < until:
        try:
            with open(f"/proc/self/task/{tid}/wchan") as f:
                wchan = f.read()
            with open(f"/proc/self/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        streak = streak + 1 if state == "S" and wchan.startswith("futex") else 0
        if streak >= 3:
            return True
        time.sleep(0.005)
    return False


def close_while_blocked(cls_name: str, prefix: str, member: str) -> None:
    cls = handle_classes()[cls_name]
    obj = cls(f"{prefix}.0", create=True, **MAKE_KW.get(cls_name, {}))
    setup, call = BLOCKING[cls_name][member]
    setup(obj)
    box: dict = {}
    entered = threading.Event()

    def blocked():
        box["tid"] = threading.get_native_id()
        entered.set()
        t0 = time.monotonic()
        try:
            box["result"] = repr(call(obj))
        except BaseException as e:  # noqa: BLE001 -- reported
            box["exc"] = type(e).__name__
            box["message"] = str(e)
        box["after"] = time.monotonic() - t0

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    entered.wait(10)
    asleep = _sleeps_in_futex(box["tid"], until=time.monotonic() + 10)
    waited_before_close = "result" not in box and "exc" not in box
    t_close = time.monotonic()
    obj.close()
    t.join(10)
    emit(
        event="done",
        member=member,
        blocked=waited_before_close and asleep,
        alive=t.is_alive(),
        outcome=box.get("exc", "returned" if "result" in box else "hung"),
        message=box.get("message", ""),
        latency=time.monotonic() - t_close,
    )
    obj.unlink()


def race(cls_name: str, prefix: str, rounds: int = 8) -> None:
    """close() while other threads call every public member in a loop: whatever each call
    sees (a result, ValueError, a timeout), the process must not die of a signal."""
    cls = handle_classes()[cls_name]
    members = [m for m in public_members(cls) if m not in ("__enter__", "__exit__")]
    for i in range(rounds):
        obj = cls(f"{prefix}.{i}", create=True, **MAKE_KW.get(cls_name, {}))
        stop = threading.Event()
        started = threading.Barrier(4)

        def hammer(offset):
            started.wait(10)
            k = offset
            while not stop.is_set():
                member = members[k % len(members)]
                k += 1
                try:
                    call_member(obj, member)
                except BaseException:  # noqa: BLE001 -- only a signal would be a failure
                    pass

        threads = [threading.Thread(target=hammer, args=(j,), daemon=True) for j in range(3)]
        for t in threads:
            t.start()
        started.wait(10)
        time.sleep(0.002 * (i % 5))  # close at different points of the members' calls
        obj.close()
        time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(10)
        emit(event="round", alive=sum(t.is_alive() for t in threads))
        obj.unlink()


def main() -> None:
    mode, cls_name, prefix = sys.argv[1:4]
    if mode == "race":
        race(cls_name, prefix)
    elif mode == "after_close":
        after_close(cls_name, prefix)
    elif mode == "blocked":  # every blocking member of the class, one after the other
        for i, member in enumerate(sorted(BLOCKING[cls_name])):
            emit(event="start", member=member)
            close_while_blocked(cls_name, f"{prefix}.{i}", member)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
