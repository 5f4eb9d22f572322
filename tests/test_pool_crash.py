"""ProcessPool when workers die: SIGKILL, segfaults, Ctrl-C.  Real processes, real signals.

The promise under test: a job whose worker dies runs again elsewhere (max_retries times),
then fails alone with WorkerDiedError; every other job completes exactly once; the pool
replaces the worker and keeps serving; nothing is left in /dev/shm.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from rsm_shm import _proc
from rsm_shm.pool import BrokenProcessPool, ProcessPool, WorkerDiedError, WorkerState
from tests import _pool_jobs as jobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHM = "/dev/shm"


def _leftovers(name: str) -> list[str]:
    return [e for e in os.listdir(SHM) if e.startswith("rsm_shm." + name)]


@pytest.mark.parametrize("crash, sig", [(jobs.kill_self, signal.SIGKILL), (jobs.segfault, signal.SIGSEGV)])
def test_a_job_that_always_kills_its_worker_fails_alone(shm_name, crash, sig):
    name = shm_name("pool")
    with ProcessPool(2, name, max_retries=2) as pool:
        before = [pool.submit(jobs.square, i) for i in range(100)]
        bad = pool.submit(crash)
        after = [pool.submit(jobs.square, i) for i in range(100)]
        with pytest.raises(WorkerDiedError) as info:
            bad.result(timeout=120)
        err = info.value
        assert err.attempts == 3 and err.signal == sig and err.exitcode == -sig
        assert err.pid > 0 and not _proc.process_alive(err.pid)
        assert f"job {err.job}" in str(err) and str(err.pid) in str(err) and sig.name in str(err)
        assert [f.result(timeout=120) for f in before + after] == [i * i for i in range(100)] * 2
        # The pool keeps serving, with replaced workers.
        assert list(pool.map(jobs.square, range(50))) == [i * i for i in range(50)]
        st = pool.statistics()
        assert (st.worker_deaths, st.retries, st.failed) == (3, 2, 1)
        assert st.alive == 2 and st.workers_started == 5
    assert _leftovers(name) == []


def test_max_retries_zero_fails_on_the_first_death(shm_name):
    with ProcessPool(1, shm_name("pool"), max_retries=0) as pool:
        with pytest.raises(WorkerDiedError) as info:
            pool.submit(jobs.kill_self).result(timeout=120)
        assert info.value.attempts == 1
        assert pool.submit(jobs.square, 9).result(timeout=120) == 81


def test_a_job_whose_worker_died_once_succeeds_on_retry(shm_name, tmp_path):
    with ProcessPool(2, shm_name("pool"), max_retries=1) as pool:
        f = pool.submit(jobs.kill_self_first_time, str(tmp_path / "marker"), "second time lucky")
        assert f.result(timeout=120) == "second time lucky"
        st = pool.statistics()
        assert (st.worker_deaths, st.retries, st.failed) == (1, 1, 0)


def test_workers_that_die_while_starting_break_the_pool(shm_name):
    pool = ProcessPool(1, shm_name("pool"), initializer=jobs.exit_now)
    with pytest.raises(BrokenProcessPool, match="died while starting"):
        pool.submit(jobs.square, 1).result(timeout=120)
    pool.shutdown()
    assert _leftovers(pool.name) == []


@pytest.mark.timeout(300)
def test_sigkill_workers_during_a_large_map(shm_name, tmp_path):
    """20k jobs through map; at 8 points a worker is SIGKILLed while it runs a chosen job
    (one that blocks on its first attempt, so the kill surely interrupts it).  Every result
    arrives once, in order; each kill is one death and one retry; nothing is left behind.
    (tools/bench_pool.py --torture kills random workers during a 100k-job map.)"""
    import functools

    n, every = 20_000, 2_500
    blocking = frozenset(range(every // 2, n, every))
    name = shm_name("pool")
    kills = 0
    with ProcessPool(3, name, max_retries=1) as pool:
        out = []
        results = pool.map(functools.partial(jobs.torture_job, str(tmp_path), blocking), range(n))
        for i, r in enumerate(results):
            out.append(r)
            if i + 1 in blocking:
                # The map submitted job i+1 as the pool's job number i+2 (numbers start at 1).
                deadline = time.monotonic() + 30
                while True:
                    st = pool.statistics()
                    victim = next((w for w in st.workers if w.state == WorkerState.BUSY and w.job == i + 2), None)
                    if victim is not None or time.monotonic() > deadline:
                        break
                    time.sleep(0.001)
                assert victim is not None, f"job {i + 2} never started: {st.workers} {os.listdir(tmp_path)}"
                os.kill(victim.pid, signal.SIGKILL)
                kills += 1
        # The last death may still be on its way to the collector: await the count, bounded.
        deadline = time.monotonic() + 30
        while pool.statistics().worker_deaths < kills and time.monotonic() < deadline:
            time.sleep(0.01)
        st = pool.statistics()
    assert out == list(range(n))
    assert kills == len(blocking) == 8
    assert (st.worker_deaths, st.retries, st.failed) == (kills, kills, 0)
    assert st.completed == st.submitted == n
    assert _leftovers(name) == []


_CTRL_C_SCRIPT = r"""
import sys
from rsm_shm.pool import ProcessPool
from tests import _pool_jobs as jobs

name = sys.argv[1] if sys.argv[1] != "-" else None
with ProcessPool(2, name) as pool:
    print("pool", pool.name, flush=True)
    print("workers", *[w.pid for w in pool.statistics().workers], flush=True)
    for i, r in enumerate(pool.map(jobs.nap, range(10_000))):
        if i == 2:
            print("ready", flush=True)
"""


@pytest.mark.parametrize("named", [True, False])
def test_ctrl_c_stops_the_workers_and_leaves_nothing(shm_name, named):
    name = shm_name("pool") if named else "-"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_SCRIPT, name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        lines = {}
        for line in proc.stdout:
            key, *rest = line.split()
            lines[key] = rest
            if key == "ready":
                break
        assert "ready" in lines, proc.stderr.read()
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in err
    for pid in map(int, lines["workers"]):
        assert not _proc.process_alive(pid)
    pool_name = lines["pool"][0]
    assert _leftovers(pool_name) == []
    assert not [e for e in os.listdir(SHM) if e.startswith(f"rsm_shm.anon.{proc.pid}.")]


def test_a_slot_left_mid_update_by_a_killed_worker_is_evened_up(shm_name):
    """A worker killed inside its slot update leaves the sequence odd; the replacement's
    slot must read consistent again (the bug: its parity stayed inverted for good)."""
    with ProcessPool(1, shm_name("pool")) as pool:
        pid = pool.submit(jobs.pid).result(timeout=60)
        pool._table.slot(0).seq += 1  # as if killed between the two sequence stores
        assert pool.statistics().workers[0].torn
        os.kill(pid, signal.SIGKILL)
        assert pool.submit(jobs.square, 3).result(timeout=60) == 9  # ran on the replacement
        st = pool.statistics()
        assert st.worker_deaths == 1 and not st.workers[0].torn and st.workers[0].pid != pid
