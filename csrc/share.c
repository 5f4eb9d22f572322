/* share.c -- per-process shares; the slot protocol is in share.h. */
#include "share.h"

static uint32_t first_slot(uint32_t pid, uint32_t nslots)
{
    return nslots ? (pid * 2654435761u) % nslots : 0;
}

/* Is this word (and the slot's start time) this process's, usable for counting? */
static int is_mine(rsm_share *s, uint64_t v, uint32_t pid, uint64_t start)
{
    /* A slot with our pid but another start time is a dead predecessor's (reused pid):
     * never ours to add to or take from. */
    return rsm_share_pid(v) == pid && (uint32_t)v != RSM_SHARE_CLAIMING && atomic_load(&s->start) == start;
}

/* Claim slot s from `from` (0, or an idle slot) and put n units in it. */
static int claim(rsm_share *s, uint64_t from, uint32_t pid, uint64_t start, uint32_t n)
{
    uint64_t claiming = (uint64_t)pid << 32 | RSM_SHARE_CLAIMING;
    if (!atomic_compare_exchange_strong(&s->word, &from, claiming))
        return 0;
    atomic_store(&s->start, start); /* before any unit: whoever sees a unit sees it too */
    uint64_t v = claiming;
    return atomic_compare_exchange_strong(&s->word, &v, ((uint64_t)pid << 32) | n);
}

int rsm_share_add(rsm_share *slots, uint32_t nslots, uint32_t n)
{
    uint64_t start = rsm_self_start();
    uint32_t pid = (uint32_t)rsm_getpid();
    uint32_t h = first_slot(pid, nslots);
    for (uint32_t k = 0; k < nslots; k++) {
        rsm_share *s = &slots[(h + k) % nslots];
        uint64_t v = atomic_load(&s->word);
        for (;;) {
            if (is_mine(s, v, pid, start)) {
                if ((uint32_t)v > RSM_SHARE_MAX - n)
                    break; /* this slot is full: another one */
                if (atomic_compare_exchange_weak(&s->word, &v, v + n))
                    return 1;
                continue;
            }
            if (v != 0)
                break; /* another process's, or one of our threads is claiming it */
            if (claim(s, 0, pid, start, n))
                return 1;
            v = atomic_load(&s->word);
        }
    }
    /* No free slot: take over an idle one (it holds nothing; see share.h). */
    for (uint32_t k = 0; k < nslots; k++) {
        rsm_share *s = &slots[(h + k) % nslots];
        uint64_t v = atomic_load(&s->word);
        if (v != 0 && (uint32_t)v == 0 && claim(s, v, pid, start, n))
            return 1;
    }
    return 0;
}

/* Take up to n units from slot s if it is (pid, start)'s.  The slot stays with its
 * process when its count reaches 0 (idle). */
static uint32_t take(rsm_share *s, uint32_t pid, uint64_t start, uint32_t n)
{
    uint64_t v = atomic_load(&s->word);
    while (rsm_share_count(v) != 0 && is_mine(s, v, pid, start)) {
        uint32_t c = rsm_share_count(v), t = c < n ? c : n;
        if (atomic_compare_exchange_weak(&s->word, &v, v - t))
            return t;
    }
    return 0;
}

uint32_t rsm_share_sub_own(rsm_share *slots, uint32_t nslots, uint32_t n)
{
    uint64_t start = rsm_self_start();
    uint32_t pid = (uint32_t)rsm_getpid(), h = first_slot(pid, nslots), got = 0;
    for (uint32_t k = 0; k < nslots && got < n; k++)
        got += take(&slots[(h + k) % nslots], pid, start, n - got);
    return got;
}

uint64_t rsm_share_total(rsm_share *slots, uint32_t nslots)
{
    uint64_t c = 0;
    for (uint32_t i = 0; i < nslots; i++)
        c += rsm_share_count(atomic_load(&slots[i].word));
    return c;
}

int rsm_share_any(rsm_share *slots, uint32_t nslots)
{
    for (uint32_t i = 0; i < nslots; i++)
        if (rsm_share_count(atomic_load(&slots[i].word)) != 0)
            return 1;
    return 0;
}

uint32_t rsm_share_reclaim(rsm_share *slots, uint32_t nslots, uint32_t i, uint64_t seen)
{
    if (i >= nslots || seen == 0)
        return 0;
    if (!atomic_compare_exchange_strong(&slots[i].word, &seen, 0))
        return 0;
    return rsm_share_count(seen);
}
