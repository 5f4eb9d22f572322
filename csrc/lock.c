/* lock.c -- Lock and RLock slow paths; the word and its transitions are specified in lock.h. */
#include "lock.h"

size_t rsm_lock_size(uint32_t nslots)
{
    return offsetof(rsm_lock, wq) + rsm_wq_size(nslots);
}

void rsm_lock_init(rsm_lock *l, uint32_t policy, uint32_t nslots)
{
    rsm_wq_init(&l->wq, nslots);
    l->word = 0;
    l->tag = 0;
    l->owner_pid = 0;
    l->count = 0;
    l->dead_tid = 0;
    l->dead_pid = 0;
    l->policy = (uint16_t)policy;
    l->spinning = 0;
    l->spin_ns = RSM_SPIN_MAX_NS / 4;
}

static int wake_order(const rsm_lock *l)
{
    return l->policy == RSM_LOCK_LIFO ? RSM_WAKE_LIFO : RSM_WAKE_FIFO;
}

static int took(rsm_lock *l, uint32_t word_before)
{
    atomic_store_explicit(&l->owner_pid, rsm_getpid(), memory_order_relaxed);
    return (word_before & RSM_LOCK_OWNER_DIED) ? RSM_OWNER_DEAD : RSM_OK;
}

void rsm_lock_wake(rsm_lock *l)
{
    rsm_wq_wake(&l->wq, 1, wake_order(l), RSM_KIND_ANY, RSM_TOKEN_NONE, NULL, 0);
}

/* A waiter that leaves after consuming a plain wake passes it on, so no wake-up is lost. */
static void pass_on(rsm_lock *l)
{
    if ((atomic_load(&l->word) & RSM_TID_MASK) == 0)
        rsm_wq_wake(&l->wq, 1, wake_order(l), RSM_KIND_ANY, RSM_TOKEN_NONE, NULL, 0);
}

/* Leave the queue; if a hand-off reached us meanwhile we own the lock: returns 1. */
static int leave_queue(rsm_lock *l, rsm_waiter *w)
{
    int c = rsm_wq_cancel(&l->wq, w);
    uint32_t tid = rsm_gettid();
    if (c == 1 && w->token == RSM_TOKEN_HANDOFF)
        return 1;
    if (c == 2 && (atomic_load(&l->word) & RSM_TID_MASK) == tid)
        return 1;
    if (c == 1)
        pass_on(l);
    return 0;
}

void rsm_lock_abandon(rsm_lock *l, rsm_waiter *w)
{
    if (leave_queue(l, w)) {
        /* We were handed the lock while Python was raising: give it back. */
        rsm_lock_release(l, 0);
    }
}

static void adapt(rsm_lock *l, int caught)
{
    uint32_t cur = atomic_load_explicit(&l->spin_ns, memory_order_relaxed);
    uint32_t next = caught ? cur * 2 : cur / 2;
    next = next < RSM_SPIN_MIN_NS ? RSM_SPIN_MIN_NS : next > RSM_SPIN_MAX_NS ? RSM_SPIN_MAX_NS : next;
    atomic_store_explicit(&l->spin_ns, next, memory_order_relaxed);
}

int rsm_lock_acquire(rsm_lock *l, rsm_waiter *w, int64_t deadline_ns)
{
    uint32_t tid = rsm_gettid();
    int spun = w->slot != RSM_WAITER_NONE;
    for (;;) {
        uint32_t v = atomic_load(&l->word);
        uint32_t owner = v & RSM_TID_MASK;
        if (owner == 0) {
            /* FIFO: a newcomer does not overtake queued waiters. */
            int may_take = !(l->policy == RSM_LOCK_FIFO && w->slot == RSM_WAITER_NONE &&
                             atomic_load(&l->wq.nwaiters) > 0);
            if (may_take) {
                if (!atomic_compare_exchange_strong(&l->word, &v, (v & RSM_LOCK_OWNER_DIED) | tid))
                    continue;
                if (w->slot != RSM_WAITER_NONE)
                    leave_queue(l, w); /* a wake meant for us is moot: we hold the lock */
                return took(l, v);
            }
        }
        if (deadline_ns >= 0 && (deadline_ns == 0 || rsm_now_ns() >= deadline_ns)) {
            if (w->slot != RSM_WAITER_NONE && leave_queue(l, w))
                return took(l, atomic_load(&l->word));
            return RSM_TIMEOUT;
        }
        if (!spun && owner != 0) {
            spun = 1;
            /* One spinner at a time: with more waiters than CPUs, extra spinners only push
             * the owner off its CPU.  The others go straight to sleep. */
            uint16_t idle = 0;
            if (atomic_compare_exchange_strong(&l->spinning, &idle, 1)) {
                adapt(l, rsm_spin_while(&l->word, v, atomic_load_explicit(&l->spin_ns, memory_order_relaxed)));
                atomic_store(&l->spinning, 0);
                continue;
            }
        }
        if (w->slot == RSM_WAITER_NONE) {
            /* A barging waiter spins on the word (above), not on its slot; a FIFO waiter
             * is handed the lock through its slot, so it spins there (adaptively). */
            w->nospin = l->policy != RSM_LOCK_FIFO;
            rsm_wq_enqueue(&l->wq, w, 0);
            continue; /* re-check the word after publishing (Dekker) */
        }
        int r = rsm_wq_wait(&l->wq, w, deadline_ns);
        if (r == RSM_OK) {
            if (w->token == RSM_TOKEN_HANDOFF)
                return took(l, atomic_load(&l->word));
            spun = 0; /* barging: compete again, with one more spin if the word is busy */
            continue;
        }
        if (r == RSM_TIMEOUT) {
            if (leave_queue(l, w))
                return took(l, atomic_load(&l->word));
            return RSM_TIMEOUT;
        }
        return r; /* RSM_SLICE: still queued; Python runs signal handlers and calls again */
    }
}

