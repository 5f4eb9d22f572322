/* ring_repair.c -- a ring's recovery from dead peers: Python judges a death, C repairs
 * what the dead left (the layout and every transition are specified in ring.h). */
#include "ring_internal.h"

/* -- recovery ------------------------------------------------------------------------- */

int rsm_ring_repair(rsm_ring *r, uint32_t suspect, uint64_t pos, int32_t dead_pid)
{
    if (suspect == RSM_SUSPECT_PLOCK) {
        uint32_t expected = (uint32_t)dead_pid;
        if (dead_pid <= 0 || !atomic_compare_exchange_strong(&r->plock, &expected, 0))
            return RSM_RETRY;
        /* The dead holder either moved tail (its record is RESERVED(dead) and will be
         * tombstoned) or did not (its header beyond tail is overwritten by the next one). */
        atomic_fetch_add_explicit(&r->repairs, 1, memory_order_relaxed);
        ring_wake_producers(r);
        return RSM_OK;
    }
    if (suspect == RSM_SUSPECT_ROLE) {
        _Atomic uint32_t *owner = pos == RSM_RING_ROLE_PRODUCER ? &r->prod_owner : &r->cons_owner;
        uint32_t expected = (uint32_t)dead_pid;
        if (!atomic_compare_exchange_strong(owner, &expected, 0))
            return RSM_RETRY;
        atomic_fetch_add_explicit(&r->repairs, 1, memory_order_relaxed);
        return RSM_OK;
    }
    if (suspect == RSM_SUSPECT_RESERVED) {
        uint64_t t = tpos(atomic_load(&r->tail)), h = atomic_load(&r->head);
        if ((pos & (RSM_REC_ALIGN - 1)) || pos < h || pos >= t)
            return RSM_RETRY;
        rsm_rec *rec = rec_at(r, pos);
        uint64_t st = mkstate(pos, dead_pid, RSM_REC_RESERVED);
        /* One CAS turns the dead producer's record into a tombstone; its payload is never
         * read (CONSUMED records are only skipped and freed). */
        if (!atomic_compare_exchange_strong(&rec->state, &st, mkstate(pos, 0, RSM_REC_CONSUMED)))
            return RSM_RETRY;
        atomic_fetch_add_explicit(&r->repairs, 1, memory_order_relaxed);
        if (!(r->flags & RSM_RING_SINGLE_CONSUMER)) {
            /* The tombstone counts as taken (single consumer: take() counts it). */
            atomic_fetch_add_explicit(&r->nget, 1, memory_order_relaxed);
            uint64_t rd = pos;
            atomic_compare_exchange_strong(&r->read, &rd, pos + rec_size(rec->len));
            ring_advance_head(r);
        }
        ring_wake_consumers(r, 1);
        return RSM_OK;
    }
    return RSM_INVAL;
}

uint32_t rsm_ring_claims(rsm_ring *r, uint64_t *pos, int32_t *pids, uint32_t max)
{
    if (r->flags & RSM_RING_SINGLE_CONSUMER)
        return 0;
    uint64_t h = atomic_load(&r->head), rd = atomic_load(&r->read);
    uint32_t found = 0;
    /* Bounded walk over memory other processes write concurrently: every step is
     * validated, and a record cannot be smaller than 16 bytes. */
    for (uint64_t steps = 0; h < rd && found < max && steps <= r->capacity / RSM_REC_ALIGN; steps++) {
        rsm_rec *rec = rec_at(r, h);
        uint64_t st = atomic_load(&rec->state);
        if (!st_is_for(st, h))
            break;
        uint64_t sz = rec_size(rec->len);
        if (sz > rd - h)
            break;
        if (st_phase(st) == RSM_REC_CLAIMED) {
            pos[found] = h;
            pids[found] = st_pid(st);
            found++;
        }
        h += sz;
    }
    return found;
}

int rsm_ring_reclaim(rsm_ring *r, uint64_t pos, int32_t dead_pid, char *buf, uint64_t cap, rsm_ring_op *op)
{
    if (r->flags & RSM_RING_SINGLE_CONSUMER)
        return RSM_INVAL;
    uint64_t h = atomic_load(&r->head), rd = atomic_load(&r->read);
    if ((pos & (RSM_REC_ALIGN - 1)) || pos < h || pos >= rd)
        return RSM_RETRY;
    rsm_rec *rec = rec_at(r, pos);
    uint64_t st = mkstate(pos, dead_pid, RSM_REC_CLAIMED);
    if (atomic_load(&rec->state) != st)
        return RSM_RETRY;
    uint64_t len = rec->len;
    if (len > rsm_ring_max_message(r) || pos + rec_size(len) > rd)
        return RSM_CORRUPT;
    if (len > cap) {
        op->len = len;
        return RSM_OVERFLOW;
    }
    /* The dead consumer claimed, maybe copied, but never returned: deliver it here. */
    if (!atomic_compare_exchange_strong(&rec->state, &st, mkstate(pos, rsm_getpid(), RSM_REC_CLAIMED)))
        return RSM_RETRY;
    copy_out(r, pos, buf, len);
    atomic_store(&rec->state, mkstate(pos, 0, RSM_REC_CONSUMED));
    atomic_fetch_add_explicit(&r->nget, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->repairs, 1, memory_order_relaxed);
    ring_advance_head(r);
    op->len = len;
    return RSM_OK;
}
