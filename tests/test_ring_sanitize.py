"""The ring's C code alone (csrc/ring*.c) under AddressSanitizer + UBSan and ThreadSanitizer.

A small C harness (below) runs P producer and C consumer threads over one ring for every
mode (MPMC, SPSC, MPSC, SPMC) with random sizes, put_many/get_many mixed in, and checks
exactly-once delivery, per-producer order at each consumer and payload checksums, then
close() and end of stream.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

HARNESS = r"""
#include "ring.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAXLEN 3000
static rsm_ring *R;
static int NPROD, NCONS, PER;
static _Atomic unsigned char *seen;
static _Atomic long delivered;

static uint32_t sum(const unsigned char *p, uint32_t n)
{
    uint32_t s = 2166136261u;
    for (uint32_t i = 0; i < n; i++)
        s = (s ^ p[i]) * 16777619u;
    return s;
}

static void make(unsigned char *buf, uint32_t *len, uint32_t p, uint32_t seq, unsigned *rs)
{
    uint32_t n = 12 + (uint32_t)rand_r(rs) % (rand_r(rs) % 8 ? 200 : MAXLEN - 12);
    for (uint32_t i = 12; i < n; i++)
        buf[i] = (unsigned char)rand_r(rs);
    uint32_t h[3] = {p, seq, sum(buf + 12, n - 12)};
    memcpy(buf, h, 12);
    *len = n;
}

static void *producer(void *arg)
{
    uint32_t p = (uint32_t)(uintptr_t)arg;
    unsigned rs = p * 7919u + 1;
    unsigned char *buf = malloc(MAXLEN * 8);
    uint32_t lens[8];
    rsm_waiter w = {.slot = RSM_WAITER_NONE};
    for (int seq = 0; seq < PER;) {
        int k = (rand_r(&rs) % 4 == 0 && PER - seq >= 8) ? 8 : 1;
        uint64_t off = 0;
        for (int i = 0; i < k; i++) {
            make(buf + off, &lens[i], p, (uint32_t)(seq + i), &rs);
            off += lens[i];
        }
        rsm_ring_op op = {0};
        int r;
        do {
            r = k == 1 ? rsm_ring_put(R, &w, (const char *)buf, lens[0], -1, &op)
                       : rsm_ring_put_many(R, &w, (const char *)buf, lens, (uint64_t)k, -1, &op);
        } while (r == RSM_SLICE);
        if (r != RSM_OK) { printf("put failed %d\n", r); exit(2); }
        seq += k;
    }
    free(buf);
    return NULL;
}

static void check(const unsigned char *m, uint32_t n, int *last)
{
    uint32_t h[3];
    if (n < 12) { printf("short message\n"); exit(3); }
    memcpy(h, m, 12);
    if (h[0] >= (uint32_t)NPROD || h[1] >= (uint32_t)PER || sum(m + 12, n - 12) != h[2]) {
        printf("corrupt message\n"); exit(3);
    }
    if ((int)h[1] <= last[h[0]]) { printf("out of order\n"); exit(4); }
    last[h[0]] = (int)h[1];
    if (atomic_exchange(&seen[(size_t)h[0] * PER + h[1]], 1)) { printf("duplicate\n"); exit(5); }
    atomic_fetch_add(&delivered, 1);
}

static void *consumer(void *arg)
{
    int batch = (int)(uintptr_t)arg % 2;
    char *buf = malloc(MAXLEN * 16);
    uint32_t lens[16];
    int *last = malloc(sizeof(int) * (size_t)NPROD);
    for (int i = 0; i < NPROD; i++)
        last[i] = -1;
    rsm_waiter w = {.slot = RSM_WAITER_NONE};
    for (;;) {
        rsm_ring_op op = {0};
        if (batch) {
            int r = rsm_ring_get_many(R, &w, buf, MAXLEN * 16, lens, 16, -1, &op);
            if (r == RSM_SLICE) continue;
            if (r == RSM_CLOSED) break;
            if (r != RSM_OK) { printf("get_many failed %d\n", r); exit(2); }
            uint64_t off = 0;
            for (uint64_t i = 0; i < op.done; i++) {
                check((unsigned char *)buf + off, lens[i], last);
                off += lens[i];
            }
        } else {
            int64_t n = rsm_ring_get(R, &w, buf, MAXLEN * 16, -1, &op);
            if (n == -RSM_SLICE) continue;
            if (n == -RSM_CLOSED) break;
            if (n < 0) { printf("get failed %lld\n", (long long)n); exit(2); }
            check((unsigned char *)buf, (uint32_t)n, last);
        }
    }
    free(buf);
    free(last);
    return NULL;
}

