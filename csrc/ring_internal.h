/* ring_internal.h -- what the files of the ring share (not part of the C API: ring.h is).
 *
 * The ring's code is split along its roles, the layout and every transition being
 * specified in ring.h:
 *   ring.c         layout, creation and checks, waking, roles, close
 *   ring_put.c     producers: reservation, publication, the put loops
 *   ring_get.c     consumers: take, the get loops, freeing consumed records
 *   ring_repair.c  recovery from dead peers (Python judges the death, C repairs)
 */
#ifndef RSM_RING_INTERNAL_H
#define RSM_RING_INTERNAL_H

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
static inline void copy_in(rsm_ring *r, uint64_t pos, const char *src, uint64_t len)
{
    uint64_t cap = r->capacity, off = (pos + RSM_REC_HEADER) & (cap - 1);
    uint64_t first = len < cap - off ? len : cap - off;
    char *d = data_area(r);
    memcpy(d + off, src, first);
    if (len > first)
        memcpy(d, src + first, len - first);
}

static inline void copy_out(rsm_ring *r, uint64_t pos, char *dst, uint64_t len)
{
    uint64_t cap = r->capacity, off = (pos + RSM_REC_HEADER) & (cap - 1);
    uint64_t first = len < cap - off ? len : cap - off;
    const char *d = data_area(r);
    memcpy(dst, d + off, first);
    if (len > first)
        memcpy(dst + first, d, len - first);
}

static inline int has_waiters(rsm_waitq *q)
{
    /* seq_cst loads: the second half of Dekker after the caller's seq_cst store. */
    return atomic_load(&q->nwaiters) > 0 || atomic_load(&q->noverflow) > 0;
}


/* A blocked producer waits with kind = its need class: it needs at most 16 << k bytes
 * (class 15: maybe more).  16 << k is then at most the capacity, so in an empty ring every
 * class fits and nobody is left asleep with room for it. */
static inline uint32_t need_class(uint64_t size)
{
    uint32_t k = 0;
    while (k < RSM_RING_NEED_CLASSES - 1 && (16ull << k) < size)
        k++;
    return k;
}

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

/* Shared between the ring's files; hidden: not part of the extension's symbols. */
#define RING_INTERNAL __attribute__((visibility("hidden")))

/* Wake up to n blocked consumers (only if some sleep). */
RING_INTERNAL void ring_wake_consumers(rsm_ring *r, int n);
/* Wake a blocked producer whose message now fits, once a slice of the ring is free. */
RING_INTERNAL void ring_wake_producers(rsm_ring *r);
/* Leave the wait queue of `role` if w is enqueued, passing on a wake it consumed. */
RING_INTERNAL void ring_leave(rsm_ring *r, rsm_waiter *w, uint32_t role);
/* Take (or hold) a single-producer/consumer role: RSM_OK or RSM_NOT_OWNER (op names the holder). */
RING_INTERNAL int ring_own_role(_Atomic uint32_t *owner, rsm_ring_op *op);
/* Multi-consumer: free every CONSUMED record at head. */
RING_INTERNAL void ring_advance_head(rsm_ring *r);

#endif
