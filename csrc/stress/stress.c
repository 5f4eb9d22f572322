/* stress.c -- C-level torture of the primitives, for sanitizers.
 *
 *   gcc -std=c11 -O1 -g -fsanitize=address,undefined -D_GNU_SOURCE -I.. stress.c SOURCES -lpthread
 *   gcc -std=c11 -O1 -g -fsanitize=thread -D_GNU_SOURCE -I.. stress.c SOURCES -lpthread
 * where SOURCES is every C file of csrc/ except fast*.c (the CPython module).
 *
 * Threads hammer a Lock (barging and FIFO), an RLock, a robust Semaphore, an RWLock and an
 * Event through the same entry points Python uses (including timeouts and slices), and
 * check exact invariants.  Then forked children die holding read locks and permits, and
 * the reclaim transitions (share.h) are checked on shared mappings, and robust-semaphore
 * holders are SIGKILLed at random points of a churn.  Last, an Event's
 * set() whose wake-up lands late must not end a wait that began after it.  Exit status 0 =
 * all invariants held.  (Run by tests/test_c_stress.py.)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rsm.h"

#define THREADS 6
#ifndef ITERS
#define ITERS 200000
#endif
#ifndef KILLS
#define KILLS 300 /* per robust kill phase */
#endif
#define NSLOTS 8 /* fewer slots than threads at times: exercises the overflow path too */

static rsm_lock *lock_barging, *lock_fifo, *rlock;
static rsm_sem *sem;
static rsm_rwlock *rw;
static long counter_barging, counter_fifo, counter_rlock, counter_rw;
static _Atomic int inside_sem, peak_sem;
static int failures;

static void *xalloc(size_t n)
{
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!p)
        abort();
    memset(p, 0, n);
    return p;
}

/* Acquire through slices exactly as Python's run_blocking does. */
static int lock_blocking(rsm_lock *l, int recursive)
{
    rsm_waiter w = {.slot = RSM_WAITER_NONE};
    for (;;) {
        int r = recursive ? rsm_rlock_acquire(l, &w, -1) : rsm_lock_acquire(l, &w, -1);
        if (r != RSM_SLICE)
            return r;
    }
}

static void *worker(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < ITERS; i++) {
        if (lock_blocking(lock_barging, 0) != RSM_OK)
            __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
        counter_barging++;
        rsm_lock_release(lock_barging, 1);

        if (i % 8 == 0) {
            if (lock_blocking(lock_fifo, 0) != RSM_OK)
                __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
            counter_fifo++;
            rsm_lock_release(lock_fifo, 1);
        }

        if (lock_blocking(rlock, 1) != RSM_OK || lock_blocking(rlock, 1) != RSM_OK)
            __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
        counter_rlock++;
        rsm_rlock_release(rlock, 1);
        rsm_rlock_release(rlock, 1);

        /* Timed attempt on the semaphore: exercises timeouts and cancellation. */
        rsm_waiter w = {.slot = RSM_WAITER_NONE};
        int r;
        int64_t deadline = rsm_now_ns() + (i % 3) * 20000;
        while ((r = rsm_sem_acquire(sem, &w, deadline)) == RSM_SLICE)
            ;
        if (r == RSM_OK) {
            int now = atomic_fetch_add(&inside_sem, 1) + 1;
            int peak = atomic_load(&peak_sem);
            while (now > peak && !atomic_compare_exchange_weak(&peak_sem, &peak, now))
                ;
            atomic_fetch_sub(&inside_sem, 1);
            rsm_sem_release(sem, 1);
        }

        if ((i + id) % 4 == 0) {
            rsm_waiter ww = {.slot = RSM_WAITER_NONE};
            while ((r = rsm_rwlock_write_acquire(rw, &ww, -1)) == RSM_SLICE)
                ;
            counter_rw++;
            rsm_rwlock_write_release(rw, 1);
        } else {
            rsm_waiter rr = {.slot = RSM_WAITER_NONE};
            while ((r = rsm_rwlock_read_acquire(rw, &rr, -1)) == RSM_SLICE)
                ;
            volatile long seen = counter_rw;
            (void)seen;
            rsm_rwlock_read_release(rw);
        }
    }
    return NULL;
}

