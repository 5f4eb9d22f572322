/* rwlock.h -- a reader-writer lock, robust on both sides.
 *
 * writer word: the lock.h word layout (tid | OWNER_DIED).  A writer first claims the
 * writer word (from then on no new reader enters), then waits for the active readers to
 * drain.  Writer preference (default) comes from releasing writers handing the writer
 * word straight to the next queued writer, so readers wait while writers queue.  With
 * RSM_RW_READER_PREF a writer claims the word only when no reader is active.
 *
 * Read locks are counted per process in reader slots (share.h, after the wait queue's
 * slots), so a reclaimer removes exactly a dead process's read locks; reader_died then
 * holds its pid until the next writer takes the lock and becomes the one told (the
 * writer word's OWNER_DIED mark, with the told/untold release rule of lock.h).  When
 * every slot is taken, a reader counts in overflow_readers instead: that share is *not*
 * robust (documented limit).  Dekker between the sides: a reader raises its count, then
 * re-reads the writer word; a writer claims the word, then scans every slot (seq_cst).
 *
 * Waiter kinds in the queue: READER, WRITER (waits for the writer word), DRAIN (holds the
 * writer word, waits for the readers to drain).
 */
#ifndef RSM_RWLOCK_H
#define RSM_RWLOCK_H

#include "lock.h"
#include "share.h"

enum { RSM_RW_WRITER_PREF = 0, RSM_RW_READER_PREF = 1 };
enum { RSM_RW_KIND_READER = 0, RSM_RW_KIND_WRITER = 1, RSM_RW_KIND_DRAIN = 2 };
enum { RSM_RW_STAGE_START = 0, RSM_RW_STAGE_DRAIN = 1 };

typedef struct rsm_rwlock {
    _Atomic uint32_t writer;           /* lock.h word layout */
    _Atomic uint32_t overflow_readers; /* readers that found no free slot: not robust */
    _Atomic int32_t writer_pid;
    uint32_t policy;                   /* RSM_RW_* */
    _Atomic uint32_t dead_tid;         /* the death the current writer was told of: a writer's tid, */
    _Atomic int32_t dead_pid;          /* or 0 and the pid of a reader */
    _Atomic int32_t reader_died;       /* pid of a reclaimed reader no writer was told of yet (0: none) */
    uint32_t nreaders;                 /* reader slots, fixed at creation (= wait-queue slots) */
    rsm_waitq wq;                      /* followed by its slots, then the reader slots */
} rsm_rwlock;

RSM_STATIC_ASSERT(offsetof(rsm_rwlock, reader_died) == 24, "rsm_rwlock.reader_died offset");
RSM_STATIC_ASSERT(offsetof(rsm_rwlock, wq) == 32, "rsm_rwlock.wq offset");

size_t rsm_rwlock_size(uint32_t nslots);
void rsm_rwlock_init(rsm_rwlock *rw, uint32_t policy, uint32_t nslots);
/* The reader slots (nslots of them, bounded by RSM_WQ_MAX_SLOTS). */
rsm_share *rsm_rwlock_readers(rsm_rwlock *rw);
uint32_t rsm_rwlock_nreaders(const rsm_rwlock *rw);
/* Active read locks: the slots' counts plus overflow_readers (a snapshot). */
uint32_t rsm_rwlock_reader_count(rsm_rwlock *rw);
int rsm_rwlock_read_acquire(rsm_rwlock *rw, rsm_waiter *w, int64_t deadline_ns);
/* RSM_NOT_OWNER if this process holds no read lock. */
int rsm_rwlock_read_release(rsm_rwlock *rw);
/* RSM_OK / RSM_OWNER_DEAD (a writer or reader died: tell the caller) / RSM_TIMEOUT / RSM_SLICE */
int rsm_rwlock_write_acquire(rsm_rwlock *rw, rsm_waiter *w, int64_t deadline_ns);
int rsm_rwlock_write_release(rsm_rwlock *rw, int told);
/* dead_tid holds the writer word and is dead: a writer takes it over (RSM_OWNER_DEAD),
 * a reader frees it keeping OWNER_DIED for the next writer (RSM_OK); else RSM_RETRY. */
int rsm_rwlock_recover(rsm_rwlock *rw, uint32_t dead_tid, int as_writer, rsm_waiter *w);
/* Reader slot i held `seen` and its process was judged dead: free it (one CAS).  Returns
 * the read locks reclaimed (0 if the slot changed meanwhile). */
uint32_t rsm_rwlock_reclaim_reader(rsm_rwlock *rw, uint32_t i, uint64_t seen);
void rsm_rwlock_abandon(rsm_rwlock *rw, rsm_waiter *w);

#endif
