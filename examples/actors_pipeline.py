"""A pipeline of three actors, each in its own process:  parse -> square -> total.

    python examples/actors_pipeline.py [NAME_PREFIX] [COUNT]

This script posts the numbers 1..COUNT (as text) to ``parse``; ``parse`` turns each one
into an int and posts it to ``square``; ``square`` posts n*n to ``total``; ``total`` adds
them up.  Then the script drains ``parse``.  Draining cascades down the pipeline: each
stage drains the next one when it gets EXIT, which comes only after it has handled (and
forwarded) every command in its inbox, so nothing is lost on the way out.

Things to notice:

* A handler is a plain function ``handler(state, op) -> new state``; ``op.code`` says what
  happened (START, CMD with ``op.payload`` bytes, TRANSITION, DRAIN, EXIT).
* Actors find each other by name: ``post(name, payload)`` works from any process.
* The state lives in the actor's process.  Others see it through ``statistics()``
  (``state`` is its repr), as ``rsm-shm inspect NAME`` does.
"""

from __future__ import annotations

import ast
import sys

from rsm_shm.fsm import Automaton, Opcode, post, wait_all


def parse(next_stage, op):
    """State: the name of the next stage.  b"42" -> 42, forwarded."""
    if op.code is Opcode.CMD:
        post(next_stage, b"%d" % int(op.payload))
    elif op.code is Opcode.EXIT:
        Automaton(next_stage, create=False).drain()  # everything was forwarded: pass the drain on
    return next_stage


def square(next_stage, op):
    """State: the name of the next stage.  n -> n*n, forwarded."""
    if op.code is Opcode.CMD:
        n = int(op.payload)
        post(next_stage, b"%d" % (n * n))
    elif op.code is Opcode.EXIT:
        Automaton(next_stage, create=False).drain()
    return next_stage


def total(acc, op):
    """State: (commands seen, running sum)."""
    if op.code is Opcode.CMD:
        seen, s = acc
        return (seen + 1, s + int(op.payload))
    return acc


def main(prefix: str = "example.pipeline", count: int = 1000) -> int:
    names = [f"{prefix}.parse", f"{prefix}.square", f"{prefix}.total"]
    stages = [
        Automaton(names[0], parse, names[1], create=True),
        Automaton(names[1], square, names[2], create=True),
        Automaton(names[2], total, (0, 0), create=True),
    ]
    try:
        for stage in stages:
            stage.start("process")  # a spawned child process per actor

        for i in range(1, count + 1):
            post(names[0], str(i).encode())
        stages[0].drain()  # no more input: finish the inbox, then EXIT (which drains the next)

        wait_all(stages, timeout=60)
        for stage in stages:
            print(stage.statistics())

        seen, result = ast.literal_eval(stages[2].statistics().state)  # the state's repr
        expected = count * (count + 1) * (2 * count + 1) // 6
        print(f"sum of squares 1..{count} = {result} (expected {expected}, {seen} values)")
        return 0 if (seen, result) == (count, expected) else 1
    finally:
        for stage in stages:
            stage.unlink()
            stage.close()


if __name__ == "__main__":
    prefix = sys.argv[1] if len(sys.argv) > 1 else "example.pipeline"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    sys.exit(main(prefix, count))
