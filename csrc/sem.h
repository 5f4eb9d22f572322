/* sem.h -- Semaphore, BoundedSemaphore and AutoResetEvent (a semaphore capped at 1).
 *
 * count word (64 bits): bits 0-30 value; bit 31 DISABLED (set by disable(): wakes every
 * waiter with RSM_TOKEN_ABORT; later acquires fail fast with RSM_DISABLED); bits 32-63 the
 * tag of the last robust operation (0 for plain semaphores, see below).
 * Barging policy: release adds to the value and wakes waiters, who compete for it.
 * FIFO policy: release hands a permit straight to the oldest live waiter (token PERMIT)
 * without touching the value, and newcomers do not overtake queued waiters.  (Robust FIFO
 * semaphores wake the oldest waiter instead of handing it the permit, see below.)
 *
 * Robust semaphores (RSM_SEM_ROBUST, opt-in; the SysV SEM_UNDO idea): what each process
 * holds is counted in a holder cell of its own (after the wait queue's slots; one more
 * cell counts the untracked permits, taken when every cell was busy), so the permits of a
 * process that died can be given back (rsm_sem_reclaim_holder, after Python judged it
 * dead).  A permit changes hands and its cell changes count as ONE step, so a process
 * killed at any instruction neither leaks nor creates a permit:
 *   - every change of the value (take, give back, reclaim) is a CAS on the count word
 *     that also writes a tag: (cell + 1, operation, the cell's next sequence number);
 *   - the cell's word is seq << 32 | state, and applying the operation bumps seq, so
 *     whether the tagged operation is recorded in its cell is plain to see (cell seq ==
 *     tag seq) -- the tag is the intent, the cell's seq the proof;
 *   - before anyone changes the count word, it makes sure the operation its tag names is
 *     recorded (settle(): one CAS on the cell, idempotent thanks to seq).  So at most one
 *     operation is ever unrecorded, and whoever comes next (a live process, or the
 *     reclaim of the dead one) records it.
 * A cell's count changes only through tagged operations, so a cell read after settling
 * stays as read until the count word changes: the CAS that installs the next tag fails if
 * anything happened in between.  Claiming a free cell (FREE -> CLAIMING|pid -> count 0)
 * is the one untagged change; no tag ever names a free or a live claimant's cell.
 * A release is charged, in this order, to the releaser's own cell, to the untracked cell,
 * to any other holder (a permit released on someone's behalf must not come back a second
 * time when that holder dies); only what is left is a new permit.  release(n) is n such
 * steps (each exact), after one bound check for the whole n.
 * The tag keeps 17 bits of the sequence number (cells hold 32): a CAS on the count word
 * could be fooled only if, while its process was stopped between reading the word and
 * the CAS, one cell went through a multiple of 2^17 operations and the word came back
 * bit for bit (the wait queue's 16-bit generations take the same kind of bet).
 * A robust FIFO semaphore does not hand permits over (a hand-off is a second place a
 * permit could be lost in): release adds to the value and wakes the oldest waiter, which
 * may then take it ahead of the queue.
 */
#ifndef RSM_SEM_H
#define RSM_SEM_H

#include "lock.h"

#define RSM_SEM_DISABLED 0x80000000u
#define RSM_SEM_VALUE_MAX 0x7FFFFFFFu
/* The semaphore kinds' own layout version, kept in the segment header's params[5]:
 * 2 = the 64-bit count word with its tag and the sequenced holder cells. */
#define RSM_SEM_LAYOUT 2
enum { RSM_SEM_SATURATE = 1,           /* flags: release above max is a no-op (AutoResetEvent) */
       RSM_SEM_ROBUST = 2 };            /* flags: per-holder accounting, dead holders' permits return */
enum { RSM_TOKEN_PERMIT = 3 };

/* Holder cell word: seq << 32 | state.  state: a count (bit 31 clear), FREE, or
 * CLAIMING | pid (a process claiming the cell; it writes pid and start, then count 0). */
