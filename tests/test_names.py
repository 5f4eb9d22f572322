"""The settled vocabulary, checked on every handle type: ``close()`` unmaps this handle
only and is idempotent, ``closed`` is a property that never raises, ``unlink()`` removes
the name, and the file permissions keyword is ``mode=`` everywhere."""

from __future__ import annotations

import inspect

import pytest

import rsm_shm
from rsm_shm.fsm import Automaton
from rsm_shm.pool import PoolTable

FACTORIES = {
    "Lock": lambda n: rsm_shm.Lock(n),
    "RLock": lambda n: rsm_shm.RLock(n),
    "Semaphore": lambda n: rsm_shm.Semaphore(n),
    "BoundedSemaphore": lambda n: rsm_shm.BoundedSemaphore(n),
    "Event": lambda n: rsm_shm.Event(n),
    "AutoResetEvent": lambda n: rsm_shm.AutoResetEvent(n),
    "Condition": lambda n: rsm_shm.Condition(n),
    "Barrier": lambda n: rsm_shm.Barrier(n, parties=2),
    "RWLock": lambda n: rsm_shm.RWLock(n),
    "Gate": lambda n: rsm_shm.Gate(n),
    "Once": lambda n: rsm_shm.Once(n),
    "Countdown": lambda n: rsm_shm.Countdown(n, count=1),
    "Ring": lambda n: rsm_shm.Ring(n, capacity=1024),
    "Queue": lambda n: rsm_shm.Queue(n, capacity=1024),
    "Automaton": lambda n: Automaton(n),
    "PoolTable": lambda n: PoolTable(n),
}


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_close_unmaps_this_handle_and_closed_never_raises(shm_name, kind):
    obj = FACTORIES[kind](shm_name(kind.lower()))
    other = type(obj)(obj.name, create=False) if kind != "Queue" else rsm_shm.Queue(obj.name, create=False)
    try:
        assert obj.closed is False
        obj.close()
        obj.close()  # idempotent
        assert obj.closed is True
        assert other.closed is False  # another handle to the same object is unaffected
        with pytest.raises(ValueError, match="closed"):
            obj.describe()  # using a closed handle is a ValueError naming it
    finally:
        other.unlink()
        other.close()


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_the_permissions_keyword_is_mode(kind):
    cls = {"Queue": rsm_shm.Queue, "Automaton": Automaton, "PoolTable": PoolTable}.get(kind) or getattr(rsm_shm, kind)
    params = inspect.signature(cls).parameters
    assert "mode" in params and params["mode"].default == 0o600
    assert not {"perms", "permissions"} & set(params)
