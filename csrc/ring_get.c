/* ring_get.c -- a ring's consumers: take, the get loops, freeing consumed records (the
 * layout and every transition are specified in ring.h). */
#include "ring_internal.h"

/* -- spinning ------------------------------------------------------------------------- */

/* Before a consumer enqueues itself (which makes every later put pay for a wake-up), it
 * polls tail for a little while if the producer runs on another CPU: a message that is
 * microseconds away is then taken with no wake-up at all.  Returns 1 if tail moved. */
static int poll_tail(rsm_ring *r, uint64_t seen)
{
    if ((uint32_t)sched_getcpu() == atomic_load_explicit(&r->prod_cpu, memory_order_relaxed)) {
        /* Same CPU: spinning cannot help, but yielding lets a runnable producer run now,
         * which is cheaper than a futex sleep and wake-up (a few yields at most). */
        for (int i = 0; i < RSM_RING_POLL_YIELDS; i++) {
            sched_yield();
            if (atomic_load_explicit(&r->tail, memory_order_relaxed) != seen)
                return 1;
        }
        return 0;
    }
    int64_t until = rsm_now_ns() + RSM_RING_POLL_NS;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            if (atomic_load_explicit(&r->tail, memory_order_relaxed) != seen)
                return 1;
            rsm_cpu_relax();
        }
        if (rsm_now_ns() >= until)
            return 0;
    }
}

/* -- consumers ------------------------------------------------------------------------ */

/* Multi-consumer: free every CONSUMED record at head (CAS on head; any consumer may). */
void ring_advance_head(rsm_ring *r)
{
    uint64_t h = atomic_load(&r->head);
    int moved = 0;
    for (;;) {
        uint64_t rd = atomic_load(&r->read);
        if (h >= rd)
            break;
        rsm_rec *rec = rec_at(r, h);
        uint64_t st = atomic_load(&rec->state);
        if (!st_is_for(st, h) || st_phase(st) != RSM_REC_CONSUMED)
            break;
        uint64_t sz = rec_size(rec->len);
        if (sz > rd - h)
            break; /* torn read of a slot freed and reused meanwhile: head moved on */
        if (atomic_compare_exchange_strong(&r->head, &h, h + sz)) {
            h += sz;
            moved = 1;
        }
    }
    if (moved)
        ring_wake_producers(r);
}

/* Bounds checks of every read path (corruption, never a correct writer's state):
 * the tail is at most one capacity ahead of head; a record ends at or before the tail,
 * and the record after it (if the tail is past it) starts with a header for its own
 * position -- so a length changed within max_message is caught too.  `tail` may be a
 * lower bound (tail_cache): the real tail is loaded only when the record reaches past it.
 * The record at `pos` is not consumed yet, so the slot at `next` cannot have been freed
 * and reused under us (head <= pos). */
static int record_in_bounds(rsm_ring *r, uint64_t pos, uint64_t next, uint64_t tail)
{
    if (next > tail) {
        tail = tpos(atomic_load(&r->tail));
        if (next > tail)
            return 0;
    }
    if (next < tail && !st_is_for(atomic_load_explicit(&rec_at(r, next)->state, memory_order_acquire), next))
        return 0;
    (void)pos;
    return 1;
}

/* The tail is at most one capacity ahead of head.  head is read after the tail and only
 * grows, so this holds for a correct ring while others move both.  Not checked from below:
 * consumers may carry head past the tail read a moment ago (the caller checks the tail
 * against `read`, read before it, instead). */
static int tail_in_bounds(rsm_ring *r, uint64_t tail)
{
    uint64_t h = atomic_load(&r->head);
    return tail <= h + r->capacity;
}

/* Take one message.  Returns its length, or minus a status (see rsm_ring_get1); when the
 * next record is reserved but unpublished, op (if any) names its producer.  batch: single
 * consumer, leave head for the caller to store (get_many stores it once). */
