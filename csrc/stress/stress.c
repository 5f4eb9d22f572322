/* stress.c -- C-level torture of the primitives, for sanitizers.
 *
 *   gcc -std=c11 -O1 -g -fsanitize=address,undefined -D_GNU_SOURCE -I.. stress.c SOURCES -lpthread
 *   gcc -std=c11 -O1 -g -fsanitize=thread -D_GNU_SOURCE -I.. stress.c SOURCES -lpthread
 * where SOURCES is every C file of csrc/ except fastpath.c (the CPython module).
 *
 * Threads hammer a Lock (barging and FIFO), an RLock, a Semaphore, an RWLock and an Event
 * through the same entry points Python uses (including timeouts and slices), and check
 * exact invariants.  Exit status 0 = all invariants held.  (Run by tests/test_c_stress.py.)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsm.h"

#define THREADS 6
#ifndef ITERS
#define ITERS 200000
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

int main(void)
{
    lock_barging = xalloc(rsm_lock_size(NSLOTS));
    lock_fifo = xalloc(rsm_lock_size(NSLOTS));
    rlock = xalloc(rsm_lock_size(NSLOTS));
    sem = xalloc(rsm_sem_size(NSLOTS));
    rw = xalloc(rsm_rwlock_size(NSLOTS));
    rsm_lock_init(lock_barging, RSM_LOCK_BARGING, NSLOTS);
    rsm_lock_init(lock_fifo, RSM_LOCK_FIFO, NSLOTS);
    rsm_lock_init(rlock, RSM_LOCK_LIFO, NSLOTS);
    rsm_sem_init(sem, 2, 0, RSM_LOCK_FIFO, 0, NSLOTS);
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
             lock_barging->wq.nwaiters == 0 && rw->readers == 0 && rw->writer == 0;
    printf("barging=%ld fifo=%ld rlock=%ld rw=%ld/%ld sem_peak=%d sem=%u failures=%d -> %s\n", counter_barging,
           counter_fifo, counter_rlock, counter_rw, want_rw, atomic_load(&peak_sem), rsm_sem_value(sem), failures,
           ok ? "OK" : "FAIL");
    free(lock_barging);
    free(lock_fifo);
    free(rlock);
    free(sem);
    free(rw);
    return ok ? 0 : 1;
}
