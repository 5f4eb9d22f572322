/* waitq.c -- per-waiter slots with their own futex words; see waitq.h for the protocol. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "waitq.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

static inline uint32_t make_state(uint32_t gen, uint32_t token, uint32_t kind, uint32_t phase)
{
    return (gen << 16) | ((token & 0xFFu) << 8) | ((kind & 0xFu) << 4) | (phase & 0xFu);
}


void rsm_wq_init(rsm_waitq *q, uint32_t nslots)
{
    memset(q, 0, rsm_wq_size(nslots));
    q->nslots = nslots;
    q->spin_ns = RSM_SPIN_MAX_NS / 4;
    q->waker_cpu = 0;
}

static void adapt_spin(rsm_waitq *q, int caught)
{
    uint32_t cur = atomic_load_explicit(&q->spin_ns, memory_order_relaxed);
    uint32_t next = caught ? cur * 2 : cur / 2;
    if (next < RSM_SPIN_MIN_NS)
        next = RSM_SPIN_MIN_NS;
    if (next > RSM_SPIN_MAX_NS)
        next = RSM_SPIN_MAX_NS;
    if (next != cur)
        atomic_store_explicit(&q->spin_ns, next, memory_order_relaxed);
}

int rsm_spin_while(_Atomic uint32_t *word, uint32_t value, uint32_t spin_ns)
{
    if (spin_ns == 0)
        return 0;
    int64_t until = rsm_now_ns() + spin_ns;
    for (;;) {
        /* A pause costs ~20-140 ns depending on the CPU: read the clock often enough that
         * the budget means what it says (the vDSO clock read is ~20 ns). */
        for (int i = 0; i < 8; i++) {
            if (atomic_load_explicit(word, memory_order_acquire) != value)
                return 1;
            rsm_cpu_relax();
        }
        if (rsm_now_ns() >= until)
            return 0;
    }
}

void rsm_wq_enqueue(rsm_waitq *q, rsm_waiter *w, uint32_t kind)
{
    uint32_t n = rsm_wq_nslots(q);
    uint32_t tid = rsm_gettid();
    uint32_t start = n ? (tid * 2654435761u) % n : 0;
    w->token = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (start + k) % n;
        rsm_wslot *s = &q->slots[i];
        uint32_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (rsm_slot_phase(st) != RSM_SLOT_FREE)
            continue;
        uint32_t gen = (rsm_slot_gen(st) + 1) & 0xFFFFu;
        uint32_t claimed = make_state(gen, 0, kind, RSM_SLOT_CLAIMED);
        if (!atomic_compare_exchange_strong(&s->state, &st, claimed))
            continue;
        atomic_store_explicit(&s->pid, rsm_getpid(), memory_order_relaxed);
        atomic_store_explicit(&s->tid, tid, memory_order_relaxed);
        atomic_store_explicit(&s->ticket, atomic_fetch_add(&q->next_ticket, 1), memory_order_relaxed);
        atomic_store_explicit(&s->state, make_state(gen, 0, kind, RSM_SLOT_WAITING), memory_order_release);
        atomic_fetch_add(&q->nwaiters, 1); /* seq_cst: pairs with the waker's load */
        atomic_store_explicit(&q->hint, (uint16_t)i, memory_order_relaxed);
        w->slot = (int32_t)i;
        return;
    }
    /* Every slot is taken: fall back to a broadcast word.  Waiters here lose FIFO order
     * and exact wake counts, but never a wake-up (every wake bumps overflow_seq). */
    atomic_fetch_add(&q->noverflow, 1);
    w->seq = atomic_load(&q->overflow_seq);
    w->slot = RSM_WAITER_OVERFLOW;
}

static int slot_index_ok(const rsm_waitq *q, int32_t i)
{
    return i >= 0 && (uint32_t)i < rsm_wq_nslots(q);
}

