/* raft_status.c -- seqlocked copies of the cluster records (see raft_status.h). */
#include "raft_status.h"

#include <string.h>

static void seq_store(_Atomic uint64_t *seq, _Atomic uint64_t *words, const void *src, size_t nwords)
{
    uint64_t buf[RSM_RAFT_CONTROL_WORDS > RSM_RAFT_STATUS_WORDS ? RSM_RAFT_CONTROL_WORDS : RSM_RAFT_STATUS_WORDS];
    uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
    memcpy(buf, src, nwords * 8);
    /* Odd while writing; the release fence orders the odd seq before the word stores. */
    atomic_store_explicit(seq, s | 1u, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    for (size_t i = 0; i < nwords; i++)
        atomic_store_explicit(&words[i], buf[i], memory_order_relaxed);
    /* Even again, published after the words (release).  A writer that died mid-write left
     * seq odd: the next one continues from that odd value. */
    atomic_store_explicit(seq, (s | 1u) + 1, memory_order_release);
}

static int seq_load(_Atomic uint64_t *seq, _Atomic uint64_t *words, void *dst, size_t nwords, int tries)
{
    uint64_t buf[RSM_RAFT_CONTROL_WORDS > RSM_RAFT_STATUS_WORDS ? RSM_RAFT_CONTROL_WORDS : RSM_RAFT_STATUS_WORDS];
    for (int t = 0; t < tries; t++) {
        uint64_t s1 = atomic_load_explicit(seq, memory_order_acquire);
        if (s1 & 1u) {
            rsm_cpu_relax();
            continue;
        }
        for (size_t i = 0; i < nwords; i++)
            buf[i] = atomic_load_explicit(&words[i], memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(seq, memory_order_relaxed) == s1) {
            memcpy(dst, buf, nwords * 8);
            return RSM_OK;
        }
    }
    return RSM_WOULDBLOCK;
}

void rsm_raft_status_store(rsm_raft_status_rec *rec, const rsm_raft_status *src)
{
    seq_store(&rec->seq, rec->words, src, RSM_RAFT_STATUS_WORDS);
}

void rsm_raft_control_store(rsm_raft_control_rec *rec, const rsm_raft_control *src)
{
    seq_store(&rec->seq, rec->words, src, RSM_RAFT_CONTROL_WORDS);
}

int rsm_raft_status_load(rsm_raft_status_rec *rec, rsm_raft_status *dst, int tries)
{
    return seq_load(&rec->seq, rec->words, dst, RSM_RAFT_STATUS_WORDS, tries);
}

int rsm_raft_control_load(rsm_raft_control_rec *rec, rsm_raft_control *dst, int tries)
{
    return seq_load(&rec->seq, rec->words, dst, RSM_RAFT_CONTROL_WORDS, tries);
}

uint64_t rsm_raft_status_seq(rsm_raft_status_rec *rec)
{
    return atomic_load_explicit(&rec->seq, memory_order_acquire);
}

uint64_t rsm_raft_control_seq(rsm_raft_control_rec *rec)
{
    return atomic_load_explicit(&rec->seq, memory_order_acquire);
}
