/* sem.c -- counting semaphores over the wait queue; see sem.h (the robust protocol too). */
#include "sem.h"

/* ---- robust accounting: tags and holder cells (sem.h) --------------------------------- */

enum { OP_INC = 1, OP_DEC = 2, OP_FREE = 3 }; /* take a permit / give one back / reclaim a cell */
#define TAG_SEQ_MASK 0x1FFFFu                 /* tag: (cell + 1) << 19 | op << 17 | seq (17 bits) */

static inline uint32_t tag_of(uint64_t c) { return (uint32_t)(c >> 32); }
static inline uint32_t low_of(uint64_t c) { return (uint32_t)c; }
static inline uint32_t seq_of(uint64_t w) { return (uint32_t)(w >> 32); }
static inline uint32_t state_of(uint64_t w) { return (uint32_t)w; }
static inline int held(uint32_t state) { return !(state & RSM_HOLDER_CLAIMING); }

size_t rsm_sem_size(uint32_t nslots, uint32_t flags)
{
    size_t cells = (flags & RSM_SEM_ROBUST) ? ((size_t)nslots + 1) * sizeof(rsm_sem_holder) : 0;
    return offsetof(rsm_sem, wq) + rsm_wq_size(nslots) + cells;
}

static inline rsm_sem_holder *cells(rsm_sem *s)
{
    return (rsm_sem_holder *)((char *)&s->wq + rsm_wq_size(rsm_wq_nslots(&s->wq)));
}

uint32_t rsm_sem_nholders(const rsm_sem *s)
{
    /* Python checks nholders against the (CRC-checked) header; walks stay bounded anyway. */
    if (!(s->flags & RSM_SEM_ROBUST))
        return 0;
    uint32_t n = rsm_wq_nslots(&s->wq);
    return s->nholders < n ? s->nholders : n;
}

/* The cell counting untracked permits: the one after the holder cells. */
static inline uint32_t untracked_cell(const rsm_sem *s) { return rsm_sem_nholders(s); }

void rsm_sem_init(rsm_sem *s, uint32_t value, uint32_t max, uint32_t policy, uint32_t flags, uint32_t nslots)
{
    rsm_wq_init(&s->wq, nslots);
    s->count = value & RSM_SEM_VALUE_MAX;
    s->max = max;
    s->policy = policy;
    s->flags = flags;
    s->nholders = (flags & RSM_SEM_ROBUST) ? nslots : 0;
    if (!(flags & RSM_SEM_ROBUST))
        return;
    rsm_sem_holder *h = cells(s);
    for (uint32_t i = 0; i < nslots; i++) {
        h[i].word = RSM_HOLDER_FREE;
        h[i].start = 0;
        h[i].pid = 0;
        h[i]._pad = 0;
    }
    h[nslots].word = 0; /* the untracked cell: held by nobody in particular, count 0 */
    h[nslots].start = 0;
    h[nslots].pid = 0;
    h[nslots]._pad = 0;
}

/* The word cell word w becomes once operation op is applied to it. */
static uint64_t applied(uint64_t w, uint32_t op)
{
    uint64_t seq = (uint64_t)(seq_of(w) + 1) << 32;
    uint32_t st = state_of(w);
    if (op == OP_INC)
        return seq | (st + 1);
    if (op == OP_DEC)
        return seq | (st - 1);
    return seq | RSM_HOLDER_FREE;
}

/* Make sure the operation tagged in count word c is recorded in its cell. */
static void settle(rsm_sem *s, uint64_t c)
{
    uint32_t tag = tag_of(c), i = (tag >> 19) - 1, op = (tag >> 17) & 3u, seq = tag & TAG_SEQ_MASK;
    if (tag == 0 || i > untracked_cell(s))
        return;
    rsm_sem_holder *h = &cells(s)[i];
    uint64_t w = atomic_load(&h->word);
    for (;;) {
        if ((seq_of(w) & TAG_SEQ_MASK) == seq)
            return; /* recorded */
        /* Not recorded yet.  If the tag has left the count word, whoever replaced it
         * recorded it first; a cell out of step with the tag is not ours to touch. */
        if (tag_of(atomic_load(&s->count)) != tag || ((seq_of(w) + 1) & TAG_SEQ_MASK) != seq)
            return;
        if (op != OP_FREE && (!held(state_of(w)) || (op == OP_DEC && state_of(w) == 0)))
            return; /* cannot happen (sem.h); never turn a count into a state */
        if (atomic_compare_exchange_strong(&h->word, &w, applied(w, op)))
            return;
    }
}