int rsm_wq_wait(rsm_waitq *q, rsm_waiter *w, int64_t deadline_ns)
{
    /* A sleep normally ends with its slice (RSM_SLICE_NS), which arms a kernel timer per
     * sleep: on a shared CPU the largest cost of the sleeping path.  An infinite wait
     * sleeps without one when its caller allows it (w->untimed: signals interrupt this
     * thread and it has nothing to check between slices; fast_sync.c says when) and it is
     * the only waiter of the queue: wakes go to the oldest waiter first, so no wake-up can
     * be lost to another (dead) waiter while it sleeps, the one case a slice heals. */
    int64_t end = w->untimed && deadline_ns < 0 && atomic_load(&q->nwaiters) == 1 &&
                          atomic_load(&q->noverflow) == 0
                      ? -1
                      : rsm_slice_end(deadline_ns);
    if (w->slot == RSM_WAITER_OVERFLOW) {
        if (atomic_load(&q->overflow_seq) == w->seq) {
            int r = rsm_futex_wait(&q->overflow_seq, w->seq, end);
            (void)r;
        }
        if (atomic_load(&q->overflow_seq) != w->seq) {
            atomic_fetch_sub(&q->noverflow, 1);
            w->slot = RSM_WAITER_NONE;
            w->token = 0;
            return RSM_OK;
        }
        return (deadline_ns >= 0 && rsm_now_ns() >= deadline_ns) ? RSM_TIMEOUT : RSM_SLICE;
    }
    if (!slot_index_ok(q, w->slot))
        return RSM_INVAL;
    rsm_wslot *s = &q->slots[w->slot];
    uint32_t st = atomic_load(&s->state);
    if (rsm_slot_phase(st) == RSM_SLOT_WAITING && !w->nospin) {
        w->nospin = 1; /* spin once per wait, not once per slice */
        /* Spinning only pays if the waker runs elsewhere right now; if the last waker ran
         * on our CPU, it cannot run while we spin. */
        if (atomic_load_explicit(&q->waker_cpu, memory_order_relaxed) != (uint16_t)(sched_getcpu() + 1)) {
            static RSM_THREAD_LOCAL uint32_t waits;
            uint32_t budget = atomic_load_explicit(&q->spin_ns, memory_order_relaxed);
            if (budget <= RSM_SPIN_MIN_NS && ++waits % RSM_SPIN_PROBE_EVERY == 0)
                budget = RSM_SPIN_MAX_NS;
            int caught = rsm_spin_while(&s->state, st, budget);
            adapt_spin(q, caught);
            st = atomic_load(&s->state);
        }
    }
    for (;;) {
        uint32_t phase = rsm_slot_phase(st);
        if (phase == RSM_SLOT_WOKEN) {
            w->token = rsm_slot_token(st);
            atomic_store(&s->state, make_state(rsm_slot_gen(st), 0, 0, RSM_SLOT_FREE));
            w->slot = RSM_WAITER_NONE;
            return RSM_OK;
        }
        if (phase == RSM_SLOT_WAITING) {
            uint32_t sleeping = (st & ~0xFu) | RSM_SLOT_SLEEPING;
            if (!atomic_compare_exchange_strong(&s->state, &st, sleeping))
                continue;
            st = sleeping;
        }
        if (phase == RSM_SLOT_HANDING) {
            /* A waker is mid hand-off: a few instructions.  Yield rather than sleep. */
            sched_yield();
        } else if (phase == RSM_SLOT_SLEEPING || phase == RSM_SLOT_WAITING) {
            int r = rsm_futex_wait(&s->state, st, end);
            if (r == EINTR) {
                st = atomic_load(&s->state);
                if (rsm_slot_phase(st) == RSM_SLOT_WOKEN)
                    continue;
                return RSM_SLICE;
            }
        } else {
            return RSM_INVAL; /* FREE/CLAIMED: someone freed our slot (reaped as dead?) */
        }
        st = atomic_load(&s->state);
        if (rsm_slot_phase(st) == RSM_SLOT_WOKEN)
            continue;
        if (end < 0)
            return RSM_SLICE; /* an untimed sleep woke without a wake-up: the caller looks around */
        int64_t now = rsm_now_ns();
        if (deadline_ns >= 0 && now >= deadline_ns)
            return RSM_TIMEOUT;
        if (now >= end)
            return RSM_SLICE;
    }
}