static int run(int nprod, int ncons, uint32_t flags, uint64_t cap)
{
    NPROD = nprod; NCONS = ncons;
    size_t size = rsm_ring_size(cap, 16);
    R = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (R == MAP_FAILED || rsm_ring_init(R, cap, flags, 16) != RSM_OK || rsm_ring_check(R, size) != RSM_OK)
        return 1;
    seen = calloc((size_t)nprod * PER, 1);
    delivered = 0;
    pthread_t pt[8], ct[8];
    for (int i = 0; i < ncons; i++) pthread_create(&ct[i], NULL, consumer, (void *)(uintptr_t)i);
    for (int i = 0; i < nprod; i++) pthread_create(&pt[i], NULL, producer, (void *)(uintptr_t)i);
    for (int i = 0; i < nprod; i++) pthread_join(pt[i], NULL);
    rsm_ring_close(R);
    for (int i = 0; i < ncons; i++) pthread_join(ct[i], NULL);
    long want = (long)nprod * PER;
    int ok = delivered == want && R->head == (R->tail & RSM_RING_POS_MASK);
    printf("%dx%d flags=%u cap=%llu: %ld/%ld delivered%s\n", nprod, ncons, flags, (unsigned long long)cap,
           (long)delivered, want, ok ? "" : " MISMATCH");
    free((void *)seen);
    munmap(R, size);
    return ok ? 0 : 1;
}

int main(void)
{
    PER = ITERS;
    /* rsm_common.c caches the pid in a plain static on first use: warm it before the
     * threads start (a benign race TSan would otherwise report; not ring code). */
    (void)rsm_getpid();
    int bad = 0;
    bad |= run(4, 4, 0, 1 << 14);
    bad |= run(1, 1, RSM_RING_SINGLE_PRODUCER | RSM_RING_SINGLE_CONSUMER, 1 << 13);
    bad |= run(4, 1, RSM_RING_SINGLE_CONSUMER, 1 << 14);
    bad |= run(1, 4, RSM_RING_SINGLE_PRODUCER, 1 << 14);
    bad |= run(3, 3, 0, 4096);
    printf(bad ? "-> FAILED\n" : "-> OK\n");
    return bad;
}
"""


# Consumers read record headers optimistically and validate the read afterwards (ring_get.c:
# take() re-checks `read`; advance_head() and the claims walk validate by CAS), so a header
# slot may be read while a producer rewrites it after the slot was freed; the value read is
# then discarded.  TSan reports those reads against the producer's memcpy; they are
# suppressed here, and only here.  Real overlaps would still show up as corrupt, duplicate
# or lost messages, which the harness checks.
TSAN_SUPPRESSIONS = """
race:take
race:ring_advance_head
race:rsm_ring_claims
"""


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("sanitizer", ["address,undefined", "thread"])
def test_ring_c_under_sanitizer(tmp_path, sanitizer):
    src = tmp_path / "ring_harness.c"
    src.write_text(HARNESS)
    exe = tmp_path / "ring_harness"
    sources = sorted(glob.glob(os.path.join(CSRC, "ring*.c"))) + [
        os.path.join(CSRC, f) for f in ("waitq.c", "rsm_common.c")
    ]
    iters = "20000" if sanitizer == "thread" else "40000"
    build = subprocess.run(
        [
            "gcc",
            "-std=c11",
            "-O1",
            "-g",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-fsanitize={sanitizer}",
            "-fno-omit-frame-pointer",
            "-D_GNU_SOURCE",
            f"-DITERS={iters}",
            f"-I{CSRC}",
            str(src),
            *sources,
            "-lpthread",
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and "sanitize" in build.stderr and "cannot find" in build.stderr:
        pytest.skip(f"{sanitizer} sanitizer runtime not installed")
    assert build.returncode == 0, build.stderr
    supp = tmp_path / "tsan.supp"
    supp.write_text(TSAN_SUPPRESSIONS)
    run = subprocess.run(
        [str(exe)],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "TSAN_OPTIONS": f"halt_on_error=1 suppressions={supp}", "UBSAN_OPTIONS": "halt_on_error=1"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "-> OK" in run.stdout and "WARNING" not in run.stderr