/* Release from word value v (held).  A CAS, not a store: with threading.Lock's rule that
 * any thread may release, the word may change under us; then nothing is released. */
static int release_from(rsm_lock *l, uint32_t v, int told)
{
    uint32_t died = told ? 0 : (v & RSM_LOCK_OWNER_DIED);
    if (told) {
        atomic_store(&l->dead_tid, 0);
        atomic_store(&l->dead_pid, 0);
    }
    atomic_store_explicit(&l->owner_pid, 0, memory_order_relaxed);
    if (l->policy == RSM_LOCK_FIFO && atomic_load(&l->wq.nwaiters) > 0) {
        if (rsm_wq_wake(&l->wq, 1, RSM_WAKE_FIFO, RSM_KIND_ANY, RSM_TOKEN_HANDOFF, &l->word, died) == 1)
            return RSM_OK;
    }
    if (!atomic_compare_exchange_strong(&l->word, &v, died))
        return RSM_NOT_OWNER;
    if (atomic_load(&l->wq.nwaiters) > 0 || atomic_load(&l->wq.noverflow) > 0)
        rsm_wq_wake(&l->wq, 1, wake_order(l), RSM_KIND_ANY, RSM_TOKEN_NONE, NULL, 0);
    return RSM_OK;
}

int rsm_lock_release(rsm_lock *l, int told)
{
    uint32_t v = atomic_load(&l->word);
    if ((v & RSM_TID_MASK) != rsm_gettid())
        return RSM_NOT_OWNER;
    return release_from(l, v, told);
}

int rsm_lock_release_foreign(rsm_lock *l)
{
    uint32_t v = atomic_load(&l->word);
    if ((v & RSM_TID_MASK) == 0)
        return RSM_NOT_OWNER;
    return release_from(l, v, 0); /* the releaser was not told of a past owner death */
}

int rsm_lock_recover(rsm_lock *l, uint32_t dead_tid, rsm_waiter *w)
{
    uint32_t tid = rsm_gettid();
    uint32_t v = atomic_load(&l->word);
    if (dead_tid == 0 || (v & RSM_TID_MASK) != dead_tid)
        return RSM_RETRY;
    int32_t dead_pid = atomic_load(&l->owner_pid);
    if (!atomic_compare_exchange_strong(&l->word, &v, tid | RSM_LOCK_OWNER_DIED))
        return RSM_RETRY;
    atomic_store(&l->dead_tid, dead_tid);
    atomic_store(&l->dead_pid, dead_pid);
    atomic_store(&l->count, 1);
    if (w->slot != RSM_WAITER_NONE)
        rsm_wq_cancel(&l->wq, w); /* we hold the lock now; any wake we consumed is moot */
    took(l, v);
    return RSM_OWNER_DEAD;
}

int rsm_rlock_acquire(rsm_lock *l, rsm_waiter *w, int64_t deadline_ns)
{
    uint32_t tid = rsm_gettid();
    if ((atomic_load(&l->word) & RSM_TID_MASK) == tid) {
        uint32_t c = atomic_load_explicit(&l->count, memory_order_relaxed);
        if (c == UINT32_MAX)
            return RSM_OVERFLOW;
        atomic_store_explicit(&l->count, c + 1, memory_order_relaxed);
        return RSM_OK;
    }
    int r = rsm_lock_acquire(l, w, deadline_ns);
    if (r == RSM_OK || r == RSM_OWNER_DEAD)
        atomic_store_explicit(&l->count, 1, memory_order_relaxed);
    return r;
}

int rsm_rlock_release(rsm_lock *l, int told)
{
    uint32_t tid = rsm_gettid();
    if ((atomic_load(&l->word) & RSM_TID_MASK) != tid)
        return RSM_NOT_OWNER;
    uint32_t c = atomic_load_explicit(&l->count, memory_order_relaxed);
    if (c > 1) {
        atomic_store_explicit(&l->count, c - 1, memory_order_relaxed);
        return RSM_OK;
    }
    atomic_store_explicit(&l->count, 0, memory_order_relaxed);
    return rsm_lock_release(l, told);
}

int rsm_rlock_release_all(rsm_lock *l, uint32_t *count, int told)
{
    uint32_t tid = rsm_gettid();
    if ((atomic_load(&l->word) & RSM_TID_MASK) != tid)
        return RSM_NOT_OWNER;
    *count = atomic_load_explicit(&l->count, memory_order_relaxed);
    atomic_store_explicit(&l->count, 0, memory_order_relaxed);
    return rsm_lock_release(l, told);
}
