/* rwlock.c -- reader-writer lock, robust on both sides; see rwlock.h. */
#include "rwlock.h"

#include <string.h>

#define KIND_MASK(k) (1u << (k))

size_t rsm_rwlock_size(uint32_t nslots)
{
    return offsetof(rsm_rwlock, wq) + rsm_wq_size(nslots) + (size_t)nslots * sizeof(rsm_share);
}

uint32_t rsm_rwlock_nreaders(const rsm_rwlock *rw)
{
    /* Written once at creation; Python checks it against the (CRC-checked) header, and
     * every walk is bounded by the compile-time maximum anyway. */
    uint32_t n = rw->nreaders;
    return n > RSM_WQ_MAX_SLOTS ? RSM_WQ_MAX_SLOTS : n;
}

rsm_share *rsm_rwlock_readers(rsm_rwlock *rw)
{
    return (rsm_share *)((char *)&rw->wq + rsm_wq_size(rsm_wq_nslots(&rw->wq)));
}

void rsm_rwlock_init(rsm_rwlock *rw, uint32_t policy, uint32_t nslots)
{
    rsm_wq_init(&rw->wq, nslots);
    rw->writer = 0;
    rw->overflow_readers = 0;
    rw->writer_pid = 0;
    rw->policy = policy;
    rw->dead_tid = 0;
    rw->dead_pid = 0;
    rw->reader_died = 0;
    rw->nreaders = nslots;
    memset(rsm_rwlock_readers(rw), 0, (size_t)nslots * sizeof(rsm_share));
}

static void reader_enter(rsm_rwlock *rw)
{
    if (!rsm_share_add(rsm_rwlock_readers(rw), rsm_rwlock_nreaders(rw), 1))
        atomic_fetch_add(&rw->overflow_readers, 1);
}

/* Lower this process's read count; 0 if it holds none. */
static int reader_leave(rsm_rwlock *rw)
{
    if (rsm_share_sub_own(rsm_rwlock_readers(rw), rsm_rwlock_nreaders(rw), 1))
        return 1;
    uint32_t o = atomic_load(&rw->overflow_readers);
    while (o != 0)
        if (atomic_compare_exchange_weak(&rw->overflow_readers, &o, o - 1))
            return 1;
    return 0;
}

uint32_t rsm_rwlock_reader_count(rsm_rwlock *rw)
{
    uint64_t c = atomic_load(&rw->overflow_readers) + rsm_share_total(rsm_rwlock_readers(rw), rsm_rwlock_nreaders(rw));
    return c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
}

static int any_readers(rsm_rwlock *rw)
{
    return atomic_load(&rw->overflow_readers) != 0 || rsm_share_any(rsm_rwlock_readers(rw), rsm_rwlock_nreaders(rw));
}

static void readers_left(rsm_rwlock *rw);

static void wake(rsm_rwlock *rw, int n, uint32_t kind)
{
    if (atomic_load(&rw->wq.nwaiters) > 0 || atomic_load(&rw->wq.noverflow) > 0)
        rsm_wq_wake(&rw->wq, n, RSM_WAKE_FIFO, KIND_MASK(kind), RSM_TOKEN_NONE, NULL, 0);
}

static int timed_out(int64_t deadline_ns)
{
    return deadline_ns >= 0 && (deadline_ns == 0 || rsm_now_ns() >= deadline_ns);
}

int rsm_rwlock_read_acquire(rsm_rwlock *rw, rsm_waiter *w, int64_t deadline_ns)
{
    for (;;) {
        if ((atomic_load(&rw->writer) & RSM_TID_MASK) == 0) {
            reader_enter(rw);
            if ((atomic_load(&rw->writer) & RSM_TID_MASK) == 0) {
                rsm_wq_cancel(&rw->wq, w); /* reader wakes are broadcasts: nothing to pass on */
                return RSM_OK;
            }
            /* A writer claimed the word between our two loads: back off, it drains us. */
            reader_leave(rw);
            readers_left(rw);
        }
        if (timed_out(deadline_ns)) {
            rsm_wq_cancel(&rw->wq, w);
            return RSM_TIMEOUT;
        }
        if (w->slot == RSM_WAITER_NONE) {
            rsm_wq_enqueue(&rw->wq, w, RSM_RW_KIND_READER);
            continue;
        }
        int r = rsm_wq_wait(&rw->wq, w, deadline_ns);
        if (r == RSM_OK)
            continue;
        if (r == RSM_TIMEOUT) {
            rsm_wq_cancel(&rw->wq, w);
            return RSM_TIMEOUT;
        }
        return r;
    }
}

