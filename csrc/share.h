/* share.h -- per-process shares of a counted resource, robust to process death.
 *
 * Used for an RWLock's read locks (a robust semaphore's permits have tagged holder cells
 * of their own, sem.h): what a process holds is counted in a slot of its own, so when it
 * dies exactly its share can be taken back.
 *
 * Slot (16 bytes):
 *   word   pid << 32 | count    0 = free; count = units this process holds, or CLAIMING
 *   start  the pid's start time, written by the claimant while the count is CLAIMING, so
 *          with the pid it names the process for good (pids are reused, this pair is not)
 * Transitions, each one CAS on `word`:
 *   0 -> (pid, CLAIMING)        claim (then store start)              by the process itself
 *   (q, 0) -> (pid, CLAIMING)   take over an idle slot, when none is free (q may be alive:
 *                               an idle slot holds nothing, and q's next CAS on it fails)
 *   (pid, CLAIMING) -> (pid, n) first units
 *   (pid, c) -> (pid, c +- n)   more units / give units back           by the process itself
 *   (pid, c) -> 0               reclaim, only after the caller judged the process dead:
 *                               by (pid, start) when it holds units; by pid alone when it
 *                               is idle or CLAIMING (the start may not be written yet; a
 *                               live claimant is never robbed, so its late store of start
 *                               cannot land in a slot someone else claimed since)
 * A slot stays with its process when the count drops to 0 (idle): the next acquisition
 * is then a single CAS on a slot found at once.  A process may own several slots (two of
 * its threads claimed at once): harmless, its share is their sum.
 */
#ifndef RSM_SHARE_H
#define RSM_SHARE_H

#include "rsm_common.h"

#define RSM_SHARE_CLAIMING 0xFFFFFFFFu   /* count field of a slot being claimed */
#define RSM_SHARE_MAX 0xFFFFFFFEu        /* most units one slot counts */

typedef struct rsm_share {
    _Atomic uint64_t word;   /* pid << 32 | count; 0 = free */
    _Atomic uint64_t start;  /* the pid's start time (clock ticks after boot), 0 = unknown */
} rsm_share;

RSM_STATIC_ASSERT(sizeof(rsm_share) == 16, "rsm_share layout");

static inline uint32_t rsm_share_pid(uint64_t word) { return (uint32_t)(word >> 32); }
/* Units held (0 for a free, idle or claiming slot). */
static inline uint32_t rsm_share_count(uint64_t word)
{
    uint32_t c = (uint32_t)(word & 0xFFFFFFFFu);
    return c == RSM_SHARE_CLAIMING ? 0 : c;
}

/* Add n units to this process's share.  0: every slot is busy with other processes' units
 * (the caller counts the units untracked), 1: done. */
int rsm_share_add(rsm_share *slots, uint32_t nslots, uint32_t n);
/* Take up to n units from this process's own share; returns how many it took. */
uint32_t rsm_share_sub_own(rsm_share *slots, uint32_t nslots, uint32_t n);
/* Sum of the counts (a snapshot), and whether any is non-zero. */
uint64_t rsm_share_total(rsm_share *slots, uint32_t nslots);
int rsm_share_any(rsm_share *slots, uint32_t nslots);
/* Slot i held `seen` and its process was judged dead: free it.  Returns the units freed
 * (0 if the slot changed meanwhile, or held none). */
uint32_t rsm_share_reclaim(rsm_share *slots, uint32_t nslots, uint32_t i, uint64_t seen);

#endif