static int64_t take(rsm_ring *r, char *buf, uint64_t cap, rsm_ring_op *op, uint64_t *sc_head)
{
    uint64_t maxm = rsm_ring_max_message(r);
    if (r->flags & RSM_RING_SINGLE_CONSUMER) {
        for (;;) {
            uint64_t h = sc_head ? *sc_head : atomic_load_explicit(&r->head, memory_order_relaxed);
            if (h >= atomic_load_explicit(&r->tail_cache, memory_order_acquire)) {
                uint64_t tw = atomic_load(&r->tail);
                if (h == tpos(tw))
                    return (tw & RSM_RING_TAIL_CLOSED) ? -RSM_CLOSED : -RSM_WOULDBLOCK;
                if (tpos(tw) < h || tpos(tw) - h > r->capacity)
                    return -RSM_CORRUPT;
                atomic_store_explicit(&r->tail_cache, tpos(tw), memory_order_release);
            }
            rsm_rec *rec = rec_at(r, h);
            uint64_t st = atomic_load_explicit(&rec->state, memory_order_acquire);
            if (!st_is_for(st, h))
                return -RSM_CORRUPT;
            uint32_t phase = st_phase(st);
            uint64_t len = rec->len;
            if (len > maxm)
                return -RSM_CORRUPT;
            uint64_t next = h + rec_size(len);
            if (phase != RSM_REC_RESERVED &&
                !record_in_bounds(r, h, next, atomic_load_explicit(&r->tail_cache, memory_order_acquire)))
                return -RSM_CORRUPT;
            if (phase == RSM_REC_RESERVED) {
                if (op) {
                    op->suspect = RSM_SUSPECT_RESERVED;
                    op->suspect_pid = st_pid(st);
                    op->suspect_pos = h;
                }
                return -RSM_WOULDBLOCK;
            }
            if (phase == RSM_REC_PUBLISHED) {
                if (len > cap) {
                    if (op)
                        op->len = len;
                    return -RSM_OVERFLOW;
                }
                copy_out(r, h, buf, len);
            } else if (phase != RSM_REC_CONSUMED) {
                return -RSM_CORRUPT;
            }
            /* CONSUMED here is a tombstone (a dead producer's record): skip it. */
            if (sc_head) {
                *sc_head = next;
            } else {
                atomic_store(&r->head, next); /* seq_cst: Dekker with blocked producers */
                ring_wake_producers(r);
            }
            atomic_store_explicit(&r->nget, atomic_load_explicit(&r->nget, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
            if (phase == RSM_REC_PUBLISHED)
                return (int64_t)len;
        }
    }
    int32_t pid = rsm_getpid();
    for (;;) {
        uint64_t rd = atomic_load(&r->read);
        uint64_t tw = atomic_load_explicit(&r->tail_cache, memory_order_acquire);
        if (rd >= tw) {
            tw = atomic_load(&r->tail);
            if (!tail_in_bounds(r, tpos(tw)) || rd > tpos(tw))
                return -RSM_CORRUPT;
            if (rd != tpos(tw)) {
                uint64_t c = atomic_load_explicit(&r->tail_cache, memory_order_relaxed);
                if (c < tpos(tw))
                    atomic_store_explicit(&r->tail_cache, tpos(tw), memory_order_release);
            }
        }
        if (rd == tpos(tw)) {
            /* Closed and nothing left to claim: the stream ends once every claimed record
             * is freed too (head == read), so a claim whose consumer dies is still
             * reclaimed (by a waiter's slice) and delivered before the end of stream. */
            if ((tw & RSM_RING_TAIL_CLOSED) && atomic_load(&r->head) == rd)
                return -RSM_CLOSED;
            return -RSM_WOULDBLOCK;
        }
        rsm_rec *rec = rec_at(r, rd);
        uint64_t st = atomic_load(&rec->state);
        uint64_t len = rec->len;
        /* Validate the optimistic reads (a seqlock-style re-check): while read still is rd,
         * head <= rd, so nobody can have freed and reused the slot under us.  Without
         * this, a stale rd could read a newer record's payload as a header. */
        if (atomic_load(&r->read) != rd)
            continue;
        if (!st_is_for(st, rd) || len > maxm)
            return -RSM_CORRUPT; /* a written header that is not: corruption */
        uint32_t phase = st_phase(st);
        uint64_t next = rd + rec_size(len);
        if (phase == RSM_REC_PUBLISHED && !record_in_bounds(r, rd, next, tpos(tw))) {
            if (atomic_load(&r->read) != rd)
                continue; /* claimed and passed meanwhile: the check read a moving slot */
            return -RSM_CORRUPT;
        }
        switch (phase) {
        case RSM_REC_RESERVED:
            if (op) {
                op->suspect = RSM_SUSPECT_RESERVED;
                op->suspect_pid = st_pid(st);
                op->suspect_pos = rd;
            }
            return -RSM_WOULDBLOCK;
        case RSM_REC_PUBLISHED:
            if (len > cap) {
                if (op)
                    op->len = len;
                return -RSM_OVERFLOW;
            }
            if (!atomic_compare_exchange_strong(&rec->state, &st, mkstate(rd, pid, RSM_REC_CLAIMED)))
                continue;
            uint64_t expected = rd; /* a failed CAS overwrites it: keep rd */
            atomic_compare_exchange_strong(&r->read, &expected, next); /* others may have helped */
            copy_out(r, rd, buf, len);
            atomic_store(&rec->state, mkstate(rd, 0, RSM_REC_CONSUMED));
            atomic_fetch_add_explicit(&r->nget, 1, memory_order_relaxed);
            ring_advance_head(r);
            return (int64_t)len;
        case RSM_REC_CLAIMED:
        case RSM_REC_CONSUMED:
            /* Help the claimer (or skip a tombstone): read passes it. */
            atomic_compare_exchange_strong(&r->read, &rd, next);
            continue;
        default:
            return -RSM_CORRUPT;
        }
    }
}

int64_t rsm_ring_get1(rsm_ring *r, char *buf, uint64_t cap)
{
    if ((r->flags & RSM_RING_SINGLE_CONSUMER) &&
        atomic_load_explicit(&r->cons_owner, memory_order_relaxed) != rsm_gettid())
        return -RSM_RETRY;
    int64_t n = take(r, buf, cap, NULL, NULL);
    if (n >= 0)
        note_cpu(&r->cons_cpu);
    return n;
}

/* Block until take() yields a message (or a final status). */
static int get_loop(rsm_ring *r, rsm_waiter *w, char *buf, uint64_t cap, int64_t deadline_ns, rsm_ring_op *op,
                    uint64_t *len_out)
{
    op->suspect = RSM_SUSPECT_NONE;
    if (w && w->slot == RSM_WAITER_NONE)
        w->nospin = 0; /* a new wait: it may spin once (see choose_spin) */
    if ((r->flags & RSM_RING_SINGLE_CONSUMER) && ring_own_role(&r->cons_owner, op) != RSM_OK)
        return RSM_NOT_OWNER;
    int polled = w == NULL || w->slot != RSM_WAITER_NONE; /* poll once per wait */
    for (;;) {
        uint64_t seen_tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        int64_t n = take(r, buf, cap, op, NULL);
        if (n >= 0) {
            ring_leave(r, w, RSM_RING_ROLE_CONSUMER);
            note_cpu(&r->cons_cpu);
            *len_out = (uint64_t)n;
            return RSM_OK;
        }
        if (n != -RSM_WOULDBLOCK) {
            ring_leave(r, w, RSM_RING_ROLE_CONSUMER);
            return (int)-n;
        }
        if (deadline_ns == 0 || (deadline_ns > 0 && rsm_now_ns() >= deadline_ns)) {
            ring_leave(r, w, RSM_RING_ROLE_CONSUMER);
            return RSM_TIMEOUT;
        }
        if (w->slot == RSM_WAITER_NONE) {
            if (!polled) {
                polled = 1;
                if (poll_tail(r, seen_tail))
                    continue;
            }
            rsm_wq_enqueue(cwq(r), w, 0);
            continue; /* re-check after publishing ourselves (Dekker) */
        }
        choose_spin(w, &r->prod_cpu);
        int wr = rsm_wq_wait(cwq(r), w, deadline_ns);
        if (wr == RSM_OK || wr == RSM_TIMEOUT)
            continue;
        return wr; /* RSM_SLICE (op->suspect says what blocks us) or RSM_INVAL */
    }
}

int64_t rsm_ring_get(rsm_ring *r, rsm_waiter *w, char *buf, uint64_t cap, int64_t deadline_ns, rsm_ring_op *op)
{
    uint64_t len = 0;
    int s = get_loop(r, w, buf, cap, deadline_ns, op, &len);
    if (s == RSM_OK) {
        op->len = len;
        return (int64_t)len;
    }
    return -(int64_t)s;
}

int rsm_ring_get_many(rsm_ring *r, rsm_waiter *w, char *buf, uint64_t cap, uint32_t *lens, uint64_t max_items,
                      int64_t deadline_ns, rsm_ring_op *op)
{
    op->done = 0;
    if (max_items == 0)
        return RSM_OK;
    uint64_t len = 0;
    int s = get_loop(r, w, buf, cap, deadline_ns, op, &len);
    if (s != RSM_OK)
        return s;
    lens[0] = (uint32_t)len;
    uint64_t used = len, k = 1;
    if (r->flags & RSM_RING_SINGLE_CONSUMER) {
        /* One head store (and one producer wake-up) for the whole batch. */
        uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
        uint64_t h0 = h;
        for (; k < max_items; k++) {
            int64_t n = take(r, buf + used, cap - used, NULL, &h);
            if (n < 0)
                break;
            lens[k] = (uint32_t)n;
            used += (uint64_t)n;
        }
        if (h != h0) {
            atomic_store(&r->head, h);
            ring_wake_producers(r);
        }
    } else {
        for (; k < max_items; k++) {
            int64_t n = take(r, buf + used, cap - used, NULL, NULL);
            if (n < 0)
                break;
            lens[k] = (uint32_t)n;
            used += (uint64_t)n;
        }
    }
    op->done = k;
    op->len = used;
    return RSM_OK;
}

