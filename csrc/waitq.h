/* waitq.h -- the one wait/wake layer under every primitive.
 *
 * A wait queue is an array of per-waiter slots in the shared segment.  A blocked thread
 * claims a slot, takes a ticket (FIFO order) and sleeps on the slot's own state word, so
 * a waker chooses exactly whom to wake: notify(n) wakes n waiters, FIFO hands off to the
 * oldest, LIFO to the newest.  There is no list to corrupt: order is the ticket, and every
 * slot transition is one CAS on the slot's state word, so a process killed at any point
 * leaves only a slot that rsm_wq_reap() (or a waker) frees once its pid is dead.
 *
 * Slot state word (the futex word):
 *   bits  0-3   phase: FREE, CLAIMED, WAITING (may spin), SLEEPING (in futex), HANDING
 *               (a waker is storing a hand-off; lasts a few instructions), WOKEN
 *   bits  4-7   kind: which condition the waiter waits for (reader/writer, ...)
 *   bits  8-15  token: what the waker handed over (a permit, a lock hand-off, an abort)
 *   bits 16-31  generation: bumped on every claim, so a stale CAS never hits a new waiter
 *
 * Wake protocol (Dekker with the caller's condition word): a waiter publishes its slot,
 * then increments nwaiters (seq_cst), then re-checks the condition; a waker changes the
 * condition (seq_cst), then reads nwaiters.  One of the two always sees the other.
 */
#ifndef RSM_WAITQ_H
#define RSM_WAITQ_H

#include "rsm_common.h"

enum {
    RSM_SLOT_FREE = 0,
    RSM_SLOT_CLAIMED = 1,
    RSM_SLOT_WAITING = 2,
    RSM_SLOT_SLEEPING = 3,
    RSM_SLOT_WOKEN = 4,
    RSM_SLOT_HANDING = 5
};

enum { RSM_WAKE_FIFO = 0, RSM_WAKE_LIFO = 1 };
/* OR'd into `order` when the wake must reach a live waiter because it hands something
 * over (a permit, exact notify(n)): the waker then checks each sleeper's pid (one system
 * call).  Plain wakes skip that check: a wake lost to a dead waiter only delays the live
 * ones until their next slice, when they re-check the condition themselves. */
#define RSM_WAKE_EXACT 0x100

#define RSM_WQ_MAX_SLOTS 4096u
#define RSM_KIND_ANY 0xFFFFu          /* kind mask matching every waiter */
#define RSM_WAITER_NONE (-1)          /* rsm_waiter.slot: not enqueued */
#define RSM_WAITER_OVERFLOW (-2)      /* rsm_waiter.slot: no free slot; waiting on overflow_seq */

typedef struct rsm_wslot {
    _Atomic uint32_t state;   /* gen<<16 | token<<8 | kind<<4 | phase; the slot's futex word */
    _Atomic int32_t pid;      /* waiting process, for liveness checks */
    _Atomic uint32_t tid;     /* waiting thread, the hand-off target of owned primitives */
    uint32_t _pad0;
    _Atomic uint64_t ticket;  /* global arrival order */
    uint64_t _pad1;
} rsm_wslot;

typedef struct rsm_waitq {
    _Atomic uint32_t nwaiters;     /* slots in WAITING/SLEEPING: the "pending" count */
    _Atomic uint32_t overflow_seq; /* futex word of waiters that found every slot taken */
    _Atomic uint32_t noverflow;    /* how many wait on overflow_seq */
    uint32_t nslots;               /* fixed at creation; readers clamp it to RSM_WQ_MAX_SLOTS */
    _Atomic uint64_t next_ticket;
    _Atomic uint32_t spin_ns;      /* adaptive spin budget before sleeping (see rsm_wq_wait) */
    _Atomic uint16_t waker_cpu;    /* 1 + the CPU of the last waker: a waiter on that CPU skips spinning */
    _Atomic uint16_t hint;         /* the slot last published: wakes start their walk there */
    rsm_wslot slots[];
} rsm_waitq;

/* Spinning pays only when the waker runs on another core right now; on 2 shared cores it
 * mostly burns the waker's CPU.  So the budget adapts per queue: doubled when a spin
 * caught the wake, halved when the waiter had to sleep anyway, kept within these bounds. */
#define RSM_SPIN_MIN_NS 500u
#define RSM_SPIN_MAX_NS 20000u
/* At the floor the budget can no longer learn that spinning would pay (a wake from an idle
 * CPU costs more than the floor): every RSM_SPIN_PROBE_EVERY-th wait spins the maximum. */
#define RSM_SPIN_PROBE_EVERY 64u

