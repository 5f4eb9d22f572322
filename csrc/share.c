/* share.c -- per-process shares; the slot protocol is in share.h. */
#include "share.h"

static uint32_t first_slot(uint32_t pid, uint32_t nslots)
{
    return nslots ? (pid * 2654435761u) % nslots : 0;
}

int rsm_share_add(rsm_share *slots, uint32_t nslots, uint32_t n)
{
    /* A slot with our pid but another start time is a dead predecessor's (reused pid):
     * never ours to add to or take from. */
    uint64_t start = rsm_self_start();
    uint32_t pid = (uint32_t)rsm_getpid();
    uint32_t h = first_slot(pid, nslots);
    for (uint32_t k = 0; k < nslots; k++) {
        rsm_share *s = &slots[(h + k) % nslots];
        uint64_t v = atomic_load(&s->word);
        for (;;) {
            if (rsm_share_pid(v) == pid && rsm_share_count(v) != 0 && atomic_load(&s->start) == start) {
                if (rsm_share_count(v) > UINT32_MAX - n)
                    break; /* this slot is full: another one */
                if (atomic_compare_exchange_weak(&s->word, &v, v + n))
                    return 1;
                continue;
            }
            if (v != 0)
                break; /* another process's, or one of our threads is claiming it */
            uint64_t claimed = (uint64_t)pid << 32;
            if (!atomic_compare_exchange_strong(&s->word, &v, claimed))
                continue;
            /* The start time before the count leaves 0: whoever sees a count sees it too. */
            atomic_store(&s->start, start);
            v = claimed;
            if (atomic_compare_exchange_strong(&s->word, &v, claimed + n))
                return 1;
            continue; /* cannot happen to a live claimant (see share.h); re-examine */
        }
    }
    return 0;
}

/* Take up to n units from slot s if it is (pid, start)'s (anyone's when pid == 0). */
static uint32_t take(rsm_share *s, uint32_t pid, uint64_t start, uint32_t n)
{
    uint64_t v = atomic_load(&s->word);
    while (v != 0 && rsm_share_count(v) != 0 &&
           (pid == 0 || (rsm_share_pid(v) == pid && atomic_load(&s->start) == start))) {
        uint32_t c = rsm_share_count(v), t = c < n ? c : n;
        uint64_t next = t == c ? 0 : v - t;
        if (atomic_compare_exchange_weak(&s->word, &v, next))
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

uint32_t rsm_share_sub_any(rsm_share *slots, uint32_t nslots, uint32_t n)
{
    /* Start where this process would: spreads concurrent releasers over the slots. */
    uint32_t h = first_slot((uint32_t)rsm_getpid(), nslots), got = 0;
    for (uint32_t k = 0; k < nslots && got < n; k++)
        got += take(&slots[(h + k) % nslots], 0, 0, n - got);
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
