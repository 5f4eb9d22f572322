/* rsm_common.h -- status codes, clocks, thread ids and futex calls shared by every primitive.
 *
 * Every shared word lives inside a MAP_SHARED mapping, so all futex calls here are
 * deliberately *not* FUTEX_PRIVATE_FLAG: private futexes key on (mm, address) and never
 * match a waiter in another process.
 */
#ifndef RSM_COMMON_H
#define RSM_COMMON_H

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>

/* Status codes returned by every C entry point; rsm_shm/_errors.py maps them to exceptions. */
enum {
    RSM_OK = 0,            /* done / acquired */
    RSM_TIMEOUT = 1,       /* the caller's absolute deadline passed */
    RSM_SLICE = 2,         /* a ~50 ms slice ended (or EINTR): return to Python, run signal handlers, call again */
    RSM_WOULDBLOCK = 3,    /* non-blocking attempt failed */
    RSM_NOT_OWNER = 4,     /* release by a thread that does not own the object */
    RSM_DISABLED = 5,      /* semaphore disabled / gate or barrier aborted */
    RSM_BROKEN = 6,        /* barrier broken */
    RSM_OWNER_DEAD = 7,    /* acquired, but the previous owner died holding it: caller must be told */
    RSM_CLOSED = 8,        /* ring closed */
    RSM_INVAL = 9,         /* bad argument or corrupt shared state */
    RSM_OVERFLOW = 10,     /* a counter would exceed its bound (BoundedSemaphore.release) */
    RSM_NO_SLOT = 11,      /* the wait queue has no free slot */
    RSM_RETRY = 12,        /* internal: state changed under us, try again */
    RSM_CORRUPT = 13       /* shared state that no correct writer leaves: SegmentError */
};

/* One blocking call never sleeps longer than this, so Python signal handlers (Ctrl-C) run
 * at least every RSM_SLICE_NS and owner-liveness checks happen from Python. */
#define RSM_SLICE_NS (50LL * 1000 * 1000)

/* Linux thread ids fit in 22 bits (PID_MAX_LIMIT = 4M); the lock words keep 30. */
#define RSM_TID_MASK 0x3FFFFFFFu

int64_t rsm_now_ns(void);              /* CLOCK_MONOTONIC, the same clock as time.monotonic_ns() */
uint32_t rsm_gettid(void);             /* cached per thread, reset in fork children */
int32_t rsm_getpid(void);              /* cached per process, reset in fork children */
int rsm_pid_alive(int32_t pid);        /* 0 only when kill(pid, 0) says ESRCH */
/* This process's start time in clock ticks after boot (/proc/self/stat field 22), read once
 * and cached; with the pid it names a process for good (pids are reused, this pair is not). */
uint64_t rsm_self_start(void);

/* futex(FUTEX_WAIT_BITSET) with an absolute CLOCK_MONOTONIC deadline (< 0: none).
 * Returns 0 (woken or value differed), ETIMEDOUT or EINTR. */
int rsm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns);
int rsm_futex_wake(_Atomic uint32_t *word, int n);

/* The end of the current slice: min(deadline, now + RSM_SLICE_NS). */
int64_t rsm_slice_end(int64_t deadline_ns);

/* Bounded busy-wait helper: a CPU relax hint. */
static inline void rsm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

#define RSM_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)

/* Thread-locals on the fast paths: initial-exec avoids a __tls_get_addr call per access in
 * a shared object (a few bytes of the static TLS surplus that glibc keeps for dlopen). */
#define RSM_THREAD_LOCAL _Thread_local __attribute__((tls_model("initial-exec")))

#endif
