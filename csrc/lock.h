/* lock.h -- Lock and RLock: a robust owner-in-the-word mutex over the wait queue.
 *
 * Lock word (the robust-futex idea, cross-process):
 *   bits  0-29  owner thread id (Linux tid), 0 = unlocked
 *   bit   30    OWNER_DIED: a waiter took the lock over from a dead owner.  It is sticky:
 *               it stays set -- also while the lock is free again -- until a holder that was
 *               told about the death releases the lock normally.  So a holder that could not
 *               be told (its warning raised) releases with the bit kept and the next holder
 *               is told instead: nothing is recovered silently.
 *   bit   31    reserved, 0
 *
 * Transitions (all single CAS/store on the word):
 *   free -> tid                 acquire (fast path: CAS 0 -> tid; one instruction)
 *   tid -> 0                    release (then wake one waiter if nwaiters > 0)
 *   tid -> waiter_tid           FIFO hand-off (the waiter's slot is HANDING meanwhile)
 *   dead_tid -> tid|OWNER_DIED  recovery, by exactly one waiter (CAS), after Python decided
 *                               that dead_tid is dead (policy lives in rsm_shm/sync/lock.py)
 * Waiters never change the word while they wait, so no WAITERS bit is needed: the wait
 * queue's nwaiters counter plays that role (Dekker: release stores the word, then loads
 * nwaiters; a waiter increments nwaiters, then re-reads the word).
 */
#ifndef RSM_LOCK_H
#define RSM_LOCK_H

#include "waitq.h"

#define RSM_LOCK_OWNER_DIED 0x40000000u

enum { RSM_LOCK_BARGING = 0, RSM_LOCK_FIFO = 1, RSM_LOCK_LIFO = 2 };
enum { RSM_TOKEN_NONE = 0, RSM_TOKEN_HANDOFF = 1, RSM_TOKEN_ABORT = 2 };

typedef struct rsm_lock {
    _Atomic uint32_t word;      /* see above; the futex-free fast path CASes only this */
    _Atomic uint32_t tag;       /* the seed's 32-bit user payload, free for the application */
    _Atomic int32_t owner_pid;  /* process of the owner (informational: written after acquiring) */
    _Atomic uint32_t count;     /* RLock recursion depth; written only by the owner */
    _Atomic uint32_t dead_tid;  /* last owner whose death was recovered (0: none) */
    _Atomic int32_t dead_pid;   /* its process */
    uint16_t policy;            /* RSM_LOCK_BARGING / FIFO / LIFO, fixed at creation */
    _Atomic uint16_t spinning;  /* 1 while a waiter spins on the word: others sleep at once */
    _Atomic uint32_t spin_ns;   /* adaptive spin before queueing */
    rsm_waitq wq;               /* must stay last: followed by the slots */
} rsm_lock;

RSM_STATIC_ASSERT(offsetof(rsm_lock, word) == 0, "rsm_lock.word offset");
RSM_STATIC_ASSERT(offsetof(rsm_lock, tag) == 4, "rsm_lock.tag offset");
RSM_STATIC_ASSERT(offsetof(rsm_lock, wq) == 32, "rsm_lock.wq offset");
RSM_STATIC_ASSERT(sizeof(rsm_lock) == 64, "rsm_lock layout");

size_t rsm_lock_size(uint32_t nslots);
void rsm_lock_init(rsm_lock *l, uint32_t policy, uint32_t nslots);

/* One slice of a blocking acquire: RSM_OK, RSM_OWNER_DEAD (acquired; tell the caller),
 * RSM_TIMEOUT (deadline passed; a deadline of 0 is a non-blocking try), RSM_SLICE. */
int rsm_lock_acquire(rsm_lock *l, rsm_waiter *w, int64_t deadline_ns);
/* Release; told = 1 clears OWNER_DIED.  RSM_NOT_OWNER if the caller does not hold it. */
int rsm_lock_release(rsm_lock *l, int told);
/* threading.Lock lets any thread release a held lock: release it whoever holds it.
 * RSM_NOT_OWNER if it is not held. */
