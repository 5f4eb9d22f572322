/* ring.c -- byte-message rings: creation and checks, waking, roles, close.  The layout
 * and every transition are specified in ring.h; ring_internal.h says which file does what. */
#include "ring_internal.h"

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

void ring_wake_consumers(rsm_ring *r, int n)
{
    rsm_waitq *q = cwq(r);
    if (has_waiters(q))
        rsm_wq_wake(q, n, RSM_WAKE_FIFO, RSM_KIND_ANY, RING_WAKE_TOKEN, NULL, 0);
}

void ring_wake_producers(rsm_ring *r)
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

void ring_leave(rsm_ring *r, rsm_waiter *w, uint32_t role)
{
    if (!w || w->slot == RSM_WAITER_NONE)
        return;
    if (role == RSM_RING_ROLE_PRODUCER) {
        if (rsm_wq_cancel(pwq(r), w) == 1)
            ring_wake_producers(r); /* pass on a wake we consumed */
    } else {
        if (rsm_wq_cancel(cwq(r), w) == 1)
            ring_wake_consumers(r, 1);
    }
}

void rsm_ring_abandon(rsm_ring *r, rsm_waiter *w, uint32_t role)
{
    ring_leave(r, w, role);
}

/* -- roles (single producer / single consumer) ---------------------------------------- */

int ring_own_role(_Atomic uint32_t *owner, rsm_ring_op *op)
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

/* -- close (end of stream) --------------------------------------------------------------- */

void rsm_ring_close(rsm_ring *r)
{
    atomic_fetch_or(&r->tail, RSM_RING_TAIL_CLOSED);
    atomic_store(&r->closed, 1);
    rsm_wq_wake(pwq(r), ALL_WAITERS, RSM_WAKE_FIFO, RSM_KIND_ANY, RING_WAKE_TOKEN, NULL, 0);
    rsm_wq_wake(cwq(r), ALL_WAITERS, RSM_WAKE_FIFO, RSM_KIND_ANY, RING_WAKE_TOKEN, NULL, 0);
}

