"""The linearizability checker accepts what is linearizable and rejects what is not.

A checker that cannot fail proves nothing, so most of these tests are rejections: stale
reads, lost writes, compare-and-set anomalies, with and without operations of unknown
outcome.  The checker is also compared with a brute-force search over every order on
thousands of small random histories, and timed on a history of a few thousand operations.
"""

from __future__ import annotations

import itertools
import math
import pickle
import random
import time

import pytest

from rsm_shm.cluster.linearizability import (
    UNKNOWN,
    CheckResult,
    KVModel,
    Operation,
    Recorder,
    check,
    check_kv,
)

INF = math.inf


def op(client, kind, key, call, ret, value=None, expected=None, output=UNKNOWN):
    return Operation(
        client=client, kind=kind, key=key, call=call, ret=ret, value=value, expected=expected, output=output
    )


def put(c, k, v, call, ret):
    return op(c, "put", k, call, ret, value=v, output=None)


def get(c, k, out, call, ret):
    return op(c, "get", k, call, ret, output=out)


def cas(c, k, exp, new, out, call, ret):
    return op(c, "cas", k, call, ret, value=new, expected=exp, output=out)


def delete(c, k, call, ret, out=None):
    return op(c, "delete", k, call, ret, output=out)


# -- accepts ---------------------------------------------------------------------------


def test_empty_and_sequential_histories_are_linearizable():
    assert check_kv([]).ok is True
    h = [
        put(1, "x", "a", 0, 1),
        get(1, "x", "a", 2, 3),
        delete(1, "x", 4, 5),
        get(1, "x", None, 6, 7),
        cas(1, "x", None, "b", True, 8, 9),
        get(2, "x", "b", 10, 11),
    ]
    r = check_kv(h)
    assert r.ok is True and r.operations == 6 and bool(r)


def test_concurrent_read_may_see_old_or_new_value():
    for seen in (None, "a"):
        h = [put(1, "x", "a", 0, 10), get(2, "x", seen, 1, 2)]
        assert check_kv(h).ok is True, seen


def test_reads_must_agree_on_the_order_of_concurrent_writes_but_either_order_is_fine():
    for first, second in (("a", "b"), ("b", "a")):
        h = [put(1, "x", "a", 0, 10), put(2, "x", "b", 0, 10), get(3, "x", first, 11, 12), get(3, "x", first, 13, 14)]
        assert check_kv(h).ok is True
        # Both orders are possible while the writes are in flight.
        h = [put(1, "x", "a", 0, 10), put(2, "x", "b", 0, 10), get(3, "x", first, 1, 2), get(3, "x", second, 3, 4)]
        assert check_kv(h).ok is True


def test_touching_intervals_are_concurrent():
    # A read invoked at the instant a write completes may or may not see it.
    assert check_kv([put(1, "x", "a", 0, 5), get(2, "x", None, 5, 6)]).ok is True


def test_timed_out_write_may_take_effect_late_or_never():
    lost = op(1, "put", "x", 0, INF, value="a")
    assert check_kv([lost, get(2, "x", None, 5, 6)]).ok is True
    assert check_kv([lost, get(2, "x", "a", 5, 6)]).ok is True
    # ... even after a later write, since its effect may arrive any time.
    assert check_kv([lost, put(2, "x", "b", 1, 2), get(2, "x", "a", 5, 6)]).ok is True


def test_timed_out_cas_and_read_of_unknown_result():
    h = [
        put(1, "x", "a", 0, 1),
        op(2, "cas", "x", 2, INF, value="b", expected="a"),
        get(3, "x", "b", 5, 6),
        op(3, "get", "x", 7, INF),
    ]
    assert check_kv(h).ok is True


def test_delete_output_is_checked_when_it_is_a_bool():
    assert check_kv([put(1, "x", "a", 0, 1), delete(1, "x", 2, 3, out=True)]).ok is True
    assert check_kv([delete(1, "x", 2, 3, out=False)]).ok is True
    assert check_kv([delete(1, "x", 2, 3, out=True)]).ok is False


# -- rejects ---------------------------------------------------------------------------


def test_rejects_stale_read():
    h = [put(1, "x", "a", 0, 1), get(2, "x", None, 2, 3)]
    r = check_kv(h)
    assert r.ok is False and not r
    assert r.key == "x" and r.stuck_at is not None
    assert "no linearization" in r.explanation


def test_rejects_stale_read_after_a_newer_value_was_seen():
    # Once a reader saw "b", nobody may later see the overwritten "a".
    h = [put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 10), get(2, "x", "b", 3, 4), get(3, "x", "a", 5, 6)]
    assert check_kv(h).ok is False


def test_rejects_lost_write():
    h = [put(1, "x", "a", 0, 1), put(2, "x", "b", 2, 3), get(3, "x", "a", 4, 5)]
    assert check_kv(h).ok is False


