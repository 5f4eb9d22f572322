/* pool.h -- the shared status table of a worker pool (rsm_shm.pool.ProcessPool).
 *
 * The body of a RSM_KIND_POOL segment is one rsm_pool followed by `max_workers`
 * rsm_pool_worker slots (one cache line each).  The table carries no jobs: jobs travel
 * through rings (one inbox ring per worker, one results ring back to the pool's owner).
 * It exists so that
 *   - the owner learns which job a worker was running when it died (to charge that job a
 *     retry and only that one), and
 *   - any process (`rsm-shm inspect`, the owner's statistics()) can see the pool: queue
 *     depth, workers alive and busy, on which job and since when, retries and failures.
 *
 * Writers.  A worker slot has one writer at a time: the worker process of that slot
 * (state, job, since_ns, jobs_done) after the owner filled pid/generation when it started
 * it.  The pool fields have one writer: the owner's collector thread.  Readers may run in
 * any process at any time, so a slot is written under a per-slot sequence counter (a
 * seqlock: `seq` is odd while the slot is being rewritten); rsm_pool_worker_read retries
 * until it copies a stable even-sequence snapshot, and gives up (returns 0) after a bounded
 * number of tries, since the writer may have been killed mid-write (then `seq` stays odd
 * for good and the owner, which knows the worker died, reads the fields as they are).
 *
 * Job numbers are the owner's: unique per pool, never reused.  A worker marks a job BUSY
 * before it deserializes it, so a job that kills its worker in any way (even while being
 * unpickled) is the one charged; the owner never trusts the table for anything but that
 * charge and display (every job it handed out is tracked on its side too).
 */
#ifndef RSM_POOL_H
#define RSM_POOL_H

#include "rsm_common.h"

#define RSM_POOL_MAX_WORKERS 4096
#define RSM_POOL_READ_TRIES 64

/* rsm_pool.state */
enum { RSM_POOL_RUNNING = 1, RSM_POOL_SHUTTING_DOWN = 2, RSM_POOL_STOPPED = 3, RSM_POOL_BROKEN = 4 };

/* rsm_pool_worker.state */
enum {
    RSM_WORKER_EMPTY = 0,     /* no worker in this slot yet */
    RSM_WORKER_STARTING = 1,  /* started by the owner; initializer not finished */
    RSM_WORKER_IDLE = 2,      /* waiting for a job */
    RSM_WORKER_BUSY = 3,      /* running job `job` since `since_ns` */
    RSM_WORKER_RETIRED = 4,   /* left cleanly (max_tasks_per_child or shutdown) */
    RSM_WORKER_DIED = 5       /* died; set by the owner when it notices */
};

typedef struct rsm_pool_worker {
    _Atomic uint32_t seq;     /*  0 seqlock sequence: odd while the slot is being rewritten */
    uint32_t state;           /*  4 RSM_WORKER_* */
    int32_t pid;              /*  8 worker process (0: none yet) */
    uint32_t generation;      /* 12 workers this slot has had (the first is 1) */
    uint64_t job;             /* 16 the job running (BUSY) or the last one run */
    int64_t since_ns;         /* 24 CLOCK_REALTIME ns the current state began */
    uint64_t jobs_done;       /* 32 jobs this worker finished */
    int64_t started_ns;       /* 40 CLOCK_REALTIME ns the worker process was started */
    int32_t last_exit;        /* 48 how the slot's previous worker ended: exit code, or -signal */
    uint32_t _pad[3];         /* 52 */
} rsm_pool_worker;