/* Count word c (its tag settled, cell i read as w after that) becomes `low` with the tag
 * of operation op on cell i; then the operation is recorded.  0: c changed (c reloaded). */
static int install(rsm_sem *s, uint64_t *c, uint32_t low, uint32_t i, uint32_t op, uint64_t w)
{
    uint32_t tag = (i + 1) << 19 | op << 17 | ((seq_of(w) + 1) & TAG_SEQ_MASK);
    if (!atomic_compare_exchange_strong(&s->count, c, (uint64_t)tag << 32 | low))
        return 0;
    uint64_t expect = w; /* may fail: someone settled it already */
    atomic_compare_exchange_strong(&cells(s)[i].word, &expect, applied(w, op));
    return 1;
}

/* Where this process's search for its cell starts: a hash of the pid scaled to [0, n)
 * (multiply-shift: no division on every call). */
static inline uint32_t first_cell(uint32_t pid, uint32_t n)
{
    return (uint32_t)(((uint64_t)(pid * 2654435761u) * n) >> 32);
}

/* The k-th cell of a walk that starts at `first` and wraps around n cells. */
static inline uint32_t walk(uint32_t first, uint32_t k, uint32_t n)
{
    uint32_t i = first + k;
    return i >= n ? i - n : i;
}

/* Is cell h (word w) this process's? */
static int is_mine(rsm_sem_holder *h, uint64_t w, int32_t pid, uint64_t start)
{
    return held(state_of(w)) && atomic_load(&h->pid) == pid && atomic_load(&h->start) == start;
}

/* This process's cell with its word (read now, after the caller settled the count word),
 * or a free one claimed.  Returns the index, or the untracked cell's when every cell is
 * busy. */
static uint32_t my_cell(rsm_sem *s, uint64_t *w)
{
    rsm_sem_holder *h = cells(s);
    uint32_t n = rsm_sem_nholders(s), pid = (uint32_t)rsm_getpid(), first = first_cell(pid, n);
    uint64_t start = rsm_self_start();
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = walk(first, k, n);
        uint64_t v = atomic_load(&h[i].word);
        if (is_mine(&h[i], v, (int32_t)pid, start)) {
            *w = v;
            return i;
        }
        if (state_of(v) == RSM_HOLDER_FREE) {
            /* Claims take the first free cell from `first`, so ours, if any, came before. */
            if (pid > RSM_HOLDER_PID_MASK)
                break;
            uint64_t claiming = (uint64_t)seq_of(v) << 32 | RSM_HOLDER_CLAIMING | pid;
            if (!atomic_compare_exchange_strong(&h[i].word, &v, claiming)) {
                k--; /* look at this cell again */
                continue;
            }
            atomic_store(&h[i].pid, (int32_t)pid); /* before the count: whoever sees it sees these */
            atomic_store(&h[i].start, start);
            *w = claiming & ~(uint64_t)0xFFFFFFFFu; /* count 0, same seq */
            atomic_store(&h[i].word, *w);
            return i;
        }
    }
    uint32_t u = untracked_cell(s);
    *w = atomic_load(&h[u].word);
    return u;
}

/* A cell to charge a release to (sem.h): one of ours with permits (usually the first
 * looked at), else the untracked cell, else any holder's.  UINT32_MAX: none holds any. */
static uint32_t charge_cell(rsm_sem *s, uint64_t *w)
{
    rsm_sem_holder *h = cells(s);
    uint32_t n = rsm_sem_nholders(s), u = untracked_cell(s), pid = (uint32_t)rsm_getpid();
    uint32_t first = first_cell(pid, n);
    uint64_t start = rsm_self_start();
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = walk(first, k, n);
        *w = atomic_load(&h[i].word);
        if (state_of(*w) != 0 && is_mine(&h[i], *w, (int32_t)pid, start))
            return i;
    }
    *w = atomic_load(&h[u].word);
    if (state_of(*w) != 0)
        return u;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = walk(first, k, n);
        *w = atomic_load(&h[i].word);
        if (held(state_of(*w)) && state_of(*w) != 0)
            return i;
    }
    return UINT32_MAX;
}

/* Every cell is busy: free an idle one (a process that holds nothing there; if it is
 * alive, it claims another cell next time), so that this process gets a cell.  1: freed
 * (the count word changed), 0: no cell is idle, -1: the count word changed first (c
 * reloaded: the caller must start over, c may no longer have a permit). */