#define RSM_HOLDER_FREE 0xC0000000u
#define RSM_HOLDER_CLAIMING 0x80000000u
#define RSM_HOLDER_PID_MASK 0x3FFFFFFFu
#define RSM_HOLDER_COUNT_MAX 0x7FFFFFFEu
enum { RSM_HOLDER_IS_FREE = 0, RSM_HOLDER_IS_CLAIMING = 1, RSM_HOLDER_IS_HELD = 2 };

typedef struct rsm_sem_holder {
    _Atomic uint64_t word;   /* seq << 32 | state */
    _Atomic uint64_t start;  /* the owner's start time (clock ticks after boot): with pid, the process for good */
    _Atomic int32_t pid;     /* the owner; written while CLAIMING, stable while the cell holds a count */
    uint32_t _pad;
} rsm_sem_holder;

typedef struct rsm_sem {
    _Atomic uint64_t count;    /* value | RSM_SEM_DISABLED | tag << 32 */
    uint32_t max;              /* upper bound (0: unbounded) */
    uint32_t policy;           /* RSM_LOCK_BARGING / FIFO / LIFO */
    uint32_t flags;            /* RSM_SEM_SATURATE | RSM_SEM_ROBUST */
    uint32_t nholders;         /* holder cells (RSM_SEM_ROBUST; else 0), plus the untracked cell */
    uint32_t _pad[2];
    rsm_waitq wq;              /* followed by its slots, then the nholders + 1 holder cells */
} rsm_sem;

RSM_STATIC_ASSERT(sizeof(rsm_sem_holder) == 24, "rsm_sem_holder layout");
RSM_STATIC_ASSERT(offsetof(rsm_sem_holder, pid) == 16, "rsm_sem_holder.pid offset");
RSM_STATIC_ASSERT(offsetof(rsm_sem, max) == 8, "rsm_sem.max offset");
RSM_STATIC_ASSERT(offsetof(rsm_sem, nholders) == 20, "rsm_sem.nholders offset");
RSM_STATIC_ASSERT(offsetof(rsm_sem, wq) == 32, "rsm_sem.wq offset");
RSM_STATIC_ASSERT(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free (shared between processes)");

size_t rsm_sem_size(uint32_t nslots, uint32_t flags);
uint32_t rsm_sem_nholders(const rsm_sem *s);
/* Holder cell i (< nholders): its state (RSM_HOLDER_IS_*), owner and count (0 unless held). */
int rsm_sem_holder_info(rsm_sem *s, uint32_t i, int32_t *pid, uint64_t *start, uint32_t *count);
/* Permits held untracked (taken when every cell was busy: not given back on death). */
uint32_t rsm_sem_untracked(rsm_sem *s);
/* Every permit held, tracked or not (a snapshot). */
uint64_t rsm_sem_held(rsm_sem *s);
/* The process (pid, start) that held cell i was judged dead: free the cell and give its
 * permits back.  A cell still being claimed is judged by pid alone (start 0).  Returns
 * how many permits came back (0 if the cell is no longer that process's). */
uint32_t rsm_sem_reclaim_holder(rsm_sem *s, uint32_t i, int32_t pid, uint64_t start);
void rsm_sem_init(rsm_sem *s, uint32_t value, uint32_t max, uint32_t policy, uint32_t flags, uint32_t nslots);
int rsm_sem_acquire(rsm_sem *s, rsm_waiter *w, int64_t deadline_ns);
/* RSM_OVERFLOW if a bounded semaphore would exceed max; RSM_DISABLED after disable(). */
int rsm_sem_release(rsm_sem *s, uint32_t n);
void rsm_sem_disable(rsm_sem *s);
void rsm_sem_abandon(rsm_sem *s, rsm_waiter *w);
uint32_t rsm_sem_value(rsm_sem *s);

#endif