int rsm_wq_cancel(rsm_waitq *q, rsm_waiter *w)
{
    if (w->slot == RSM_WAITER_NONE)
        return 0;
    if (w->slot == RSM_WAITER_OVERFLOW) {
        atomic_fetch_sub(&q->noverflow, 1);
        w->slot = RSM_WAITER_NONE;
        return 0;
    }
    if (!slot_index_ok(q, w->slot)) {
        w->slot = RSM_WAITER_NONE;
        return 0;
    }
    rsm_wslot *s = &q->slots[w->slot];
    int spins = 0;
    for (;;) {
        uint32_t st = atomic_load(&s->state);
        uint32_t phase = rsm_slot_phase(st);
        uint32_t freed = make_state(rsm_slot_gen(st), 0, 0, RSM_SLOT_FREE);
        if (phase == RSM_SLOT_WAITING || phase == RSM_SLOT_SLEEPING) {
            if (atomic_compare_exchange_strong(&s->state, &st, freed)) {
                atomic_fetch_sub(&q->nwaiters, 1);
                w->slot = RSM_WAITER_NONE;
                return 0;
            }
            continue;
        }
        if (phase == RSM_SLOT_WOKEN) {
            w->token = rsm_slot_token(st);
            atomic_store(&s->state, freed);
            w->slot = RSM_WAITER_NONE;
            return 1;
        }
        if (phase == RSM_SLOT_HANDING) {
            if (++spins < 10000) {
                sched_yield();
                continue;
            }
            /* The waker died between choosing us and publishing the wake. */
            atomic_store(&s->state, freed);
            w->slot = RSM_WAITER_NONE;
            return 2;
        }
        /* FREE or CLAIMED by someone else: our slot was reaped; nothing to undo. */
        w->slot = RSM_WAITER_NONE;
        return 0;
    }
}

static void wake_overflow(rsm_waitq *q)
{
    if (atomic_load(&q->noverflow) > 0) {
        atomic_fetch_add(&q->overflow_seq, 1);
        rsm_futex_wake(&q->overflow_seq, 0x7FFFFFFF);
    }
}

/* Reap a sleeping slot whose process is gone; returns 1 if it did. */
static int reap_if_dead(rsm_waitq *q, rsm_wslot *s, uint32_t st)
{
    if (rsm_pid_alive(atomic_load(&s->pid)))
        return 0;
    uint32_t freed = make_state(rsm_slot_gen(st), 0, 0, RSM_SLOT_FREE);
    if (atomic_compare_exchange_strong(&s->state, &st, freed)) {
        atomic_fetch_sub(&q->nwaiters, 1);
        return 1;
    }
    return 0;
}

