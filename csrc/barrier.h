/* barrier.h -- the shared fields of a Barrier.
 *
 * The algorithm is threading.Barrier's (rsm_shm/sync/barrier.py), run under the
 * barrier's own lock; only its state moves into shared memory, as multiprocessing does.
 * Segment body: rsm_barrier (64 bytes) | rsm_lock with its slots | rsm_waitq (condition).
 */
#ifndef RSM_BARRIER_H
#define RSM_BARRIER_H

#include "rsm_common.h"

enum { RSM_BARRIER_FILLING = 0, RSM_BARRIER_DRAINING = 1, RSM_BARRIER_RESETTING = -1, RSM_BARRIER_BROKEN = -2 };

typedef struct rsm_barrier {
    int32_t state;        /* RSM_BARRIER_*; written only under the barrier's lock */
    uint32_t count;       /* threads inside wait() */
    uint32_t parties;
    uint32_t generation;  /* completed cycles (for inspection) */
    uint32_t _pad[12];
} rsm_barrier;

RSM_STATIC_ASSERT(sizeof(rsm_barrier) == 64, "rsm_barrier layout");

#endif