RSM_STATIC_ASSERT(sizeof(rsm_wslot) == 32, "rsm_wslot layout");
RSM_STATIC_ASSERT(offsetof(rsm_wslot, ticket) == 16, "rsm_wslot.ticket offset");
RSM_STATIC_ASSERT(sizeof(rsm_waitq) == 32, "rsm_waitq header layout");
RSM_STATIC_ASSERT(offsetof(rsm_waitq, next_ticket) == 16, "rsm_waitq.next_ticket offset");

/* Per-call waiter context, kept by the caller across slices so a waiter keeps its place. */
typedef struct rsm_waiter {
    int32_t slot;        /* RSM_WAITER_NONE, RSM_WAITER_OVERFLOW or a slot index */
    uint32_t seq;        /* overflow_seq snapshot when slot == RSM_WAITER_OVERFLOW */
    uint32_t token;      /* token received with the last wake */
    uint32_t nospin;     /* 1: sleep at once (set after the first spin of a wait) */
    uint32_t stage;      /* primitive-specific progress kept across slices (RWLock writer) */
    uint32_t untimed;    /* 1: the caller allows an infinite wait without a timer (rsm_wq_wait) */
} rsm_waiter;

static inline uint32_t rsm_slot_phase(uint32_t s) { return s & 0xFu; }
static inline uint32_t rsm_slot_kind(uint32_t s) { return (s >> 4) & 0xFu; }
static inline uint32_t rsm_slot_token(uint32_t s) { return (s >> 8) & 0xFFu; }
static inline uint32_t rsm_slot_gen(uint32_t s) { return s >> 16; }

/* Inline: the robust semaphore finds its holder cells after the slots on every call. */
static inline size_t rsm_wq_size(uint32_t nslots)
{
    return sizeof(rsm_waitq) + (size_t)nslots * sizeof(rsm_wslot);
}

static inline uint32_t rsm_wq_nslots(const rsm_waitq *q)
{
    /* nslots is written once at creation, but the segment may come from a dead or hostile
     * writer: every walk is bounded by the compile-time maximum. */
    uint32_t n = q->nslots;
    return n > RSM_WQ_MAX_SLOTS ? RSM_WQ_MAX_SLOTS : n;
}

void rsm_wq_init(rsm_waitq *q, uint32_t nslots);

/* Publish a waiter of the given kind (0-15); sets w->slot (maybe RSM_WAITER_OVERFLOW).
 * The caller must re-check its condition after this and before rsm_wq_wait(). */
void rsm_wq_enqueue(rsm_waitq *q, rsm_waiter *w, uint32_t kind);

/* Sleep until woken, the slice ends or the deadline passes.  RSM_OK: woken (w->token set,
 * slot released, w->slot = NONE); RSM_SLICE: still enqueued; RSM_TIMEOUT: the deadline
 * passed, still enqueued (call rsm_wq_cancel). */
int rsm_wq_wait(rsm_waitq *q, rsm_waiter *w, int64_t deadline_ns);

/* Leave the queue.  Returns 0 if the waiter left cleanly, 1 if a wake had already been
 * delivered (its token is in w->token: the caller must use it or pass it on), 2 if a waker
 * died while handing over (the caller inspects its hand-off word). */
int rsm_wq_cancel(rsm_waitq *q, rsm_waiter *w);

/* Wake up to n waiters whose kind bit (1 << kind) is in kind_mask, oldest (FIFO) or
 * newest (LIFO) first, handing each the token.  If hand_word is non-NULL, the chosen
 * waiter's tid | hand_bits is stored there while the slot is HANDING, i.e. before the
 * waiter can observe the wake (ownership hand-off).  With RSM_WAKE_EXACT (implied by a
 * hand_word), sleeping waiters whose process died are reaped, never woken.  Returns how
 * many were woken. */
int rsm_wq_wake(rsm_waitq *q, int n, int order, uint32_t kind_mask, uint32_t token,
                _Atomic uint32_t *hand_word, uint32_t hand_bits);

/* rsm_wq_wake without a token or hand-off (Condition.notify). */
int rsm_wq_notify(rsm_waitq *q, int n, int order, uint32_t kind_mask);

/* Free the slots of dead processes; returns how many. */
int rsm_wq_reap(rsm_waitq *q);

/* How many waiters of a kind mask are queued (slots only; a snapshot). */
uint32_t rsm_wq_count(rsm_waitq *q, uint32_t kind_mask);

/* Bounded adaptive spinning: spin up to spin_ns while *word == value. */
int rsm_spin_while(_Atomic uint32_t *word, uint32_t value, uint32_t spin_ns);

#endif
