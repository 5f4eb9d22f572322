/* event.c -- Event, Gate and Countdown; see event.h. */
#include "event.h"

size_t rsm_event_size(uint32_t nslots)
{
    return offsetof(rsm_event, wq) + rsm_wq_size(nslots);
}

void rsm_event_init(rsm_event *e, uint32_t word, uint32_t aux, uint32_t nslots)
{
    rsm_wq_init(&e->wq, nslots);
    e->word = word;
    e->aux = aux;
    e->generation = 0;
    e->finisher_pid = 0;
}

static void wake_all(rsm_event *e, uint32_t token)
{
    if (atomic_load(&e->wq.nwaiters) > 0 || atomic_load(&e->wq.noverflow) > 0)
        rsm_wq_wake(&e->wq, 0x7FFFFFFF, RSM_WAKE_FIFO, RSM_KIND_ANY, token, NULL, 0);
}

void rsm_event_abandon(rsm_event *e, rsm_waiter *w)
{
    rsm_wq_cancel(&e->wq, w); /* broadcast wakes need no passing on */
}

/* The common loop: `ready` tests the word (and may claim it, for the Gate). */
typedef int (*rsm_event_try)(rsm_event *e, uint32_t mask, uint32_t want);

static int wait_loop(rsm_event *e, rsm_waiter *w, uint32_t mask, uint32_t want, int64_t deadline_ns,
                     rsm_event_try ready)
{
    for (;;) {
        if (ready(e, mask, want)) {
            rsm_wq_cancel(&e->wq, w);
            return RSM_OK;
        }
        if (deadline_ns >= 0 && (deadline_ns == 0 || rsm_now_ns() >= deadline_ns)) {
            rsm_wq_cancel(&e->wq, w);
            return RSM_TIMEOUT;
        }
        if (w->slot == RSM_WAITER_NONE) {
            rsm_wq_enqueue(&e->wq, w, 0);
            continue;
        }
        int r = rsm_wq_wait(&e->wq, w, deadline_ns);
        /* Woken by Event.set: True even if clear() followed (threading semantics), if that
         * set() came after this wait began; a late wake-up of an older one is ignored. */
        if (r == RSM_OK && w->token == RSM_TOKEN_SIGNAL && (atomic_load(&e->word) >> 1) != w->stage)
            return RSM_OK;
        if (r == RSM_OK)
            continue;
        if (r == RSM_TIMEOUT) {
            rsm_wq_cancel(&e->wq, w);
            /* A last look: the deadline and the set() may have crossed. */
            return ready(e, mask, want) ? RSM_OK : RSM_TIMEOUT;
        }
        return r;
    }
}

static int word_matches(rsm_event *e, uint32_t mask, uint32_t want)
{
    return (atomic_load(&e->word) & mask) == want;
}

int rsm_event_wait(rsm_event *e, rsm_waiter *w, uint32_t mask, uint32_t want, int64_t deadline_ns)
{
    if (w->slot == RSM_WAITER_NONE) /* a new wait, not the next slice of one: the sets so far */
        w->stage = atomic_load(&e->word) >> 1;
    return wait_loop(e, w, mask, want, deadline_ns, word_matches);
}

void rsm_event_set(rsm_event *e)
{
    uint32_t v = atomic_load(&e->word);
    do {
        if (v & RSM_EVENT_SET)
            return;
    } while (!atomic_compare_exchange_weak(&e->word, &v, (v + 2) | RSM_EVENT_SET));
    wake_all(e, RSM_TOKEN_SIGNAL);
}

void rsm_event_clear(rsm_event *e)
{
    atomic_fetch_and(&e->word, ~RSM_EVENT_SET);
}

static int gate_pass(rsm_event *e, uint32_t mask, uint32_t want)
{
    (void)mask;
    (void)want;
    for (;;) {
        uint32_t v = atomic_load(&e->word);
        if (!(v & RSM_GATE_OPEN))
            return 0;
        uint32_t entries = (v & RSM_COUNT_MASK);
        if (entries < RSM_COUNT_MASK)
            entries++;
        uint32_t next = RSM_GATE_OPEN | entries;
        if (e->aux && entries >= e->aux)
            next = entries; /* the N-th entry closes the gate */
        if (atomic_compare_exchange_strong(&e->word, &v, next))
            return 1;
    }
}

int rsm_gate_enter(rsm_event *e, rsm_waiter *w, int64_t deadline_ns)
{
    return wait_loop(e, w, 0, 0, deadline_ns, gate_pass);
}

void rsm_gate_open(rsm_event *e)
{
    atomic_store(&e->word, RSM_GATE_OPEN);
    atomic_fetch_add(&e->generation, 1);
    wake_all(e, 0);
}

void rsm_gate_close(rsm_event *e)
{
    atomic_fetch_and(&e->word, RSM_COUNT_MASK);
}

int rsm_countdown_down(rsm_event *e, uint32_t n, int *reached_zero)
{
    *reached_zero = 0;
    for (;;) {
        uint32_t v = atomic_load(&e->word);
        uint32_t count = v & RSM_COUNT_MASK;
        if (n > count)
            return RSM_OVERFLOW;
        uint32_t next = count - n;
        if (atomic_compare_exchange_strong(&e->word, &v, next)) {
            if (next == 0 && count != 0) {
                atomic_store(&e->finisher_pid, rsm_getpid());
                *reached_zero = 1;
            }
            return RSM_OK;
        }
    }
}

void rsm_countdown_finish(rsm_event *e)
{
    atomic_fetch_or(&e->word, RSM_COUNTDOWN_DONE);
    wake_all(e, 0);
}

void rsm_countdown_reset(rsm_event *e, uint32_t count)
{
    atomic_store(&e->finisher_pid, 0);
    atomic_store(&e->word, count & RSM_COUNT_MASK);
    atomic_fetch_add(&e->generation, 1);
    if (count == 0)
        rsm_countdown_finish(e);
}