int rsm_lock_release_foreign(rsm_lock *l);
/* Take the lock over from dead_tid (judged dead by the caller).  RSM_OWNER_DEAD if this
 * caller won, RSM_RETRY if the word no longer names dead_tid. */
int rsm_lock_recover(rsm_lock *l, uint32_t dead_tid, rsm_waiter *w);
/* Leave the queue after an exception between slices (Ctrl-C), passing on a consumed wake. */
void rsm_lock_abandon(rsm_lock *l, rsm_waiter *w);
/* Wake one sleeper (in the lock's wake order) after rsm_lock_release_fast said so. */
void rsm_lock_wake(rsm_lock *l);

/* RLock: the same word, plus the recursion count. */
int rsm_rlock_acquire(rsm_lock *l, rsm_waiter *w, int64_t deadline_ns);
int rsm_rlock_release(rsm_lock *l, int told);
/* Condition support: drop every level at once (returns the depth in *count), and restore. */
int rsm_rlock_release_all(rsm_lock *l, uint32_t *count, int told);

/* The fast paths, inline so the GIL-holding entry points (fast_sync.c) share the algorithm.
 * They touch only the shared words and call no other core function (fast_sync.c reaches
 * the core through a table, core_api.h): a release that finds sleepers says so, and the
 * caller wakes one with rsm_lock_wake. */
static inline int rsm_lock_try_fast(rsm_lock *l, uint32_t tid, int32_t pid)
{
    uint32_t expected = 0;
    if (atomic_compare_exchange_strong(&l->word, &expected, tid)) {
        atomic_store_explicit(&l->owner_pid, pid, memory_order_relaxed);
        return 1;
    }
    return 0;
}

/* Returns RSM_RELEASED, RSM_RELEASED_WAKE (released, and the caller must call
 * rsm_lock_wake: sleepers were seen after the release) or 0 if the slow path must decide
 * (not owner, OWNER_DIED, FIFO with waiters). */
enum { RSM_RELEASED = 1, RSM_RELEASED_WAKE = 2 };
static inline int rsm_lock_release_fast(rsm_lock *l, uint32_t tid)
{
    if (l->policy == RSM_LOCK_FIFO && atomic_load(&l->wq.nwaiters) > 0)
        return 0;
    uint32_t expected = tid;
    if (!atomic_compare_exchange_strong(&l->word, &expected, 0))
        return 0;
    /* After the release, not before: a waiter that enqueues later re-checks the word. */
    if (atomic_load(&l->wq.nwaiters) > 0 || atomic_load(&l->wq.noverflow) > 0)
        return RSM_RELEASED_WAKE;
    return RSM_RELEASED;
}

/* RLock fast paths: re-entry by the owner is a plain increment of count (only the owner
 * writes it); a first acquire or last release is the Lock fast path. */
static inline int rsm_rlock_try_fast(rsm_lock *l, uint32_t tid, int32_t pid)
{
    if ((atomic_load_explicit(&l->word, memory_order_relaxed) & RSM_TID_MASK) == tid) {
        uint32_t c = atomic_load_explicit(&l->count, memory_order_relaxed);
        if (c == UINT32_MAX)
            return 0; /* the slow path reports the overflow */
        atomic_store_explicit(&l->count, c + 1, memory_order_relaxed);
        return 1;
    }
    if (!rsm_lock_try_fast(l, tid, pid))
        return 0;
    atomic_store_explicit(&l->count, 1, memory_order_relaxed);
    return 1;
}

/* Returns as rsm_lock_release_fast. */
static inline int rsm_rlock_release_fast(rsm_lock *l, uint32_t tid)
{
    if (atomic_load_explicit(&l->word, memory_order_relaxed) != tid)
        return 0; /* not ours, or OWNER_DIED set: the slow path decides */
    uint32_t c = atomic_load_explicit(&l->count, memory_order_relaxed);
    if (c > 1) {
        atomic_store_explicit(&l->count, c - 1, memory_order_relaxed);
        return 1;
    }
    atomic_store_explicit(&l->count, 0, memory_order_relaxed);
    int released = rsm_lock_release_fast(l, tid);
    if (released)
        return released;
    atomic_store_explicit(&l->count, c, memory_order_relaxed); /* let the slow path release */
    return 0;
}

#endif