def test_rejects_a_value_nobody_wrote():
    assert check_kv([put(1, "x", "a", 0, 1), get(2, "x", "z", 0, 2)]).ok is False


def test_rejects_flip_flopping_reads_of_concurrent_writes():
    h = [put(1, "x", "a", 0, 10), put(2, "x", "b", 0, 10), get(3, "x", "a", 11, 12), get(3, "x", "b", 13, 14)]
    assert check_kv(h).ok is False


def test_rejects_two_successful_cas_from_the_same_value():
    h = [put(1, "x", "0", 0, 1), cas(2, "x", "0", "1", True, 2, 5), cas(3, "x", "0", "2", True, 2, 5)]
    assert check_kv(h).ok is False
    # One winner is fine.
    h[2] = cas(3, "x", "0", "2", False, 2, 5)
    assert check_kv(h).ok is True


def test_rejects_cas_that_fails_although_nothing_changed_the_value():
    h = [put(1, "x", "0", 0, 1), cas(2, "x", "0", "1", False, 2, 3)]
    assert check_kv(h).ok is False


def test_rejects_cas_success_whose_effect_is_not_seen():
    h = [put(1, "x", "0", 0, 1), cas(2, "x", "0", "1", True, 2, 3), get(3, "x", "0", 4, 5)]
    assert check_kv(h).ok is False


def test_rejects_cas_success_on_a_value_that_was_never_there():
    assert check_kv([put(1, "x", "0", 0, 1), cas(2, "x", "9", "1", True, 2, 3)]).ok is False


def test_timed_out_write_cannot_be_undone_once_seen():
    # The lost write may land late, but once observed it stays (no write follows).
    h = [op(1, "put", "x", 0, INF, value="a"), get(2, "x", "a", 5, 6), get(2, "x", None, 7, 8)]
    assert check_kv(h).ok is False


def test_timed_out_write_cannot_take_effect_before_it_was_invoked():
    h = [get(2, "x", "a", 0, 1), op(1, "put", "x", 2, INF, value="a")]
    assert check_kv(h).ok is False


def test_violation_on_one_key_among_many_is_found_and_named():
    h = []
    for k in range(20):
        h += [put(1, f"k{k}", k, 10 * k, 10 * k + 1), get(2, f"k{k}", k, 10 * k + 2, 10 * k + 3)]
    h.append(get(3, "k7", None, 500, 501))
    r = check_kv(h)
    assert r.ok is False and r.key == "k7"
    assert r.stuck_at == h[-1]


# -- the checker against a brute-force search ----------------------------------------


def brute_force(history):
    """Linearizable iff some order of all known ops (plus any subset of the unknown ones)
    respects real time and the model."""
    model = KVModel()
    for part in model.partition(history):
        known = [o for o in part if o.ret != INF]
        unknown = [o for o in part if o.ret == INF]
        found = False
        for r in range(len(unknown) + 1):
            for chosen in itertools.combinations(unknown, r):
                for order in itertools.permutations(known + list(chosen)):
                    if any(order[j].ret < order[i].call for i in range(len(order)) for j in range(i + 1, len(order))):
                        continue
                    state, ok = model.init(), True
                    for o in order:
                        ok, state = model.step(state, o)
                        if not ok:
                            break
                    if ok:
                        found = True
                        break
                if found:
                    break
            if found:
                break
        if not found:
            return False
    return True


def random_small_history(rng):
    ops = []
    for _ in range(rng.randint(1, 6)):
        c = rng.randint(1, 3)
        call = rng.randint(0, 8)
        ret = INF if rng.random() < 0.15 else call + rng.randint(0, 4)
        kind = rng.choice(["put", "get", "get", "cas", "delete"])
        key = rng.choice(["x", "x", "y"])
        val = rng.choice(["a", "b", None])
        if ret == INF:
            ops.append(op(c, kind, key, call, ret, value=val or "a", expected=rng.choice(["a", None])))
        elif kind == "put":
            ops.append(put(c, key, val or "a", call, ret))
        elif kind == "get":
            ops.append(get(c, key, val, call, ret))
        elif kind == "cas":
            ops.append(cas(c, key, rng.choice(["a", "b", None]), val or "b", rng.random() < 0.5, call, ret))
        else:
            ops.append(delete(c, key, call, ret, out=rng.choice([None, True, False])))
    return ops


def test_agrees_with_brute_force_on_random_small_histories():
    rng = random.Random(1234)
    verdicts = {True: 0, False: 0}
    for _ in range(3000):
        h = random_small_history(rng)
        expected = brute_force(h)
        got = check_kv(h).ok
        assert got is expected, "\n".join(map(str, h))
        verdicts[expected] += 1
    # The generator exercises both answers a fair number of times.
    assert verdicts[True] > 300 and verdicts[False] > 300, verdicts


# -- size and time ---------------------------------------------------------------------


