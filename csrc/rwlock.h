/* rwlock.h -- a reader-writer lock whose writer side is robust (owner tid in the word).
 *
 * writer word: the lock.h word layout (tid | OWNER_DIED).  A writer first claims the
 * writer word (from then on no new reader enters), then waits for the active readers to
 * drain.  Writer preference (default) comes from releasing writers handing the writer
 * word straight to the next queued writer, so readers wait while writers queue.  With
 * RSM_RW_READER_PREF a writer claims the word only when no reader is active.
 *
 * Waiter kinds in the queue: READER, WRITER (waits for the writer word), DRAIN (holds the
 * writer word, waits for readers == 0).
 * Known limit: a reader killed while holding a read lock leaks its count (the writer side
 * is the robust one, as with POSIX robust mutexes only owners are tracked).
 */
#ifndef RSM_RWLOCK_H
#define RSM_RWLOCK_H

#include "lock.h"

enum { RSM_RW_WRITER_PREF = 0, RSM_RW_READER_PREF = 1 };
enum { RSM_RW_KIND_READER = 0, RSM_RW_KIND_WRITER = 1, RSM_RW_KIND_DRAIN = 2 };
enum { RSM_RW_STAGE_START = 0, RSM_RW_STAGE_DRAIN = 1 };

typedef struct rsm_rwlock {
    _Atomic uint32_t writer;     /* lock.h word layout */
    _Atomic uint32_t readers;    /* active readers */
    _Atomic int32_t writer_pid;
    uint32_t policy;             /* RSM_RW_* */
    _Atomic uint32_t dead_tid;
    _Atomic int32_t dead_pid;
    uint32_t _pad[2];
    rsm_waitq wq;
} rsm_rwlock;

RSM_STATIC_ASSERT(offsetof(rsm_rwlock, wq) == 32, "rsm_rwlock.wq offset");

size_t rsm_rwlock_size(uint32_t nslots);
void rsm_rwlock_init(rsm_rwlock *rw, uint32_t policy, uint32_t nslots);
int rsm_rwlock_read_acquire(rsm_rwlock *rw, rsm_waiter *w, int64_t deadline_ns);
int rsm_rwlock_read_release(rsm_rwlock *rw);
/* RSM_OK / RSM_OWNER_DEAD (tell the caller) / RSM_TIMEOUT / RSM_SLICE */
int rsm_rwlock_write_acquire(rsm_rwlock *rw, rsm_waiter *w, int64_t deadline_ns);
int rsm_rwlock_write_release(rsm_rwlock *rw, int told);
/* dead_tid holds the writer word and is dead: a writer takes it over (RSM_OWNER_DEAD),
 * a reader frees it keeping OWNER_DIED for the next writer (RSM_OK); else RSM_RETRY. */
int rsm_rwlock_recover(rsm_rwlock *rw, uint32_t dead_tid, int as_writer, rsm_waiter *w);
void rsm_rwlock_abandon(rsm_rwlock *rw, rsm_waiter *w);

#endif
