/* once.c -- the Once state machine; see once.h. */
#include "once.h"

size_t rsm_once_size(uint32_t nslots)
{
    return offsetof(rsm_once, wq) + rsm_wq_size(nslots);
}

void rsm_once_init(rsm_once *o, uint32_t nslots)
{
    rsm_wq_init(&o->wq, nslots);
    o->word = 0;
    o->runner_pid = 0;
    o->dead_tid = 0;
    o->dead_pid = 0;
}

int rsm_once_begin(rsm_once *o, rsm_waiter *w, int64_t deadline_ns, int *run)
{
    uint32_t tid = rsm_gettid();
    *run = 0;
    for (;;) {
        uint32_t v = atomic_load(&o->word);
        if (v & RSM_ONCE_DONE) {
            rsm_wq_cancel(&o->wq, w);
            return RSM_OK;
        }
        if ((v & RSM_TID_MASK) == 0) {
            if (!atomic_compare_exchange_strong(&o->word, &v, tid))
                continue;
            rsm_wq_cancel(&o->wq, w);
            atomic_store(&o->runner_pid, rsm_getpid());
            *run = 1;
            return RSM_OK;
        }
        if ((v & RSM_TID_MASK) == tid)
            return RSM_INVAL; /* recursive call from inside the callable */
        if (deadline_ns >= 0 && (deadline_ns == 0 || rsm_now_ns() >= deadline_ns)) {
            rsm_wq_cancel(&o->wq, w);
            return RSM_TIMEOUT;
        }
        if (w->slot == RSM_WAITER_NONE) {
            rsm_wq_enqueue(&o->wq, w, 0);
            continue;
        }
        int r = rsm_wq_wait(&o->wq, w, deadline_ns);
        if (r == RSM_OK)
            continue;
        if (r == RSM_TIMEOUT) {
            rsm_wq_cancel(&o->wq, w);
            return RSM_TIMEOUT;
        }
        return r;
    }
}

int rsm_once_finish(rsm_once *o, int ok)
{
    uint32_t tid = rsm_gettid();
    uint32_t v = atomic_load(&o->word);
    if ((v & RSM_TID_MASK) != tid || (v & RSM_ONCE_DONE))
        return RSM_NOT_OWNER;
    atomic_store(&o->word, ok ? RSM_ONCE_DONE : 0);
    if (atomic_load(&o->wq.nwaiters) > 0 || atomic_load(&o->wq.noverflow) > 0)
        rsm_wq_wake(&o->wq, ok ? 0x7FFFFFFF : 1, RSM_WAKE_FIFO, RSM_KIND_ANY, 0, NULL, 0);
    return RSM_OK;
}

int rsm_once_recover(rsm_once *o, uint32_t dead_tid, rsm_waiter *w)
{
    uint32_t v = atomic_load(&o->word);
    if (dead_tid == 0 || (v & RSM_ONCE_DONE) || (v & RSM_TID_MASK) != dead_tid)
        return RSM_RETRY;
    int32_t dead_pid = atomic_load(&o->runner_pid);
    if (!atomic_compare_exchange_strong(&o->word, &v, rsm_gettid() | RSM_LOCK_OWNER_DIED))
        return RSM_RETRY;
    atomic_store(&o->dead_tid, dead_tid);
    atomic_store(&o->dead_pid, dead_pid);
    atomic_store(&o->runner_pid, rsm_getpid());
    rsm_wq_cancel(&o->wq, w);
    return RSM_OWNER_DEAD;
}
