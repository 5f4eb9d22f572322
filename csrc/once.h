/* once.h -- Once: run a callable exactly once across every process.
 *
 * Word: 0 = not run; tid (bits 0-29) = that thread is running it; RSM_ONCE_DONE = finished.
 * OWNER_DIED (bit 30) is set with the tid of a waiter that took the run over from a dead
 * runner (decided in Python, as for locks).  A run that raises resets the word to 0 and
 * wakes one waiter, which then tries itself (as pthread_once does on cancellation).
 */
#ifndef RSM_ONCE_H
#define RSM_ONCE_H

#include "lock.h"

#define RSM_ONCE_DONE 0x80000000u

typedef struct rsm_once {
    _Atomic uint32_t word;
    _Atomic int32_t runner_pid;
    _Atomic uint32_t dead_tid;   /* the runner whose death was taken over (0: none) */
    _Atomic int32_t dead_pid;
    uint32_t _pad[4];
    rsm_waitq wq;
} rsm_once;

RSM_STATIC_ASSERT(offsetof(rsm_once, wq) == 32, "rsm_once.wq offset");

size_t rsm_once_size(uint32_t nslots);
void rsm_once_init(rsm_once *o, uint32_t nslots);
/* RSM_OK with *run = 1: the caller must run the callable and call rsm_once_finish;
 * RSM_OK with *run = 0: it has already run.  RSM_TIMEOUT / RSM_SLICE as usual. */
int rsm_once_begin(rsm_once *o, rsm_waiter *w, int64_t deadline_ns, int *run);
/* ok = 1: done for good; ok = 0: the run failed, let the next caller try. */
int rsm_once_finish(rsm_once *o, int ok);
/* Take the run over from dead_tid: RSM_OWNER_DEAD (caller runs it now) or RSM_RETRY. */
int rsm_once_recover(rsm_once *o, uint32_t dead_tid, rsm_waiter *w);

#endif