def simulated_history(rng, n_ops, clients=8, keys=4, timeout_rate=0.01):
    """A history that is linearizable by construction: each op takes effect at a random
    instant inside its interval on one real dict; a timed-out op may take effect or not."""
    pending = []
    t = [0.0] * clients
    for _ in range(n_ops):
        c = rng.randrange(clients)
        call = t[c] + rng.random()
        ret = call + rng.random() * 3
        t[c] = ret
        lin = rng.uniform(call, ret)
        kind = rng.choice(["put", "get", "get", "cas", "delete"])
        key = f"k{rng.randrange(keys)}"
        pending.append((lin, c, kind, key, call, ret, rng.random() < timeout_rate, rng.random() < 0.5))
    pending.sort()
    store, out = {}, []
    for lin, c, kind, key, call, ret, timed_out, happens in pending:
        value = f"v{len(out)}"
        expected = store.get(key) if rng.random() < 0.7 else "nope"
        if timed_out:
            if happens:
                if kind == "put":
                    store[key] = value
                elif kind == "delete":
                    store.pop(key, None)
                elif kind == "cas" and store.get(key) == expected:
                    store[key] = value
            out.append(op(c, kind, key, call, INF, value=value, expected=expected))
        elif kind == "put":
            store[key] = value
            out.append(put(c, key, value, call, ret))
        elif kind == "get":
            out.append(get(c, key, store.get(key), call, ret))
        elif kind == "delete":
            out.append(delete(c, key, call, ret, out=store.pop(key, None) is not None))
        else:
            ok = store.get(key) == expected
            if ok:
                store[key] = value
            out.append(cas(c, key, expected, value, ok, call, ret))
    rng.shuffle(out)  # the checker must not depend on the order it is given
    return out


@pytest.mark.timeout(60)
def test_checks_a_few_thousand_operations_in_bounded_time():
    rng = random.Random(7)
    h = simulated_history(rng, 4000)
    start = time.monotonic()
    r = check_kv(h, timeout=30)
    elapsed = time.monotonic() - start
    assert r.ok is True, r.explanation
    assert r.operations == sum(1 for o in h if not (o.kind == "get" and o.unknown))
    assert elapsed < 10, f"{len(h)} ops took {elapsed:.1f} s"

    # The same history with one read made stale is rejected, also in bounded time.
    reads = [i for i, o in enumerate(h) if o.kind == "get" and not o.unknown and o.output is not None]
    i = reads[len(reads) // 2]
    bad = list(h)
    victim = bad[i]
    writes = [
        o for o in h if o.key == victim.key and o.kind == "put" and o.ret < victim.call and o.value != victim.output
    ]
    bad[i] = get(victim.client, victim.key, writes[0].value if writes else "never", victim.call, victim.ret)
    start = time.monotonic()
    r = check_kv(bad, timeout=30)
    assert r.ok is False, "a stale read went unnoticed"
    assert r.key == victim.key
    assert time.monotonic() - start < 10


def test_gives_up_with_an_undecided_result_when_out_of_time():
    # Many fully concurrent unknown writes and reads that no order satisfies is the
    # exponential worst case; a zero budget must come back undecided, not hang.
    h = [op(i, "put", "x", 0, INF, value=i) for i in range(40)]
    h += [get(100 + i, "x", i, 1, 2) for i in range(2)]
    h += [get(200, "x", "nope", 3, 4)]
    r = check(h, KVModel(), timeout=0.0)
    assert r.ok is None and not r and "undecided" in r.explanation


# -- recording -------------------------------------------------------------------------


def test_recorder_records_times_outputs_and_unknown_outcomes():
    clock = itertools.count()
    rec = Recorder(client=5, clock=lambda: float(next(clock)))
    assert rec.run("get", "x", lambda: None) is None

    def timeout():
        raise TimeoutError

    assert rec.run("put", "x", timeout, value="a") is UNKNOWN

    def crash():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        rec.run("cas", "x", crash, value="b", expected="a")
    assert rec.run("put", "x", lambda: b"ignored", value="c") is not UNKNOWN
    got, lost, crashed, wrote = rec.ops
    assert (got.call, got.ret, got.output) == (0.0, 1.0, None)
    assert lost.ret == INF and lost.unknown and crashed.unknown and crashed.expected == "a"
    assert wrote.output is None and wrote.value == "c"
    assert all(o.client == 5 for o in rec.ops)
    # Histories travel between processes: UNKNOWN stays the one singleton.
    again = pickle.loads(pickle.dumps(rec.ops))
    assert again[1].output is UNKNOWN and again == rec.ops
    assert check_kv(again).ok is True


def test_misuse_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="kind must be one of"):
        Operation(client=1, kind="incr", key="x", call=0, ret=1)
    with pytest.raises(ValueError, match="before it is invoked"):
        Operation(client=1, kind="get", key="x", call=2, ret=1)
    assert isinstance(check_kv([]), CheckResult)
