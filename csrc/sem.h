/* sem.h -- Semaphore, BoundedSemaphore and AutoResetEvent (a semaphore capped at 1).
 *
 * count word:  bits 0-30 value; bit 31 DISABLED (set by disable(): wakes every waiter with
 * RSM_TOKEN_ABORT; later acquires fail fast with RSM_DISABLED).
 * Barging policy: release adds to the value and wakes waiters, who compete for it.
 * FIFO policy: release hands a permit straight to the oldest live waiter (token PERMIT)
 * without touching the value, and newcomers do not overtake queued waiters.
 */
#ifndef RSM_SEM_H
#define RSM_SEM_H

#include "lock.h"

#define RSM_SEM_DISABLED 0x80000000u
#define RSM_SEM_VALUE_MAX 0x7FFFFFFFu
enum { RSM_SEM_SATURATE = 1 };          /* flags: release above max is a no-op (AutoResetEvent) */
enum { RSM_TOKEN_PERMIT = 3 };

typedef struct rsm_sem {
    _Atomic uint32_t count;    /* value | RSM_SEM_DISABLED */
    uint32_t max;              /* upper bound (0: unbounded) */
    uint32_t policy;           /* RSM_LOCK_BARGING / FIFO / LIFO */
    uint32_t flags;            /* RSM_SEM_SATURATE */
    uint32_t _pad[4];
    rsm_waitq wq;
} rsm_sem;

RSM_STATIC_ASSERT(offsetof(rsm_sem, wq) == 32, "rsm_sem.wq offset");

size_t rsm_sem_size(uint32_t nslots);
void rsm_sem_init(rsm_sem *s, uint32_t value, uint32_t max, uint32_t policy, uint32_t flags, uint32_t nslots);
int rsm_sem_acquire(rsm_sem *s, rsm_waiter *w, int64_t deadline_ns);
/* RSM_OVERFLOW if a bounded semaphore would exceed max; RSM_DISABLED after disable(). */
int rsm_sem_release(rsm_sem *s, uint32_t n);
void rsm_sem_disable(rsm_sem *s);
void rsm_sem_abandon(rsm_sem *s, rsm_waiter *w);
uint32_t rsm_sem_value(rsm_sem *s);

#endif
