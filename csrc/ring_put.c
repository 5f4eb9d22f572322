/* ring_put.c -- a ring's producers: reservation, publication, the put loops (the layout
 * and every transition are specified in ring.h). */
#include "ring_internal.h"

/* -- producers ------------------------------------------------------------------------ */

/* Reserve room for the items [*first, n) that fit now, write their headers, publish the new
 * tail; with one producer the payloads are copied (and the records PUBLISHED) before the
 * tail moves.  Returns RSM_OK with [*pos, *pos + bytes) reserved and *count items,
 * RSM_WOULDBLOCK (not even one fits), RSM_CLOSED, or RSM_RETRY (plock busy: *holder). */
static int reserve(rsm_ring *r, const char *data, const uint32_t *lens, uint64_t n, uint32_t len1,
                   int32_t pid, uint64_t *pos, uint64_t *count, uint32_t *holder)
{
    int single = r->flags & RSM_RING_SINGLE_PRODUCER;
    uint64_t cap = r->capacity;
    if (!single) {
        uint32_t free_word = 0;
        if (!atomic_compare_exchange_strong(&r->plock, &free_word, (uint32_t)pid)) {
            *holder = free_word;
            return RSM_RETRY;
        }
    }
    int status = RSM_OK;
    for (;;) {
        uint64_t tw = atomic_load(&r->tail);
        if (tw & RSM_RING_TAIL_CLOSED) {
            status = RSM_CLOSED;
            break;
        }
        uint64_t t = tpos(tw);
        uint64_t h = atomic_load_explicit(&r->head_cache, memory_order_acquire);
        if (n > 1 || cap - (t - h) < rec_size(lens ? lens[0] : len1)) {
            h = atomic_load(&r->head); /* seq_cst: the re-check of a blocked producer */
            if (atomic_load_explicit(&r->head_cache, memory_order_relaxed) < h)
                atomic_store_explicit(&r->head_cache, h, memory_order_release);
        }
        uint64_t room = cap - (t - h), bytes = 0, k = 0;
        for (; k < n; k++) {
            uint64_t sz = rec_size(lens ? lens[k] : len1);
            if (bytes + sz > room)
                break;
            bytes += sz;
        }
        if (k == 0) {
            status = RSM_WOULDBLOCK;
            break;
        }
        /* Headers (and, single producer, payloads) go in before the tail passes them. */
        uint64_t p = t;
        const char *src = data;
        for (uint64_t i = 0; i < k; i++) {
            uint32_t len = lens ? lens[i] : len1;
            rsm_rec *rec = rec_at(r, p);
            rec->len = len;
            if (single) {
                copy_in(r, p, src, len);
                src += len;
            }
            atomic_store_explicit(&rec->state, mkstate(p, pid, single ? RSM_REC_PUBLISHED : RSM_REC_RESERVED),
                                  memory_order_relaxed);
            p += rec_size(len);
        }
        /* A CAS, not a store: close() may have set the CLOSED bit meanwhile. */
        if (!atomic_compare_exchange_strong(&r->tail, &tw, t + bytes))
            continue;
        atomic_store_explicit(&r->nput, atomic_load_explicit(&r->nput, memory_order_relaxed) + k,
                              memory_order_relaxed);
        *pos = t;
        *count = k;
        break;
    }
    if (!single)
        atomic_store_explicit(&r->plock, 0, memory_order_release);
    return status;
}

/* Multi-producer: copy the payloads of reserved records and publish each with one store. */
static void publish(rsm_ring *r, const char *data, const uint32_t *lens, uint64_t k, uint32_t len1,
                    int32_t pid, uint64_t pos)
{
    for (uint64_t i = 0; i < k; i++) {
        uint32_t len = lens ? lens[i] : len1;
        copy_in(r, pos, data, len);
        data += len;
        atomic_store(&rec_at(r, pos)->state, mkstate(pos, pid, RSM_REC_PUBLISHED));
        pos += rec_size(len);
    }
}

static uint64_t bytes_of(const uint32_t *lens, uint64_t k, uint32_t len1)
{
    uint64_t b = 0;
    for (uint64_t i = 0; i < k; i++)
        b += lens ? lens[i] : len1;
    return b;
}

/* One non-blocking attempt at putting items [0, n); *done / *consumed count progress. */
static int try_put(rsm_ring *r, const char *data, const uint32_t *lens, uint64_t n, uint32_t len1,
                   uint64_t *done, uint64_t *consumed, uint32_t *holder)
{
    int32_t pid = rsm_getpid();
    uint64_t pos = 0, k = 0;
    int s = reserve(r, data, lens, n, len1, pid, &pos, &k, holder);
    if (s != RSM_OK)
        return s;
    if (!(r->flags & RSM_RING_SINGLE_PRODUCER))
        publish(r, data, lens, k, len1, pid, pos);
    *done = k;
    *consumed = bytes_of(lens, k, len1);
    note_cpu(&r->prod_cpu);
    /* The tail CAS or the PUBLISHED store above was seq_cst: now look for sleepers. */
    ring_wake_consumers(r, k > ALL_WAITERS ? ALL_WAITERS : (int)k);
    ring_wake_producers(r); /* chain: room may be left for another blocked producer */
    return RSM_OK;
}

