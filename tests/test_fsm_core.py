"""The pure step rule (rsm_shm.fsm._core.Machine) against a model, with hypothesis: no
shared memory, no threads.  TRANSITION follows exactly the operations that changed the
state, carries the state before, and a chain of changes is delivered link by link."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsm_shm.fsm import Op, Opcode
from rsm_shm.fsm._core import MAX_TRANSITION_CHAIN, Machine, TransitionLoopError

pytestmark = pytest.mark.timeout(60)

N_STATES = 5
# A handler as a table: (state, opcode) -> next state.  Opcode CMD also looks at the payload.
tables = st.dictionaries(
    st.tuples(st.integers(0, N_STATES - 1), st.sampled_from(list(Opcode))),
    st.integers(0, N_STATES - 1),
)
ops = st.lists(
    st.one_of(
        st.builds(lambda p: Op(Opcode.CMD, p), st.binary(max_size=2)),
        st.sampled_from([Op(Opcode.START), Op(Opcode.DRAIN)]),
    ),
    max_size=20,
)


def model(table, state, op):
    """What deliver() must do: handler calls as (code, previous, state) triples."""
    calls = []
    old = state
    new = table.get((old, op.code), old)
    calls.append((op.code, None, old))
    chain = 0
    while new != old:
        chain += 1
        if chain > MAX_TRANSITION_CHAIN:
            return calls, None  # a loop: deliver() must raise
        calls.append((Opcode.TRANSITION, old, new))
        old, new = new, table.get((new, Opcode.TRANSITION), new)
    return calls, new


@settings(max_examples=300, deadline=None)
@given(tables, st.integers(0, N_STATES - 1), ops)
def test_deliver_matches_the_model(table, start, operations):
    seen = []

    def handler(state, op):
        seen.append((op.code, op.previous, state))
        return table.get((state, op.code), state)

    m = Machine(handler, start)
    state = start
    for op in operations:
        expected, final = model(table, state, op)
        seen.clear()
        if final is None:
            with pytest.raises(TransitionLoopError):
                m.deliver(op)
            return
        assert m.deliver(op) == final
        assert seen == expected
        state = final
    seen.clear()
    m.deliver(Op(Opcode.EXIT))
    assert [c for c, _, _ in seen] == [Opcode.EXIT]  # nothing after EXIT
