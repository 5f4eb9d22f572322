/* sem.c -- counting semaphores over the wait queue; see sem.h. */
#include "sem.h"

#include <string.h>

size_t rsm_sem_size(uint32_t nslots, uint32_t flags)
{
    size_t holders = (flags & RSM_SEM_ROBUST) ? (size_t)nslots * sizeof(rsm_share) : 0;
    return offsetof(rsm_sem, wq) + rsm_wq_size(nslots) + holders;
}

rsm_share *rsm_sem_holders(rsm_sem *s)
{
    return (rsm_share *)((char *)&s->wq + rsm_wq_size(rsm_wq_nslots(&s->wq)));
}

uint32_t rsm_sem_nholders(const rsm_sem *s)
{
    /* Python checks nholders against the (CRC-checked) header; walks stay bounded anyway. */
    if (!(s->flags & RSM_SEM_ROBUST))
        return 0;
    return s->nholders > RSM_WQ_MAX_SLOTS ? RSM_WQ_MAX_SLOTS : s->nholders;
}

void rsm_sem_init(rsm_sem *s, uint32_t value, uint32_t max, uint32_t policy, uint32_t flags, uint32_t nslots)
{
    rsm_wq_init(&s->wq, nslots);
    s->count = value & RSM_SEM_VALUE_MAX;
    s->max = max;
    s->policy = policy;
    s->flags = flags;
    s->nholders = (flags & RSM_SEM_ROBUST) ? nslots : 0;
    s->untracked = 0;
    if (flags & RSM_SEM_ROBUST)
        memset(rsm_sem_holders(s), 0, (size_t)nslots * sizeof(rsm_share));
}

static int release_raw(rsm_sem *s, uint32_t n, int saturate);

/* Robust: count a permit this process just took. */
static void record(rsm_sem *s, uint32_t n)
{
    if (!rsm_share_add(rsm_sem_holders(s), rsm_sem_nholders(s), n))
        atomic_fetch_add(&s->untracked, n);
}

/* Robust: charge a release of n permits to holdings (see sem.h); returns how many were. */
static uint32_t charge(rsm_sem *s, uint32_t n)
{
    rsm_share *h = rsm_sem_holders(s);
    uint32_t nh = rsm_sem_nholders(s);
    uint32_t got = rsm_share_sub_own(h, nh, n);
    uint32_t u = atomic_load(&s->untracked);
    while (got < n && u != 0) {
        uint32_t t = u < n - got ? u : n - got;
        if (atomic_compare_exchange_weak(&s->untracked, &u, u - t))
            got += t;
    }
    if (got < n)
        got += rsm_share_sub_any(h, nh, n - got);
    return got;
}

uint32_t rsm_sem_reap_handed(rsm_sem *s)
{
    uint32_t n = rsm_wq_nslots(&s->wq), got = 0;
    for (uint32_t i = 0; i < n; i++) {
        rsm_wslot *slot = &s->wq.slots[i];
        uint32_t st = atomic_load(&slot->state);
        if (rsm_slot_phase(st) != RSM_SLOT_WOKEN || rsm_slot_kind(st) != RSM_WQ_KIND_KEEPS_TOKEN ||
            rsm_slot_token(st) != RSM_TOKEN_PERMIT || rsm_pid_alive(atomic_load(&slot->pid)))
            continue;
        uint32_t freed = (st & 0xFFFF0000u) | RSM_SLOT_FREE; /* same generation, phase FREE */
        if (atomic_compare_exchange_strong(&slot->state, &st, freed)) {
            release_raw(s, 1, 1);
            got++;
        }
    }
    return got;
}

uint32_t rsm_sem_reclaim_holder(rsm_sem *s, uint32_t i, uint64_t seen)
{
    uint32_t n = rsm_share_reclaim(rsm_sem_holders(s), rsm_sem_nholders(s), i, seen);
    if (n != 0)
        release_raw(s, n, 1); /* saturating: a bound is never an error for a reclaim */
    return n;
}

uint32_t rsm_sem_value(rsm_sem *s)
{
    return atomic_load(&s->count) & RSM_SEM_VALUE_MAX;
}

static int order(const rsm_sem *s)
{
    return s->policy == RSM_LOCK_LIFO ? RSM_WAKE_LIFO : RSM_WAKE_FIFO;
}

/* Leave the queue; returns 1 if a handed permit reached us meanwhile (we keep it). */
static int leave(rsm_sem *s, rsm_waiter *w)
{
    if (rsm_wq_cancel(&s->wq, w) != 1)
        return 0;
    if (w->token == RSM_TOKEN_PERMIT)
        return 1;
    if (w->token == RSM_TOKEN_NONE && rsm_sem_value(s) > 0) /* pass a consumed wake on */
        rsm_wq_wake(&s->wq, 1, order(s), RSM_KIND_ANY, RSM_TOKEN_NONE, NULL, 0);
    return 0;
}

void rsm_sem_abandon(rsm_sem *s, rsm_waiter *w)
{
    if (leave(s, w))
        release_raw(s, 1, 0); /* give back a permit handed to us while Python was raising */
}

static int acquire_raw(rsm_sem *s, rsm_waiter *w, int64_t deadline_ns);

