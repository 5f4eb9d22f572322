/* rsm_common.c -- clocks, cached thread ids, liveness and the raw futex system calls. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "rsm_common.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int64_t rsm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t rsm_slice_end(int64_t deadline_ns)
{
    int64_t end = rsm_now_ns() + RSM_SLICE_NS;
    if (deadline_ns >= 0 && deadline_ns < end)
        return deadline_ns;
    return end;
}

/* Thread ids are cached because gettid() is a system call and the fast path must not make
 * one.  A fork child inherits the forking thread's cache, so the atfork handler clears it. */
static RSM_THREAD_LOCAL uint32_t cached_tid;
static _Atomic int32_t cached_pid; /* shared by the threads of a process: atomic, relaxed */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static _Atomic uint64_t cached_start;

static void reset_after_fork(void)
{
    cached_tid = 0;
    atomic_store_explicit(&cached_pid, 0, memory_order_relaxed);
    atomic_store_explicit(&cached_start, 0, memory_order_relaxed);
}

static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, reset_after_fork);
}

uint32_t rsm_gettid(void)
{
    if (__builtin_expect(cached_tid == 0, 0)) {
        pthread_once(&atfork_once, install_atfork);
        cached_tid = (uint32_t)syscall(SYS_gettid);
    }
    return cached_tid;
}

int32_t rsm_getpid(void)
{
    int32_t pid = atomic_load_explicit(&cached_pid, memory_order_relaxed);
    if (__builtin_expect(pid == 0, 0)) {
        pthread_once(&atfork_once, install_atfork);
        pid = (int32_t)getpid();
        atomic_store_explicit(&cached_pid, pid, memory_order_relaxed);
    }
    return pid;
}

uint64_t rsm_self_start(void)
{
    uint64_t start = atomic_load_explicit(&cached_start, memory_order_relaxed);
    if (__builtin_expect(start != 0, 1))
        return start;
    pthread_once(&atfork_once, install_atfork);
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    /* The command name (field 2) may hold spaces and ')': count fields after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    while (*p >= '0' && *p <= '9')
        start = start * 10 + (uint64_t)(*p++ - '0');
    atomic_store_explicit(&cached_start, start, memory_order_relaxed);
    return start;
}

int rsm_pid_alive(int32_t pid)
{
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) == 0)
        return 1;
    return errno != ESRCH;
}

int rsm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
    struct timespec ts, *tsp = NULL;
    if (deadline_ns >= 0) {
        ts.tv_sec = deadline_ns / 1000000000LL;
        ts.tv_nsec = deadline_ns % 1000000000LL;
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute timeout on CLOCK_MONOTONIC (no FUTEX_CLOCK_REALTIME). */
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expected, tsp, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r == 0)
        return 0;
    if (errno == EAGAIN)
        return 0;
    return errno;
}

int rsm_futex_wake(_Atomic uint32_t *word, int n)
{
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
    return r < 0 ? 0 : (int)r;
}
