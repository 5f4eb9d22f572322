"""No call order crashes the interpreter: closed handles raise ValueError, always.

Generated over every exported class that owns a segment (``tests/_closing.py`` finds them
through the packages' ``__all__``): every public member of a closed handle, and close()
while another thread of the process is blocked in each blocking method.  Each case runs in
a child process, so a use of unmapped memory shows as a negative return code (SIGSEGV)
instead of taking the test run down.

Under AddressSanitizer + UBSan (the C entry points, the pins, the cffi core): build a copy
of the tree with ``CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g"
LDFLAGS="-fsanitize=address,undefined" python setup.py build_ext --inplace``, then run
this file from that copy with ``PYTHONPATH=<copy> PYTHONMALLOC=malloc
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1``; the children inherit the environment, and
an ASan report makes a child exit non-zero, which fails its case.
"""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests import _closing

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLASSES = _closing.handle_classes()
#: Members with a timeout that wait on something other than the segment (no scenario).
NOT_SEGMENT_WAITS = {
    ("Automaton", "kill"): "waits for its host process to exit after SIGKILL",
    ("Automaton", "stop"): "drain() then join(): join's scenario covers the wait",
}


def run_child(*args: str) -> list[dict]:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "tests._closing", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [r["member"] for r in records if r["event"] == "start"]
    assert proc.returncode >= 0, (
        f"child died of signal {-proc.returncode} during {started[-1:] or args}: {proc.stderr[-2000:]}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return records


def test_the_generated_cases_cover_every_class():
    # The segment-owning classes of the package; a new one joins the generated cases
    # automatically, and must get a blocking scenario below if it can block.
    assert {
        "Lock",
        "RLock",
        "RWLock",
        "Semaphore",
        "BoundedSemaphore",
        "Event",
        "AutoResetEvent",
        "Condition",
        "Barrier",
        "Gate",
        "Once",
        "Countdown",
        "Ring",
        "Queue",
        "Automaton",
    } <= set(CLASSES)
    for name, cls in CLASSES.items():
        blocking = set(_closing.BLOCKING.get(name, {}))
        for member in _closing.public_members(cls):
            fn = inspect.getattr_static(cls, member)
            try:
                params = inspect.signature(getattr(cls, member)).parameters
            except (TypeError, ValueError):
                params = {}
            if "timeout" in params and not isinstance(fn, property) and (name, member) not in NOT_SEGMENT_WAITS:
                assert member in blocking, f"{name}.{member} takes a timeout: add a blocking scenario"


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
def test_every_member_of_a_closed_handle_raises_value_error(cls_name, shm_name):
    records = run_child("after_close", cls_name, shm_name(cls_name))
    done = {r["member"]: r for r in records if r["event"] == "done"}
    assert set(done) == set(_closing.public_members(CLASSES[cls_name]))
    wrong = {m: (r["outcome"], r.get("message")) for m, r in done.items() if r["outcome"] != "ValueError"}
    assert not wrong, f"{cls_name}: members of a closed handle that did not raise ValueError: {wrong}"
    for m, r in done.items():
        assert "closed" in r["message"], (m, r["message"])


@pytest.mark.parametrize("cls_name", sorted(_closing.BLOCKING))
def test_close_while_another_thread_blocks_raises_value_error_there(cls_name, shm_name):
    # One child per class runs every blocking member in turn (a crash names the member).
    done = {r["member"]: r for r in run_child("blocked", cls_name, shm_name(cls_name)) if r["event"] == "done"}
    assert set(done) == set(_closing.BLOCKING[cls_name])
    for member, r in done.items():
        assert r["blocked"], f"{cls_name}.{member} did not block before close(): {r}"
        assert not r["alive"], f"{cls_name}.{member} still blocked 10 s after close()"
        assert r["outcome"] == "ValueError", (member, r)
        assert r["latency"] < 2.0, (member, r)  # a slice is ~50 ms


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
def test_close_racing_with_every_member_never_crashes(cls_name, shm_name):
    # A call that checked "open" and then touched memory after another thread's close()
    # unmapped it would die of SIGSEGV here (each member holds a pin instead).
    rounds = [r for r in run_child("race", cls_name, shm_name(cls_name)) if r["event"] == "round"]
    assert len(rounds) == 8 and not any(r["alive"] for r in rounds)