static int free_idle_cell(rsm_sem *s, uint64_t *c)
{
    rsm_sem_holder *h = cells(s);
    uint32_t n = rsm_sem_nholders(s);
    for (uint32_t k = 0, first = first_cell((uint32_t)rsm_getpid(), n); k < n; k++) {
        uint32_t i = walk(first, k, n);
        uint64_t w = atomic_load(&h[i].word);
        if (state_of(w) == 0)
            return install(s, c, low_of(*c), i, OP_FREE, w) ? 1 : -1;
    }
    return 0;
}

/* rsm_waiter.stage bits of a semaphore acquire. */
enum { STAGE_WOKEN = 1,  /* woken by a robust release: may take ahead of the FIFO queue */
       STAGE_FREED = 2 }; /* freed an idle cell already: take untracked now rather than free more */

/* Robust: take one permit out of count word c (value > 0) and record it.  0: c changed. */
static int take_robust(rsm_sem *s, rsm_waiter *wt, uint64_t *c)
{
    settle(s, *c);
    uint64_t w;
    uint32_t i = my_cell(s, &w);
    if (i == untracked_cell(s) && !(wt->stage & STAGE_FREED)) {
        /* Once per acquire: two processes short of cells must not free each other's
         * freshly claimed cells forever. */
        int freed = free_idle_cell(s, c);
        if (freed < 0)
            return 0;
        if (freed) {
            wt->stage |= STAGE_FREED;
            return 0; /* the caller reloads the count word and comes back to claim it */
        }
    }
    if (state_of(w) >= RSM_HOLDER_COUNT_MAX) /* a full cell: cannot happen below VALUE_MAX permits */
        return atomic_compare_exchange_strong(&s->count, c, (uint64_t)(low_of(*c) - 1));
    return install(s, c, low_of(*c) - 1, i, OP_INC, w);
}

/* Robust: give one permit back to count word c (charged, see sem.h).  RSM_OK, RSM_SLICE
 * when c changed (reloaded; try again), RSM_OVERFLOW, RSM_DISABLED. */
static int give_robust(rsm_sem *s, uint64_t *c)
{
    settle(s, *c);
    if (low_of(*c) & RSM_SEM_DISABLED)
        return RSM_DISABLED;
    uint32_t v = low_of(*c) & RSM_SEM_VALUE_MAX, limit = s->max ? s->max : RSM_SEM_VALUE_MAX;
    if (v >= limit)
        return RSM_OVERFLOW;
    uint64_t w;
    uint32_t i = charge_cell(s, &w);
    int ok = i == UINT32_MAX ? atomic_compare_exchange_strong(&s->count, c, (uint64_t)(v + 1)) /* a new permit */
                             : install(s, c, v + 1, i, OP_DEC, w);
    return ok ? RSM_OK : RSM_SLICE;
}

int rsm_sem_holder_info(rsm_sem *s, uint32_t i, int32_t *pid, uint64_t *start, uint32_t *count)
{
    *pid = 0;
    *start = 0;
    *count = 0;
    if (i >= rsm_sem_nholders(s))
        return RSM_HOLDER_IS_FREE;
    rsm_sem_holder *h = &cells(s)[i];
    uint32_t st = state_of(atomic_load(&h->word));
    if (st == RSM_HOLDER_FREE)
        return RSM_HOLDER_IS_FREE;
    if (!held(st)) {
        *pid = (int32_t)(st & RSM_HOLDER_PID_MASK);
        return RSM_HOLDER_IS_CLAIMING;
    }
    *pid = atomic_load(&h->pid);
    *start = atomic_load(&h->start);
    *count = st;
    return RSM_HOLDER_IS_HELD;
}

uint32_t rsm_sem_untracked(rsm_sem *s)
{
    if (!(s->flags & RSM_SEM_ROBUST))
        return 0;
    settle(s, atomic_load(&s->count)); /* a snapshot that includes the last operation */
    return state_of(atomic_load(&cells(s)[untracked_cell(s)].word));
}

uint64_t rsm_sem_held(rsm_sem *s)
{
    if (!(s->flags & RSM_SEM_ROBUST))
        return 0;
    settle(s, atomic_load(&s->count));
    uint64_t total = 0;
    for (uint32_t i = 0; i <= untracked_cell(s); i++) {
        uint32_t st = state_of(atomic_load(&cells(s)[i].word));
        if (held(st))
            total += st;
    }
    return total;
}