/* ---- death while holding a share (share.h), with real processes --------------------- */

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            printf("robust check failed at line %d: %s\n", __LINE__, #cond);             \
            return 0;                                                                    \
        }                                                                                \
    } while (0)

static void *shared_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort();
    return p;
}

static void read_twice(void *obj)
{
    rsm_waiter w = {.slot = RSM_WAITER_NONE};
    if (rsm_rwlock_read_acquire(obj, &w, 0) != RSM_OK || rsm_rwlock_read_acquire(obj, &w, 0) != RSM_OK)
        _exit(3);
}

static void take_two_permits(void *obj)
{
    rsm_waiter w = {.slot = RSM_WAITER_NONE};
    if (rsm_sem_acquire(obj, &w, 0) != RSM_OK || rsm_sem_acquire(obj, &w, 0) != RSM_OK)
        _exit(3);
}

/* A child takes its share and exits without giving it back (what a SIGKILL leaves);
 * returns its pid once it is reaped, so it is certainly dead. */
static pid_t die_holding(void (*take)(void *), void *obj)
{
    pid_t pid = fork();
    if (pid == 0) {
        take(obj);
        _exit(0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return pid;
}

/* What Python's policy does (rsm_shm/sync/_shares.py), with "dead" = that pid. */
static uint32_t reclaim_pid(rsm_share *slots, uint32_t n, pid_t dead, uint32_t (*reclaim)(void *, uint32_t, uint64_t),
                            void *obj)
{
    uint32_t got = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t word = atomic_load(&slots[i].word);
        if (word != 0 && rsm_share_pid(word) == (uint32_t)dead) {
            got += reclaim(obj, i, word);
            if (reclaim(obj, i, word) != 0) /* a stale second reclaim must do nothing */
                return UINT32_MAX;
        }
    }
    return got;
}

static uint32_t rw_reclaim(void *obj, uint32_t i, uint64_t word) { return rsm_rwlock_reclaim_reader(obj, i, word); }

/* The same for a robust semaphore's holder cells (pid and start time per cell). */
static uint32_t sem_reclaim_pid(rsm_sem *s, pid_t dead)
{
    uint32_t got = 0;
    for (uint32_t i = 0; i < rsm_sem_nholders(s); i++) {
        int32_t pid;
        uint64_t start;
        uint32_t count;
        if (rsm_sem_holder_info(s, i, &pid, &start, &count) != RSM_HOLDER_IS_FREE && pid == dead) {
            got += rsm_sem_reclaim_holder(s, i, pid, start);
            if (rsm_sem_reclaim_holder(s, i, pid, start) != 0) /* a stale second reclaim must do nothing */
                return UINT32_MAX;
        }
    }
    return got;
}

/* Does any holder cell still name this process? */
static int sem_names(rsm_sem *s, pid_t p)
{
    for (uint32_t i = 0; i < rsm_sem_nholders(s); i++) {
        int32_t pid;
        uint64_t start;
        uint32_t count;
        if (rsm_sem_holder_info(s, i, &pid, &start, &count) != RSM_HOLDER_IS_FREE && pid == p)
            return 1;
    }
    return 0;
}

static int write_lock(rsm_rwlock *r)
{
    rsm_waiter w = {.slot = RSM_WAITER_NONE};
    int res;
    while ((res = rsm_rwlock_write_acquire(r, &w, rsm_now_ns() + 1000000000LL)) == RSM_SLICE)
        ;
    return res;
}

static int robust_phase(void)
{
    /* RWLock: a dead reader's two read locks come back; a live reader's stay. */
    rsm_rwlock *r = shared_alloc(rsm_rwlock_size(NSLOTS));
    rsm_rwlock_init(r, RSM_RW_WRITER_PREF, NSLOTS);
    pid_t dead = die_holding(read_twice, r);
    CHECK(dead > 0 && rsm_rwlock_reader_count(r) == 2);
    rsm_waiter w = {.slot = RSM_WAITER_NONE};
    CHECK(rsm_rwlock_read_acquire(r, &w, 0) == RSM_OK && rsm_rwlock_reader_count(r) == 3);
    rsm_waiter ww = {.slot = RSM_WAITER_NONE};
    CHECK(rsm_rwlock_write_acquire(r, &ww, 0) == RSM_TIMEOUT);
    CHECK(reclaim_pid(rsm_rwlock_readers(r), rsm_rwlock_nreaders(r), dead, rw_reclaim, r) == 2);
    CHECK(rsm_rwlock_reader_count(r) == 1 && r->reader_died == dead);
    CHECK(rsm_rwlock_read_release(r) == RSM_OK && rsm_rwlock_read_release(r) == RSM_NOT_OWNER);
    CHECK(write_lock(r) == RSM_OWNER_DEAD && r->dead_pid == dead && r->dead_tid == 0);
    CHECK(rsm_rwlock_write_release(r, 0) == RSM_OK); /* untold: the mark stays */
    CHECK(write_lock(r) == RSM_OWNER_DEAD && r->dead_pid == dead);
    CHECK(rsm_rwlock_write_release(r, 1) == RSM_OK); /* told: cleared */
    CHECK(write_lock(r) == RSM_OK && rsm_rwlock_write_release(r, 1) == RSM_OK);
    munmap(r, rsm_rwlock_size(NSLOTS));

    /* Robust bounded semaphore: a release on the dead holder's behalf is charged to it, so
     * only the permit it still holds comes back, and the bound holds. */
    rsm_sem *s = shared_alloc(rsm_sem_size(NSLOTS, RSM_SEM_ROBUST));
    rsm_sem_init(s, 3, 3, RSM_LOCK_BARGING, RSM_SEM_ROBUST, NSLOTS);
    dead = die_holding(take_two_permits, s);
    CHECK(dead > 0 && rsm_sem_value(s) == 1);
    CHECK(rsm_sem_release(s, 1) == RSM_OK && rsm_sem_value(s) == 2);
    CHECK(rsm_sem_held(s) == 1);
    CHECK(sem_reclaim_pid(s, dead) == 1 && !sem_names(s, dead));
    CHECK(rsm_sem_value(s) == 3 && rsm_sem_release(s, 1) == RSM_OVERFLOW);
    rsm_waiter sw = {.slot = RSM_WAITER_NONE};
    CHECK(rsm_sem_acquire(s, &sw, 0) == RSM_OK && rsm_sem_held(s) == 1);
    CHECK(rsm_sem_release(s, 1) == RSM_OK && rsm_sem_held(s) == 0);
    /* release(n) over the bound fails as a whole: nothing is given back. */
    CHECK(rsm_sem_acquire(s, &sw, 0) == RSM_OK && rsm_sem_release(s, 2) == RSM_OVERFLOW && rsm_sem_held(s) == 1);
    CHECK(rsm_sem_release(s, 1) == RSM_OK && rsm_sem_value(s) == 3);
    munmap(s, rsm_sem_size(NSLOTS, RSM_SEM_ROBUST));

    /* Robust FIFO: a release wakes the oldest waiter instead of handing it the permit, so
     * a waiter killed around its wake-up takes nothing with it. */
    s = shared_alloc(rsm_sem_size(NSLOTS, RSM_SEM_ROBUST));
    rsm_sem_init(s, 0, 0, RSM_LOCK_FIFO, RSM_SEM_ROBUST, NSLOTS);
    pid_t waiter = fork();
    if (waiter == 0) {
        rsm_waiter cw = {.slot = RSM_WAITER_NONE};
        while (rsm_sem_acquire(s, &cw, -1) == RSM_SLICE)
            ;
        _exit(0);
    }
    CHECK(waiter > 0);
    for (int i = 0; i < 10000 && atomic_load(&s->wq.nwaiters) == 0; i++)
        usleep(1000);
    CHECK(atomic_load(&s->wq.nwaiters) == 1);
    kill(waiter, SIGSTOP);
    CHECK(rsm_sem_release(s, 1) == RSM_OK && rsm_sem_value(s) == 1); /* counted, not handed */
    kill(waiter, SIGKILL);
    int status = 0;
    CHECK(waitpid(waiter, &status, 0) == waiter && WIFSIGNALED(status));
    CHECK(rsm_wq_reap(&s->wq) == 1 && rsm_sem_value(s) == 1 && sem_reclaim_pid(s, waiter) == 0);
    CHECK(rsm_sem_acquire(s, &sw, 0) == RSM_OK && rsm_sem_held(s) == 1 && rsm_sem_release(s, 1) == RSM_OK);
    munmap(s, rsm_sem_size(NSLOTS, RSM_SEM_ROBUST));
    return 1;
}

/* ---- robust-semaphore holders SIGKILLed at random points ------------------------------
 * Churners acquire and release in a loop; one at a time is killed at a random moment,
 * reaped, and its holder cells reclaimed (what Python's policy does).  Whatever the kill
 * point, no cell may keep naming the dead process, and no permit may leak or be created:
 * at the end, with every churner dead and reclaimed, the value is exactly the initial
 * one.  Run with plenty of permits (the take/give paths) and with fewer permits than
 * churners (waiting, wake-ups, FIFO). */
static void churn_forever(rsm_sem *s)
{
    for (;;) {
        rsm_waiter w = {.slot = RSM_WAITER_NONE};
        int r;
        while ((r = rsm_sem_acquire(s, &w, -1)) == RSM_SLICE)
            ;
        if (r != RSM_OK || rsm_sem_release(s, 1) != RSM_OK)
            _exit(3);
    }
}

static int robust_kill_phase(int kills, uint32_t permits, uint32_t policy, unsigned seed)
{
    enum { CHURNERS = 3 };
    rsm_sem *s = shared_alloc(rsm_sem_size(NSLOTS, RSM_SEM_ROBUST));
    rsm_sem_init(s, permits, permits, policy, RSM_SEM_ROBUST, NSLOTS);
    pid_t kids[CHURNERS];
    for (int i = 0; i < CHURNERS; i++)
        if ((kids[i] = fork()) == 0)
            churn_forever(s);
    int stale = 0, failed = 0;
    for (int k = 0; k < kills + CHURNERS; k++) {
        int v = k < kills ? (int)(rand_r(&seed) % CHURNERS) : k - kills; /* at the end: all */
        if (k < kills)
            usleep(rand_r(&seed) % 300);
        kill(kids[v], SIGKILL);
        int status = 0;
        waitpid(kids[v], &status, 0);
        if (!WIFSIGNALED(status))
            failed++; /* a churner that exited saw an error (exit 3) */
        rsm_wq_reap(&s->wq);
        if (sem_reclaim_pid(s, kids[v]) == UINT32_MAX || sem_names(s, kids[v]))
            stale++;
        if (k < kills && (kids[v] = fork()) == 0)
            churn_forever(s);
    }
    uint64_t held = rsm_sem_held(s);
    uint32_t value = rsm_sem_value(s);
    int leaked = (int)permits - (int)value - (int)held;
    printf("robust kills (%u permits, %s): %d SIGKILLs, %d permits leaked, %llu still held, %d stale holder "
           "cells, %d churner errors\n",
           permits, policy == RSM_LOCK_FIFO ? "fifo" : "barging", kills + CHURNERS, leaked, (unsigned long long)held,
           stale, failed);
    munmap(s, rsm_sem_size(NSLOTS, RSM_SEM_ROBUST));
    return stale == 0 && failed == 0 && held == 0 && leaked == 0;
}

/* ---- more holders than holder cells -----------------------------------------------------
 * Four processes share a robust semaphore with two cells (and two wait queue slots): they
 * free each other's idle cells, claim them, fall back to the untracked cell, and wait on
 * the overflow word.  Nobody dies here, so every permit must be back at the end, and no
 * cell may still hold one. */
static int scarce_cells_phase(void)
{
    enum { PROCS = 4, ROUNDS = 3000, CELLS = 2, PERMITS = 2 };
    rsm_sem *s = shared_alloc(rsm_sem_size(CELLS, RSM_SEM_ROBUST));
    rsm_sem_init(s, PERMITS, PERMITS, RSM_LOCK_BARGING, RSM_SEM_ROBUST, CELLS);
    pid_t kids[PROCS];
    for (int i = 0; i < PROCS; i++) {
        if ((kids[i] = fork()) == 0) {
            for (int k = 0; k < ROUNDS; k++) {
                rsm_waiter w = {.slot = RSM_WAITER_NONE};
                int r;
                while ((r = rsm_sem_acquire(s, &w, -1)) == RSM_SLICE)
                    ;
                if (r != RSM_OK || rsm_sem_release(s, 1) != RSM_OK)
                    _exit(3);
            }
            _exit(0);
        }
    }
    int failed = 0;
    for (int i = 0; i < PROCS; i++) {
        int status = 0;
        if (waitpid(kids[i], &status, 0) != kids[i] || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    uint64_t held = rsm_sem_held(s);
    uint32_t value = rsm_sem_value(s);
    printf("scarce cells: %d processes x %d rounds on %d cells: value %u/%d, %llu held, %d failed\n", PROCS, ROUNDS,
           CELLS, value, PERMITS, (unsigned long long)held, failed);
    munmap(s, rsm_sem_size(CELLS, RSM_SEM_ROBUST));
    return failed == 0 && held == 0 && value == PERMITS;
}

/* ---- an Event's late wake-up (event.h) ------------------------------------------------
 * set() changes the word, then wakes the waiters.  If the setter is preempted in between,
 * a waiter can see the word, return, clear() and wait again before the wake-up lands: that
 * second wait began after the set() (and the clear()) and must not end with it. */
static rsm_event *late_ev;
static _Atomic int late_result = -1;

static void *late_waiter(void *arg)
{
    int64_t until = rsm_now_ns() + (int64_t)arg * 1000000LL;
    rsm_waiter w = {.slot = RSM_WAITER_NONE};
    int r;
    while ((r = rsm_event_wait(late_ev, &w, 1, 1, until)) == RSM_SLICE)
        ;
    atomic_store(&late_result, r);
    return NULL;
}

/* Start a waiter with a timeout of `ms` and return once it is queued. */
static int start_late_waiter(pthread_t *t, long ms)
{
    atomic_store(&late_result, -1);
    uint32_t before = atomic_load(&late_ev->wq.nwaiters);
    pthread_create(t, NULL, late_waiter, (void *)ms);
    for (int i = 0; i < 100000 && atomic_load(&late_ev->wq.nwaiters) == before; i++)
        usleep(10);
    return atomic_load(&late_ev->wq.nwaiters) > before;
}

static int event_late_wake_phase(void)
{
    late_ev = xalloc(rsm_event_size(NSLOTS));
    rsm_event_init(late_ev, 0, 0, NSLOTS);
    /* set(), stopped between its word change and its wake-up: the CAS of rsm_event_set. */
    uint32_t v = atomic_load(&late_ev->word);
    atomic_store(&late_ev->word, (v + 2) | RSM_EVENT_SET);
    rsm_waiter w0 = {.slot = RSM_WAITER_NONE};
    int ok = rsm_event_wait(late_ev, &w0, 1, 1, 0) == RSM_OK; /* sees it... */
    rsm_event_clear(late_ev);                                  /* ...clears it... */
    pthread_t t;
    ok = ok && start_late_waiter(&t, 300);                     /* ...and waits again */
    rsm_wq_wake(&late_ev->wq, 0x7FFFFFFF, RSM_WAKE_FIFO, RSM_KIND_ANY, RSM_TOKEN_SIGNAL, NULL, 0); /* late */
    pthread_join(t, NULL);
    int late_ignored = atomic_load(&late_result) == RSM_TIMEOUT;
    /* A set() and a clear() while a wait is in progress still end it (threading's rule). */
    ok = ok && start_late_waiter(&t, 10000);
    rsm_event_set(late_ev);
    rsm_event_clear(late_ev);
    pthread_join(t, NULL);
    int pulse_seen = atomic_load(&late_result) == RSM_OK;
    printf("event late wake-up ignored: %s, set+clear during a wait seen: %s\n", late_ignored ? "yes" : "NO",
           pulse_seen ? "yes" : "NO");
    free(late_ev);
    return ok && late_ignored && pulse_seen;
}

int main(void)
{
    lock_barging = xalloc(rsm_lock_size(NSLOTS));
    lock_fifo = xalloc(rsm_lock_size(NSLOTS));
    rlock = xalloc(rsm_lock_size(NSLOTS));
    sem = xalloc(rsm_sem_size(NSLOTS, RSM_SEM_ROBUST));
    rw = xalloc(rsm_rwlock_size(NSLOTS));
    rsm_lock_init(lock_barging, RSM_LOCK_BARGING, NSLOTS);
    rsm_lock_init(lock_fifo, RSM_LOCK_FIFO, NSLOTS);
    rsm_lock_init(rlock, RSM_LOCK_LIFO, NSLOTS);
    rsm_sem_init(sem, 2, 0, RSM_LOCK_FIFO, RSM_SEM_ROBUST, NSLOTS);
    rsm_rwlock_init(rw, RSM_RW_WRITER_PREF, NSLOTS);

    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    long want_rw = 0;
    for (long id = 0; id < THREADS; id++)
        for (int i = 0; i < ITERS; i++)
            want_rw += ((i + id) % 4 == 0);
    int ok = failures == 0 && counter_barging == (long)THREADS * ITERS &&
             counter_fifo == (long)THREADS * (ITERS / 8) && counter_rlock == (long)THREADS * ITERS &&
             counter_rw == want_rw && atomic_load(&peak_sem) <= 2 && rsm_sem_value(sem) == 2 &&
             lock_barging->word == 0 && lock_fifo->word == 0 && rlock->word == 0 &&
             lock_barging->wq.nwaiters == 0 && rsm_rwlock_reader_count(rw) == 0 && rw->writer == 0 &&
             rsm_sem_held(sem) == 0;
    printf("barging=%ld fifo=%ld rlock=%ld rw=%ld/%ld sem_peak=%d sem=%u failures=%d -> %s\n", counter_barging,
           counter_fifo, counter_rlock, counter_rw, want_rw, atomic_load(&peak_sem), rsm_sem_value(sem), failures,
           ok ? "OK" : "FAIL");
    free(lock_barging);
    free(lock_fifo);
    free(rlock);
    free(sem);
    free(rw);
    fflush(stdout); /* before fork: a child must not inherit (and repeat) buffered output */
    int robust_ok = robust_phase();
    printf("robust: %s\n", robust_ok ? "OK" : "FAIL");
    fflush(stdout);
    int kills_ok = robust_kill_phase(KILLS, 50, RSM_LOCK_BARGING, 12345);
    fflush(stdout);
    kills_ok = robust_kill_phase(KILLS, 2, RSM_LOCK_FIFO, 54321) && kills_ok;
    fflush(stdout);
    kills_ok = scarce_cells_phase() && kills_ok;
    int event_ok = event_late_wake_phase();
    return ok && robust_ok && kills_ok && event_ok ? 0 : 1;
}
