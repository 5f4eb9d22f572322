/* barrier.h -- the shared fields of a Barrier.
 *
 * The algorithm is threading.Barrier's (rsm_shm/sync/barrier.py), run under the
 * barrier's own lock; only its state moves into shared memory, as multiprocessing does.
 * Segment body: rsm_barrier (64 bytes) | rsm_lock with its slots | rsm_waitq (condition)
 * | one rsm_barrier_seat per party.
 *
 * Seats: a party inside wait() holds a seat naming its process (pid and start time), so
 * the others can tell that it died: waiters wake every slice, and one of them per slice
 * (checked_ns) looks at the seats; a dead party's seat and count go and the barrier
 * breaks.  `count` is always the number of taken seats: a party takes its seat and raises
 * the count in one critical section, and a repair after the lock's owner died rebuilds
 * the count from the seats.  Every field here is written only under the barrier's lock.
 */
#ifndef RSM_BARRIER_H
#define RSM_BARRIER_H

#include "rsm_common.h"

enum { RSM_BARRIER_FILLING = 0, RSM_BARRIER_DRAINING = 1, RSM_BARRIER_RESETTING = -1, RSM_BARRIER_BROKEN = -2 };

typedef struct rsm_barrier {
    int32_t state;        /* RSM_BARRIER_* */
    uint32_t count;       /* threads inside wait() = taken seats */
    uint32_t parties;
    uint32_t generation;  /* completed cycles (for inspection) */
    int64_t checked_ns;   /* CLOCK_MONOTONIC of the last look at the seats */
    uint32_t _pad[10];
} rsm_barrier;

typedef struct rsm_barrier_seat {
    int32_t pid;          /* 0: free */
    uint32_t tid;         /* the party's thread (for inspection) */
    uint64_t start;       /* the pid's start time (clock ticks after boot) */
} rsm_barrier_seat;

RSM_STATIC_ASSERT(sizeof(rsm_barrier) == 64, "rsm_barrier layout");
RSM_STATIC_ASSERT(offsetof(rsm_barrier, checked_ns) == 16, "rsm_barrier.checked_ns offset");
RSM_STATIC_ASSERT(sizeof(rsm_barrier_seat) == 16, "rsm_barrier_seat layout");

#endif