static void wake_after_release(rsm_sem *s, uint32_t n);

uint32_t rsm_sem_reclaim_holder(rsm_sem *s, uint32_t i, int32_t pid, uint64_t start)
{
    if (i >= rsm_sem_nholders(s))
        return 0;
    rsm_sem_holder *h = &cells(s)[i];
    uint64_t c = atomic_load(&s->count);
    for (;;) {
        settle(s, c); /* a take or give of the dead process, in flight, is recorded first */
        uint64_t w = atomic_load(&h->word);
        uint32_t st = state_of(w), n = 0;
        if (st == RSM_HOLDER_FREE)
            return 0;
        if (!held(st)) {
            if ((int32_t)(st & RSM_HOLDER_PID_MASK) != pid)
                return 0;
        } else {
            if (atomic_load(&h->pid) != pid || atomic_load(&h->start) != start)
                return 0;
            n = st;
        }
        uint64_t v = (uint64_t)(low_of(c) & RSM_SEM_VALUE_MAX) + n;
        uint64_t limit = s->max ? s->max : RSM_SEM_VALUE_MAX;
        if (v > limit)
            v = limit; /* cannot happen with exact accounting; a bound is never an error here */
        if (install(s, &c, (uint32_t)v | (low_of(c) & RSM_SEM_DISABLED), i, OP_FREE, w)) {
            if (n != 0)
                wake_after_release(s, n);
            return n;
        }
    }
}

/* ---- the semaphore ------------------------------------------------------------------- */

uint32_t rsm_sem_value(rsm_sem *s)
{
    return low_of(atomic_load(&s->count)) & RSM_SEM_VALUE_MAX;
}

static int order(const rsm_sem *s)
{
    return s->policy == RSM_LOCK_LIFO ? RSM_WAKE_LIFO : RSM_WAKE_FIFO;
}

static int release_raw(rsm_sem *s, uint32_t n);

/* Leave the queue; returns 1 if a handed permit reached us meanwhile (we keep it). */
static int leave(rsm_sem *s, rsm_waiter *w)
{
    if (rsm_wq_cancel(&s->wq, w) != 1)
        return 0;
    if (w->token == RSM_TOKEN_PERMIT)
        return 1;
    if (w->token == RSM_TOKEN_NONE && rsm_sem_value(s) > 0) /* pass a consumed wake on */
        rsm_wq_wake(&s->wq, 1, order(s), RSM_KIND_ANY, RSM_TOKEN_NONE, NULL, 0);
    return 0;
}

void rsm_sem_abandon(rsm_sem *s, rsm_waiter *w)
{
    if (leave(s, w))
        release_raw(s, 1); /* give back a permit handed to us while Python was raising */
}

/* One permit out of count word c (value > 0).  0: c changed (reloaded). */
static int take(rsm_sem *s, rsm_waiter *w, uint64_t *c)
{
    if (s->flags & RSM_SEM_ROBUST)
        return take_robust(s, w, c);
    return atomic_compare_exchange_strong(&s->count, c, *c - 1);
}

int rsm_sem_acquire(rsm_sem *s, rsm_waiter *w, int64_t deadline_ns)
{
    int robust = (s->flags & RSM_SEM_ROBUST) != 0;
    for (;;) {
        uint64_t c = atomic_load(&s->count);
        if (c & RSM_SEM_DISABLED) {
            if (w->slot != RSM_WAITER_NONE && leave(s, w))
                return RSM_OK;
            return RSM_DISABLED;
        }
        /* FIFO: newcomers wait behind queued waiters; a robust waiter just woken for a
         * permit is not a newcomer. */
        int may_take = !(s->policy == RSM_LOCK_FIFO && w->slot == RSM_WAITER_NONE && !(w->stage & STAGE_WOKEN) &&
                         atomic_load(&s->wq.nwaiters) > 0);
        if ((c & RSM_SEM_VALUE_MAX) > 0 && may_take) {
            if (!take(s, w, &c))
                continue;
            w->stage = 0;
            if (w->slot != RSM_WAITER_NONE && leave(s, w))
                release_raw(s, 1); /* got two: return the handed one */
            return RSM_OK;
        }
        if (deadline_ns >= 0 && (deadline_ns == 0 || rsm_now_ns() >= deadline_ns)) {
            if (w->slot != RSM_WAITER_NONE && leave(s, w))
                return RSM_OK;
            return RSM_TIMEOUT;
        }
        if (w->slot == RSM_WAITER_NONE) {
            w->stage = 0;
            rsm_wq_enqueue(&s->wq, w, 0);
            continue;
        }
        int r = rsm_wq_wait(&s->wq, w, deadline_ns);
        if (r == RSM_OK) {
            if (w->token == RSM_TOKEN_PERMIT)
                return RSM_OK;
            if (w->token == RSM_TOKEN_ABORT)
                return RSM_DISABLED;
            if (robust)
                w->stage |= STAGE_WOKEN; /* woken by a robust release: ours to take if still there */
            continue;
        }
        if (r == RSM_TIMEOUT) {
            if (leave(s, w))
                return RSM_OK;
            return RSM_TIMEOUT;
        }
        return r;
    }
}