typedef struct rsm_pool {
    uint32_t state;           /*   0 RSM_POOL_* */
    uint32_t max_workers;     /*   4 slots following this block */
    int32_t owner_pid;        /*   8 the process that created the pool and runs its collector */
    uint32_t max_retries;     /*  12 */
    uint64_t owner_start;     /*  16 owner_pid's start time (/proc/pid/stat #22): pid reuse guard */
    uint64_t submitted;       /*  24 jobs accepted */
    uint64_t completed;       /*  32 jobs that delivered an outcome (a value or the job's exception) */
    uint64_t failed;          /*  40 jobs failed with WorkerDiedError after max_retries */
    uint64_t retries;         /*  48 jobs run again because their worker died under them */
    uint64_t worker_deaths;   /*  56 workers that died (not those retired) */
    uint64_t workers_started; /*  64 */
    uint64_t pending;         /*  72 jobs waiting in the owner for a worker (queue depth) */
    uint64_t in_flight;       /*  80 jobs handed to workers, no outcome yet */
    uint64_t cancelled;       /*  88 */
    uint64_t _pad[4];         /*  96 */
    rsm_pool_worker workers[];/* 128 */
} rsm_pool;

RSM_STATIC_ASSERT(sizeof(rsm_pool_worker) == 64, "rsm_pool_worker is one cache line");
RSM_STATIC_ASSERT(offsetof(rsm_pool_worker, job) == 16, "rsm_pool_worker.job");
RSM_STATIC_ASSERT(offsetof(rsm_pool_worker, last_exit) == 48, "rsm_pool_worker.last_exit");
RSM_STATIC_ASSERT(offsetof(rsm_pool, submitted) == 24, "rsm_pool.submitted");
RSM_STATIC_ASSERT(offsetof(rsm_pool, workers) == 128, "rsm_pool.workers");

/* The worker's one call per state change: rewrite state, job and since_ns (and count a
 * finished job when `done` is 1) under the slot's sequence counter. */
static inline void rsm_pool_worker_set(rsm_pool_worker *w, uint32_t state, uint64_t job, int64_t since_ns,
                                       uint32_t done)
{
    uint32_t s = atomic_load_explicit(&w->seq, memory_order_relaxed);
    atomic_store_explicit(&w->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);  /* the odd sequence is visible before the fields change */
    w->state = state;
    w->job = job;
    w->since_ns = since_ns;
    w->jobs_done += done;
    atomic_store_explicit(&w->seq, s + 2, memory_order_release);
}

/* Copy a consistent snapshot of a slot into *out: 1 on success, 0 if the slot stayed odd or
 * kept changing for RSM_POOL_READ_TRIES tries (out then holds the last, possibly torn, copy).
 * The field copies are relaxed atomic loads of plain fields, so a torn read is a stale
 * value, never undefined behaviour: every field is naturally aligned and at most 64 bits. */
static inline int rsm_pool_worker_read(const rsm_pool_worker *w, rsm_pool_worker *out)
{
    for (int i = 0; i < RSM_POOL_READ_TRIES; i++) {
        uint32_t s1 = atomic_load_explicit(&((rsm_pool_worker *)w)->seq, memory_order_acquire);
        out->state = __atomic_load_n(&w->state, __ATOMIC_RELAXED);
        out->pid = __atomic_load_n(&w->pid, __ATOMIC_RELAXED);
        out->generation = __atomic_load_n(&w->generation, __ATOMIC_RELAXED);
        out->job = __atomic_load_n(&w->job, __ATOMIC_RELAXED);
        out->since_ns = __atomic_load_n(&w->since_ns, __ATOMIC_RELAXED);
        out->jobs_done = __atomic_load_n(&w->jobs_done, __ATOMIC_RELAXED);
        out->started_ns = __atomic_load_n(&w->started_ns, __ATOMIC_RELAXED);
        out->last_exit = __atomic_load_n(&w->last_exit, __ATOMIC_RELAXED);
        atomic_thread_fence(memory_order_acquire);
        uint32_t s2 = atomic_load_explicit(&((rsm_pool_worker *)w)->seq, memory_order_relaxed);
        atomic_store_explicit(&out->seq, s2, memory_order_relaxed);
        if (s1 == s2 && !(s1 & 1))
            return 1;
        rsm_cpu_relax();
    }
    return 0;
}

#endif
