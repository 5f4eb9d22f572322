/* sem.c -- counting semaphores over the wait queue; see sem.h. */
#include "sem.h"

size_t rsm_sem_size(uint32_t nslots)
{
    return offsetof(rsm_sem, wq) + rsm_wq_size(nslots);
}

void rsm_sem_init(rsm_sem *s, uint32_t value, uint32_t max, uint32_t policy, uint32_t flags, uint32_t nslots)
{
    rsm_wq_init(&s->wq, nslots);
    s->count = value & RSM_SEM_VALUE_MAX;
    s->max = max;
    s->policy = policy;
    s->flags = flags;
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
        rsm_sem_release(s, 1); /* give back a permit handed to us while Python was raising */
}

int rsm_sem_acquire(rsm_sem *s, rsm_waiter *w, int64_t deadline_ns)
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
                rsm_sem_release(s, 1); /* got two: return the handed one */
            return RSM_OK;
        }
        if (deadline_ns >= 0 && (deadline_ns == 0 || rsm_now_ns() >= deadline_ns)) {
            if (w->slot != RSM_WAITER_NONE && leave(s, w))
                return RSM_OK;
            return RSM_TIMEOUT;
        }
        if (w->slot == RSM_WAITER_NONE) {
            rsm_wq_enqueue(&s->wq, w, 0);
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
            if (!(s->flags & RSM_SEM_SATURATE))
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