int rsm_wq_wake(rsm_waitq *q, int n, int order, uint32_t kind_mask, uint32_t token,
                _Atomic uint32_t *hand_word, uint32_t hand_bits)
{
    int woken = 0;
    uint32_t nslots = rsm_wq_nslots(q);
    int exact = (order & RSM_WAKE_EXACT) || hand_word != NULL;
    order &= 0xFF;
    /* Only waiters that arrived before this call are candidates: a waiter woken here may
     * come straight back (Event: wait, clear, wait again) and must not be woken again by
     * the same set().  Later arrivals re-check the condition themselves (Dekker), so
     * skipping them loses nothing, and the loop is bounded. */
    uint64_t ticket_limit = atomic_load(&q->next_ticket);
    if (atomic_load(&q->noverflow) > 0)
        wake_overflow(q);
    uint32_t queued;
    while (woken < n && (queued = atomic_load(&q->nwaiters)) > 0) {
        int32_t best = -1;
        uint64_t best_ticket = 0;
        uint32_t best_state = 0;
        /* The walk stops once it has seen as many candidates as nwaiters counts waiters:
         * with one sleeper (a ping-pong) that is a few slots, not all of them.  Only
         * candidates count, so a stop always has one to wake; a waiter racing with the
         * walk (published, not yet counted) can only cost FIFO order, never the wake. */
        uint32_t seen = 0, first = nslots ? atomic_load_explicit(&q->hint, memory_order_relaxed) % nslots : 0;
        for (uint32_t k = 0; k < nslots && seen < queued; k++) {
            uint32_t i = first + k < nslots ? first + k : first + k - nslots;
            uint32_t st = atomic_load_explicit(&q->slots[i].state, memory_order_acquire);
            uint32_t phase = rsm_slot_phase(st);
            if (phase != RSM_SLOT_WAITING && phase != RSM_SLOT_SLEEPING)
                continue;
            if (!(kind_mask & (1u << rsm_slot_kind(st))))
                continue;
            uint64_t t = atomic_load_explicit(&q->slots[i].ticket, memory_order_relaxed);
            if (t >= ticket_limit)
                continue;
            seen++;
            if (best < 0 || (order == RSM_WAKE_FIFO ? t < best_ticket : t > best_ticket)) {
                best = (int32_t)i;
                best_ticket = t;
                best_state = st;
            }
        }
        if (best < 0)
            break;
        rsm_wslot *s = &q->slots[best];
        uint32_t st = best_state;
        uint32_t phase = rsm_slot_phase(st);
        /* Only a wake that hands something over checks that a sleeper still lives; a
         * spinner is running right now and needs no check. */
        if (exact && phase == RSM_SLOT_SLEEPING && reap_if_dead(q, s, st))
            continue;
        uint32_t gen = rsm_slot_gen(st), kind = rsm_slot_kind(st);
        if (hand_word) {
            uint32_t handing = make_state(gen, 0, kind, RSM_SLOT_HANDING);
            if (!atomic_compare_exchange_strong(&s->state, &st, handing))
                continue;
            atomic_fetch_sub(&q->nwaiters, 1);
            atomic_store(hand_word, atomic_load(&s->tid) | hand_bits);
            atomic_store(&s->state, make_state(gen, token, kind, RSM_SLOT_WOKEN));
            rsm_futex_wake(&s->state, 1); /* the waiter may have slept in HANDING's yield loop */
        } else {
            if (!atomic_compare_exchange_strong(&s->state, &st, make_state(gen, token, kind, RSM_SLOT_WOKEN)))
                continue;
            atomic_fetch_sub(&q->nwaiters, 1);
            if (phase == RSM_SLOT_SLEEPING)
                rsm_futex_wake(&s->state, 1);
        }
        woken++;
    }
    if (woken) {
        uint16_t cpu = (uint16_t)(sched_getcpu() + 1);
        if (atomic_load_explicit(&q->waker_cpu, memory_order_relaxed) != cpu)
            atomic_store_explicit(&q->waker_cpu, cpu, memory_order_relaxed);
    }
    return woken;
}

int rsm_wq_notify(rsm_waitq *q, int n, int order, uint32_t kind_mask)
{
    return rsm_wq_wake(q, n, order | RSM_WAKE_EXACT, kind_mask, 0, NULL, 0);
}

int rsm_wq_reap(rsm_waitq *q)
{
    int reaped = 0;
    uint32_t nslots = rsm_wq_nslots(q);
    for (uint32_t i = 0; i < nslots; i++) {
        rsm_wslot *s = &q->slots[i];
        uint32_t st = atomic_load(&s->state);
        uint32_t phase = rsm_slot_phase(st);
        /* CLAIMED slots may still carry a previous waiter's pid; HANDING is resolved by
         * its waiter.  Only published waiters are judged by their pid. */
        if (phase != RSM_SLOT_WAITING && phase != RSM_SLOT_SLEEPING && phase != RSM_SLOT_WOKEN)
            continue;
        if (rsm_pid_alive(atomic_load(&s->pid)))
            continue;
        uint32_t freed = make_state(rsm_slot_gen(st), 0, 0, RSM_SLOT_FREE);
        if (atomic_compare_exchange_strong(&s->state, &st, freed)) {
            if (phase == RSM_SLOT_WAITING || phase == RSM_SLOT_SLEEPING)
                atomic_fetch_sub(&q->nwaiters, 1);
            reaped++;
        }
    }
    return reaped;
}

uint32_t rsm_wq_count(rsm_waitq *q, uint32_t kind_mask)
{
    uint32_t c = 0, nslots = rsm_wq_nslots(q);
    for (uint32_t i = 0; i < nslots; i++) {
        uint32_t st = atomic_load_explicit(&q->slots[i].state, memory_order_relaxed);
        uint32_t phase = rsm_slot_phase(st);
        if ((phase == RSM_SLOT_WAITING || phase == RSM_SLOT_SLEEPING || phase == RSM_SLOT_HANDING) &&
            (kind_mask & (1u << rsm_slot_kind(st))))
            c++;
    }
    return c;
}