int rsm_ring_put1(rsm_ring *r, const char *data, uint64_t len)
{
    if (len > rsm_ring_max_message(r))
        return RSM_INVAL;
    if ((r->flags & RSM_RING_SINGLE_PRODUCER) &&
        atomic_load_explicit(&r->prod_owner, memory_order_relaxed) != rsm_gettid())
        return RSM_RETRY;
    uint64_t done, consumed;
    uint32_t holder;
    return try_put(r, data, NULL, 1, (uint32_t)len, &done, &consumed, &holder);
}

static int put_loop(rsm_ring *r, rsm_waiter *w, const char *data, const uint32_t *lens, uint64_t n,
                    uint32_t len1, int64_t deadline_ns, rsm_ring_op *op)
{
    uint64_t maxm = rsm_ring_max_message(r);
    for (uint64_t i = op->done; i < n; i++)
        if ((lens ? lens[i] : len1) > maxm)
            return RSM_INVAL;
    op->suspect = RSM_SUSPECT_NONE;
    if (w && w->slot == RSM_WAITER_NONE)
        w->nospin = 0;
    if ((r->flags & RSM_RING_SINGLE_PRODUCER) && ring_own_role(&r->prod_owner, op) != RSM_OK)
        return RSM_NOT_OWNER;
    int64_t spin_end = -1;
    int spins = 0;
    while (op->done < n) {
        uint64_t k = 0, consumed = 0;
        uint32_t holder = 0;
        int s = try_put(r, data + op->offset, lens ? lens + op->done : NULL, n - op->done, len1, &k, &consumed,
                        &holder);
        if (s == RSM_OK) {
            op->done += k;
            op->offset += consumed;
            spins = 0;
            continue;
        }
        if (s == RSM_CLOSED) {
            ring_leave(r, w, RSM_RING_ROLE_PRODUCER);
            return RSM_CLOSED;
        }
        if (s == RSM_RETRY) {
            /* The reservation lock is held for a few instructions; its holder may have been
             * preempted or killed.  Spin, yield, and after a slice let Python judge it.
             * A busy lock is not a full ring: even a try (put_nowait) or a short timeout
             * waits for it up to RSM_RING_PLOCK_GRACE_NS (as queue.Queue.put(block=False)
             * waits for its mutex); raising Full at once made producers on a loaded
             * machine drop messages whenever another producer was preempted in here. */
            if (++spins < PLOCK_SPINS) {
                rsm_cpu_relax();
                continue;
            }
            sched_yield();
            int64_t now = rsm_now_ns();
            if (spin_end < 0) {
                spin_end = rsm_slice_end(deadline_ns);
                if (spin_end < now + RSM_RING_PLOCK_GRACE_NS)
                    spin_end = now + RSM_RING_PLOCK_GRACE_NS;
            }
            if (now >= spin_end) {
                if (deadline_ns >= 0 && now >= deadline_ns) {
                    /* No slice is left for Python to judge the holder: a dead one is
                     * released here, so that puts that never block still get through. */
                    if (holder && !rsm_pid_alive((int32_t)holder) &&
                        rsm_ring_repair(r, RSM_SUSPECT_PLOCK, 0, (int32_t)holder) == RSM_OK) {
                        spin_end = -1;
                        spins = 0;
                        continue;
                    }
                    ring_leave(r, w, RSM_RING_ROLE_PRODUCER);
                    return RSM_TIMEOUT;
                }
                op->suspect = RSM_SUSPECT_PLOCK;
                op->suspect_pid = (int32_t)holder;
                return RSM_SLICE;
            }
            continue;
        }
        /* RSM_WOULDBLOCK: no room for the next item. */
        if (deadline_ns == 0 || (deadline_ns > 0 && rsm_now_ns() >= deadline_ns)) {
            ring_leave(r, w, RSM_RING_ROLE_PRODUCER);
            return RSM_TIMEOUT;
        }
        if (w->slot == RSM_WAITER_NONE) {
            uint32_t next = lens ? lens[op->done] : len1;
            rsm_wq_enqueue(pwq(r), w, need_class(rec_size(next)));
            continue; /* re-check after publishing ourselves (Dekker) */
        }
        choose_spin(w, &r->cons_cpu);
        int wr = rsm_wq_wait(pwq(r), w, deadline_ns);
        if (wr == RSM_OK || wr == RSM_TIMEOUT)
            continue; /* woken (slot released) or timed out: one more try decides */
        if (wr == RSM_SLICE)
            return RSM_SLICE;
        return wr;
    }
    ring_leave(r, w, RSM_RING_ROLE_PRODUCER);
    return RSM_OK;
}

int rsm_ring_put(rsm_ring *r, rsm_waiter *w, const char *data, uint64_t len, int64_t deadline_ns,
                 rsm_ring_op *op)
{
    if (len > rsm_ring_max_message(r))
        return RSM_INVAL;
    return put_loop(r, w, data, NULL, 1, (uint32_t)len, deadline_ns, op);
}

int rsm_ring_put_many(rsm_ring *r, rsm_waiter *w, const char *data, const uint32_t *lens, uint64_t n,
                      int64_t deadline_ns, rsm_ring_op *op)
{
    return put_loop(r, w, data, lens, n, 0, deadline_ns, op);
}