static void wake_after_release(rsm_sem *s, uint32_t n)
{
    if (atomic_load(&s->wq.nwaiters) > 0 || atomic_load(&s->wq.noverflow) > 0) {
        /* Robust FIFO: the wake stands in for a hand-off, so it must reach a live waiter
         * (newcomers do not take while anyone is queued).  Elsewhere a wake lost to a dead
         * waiter only delays the live ones until their next slice, as for every primitive. */
        int exact = (s->flags & RSM_SEM_ROBUST) && s->policy == RSM_LOCK_FIFO ? RSM_WAKE_EXACT : 0;
        rsm_wq_wake(&s->wq, (int)(n > 0x7FFFFFFF ? 0x7FFFFFFF : n), order(s) | exact, RSM_KIND_ANY, RSM_TOKEN_NONE,
                    NULL, 0);
    }
}

int rsm_sem_release(rsm_sem *s, uint32_t n)
{
    if (!(s->flags & RSM_SEM_ROBUST))
        return release_raw(s, n);
    uint64_t c = atomic_load(&s->count);
    if (c & RSM_SEM_DISABLED)
        return RSM_DISABLED;
    uint64_t limit = s->max ? s->max : RSM_SEM_VALUE_MAX;
    if ((uint64_t)(c & RSM_SEM_VALUE_MAX) + n > limit)
        return RSM_OVERFLOW; /* the whole n, before any of it is given back */
    uint32_t done = 0;
    int r = RSM_OK;
    while (done < n) {
        r = give_robust(s, &c);
        if (r == RSM_OK) {
            done++;
            c = atomic_load(&s->count);
        }
        else if (r != RSM_SLICE)
            break; /* a concurrent over-release or disable() between two of the n steps */
    }
    if (done)
        wake_after_release(s, done);
    return done == n ? RSM_OK : r;
}

/* Plain semaphores: add n, or hand permits to FIFO waiters. */
static int release_raw(rsm_sem *s, uint32_t n)
{
    int saturate = (s->flags & RSM_SEM_SATURATE) != 0;
    while (n > 0 && s->policy == RSM_LOCK_FIFO && atomic_load(&s->wq.nwaiters) > 0) {
        if (atomic_load(&s->count) & RSM_SEM_DISABLED)
            return RSM_DISABLED;
        if (rsm_wq_wake(&s->wq, 1, RSM_WAKE_FIFO | RSM_WAKE_EXACT, RSM_KIND_ANY, RSM_TOKEN_PERMIT, NULL, 0) != 1)
            break;
        n--;
    }
    if (n == 0)
        return RSM_OK;
    for (;;) {
        uint64_t c = atomic_load(&s->count);
        if (c & RSM_SEM_DISABLED)
            return RSM_DISABLED;
        uint64_t v = (uint64_t)(c & RSM_SEM_VALUE_MAX) + n;
        uint64_t limit = s->max ? s->max : RSM_SEM_VALUE_MAX;
        if (v > limit) {
            if (!saturate)
                return RSM_OVERFLOW;
            v = limit;
        }
        if (atomic_compare_exchange_strong(&s->count, &c, (c & ~(uint64_t)RSM_SEM_VALUE_MAX) | v))
            break;
    }
    wake_after_release(s, n);
    return RSM_OK;
}

void rsm_sem_disable(rsm_sem *s)
{
    atomic_fetch_or(&s->count, RSM_SEM_DISABLED);
    rsm_wq_wake(&s->wq, 0x7FFFFFFF, RSM_WAKE_FIFO, RSM_KIND_ANY, RSM_TOKEN_ABORT, NULL, 0);
}
