/* share.h -- per-process shares of a counted resource, robust to process death.
 *
 * Used for an RWLock's read locks and a robust semaphore's permits: what a process holds
 * is counted in a slot of its own, so when it dies exactly its share can be taken back.
 *
 * Slot (16 bytes):
 *   word   pid << 32 | count    0 = free; count = units this process holds
 *   start  the pid's start time written by the claimant before count leaves 0, so with the
 *          pid it names the process for good (pids are reused, this pair is not)
 * Transitions, each one CAS on `word`:
 *   0 -> (pid, 0)             claim (then store start)        by the process itself
 *   (pid, 0) -> (pid, n)      first units                     by the process itself
 *   (pid, c) -> (pid, c +- n) more units / give units back    by the process itself
 *   (pid, c) -> (pid, c - n)  units given back on its behalf  by any process (semaphores)
 *   (pid, n) -> 0             the last units go: slot freed
 *   (pid, c) -> 0             reclaim: only after the caller judged (pid, start) dead; a
 *                             slot still at count 0 is judged by its pid alone (its start
 *                             may not be written yet), so a live claimant is never robbed
 * A process may own several slots (two of its threads claimed at once): harmless, its
 * share is their sum.  Holding units is the CAS that raises the count: there is no second
 * counter that a death between two steps could leave out of step.
 */
#ifndef RSM_SHARE_H
#define RSM_SHARE_H

#include "rsm_common.h"

typedef struct rsm_share {
    _Atomic uint64_t word;   /* pid << 32 | count; 0 = free */
    _Atomic uint64_t start;  /* the pid's start time (clock ticks after boot), 0 = unknown */
} rsm_share;

RSM_STATIC_ASSERT(sizeof(rsm_share) == 16, "rsm_share layout");

static inline uint32_t rsm_share_pid(uint64_t word) { return (uint32_t)(word >> 32); }
static inline uint32_t rsm_share_count(uint64_t word) { return (uint32_t)(word & 0xFFFFFFFFu); }

/* Add n units to this process's share.  0: every slot is taken by other processes (the
 * caller counts the units untracked), 1: done. */
int rsm_share_add(rsm_share *slots, uint32_t nslots, uint32_t n);
/* Take up to n units from this process's own share; returns how many it took. */
uint32_t rsm_share_sub_own(rsm_share *slots, uint32_t nslots, uint32_t n);
/* Take up to n units from any process's share (a release on another's behalf). */
uint32_t rsm_share_sub_any(rsm_share *slots, uint32_t nslots, uint32_t n);
/* Sum of the counts (a snapshot), and whether any is non-zero. */
uint64_t rsm_share_total(rsm_share *slots, uint32_t nslots);
int rsm_share_any(rsm_share *slots, uint32_t nslots);
/* Slot i held `seen` and its process was judged dead: free it.  Returns the units freed
 * (0 if the slot changed meanwhile). */
uint32_t rsm_share_reclaim(rsm_share *slots, uint32_t nslots, uint32_t i, uint64_t seen);

#endif
