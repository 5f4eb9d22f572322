/* ring.c -- byte-message rings; the layout and every transition are specified in ring.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ring.h"

#include <sched.h>
#include <string.h>

#define TAG_MASK ((1ull << 39) - 1)
#define PHASE_MASK 7ull
/* Spinning on a busy reservation lock: relax this many times, then yield the CPU (the
 * holder may have been preempted: on 2 cores, yielding lets it finish). */
#define PLOCK_SPINS 64
#define ALL_WAITERS 0x7FFFFFFF
/* Ring wake-ups carry no token: the woken re-checks the ring itself. */
#define RING_WAKE_TOKEN 0u

/* -- layout helpers ------------------------------------------------------------------- */

static inline uint64_t mkstate(uint64_t pos, int32_t pid, uint32_t phase)
{
    return ((pos >> 4) << 25) | ((uint64_t)((uint32_t)pid & RSM_REC_PID_MAX) << 3) | phase;
}
static inline uint32_t st_phase(uint64_t st) { return (uint32_t)(st & PHASE_MASK); }
static inline int32_t st_pid(uint64_t st) { return (int32_t)((st >> 3) & RSM_REC_PID_MAX); }
static inline int st_is_for(uint64_t st, uint64_t pos) { return (st >> 25) == ((pos >> 4) & TAG_MASK); }
static inline uint64_t tpos(uint64_t tail_word) { return tail_word & RSM_RING_POS_MASK; }
static inline uint64_t rec_size(uint64_t len)
{
    return (RSM_REC_HEADER + len + (RSM_REC_ALIGN - 1)) & ~(uint64_t)(RSM_REC_ALIGN - 1);
}
static inline char *data_area(rsm_ring *r) { return (char *)r + r->data_offset; }
static inline rsm_rec *rec_at(rsm_ring *r, uint64_t pos)
{
    return (rsm_rec *)(data_area(r) + (pos & (r->capacity - 1)));
}
static inline rsm_waitq *cwq(rsm_ring *r) { return (rsm_waitq *)((char *)r + r->cwq_offset); }
static inline rsm_waitq *pwq(rsm_ring *r) { return (rsm_waitq *)((char *)r + r->pwq_offset); }

/* Payload copies, split in two where the payload wraps around the end of the data area. */
static void copy_in(rsm_ring *r, uint64_t pos, const char *src, uint64_t len)
{
    uint64_t cap = r->capacity, off = (pos + RSM_REC_HEADER) & (cap - 1);
    uint64_t first = len < cap - off ? len : cap - off;
    char *d = data_area(r);
    memcpy(d + off, src, first);
    if (len > first)
        memcpy(d, src + first, len - first);
}

static void copy_out(rsm_ring *r, uint64_t pos, char *dst, uint64_t len)
{
    uint64_t cap = r->capacity, off = (pos + RSM_REC_HEADER) & (cap - 1);
    uint64_t first = len < cap - off ? len : cap - off;
    const char *d = data_area(r);
    memcpy(dst, d + off, first);
    if (len > first)
        memcpy(dst + first, d, len - first);
}

uint64_t rsm_ring_max_message(const rsm_ring *r)
{
    uint64_t m = r->capacity - RSM_REC_HEADER;
    return m > 0xFFFFFFFFull ? 0xFFFFFFFFull : m;
}

/* -- creation and validation ---------------------------------------------------------- */

static uint64_t align64(uint64_t x) { return (x + 63) & ~63ull; }

static uint64_t pwq_off(uint32_t nslots) { return RSM_RING_CTRL_SIZE + align64(rsm_wq_size(nslots)); }
static uint64_t data_off(uint32_t nslots) { return pwq_off(nslots) + align64(rsm_wq_size(nslots)); }

size_t rsm_ring_size(uint64_t capacity, uint32_t nslots)
{
    return (size_t)(data_off(nslots) + capacity);
}

static int capacity_ok(uint64_t c)
{
    return c >= RSM_RING_MIN_CAPACITY && c <= RSM_RING_MAX_CAPACITY && (c & (c - 1)) == 0;
}

int rsm_ring_init(rsm_ring *r, uint64_t capacity, uint32_t flags, uint32_t nslots)
{
    if (!capacity_ok(capacity) || nslots < 1 || nslots > RSM_WQ_MAX_SLOTS)
        return RSM_INVAL;
    memset(r, 0, sizeof(*r));
    r->capacity = capacity;
    r->flags = flags & (RSM_RING_SINGLE_PRODUCER | RSM_RING_SINGLE_CONSUMER);
    r->nslots = nslots;
    r->cwq_offset = RSM_RING_CTRL_SIZE;
    r->pwq_offset = pwq_off(nslots);
    r->data_offset = data_off(nslots);
    rsm_wq_init(cwq(r), nslots);
    rsm_wq_init(pwq(r), nslots);
    /* The data area is fresh zeroed memory (ftruncate); no state word in it matches a
     * position's tag before a producer writes it (phase 0 is no phase). */
    return RSM_OK;
}

