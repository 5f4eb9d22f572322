/* sem.h -- Semaphore, BoundedSemaphore and AutoResetEvent (a semaphore capped at 1).
 *
 * count word:  bits 0-30 value; bit 31 DISABLED (set by disable(): wakes every waiter with
 * RSM_TOKEN_ABORT; later acquires fail fast with RSM_DISABLED).
 * Barging policy: release adds to the value and wakes waiters, who compete for it.
 * FIFO policy: release hands a permit straight to the oldest live waiter (token PERMIT)
 * without touching the value, and newcomers do not overtake queued waiters.
 *
 * Robust semaphores (RSM_SEM_ROBUST, opt-in; the SysV SEM_UNDO idea): every permit taken
 * is also counted in the taker's holder slot (share.h, after the wait queue's slots), so
 * the permits of a process that died can be given back (rsm_sem_reclaim_holder, after
 * Python judged it dead).  A release is charged, in this order, to the releaser's own
 * holdings, to the untracked permits (taken when every slot was busy), to any other
 * holder (a permit released on someone's behalf must not come back a second time when
 * that holder dies); only what is left is a new permit.  The permit is taken before it is
 * recorded and a release is charged before the permit is returned, so a process killed
 * between the two steps (a few instructions) can leak one permit, never create one.
 */
#ifndef RSM_SEM_H
#define RSM_SEM_H

#include "lock.h"
#include "share.h"

#define RSM_SEM_DISABLED 0x80000000u
#define RSM_SEM_VALUE_MAX 0x7FFFFFFFu
enum { RSM_SEM_SATURATE = 1,           /* flags: release above max is a no-op (AutoResetEvent) */
       RSM_SEM_ROBUST = 2 };            /* flags: per-holder accounting, dead holders' permits return */
enum { RSM_TOKEN_PERMIT = 3 };

typedef struct rsm_sem {
    _Atomic uint32_t count;    /* value | RSM_SEM_DISABLED */
    uint32_t max;              /* upper bound (0: unbounded) */
    uint32_t policy;           /* RSM_LOCK_BARGING / FIFO / LIFO */
    uint32_t flags;            /* RSM_SEM_SATURATE | RSM_SEM_ROBUST */
    uint32_t nholders;         /* holder slots after the wait queue's (RSM_SEM_ROBUST; else 0) */
    _Atomic uint32_t untracked;/* robust permits taken when every holder slot was busy: not robust */
    uint32_t _pad[2];
    rsm_waitq wq;              /* followed by its slots, then the holder slots */
} rsm_sem;

RSM_STATIC_ASSERT(offsetof(rsm_sem, nholders) == 16, "rsm_sem.nholders offset");
RSM_STATIC_ASSERT(offsetof(rsm_sem, wq) == 32, "rsm_sem.wq offset");

size_t rsm_sem_size(uint32_t nslots, uint32_t flags);
rsm_share *rsm_sem_holders(rsm_sem *s);
uint32_t rsm_sem_nholders(const rsm_sem *s);
/* Holder slot i held `seen` and its process was judged dead: give its permits back.
 * Returns how many (0 if the slot changed meanwhile). */
uint32_t rsm_sem_reclaim_holder(rsm_sem *s, uint32_t i, uint64_t seen);
/* Robust: give back the permits a FIFO release handed to waiters that died before taking
 * them (their slots are WOKEN with a PERMIT token, left alone by rsm_wq_reap). */
uint32_t rsm_sem_reap_handed(rsm_sem *s);
void rsm_sem_init(rsm_sem *s, uint32_t value, uint32_t max, uint32_t policy, uint32_t flags, uint32_t nslots);
int rsm_sem_acquire(rsm_sem *s, rsm_waiter *w, int64_t deadline_ns);
/* RSM_OVERFLOW if a bounded semaphore would exceed max; RSM_DISABLED after disable(). */
int rsm_sem_release(rsm_sem *s, uint32_t n);
void rsm_sem_disable(rsm_sem *s);
void rsm_sem_abandon(rsm_sem *s, rsm_waiter *w);
uint32_t rsm_sem_value(rsm_sem *s);

#endif