/* After read locks went away: wake whoever waits for no readers (a draining writer, or
 * with reader preference a queued writer).  The scan runs only when someone waits. */
static void readers_left(rsm_rwlock *rw)
{
    if (atomic_load(&rw->wq.nwaiters) == 0 && atomic_load(&rw->wq.noverflow) == 0)
        return;
    if (any_readers(rw))
        return;
    if (atomic_load(&rw->writer) & RSM_TID_MASK)
        wake(rw, 1, RSM_RW_KIND_DRAIN);
    else if (rw->policy == RSM_RW_READER_PREF)
        wake(rw, 1, RSM_RW_KIND_WRITER);
}

int rsm_rwlock_read_release(rsm_rwlock *rw)
{
    if (!reader_leave(rw))
        return RSM_NOT_OWNER;
    readers_left(rw);
    return RSM_OK;
}

uint32_t rsm_rwlock_reclaim_reader(rsm_rwlock *rw, uint32_t i, uint64_t seen)
{
    uint32_t count = rsm_share_reclaim(rsm_rwlock_readers(rw), rsm_rwlock_nreaders(rw), i, seen);
    if (count != 0) {
        atomic_store(&rw->reader_died, (int32_t)rsm_share_pid(seen));
        readers_left(rw);
    }
    return count;
}

static int writer_took(rsm_rwlock *rw, rsm_waiter *w)
{
    rsm_wq_cancel(&rw->wq, w);
    w->stage = RSM_RW_STAGE_START;
    atomic_store(&rw->writer_pid, rsm_getpid());
    /* A reclaimed reader becomes the word's OWNER_DIED mark, which the told/untold
     * release logic already keeps until a holder is told.  We hold the word: only we
     * (or a recoverer, once we are dead) write it. */
    int32_t reader = atomic_load(&rw->reader_died);
    if (reader != 0 && atomic_compare_exchange_strong(&rw->reader_died, &reader, 0)) {
        if (!(atomic_load(&rw->writer) & RSM_LOCK_OWNER_DIED)) {
            atomic_store(&rw->dead_tid, 0);
            atomic_store(&rw->dead_pid, reader);
        }
        atomic_fetch_or(&rw->writer, RSM_LOCK_OWNER_DIED);
    }
    return (atomic_load(&rw->writer) & RSM_LOCK_OWNER_DIED) ? RSM_OWNER_DEAD : RSM_OK;
}

/* Give the writer word back without being told (keeps OWNER_DIED for the next writer). */
static void writer_give_up(rsm_rwlock *rw, rsm_waiter *w)
{
    w->stage = RSM_RW_STAGE_START;
    rsm_rwlock_write_release(rw, 0);
}