int rsm_ring_check(const rsm_ring *r, uint64_t body_size)
{
    uint32_t n = r->nslots;
    if (!capacity_ok(r->capacity) || n < 1 || n > RSM_WQ_MAX_SLOTS)
        return RSM_INVAL;
    if (r->cwq_offset != RSM_RING_CTRL_SIZE || r->pwq_offset != pwq_off(n) || r->data_offset != data_off(n))
        return RSM_INVAL;
    if (r->flags & ~(uint32_t)(RSM_RING_SINGLE_PRODUCER | RSM_RING_SINGLE_CONSUMER))
        return RSM_INVAL;
    if (rsm_ring_size(r->capacity, n) > body_size)
        return RSM_INVAL;
    return RSM_OK;
}

/* -- waking --------------------------------------------------------------------------- */

static inline int has_waiters(rsm_waitq *q)
{
    /* seq_cst loads: the second half of Dekker after the caller's seq_cst store. */
    return atomic_load(&q->nwaiters) > 0 || atomic_load(&q->noverflow) > 0;
}

static void wake_consumers(rsm_ring *r, int n)
{
    rsm_waitq *q = cwq(r);
    if (has_waiters(q))
        rsm_wq_wake(q, n, RSM_WAKE_FIFO, RSM_KIND_ANY, RING_WAKE_TOKEN, NULL, 0);
}

/* A blocked producer waits with kind = its need class: it needs at most 16 << k bytes
 * (class 15: maybe more).  16 << k is then at most the capacity, so in an empty ring every
 * class fits and nobody is left asleep with room for it. */
static uint32_t need_class(uint64_t size)
{
    uint32_t k = 0;
    while (k < RSM_RING_NEED_CLASSES - 1 && (16ull << k) < size)
        k++;
    return k;
}

static void wake_producers(rsm_ring *r)
{
    rsm_waitq *q = pwq(r);
    if (!has_waiters(q))
        return;
    uint64_t used = tpos(atomic_load(&r->tail)) - atomic_load(&r->head);
    uint64_t room = used >= r->capacity ? 0 : r->capacity - used;
    /* Hysteresis: with producers faster than consumers the ring stays full, and waking a
     * sleeper per freed record would cost a system call per get.  So sleepers are woken
     * once a slice of the ring is free; a sleeper whose message fits sooner still finds
     * the room at its next slice (<= RSM_SLICE_NS), so no put waits longer than that
     * beyond the moment its message fits. */
    uint64_t slack = r->capacity / RSM_RING_WAKE_FRACTION;
    if (slack > RSM_RING_WAKE_MAX)
        slack = RSM_RING_WAKE_MAX;
    if (room < slack)
        return;
    uint32_t mask = 0;
    for (uint32_t k = 0; k < RSM_RING_NEED_CLASSES; k++)
        if ((16ull << k) <= room)
            mask |= 1u << k;
    /* Overflow waiters (no free slot) are woken by any wake call, whatever the mask. */
    if (mask || atomic_load(&q->noverflow) > 0)
        rsm_wq_wake(q, 1, RSM_WAKE_FIFO, mask, RING_WAKE_TOKEN, NULL, 0);
}

static void leave(rsm_ring *r, rsm_waiter *w, uint32_t role)
{
    if (!w || w->slot == RSM_WAITER_NONE)
        return;
    if (role == RSM_RING_ROLE_PRODUCER) {
        if (rsm_wq_cancel(pwq(r), w) == 1)
            wake_producers(r); /* pass on a wake we consumed */
    } else {
        if (rsm_wq_cancel(cwq(r), w) == 1)
            wake_consumers(r, 1);
    }
}

void rsm_ring_abandon(rsm_ring *r, rsm_waiter *w, uint32_t role)
{
    leave(r, w, role);
}

/* -- spinning ------------------------------------------------------------------------- */

/* Remember the CPU we run on (vDSO, no system call); written only when it changed. */
static inline void note_cpu(_Atomic uint32_t *word)
{
    uint32_t cpu = (uint32_t)sched_getcpu();
    if (atomic_load_explicit(word, memory_order_relaxed) != cpu)
        atomic_store_explicit(word, cpu, memory_order_relaxed);
}

/* Before sleeping: spin only if the peer that will wake us last ran on another CPU. */
static inline void choose_spin(rsm_waiter *w, _Atomic uint32_t *peer_cpu)
{
    if ((uint32_t)sched_getcpu() == atomic_load_explicit(peer_cpu, memory_order_relaxed))
        w->nospin = 1;
}

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

/* -- roles (single producer / single consumer) ---------------------------------------- */