int rsm_sem_acquire(rsm_sem *s, rsm_waiter *w, int64_t deadline_ns)
{
    if (!(s->flags & RSM_SEM_ROBUST))
        return acquire_raw(s, w, deadline_ns);
    /* Find our slot first, so that counting the permit is one CAS right after taking it:
     * a death between the two leaks that permit, so the gap is kept to a few instructions. */
    rsm_share *mine = rsm_share_own(rsm_sem_holders(s), rsm_sem_nholders(s));
    int r = acquire_raw(s, w, deadline_ns);
    if (r == RSM_OK && !(mine && rsm_share_bump(mine, 1)))
        record(s, 1);
    return r;
}

static int acquire_raw(rsm_sem *s, rsm_waiter *w, int64_t deadline_ns)
{
    for (;;) {
        uint32_t c = atomic_load(&s->count);
        if (c & RSM_SEM_DISABLED) {
            if (w->slot != RSM_WAITER_NONE && leave(s, w))
                return RSM_OK;
            return RSM_DISABLED;
        }
        int may_take = !(s->policy == RSM_LOCK_FIFO && w->slot == RSM_WAITER_NONE &&
                         atomic_load(&s->wq.nwaiters) > 0);
        if ((c & RSM_SEM_VALUE_MAX) > 0 && may_take) {
            if (!atomic_compare_exchange_strong(&s->count, &c, c - 1))
                continue;
            if (w->slot != RSM_WAITER_NONE && leave(s, w))
                release_raw(s, 1, 0); /* got two: return the handed one */
            return RSM_OK;
        }
        if (deadline_ns >= 0 && (deadline_ns == 0 || rsm_now_ns() >= deadline_ns)) {
            if (w->slot != RSM_WAITER_NONE && leave(s, w))
                return RSM_OK;
            return RSM_TIMEOUT;
        }
        if (w->slot == RSM_WAITER_NONE) {
            rsm_wq_enqueue(&s->wq, w, (s->flags & RSM_SEM_ROBUST) ? RSM_WQ_KIND_KEEPS_TOKEN : 0);
            continue;
        }
        int r = rsm_wq_wait(&s->wq, w, deadline_ns);
        if (r == RSM_OK) {
            if (w->token == RSM_TOKEN_PERMIT)
                return RSM_OK;
            if (w->token == RSM_TOKEN_ABORT)
                return RSM_DISABLED;
            continue;
        }
        if (r == RSM_TIMEOUT) {
            if (leave(s, w))
                return RSM_OK;
            return RSM_TIMEOUT;
        }
        return r;
    }
}

int rsm_sem_release(rsm_sem *s, uint32_t n)
{
    if (!(s->flags & RSM_SEM_ROBUST))
        return release_raw(s, n, 0);
    /* The common case, one permit of our own: one CAS, then the permit goes back at once. */
    rsm_share *mine = n == 1 ? rsm_share_own(rsm_sem_holders(s), rsm_sem_nholders(s)) : NULL;
    uint32_t charged = mine && rsm_share_bump(mine, -1) ? 1 : charge(s, n);
    int r = release_raw(s, n, 0);
    if (r != RSM_OK && charged)
        record(s, charged); /* nothing was released: the charge goes back (to the releaser) */
    return r;
}

static int release_raw(rsm_sem *s, uint32_t n, int saturate)
{
    while (n > 0 && s->policy == RSM_LOCK_FIFO && atomic_load(&s->wq.nwaiters) > 0) {
        if (atomic_load(&s->count) & RSM_SEM_DISABLED)
            return RSM_DISABLED;
        if (rsm_wq_wake(&s->wq, 1, RSM_WAKE_FIFO | RSM_WAKE_EXACT, RSM_KIND_ANY, RSM_TOKEN_PERMIT, NULL, 0) != 1)
            break;
        n--;
    }
    if (n == 0)
        return RSM_OK;
    for (;;) {
        uint32_t c = atomic_load(&s->count);
        if (c & RSM_SEM_DISABLED)
            return RSM_DISABLED;
        uint64_t v = (uint64_t)(c & RSM_SEM_VALUE_MAX) + n;
        uint64_t limit = s->max ? s->max : RSM_SEM_VALUE_MAX;
        if (v > limit) {
            if (!saturate && !(s->flags & RSM_SEM_SATURATE))
                return RSM_OVERFLOW;
            v = limit;
        }
        if (atomic_compare_exchange_strong(&s->count, &c, (uint32_t)v))
            break;
    }
    if (atomic_load(&s->wq.nwaiters) > 0 || atomic_load(&s->wq.noverflow) > 0)
        rsm_wq_wake(&s->wq, (int)(n > 0x7FFFFFFF ? 0x7FFFFFFF : n), order(s), RSM_KIND_ANY, RSM_TOKEN_NONE, NULL, 0);
    return RSM_OK;
}

void rsm_sem_disable(rsm_sem *s)
{
    atomic_fetch_or(&s->count, RSM_SEM_DISABLED);
    rsm_wq_wake(&s->wq, 0x7FFFFFFF, RSM_WAKE_FIFO, RSM_KIND_ANY, RSM_TOKEN_ABORT, NULL, 0);
}