int rsm_rwlock_write_acquire(rsm_rwlock *rw, rsm_waiter *w, int64_t deadline_ns)
{
    uint32_t tid = rsm_gettid();
    for (;;) {
        if (w->stage == RSM_RW_STAGE_DRAIN) {
            if (!any_readers(rw))
                return writer_took(rw, w);
            if (timed_out(deadline_ns)) {
                rsm_wq_cancel(&rw->wq, w);
                writer_give_up(rw, w);
                return RSM_TIMEOUT;
            }
            if (w->slot == RSM_WAITER_NONE) {
                rsm_wq_enqueue(&rw->wq, w, RSM_RW_KIND_DRAIN);
                continue;
            }
            int r = rsm_wq_wait(&rw->wq, w, deadline_ns);
            if (r == RSM_OK || r == RSM_TIMEOUT)
                continue; /* re-check readers; a timeout is handled above */
            return r;
        }
        uint32_t v = atomic_load(&rw->writer);
        /* Reader preference: while readers are active, wait (queued as WRITER) for the
         * last of them instead of claiming the word; readers_left() wakes us. */
        int readers_first = rw->policy == RSM_RW_READER_PREF && any_readers(rw);
        if ((v & RSM_TID_MASK) == 0 && !readers_first) {
            if (!atomic_compare_exchange_strong(&rw->writer, &v, (v & RSM_LOCK_OWNER_DIED) | tid))
                continue;
            if (rw->policy == RSM_RW_READER_PREF && any_readers(rw)) {
                /* A reader entered between the check and the claim: readers first.  We
                 * stay queued, so the last reader's wake reaches us. */
                atomic_store(&rw->writer, v & RSM_LOCK_OWNER_DIED);
                wake(rw, 0x7FFFFFFF, RSM_RW_KIND_READER);
            } else {
                rsm_wq_cancel(&rw->wq, w);
                w->stage = RSM_RW_STAGE_DRAIN;
                continue;
            }
        }
        if (timed_out(deadline_ns)) {
            if (rsm_wq_cancel(&rw->wq, w) == 1 && w->token == RSM_TOKEN_HANDOFF)
                writer_give_up(rw, w);
            return RSM_TIMEOUT;
        }
        if (w->slot == RSM_WAITER_NONE) {
            rsm_wq_enqueue(&rw->wq, w, RSM_RW_KIND_WRITER);
            continue;
        }
        int r = rsm_wq_wait(&rw->wq, w, deadline_ns);
        if (r == RSM_OK) {
            if (w->token == RSM_TOKEN_HANDOFF)
                w->stage = RSM_RW_STAGE_DRAIN;
            continue;
        }
        if (r == RSM_TIMEOUT)
            continue; /* handled above, with the hand-off check */
        return r;
    }
}

int rsm_rwlock_write_release(rsm_rwlock *rw, int told)
{
    uint32_t tid = rsm_gettid();
    uint32_t v = atomic_load(&rw->writer);
    if ((v & RSM_TID_MASK) != tid)
        return RSM_NOT_OWNER;
    uint32_t died = told ? 0 : (v & RSM_LOCK_OWNER_DIED);
    if (told) {
        atomic_store(&rw->dead_tid, 0);
        atomic_store(&rw->dead_pid, 0);
    }
    atomic_store(&rw->writer_pid, 0);
    if (rw->policy == RSM_RW_WRITER_PREF && atomic_load(&rw->wq.nwaiters) > 0 &&
        rsm_wq_wake(&rw->wq, 1, RSM_WAKE_FIFO, KIND_MASK(RSM_RW_KIND_WRITER), RSM_TOKEN_HANDOFF,
                    &rw->writer, died) == 1)
        return RSM_OK;
    atomic_store(&rw->writer, died);
    wake(rw, 0x7FFFFFFF, RSM_RW_KIND_READER);
    wake(rw, 1, RSM_RW_KIND_WRITER);
    return RSM_OK;
}

int rsm_rwlock_recover(rsm_rwlock *rw, uint32_t dead_tid, int as_writer, rsm_waiter *w)
{
    uint32_t v = atomic_load(&rw->writer);
    if (dead_tid == 0 || (v & RSM_TID_MASK) != dead_tid)
        return RSM_RETRY;
    int32_t dead_pid = atomic_load(&rw->writer_pid);
    uint32_t next = as_writer ? (rsm_gettid() | RSM_LOCK_OWNER_DIED) : RSM_LOCK_OWNER_DIED;
    if (!atomic_compare_exchange_strong(&rw->writer, &v, next))
        return RSM_RETRY;
    atomic_store(&rw->dead_tid, dead_tid);
    atomic_store(&rw->dead_pid, dead_pid);
    rsm_wq_cancel(&rw->wq, w);
    if (as_writer) {
        w->stage = RSM_RW_STAGE_DRAIN; /* still wait for active readers */
        return RSM_OWNER_DEAD;
    }
    wake(rw, 0x7FFFFFFF, RSM_RW_KIND_READER);
    wake(rw, 1, RSM_RW_KIND_WRITER);
    return RSM_OK;
}

void rsm_rwlock_abandon(rsm_rwlock *rw, rsm_waiter *w)
{
    int c = rsm_wq_cancel(&rw->wq, w);
    if (w->stage == RSM_RW_STAGE_DRAIN || (c == 1 && w->token == RSM_TOKEN_HANDOFF))
        writer_give_up(rw, w);
}