static int own_role(_Atomic uint32_t *owner, rsm_ring_op *op)
{
    uint32_t tid = rsm_gettid();
    uint32_t o = atomic_load_explicit(owner, memory_order_relaxed);
    if (o == tid)
        return RSM_OK;
    if (o == 0 && atomic_compare_exchange_strong(owner, &o, tid))
        return RSM_OK;
    if (op) {
        op->suspect = RSM_SUSPECT_ROLE;
        op->suspect_pid = (int32_t)o;
    }
    return RSM_NOT_OWNER;
}

void rsm_ring_release_roles(rsm_ring *r)
{
    uint32_t tid = rsm_gettid(), t = tid;
    atomic_compare_exchange_strong(&r->prod_owner, &t, 0);
    t = tid;
    atomic_compare_exchange_strong(&r->cons_owner, &t, 0);
}

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
    wake_consumers(r, k > ALL_WAITERS ? ALL_WAITERS : (int)k);
    wake_producers(r); /* chain: room may be left for another blocked producer */
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
    if ((r->flags & RSM_RING_SINGLE_PRODUCER) && own_role(&r->prod_owner, op) != RSM_OK)
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
            leave(r, w, RSM_RING_ROLE_PRODUCER);
            return RSM_CLOSED;
        }
        if (s == RSM_RETRY) {
            /* The reservation lock is held for a few instructions; its holder may have been
             * preempted or killed.  Spin, yield, and after a slice let Python judge it. */
            if (++spins < PLOCK_SPINS) {
                rsm_cpu_relax();
                continue;
            }
            sched_yield();
            int64_t now = rsm_now_ns();
            if (spin_end < 0)
                spin_end = rsm_slice_end(deadline_ns);
            if (now >= spin_end) {
                if (deadline_ns >= 0 && now >= deadline_ns) {
                    leave(r, w, RSM_RING_ROLE_PRODUCER);
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
            leave(r, w, RSM_RING_ROLE_PRODUCER);
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
    leave(r, w, RSM_RING_ROLE_PRODUCER);
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

/* -- consumers ------------------------------------------------------------------------ */

/* Multi-consumer: free every CONSUMED record at head (CAS on head; any consumer may). */
static void advance_head(rsm_ring *r)
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
        wake_producers(r);
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

static int tail_in_bounds(rsm_ring *r, uint64_t tail)
{
    uint64_t h = atomic_load(&r->head); /* after the tail: tail <= head + capacity holds */
    return tail >= h && tail - h <= r->capacity;
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
                wake_producers(r);
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
            advance_head(r);
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
    if ((r->flags & RSM_RING_SINGLE_CONSUMER) && own_role(&r->cons_owner, op) != RSM_OK)
        return RSM_NOT_OWNER;
    int polled = w == NULL || w->slot != RSM_WAITER_NONE; /* poll once per wait */
    for (;;) {
        uint64_t seen_tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        int64_t n = take(r, buf, cap, op, NULL);
        if (n >= 0) {
            leave(r, w, RSM_RING_ROLE_CONSUMER);
            note_cpu(&r->cons_cpu);
            *len_out = (uint64_t)n;
            return RSM_OK;
        }
        if (n != -RSM_WOULDBLOCK) {
            leave(r, w, RSM_RING_ROLE_CONSUMER);
            return (int)-n;
        }
        if (deadline_ns == 0 || (deadline_ns > 0 && rsm_now_ns() >= deadline_ns)) {
            leave(r, w, RSM_RING_ROLE_CONSUMER);
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

int64_t rsm_ring_get_tls(rsm_ring *r, rsm_ring_tls *t, int64_t deadline_ns)
{
    return rsm_ring_get(r, &t->w, t->buf, t->cap, deadline_ns, &t->op);
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
            wake_producers(r);
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

/* -- close and recovery --------------------------------------------------------------- */

void rsm_ring_close(rsm_ring *r)
{
    atomic_fetch_or(&r->tail, RSM_RING_TAIL_CLOSED);
    atomic_store(&r->closed, 1);
    rsm_wq_wake(pwq(r), ALL_WAITERS, RSM_WAKE_FIFO, RSM_KIND_ANY, RING_WAKE_TOKEN, NULL, 0);
    rsm_wq_wake(cwq(r), ALL_WAITERS, RSM_WAKE_FIFO, RSM_KIND_ANY, RING_WAKE_TOKEN, NULL, 0);
}

int rsm_ring_repair(rsm_ring *r, uint32_t suspect, uint64_t pos, int32_t dead_pid)
{
    if (suspect == RSM_SUSPECT_PLOCK) {
        uint32_t expected = (uint32_t)dead_pid;
        if (dead_pid <= 0 || !atomic_compare_exchange_strong(&r->plock, &expected, 0))
            return RSM_RETRY;
        /* The dead holder either moved tail (its record is RESERVED(dead) and will be
         * tombstoned) or did not (its header beyond tail is overwritten by the next one). */
        atomic_fetch_add_explicit(&r->repairs, 1, memory_order_relaxed);
        wake_producers(r);
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
            advance_head(r);
        }
        wake_consumers(r, 1);
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
    advance_head(r);
    op->len = len;
    return RSM_OK;
}
