"""``python -m rsm_shm.fsm._host NAME GENERATION``: host an automaton in a subprocess.

The parent (Automaton.start(host="subprocess")) writes ``pickle.dumps((handler, state))``
to this process's stdin; the handler must therefore be importable by name here.  Exit
status: 0 clean, EXIT_STATUS_HANDLER_ERROR if the handler raised (the report is in the
automaton's status block), 2 on a usage error.
"""

from __future__ import annotations

import pickle
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print(
            "usage: python -m rsm_shm.fsm._host NAME GENERATION  (handler and state pickled on stdin)", file=sys.stderr
        )
        return 2
    from ._status import ExitKind
    from ._runner import EXIT_STATUS_HANDLER_ERROR, _run_host

    try:
        handler, state = pickle.loads(sys.stdin.buffer.read())
    except Exception:
        _report_load_failure(argv[0], int(argv[1]))
        return EXIT_STATUS_HANDLER_ERROR
    kind = _run_host(argv[0], int(argv[1]), handler, state)
    return 0 if kind is ExitKind.CLEAN else EXIT_STATUS_HANDLER_ERROR


def _report_load_failure(name: str, generation: int) -> None:
    """The handler could not be unpickled here (not importable by name): end the automaton
    with that traceback so the joiner sees why, instead of a bare exit status."""
    import traceback

    from . import _inbox
    from ._status import ExitKind
    from ._runner import _finish_dead
    from .automaton import Automaton

    text = (
        f"automaton {name!r}: the subprocess host could not load the handler and initial state "
        f"(a subprocess host needs a handler importable by name, not one defined in __main__)\n"
        + traceback.format_exc()
    )
    a = Automaton(name, create=False)
    ring = None
    try:
        ring = _inbox.open_inbox(name, generation, a._status.inbox_capacity, create=False)
        _finish_dead(a._status, generation, ring, ExitKind.ERROR, text)
    finally:
        if ring is not None:
            _inbox.release(ring)
        a.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
