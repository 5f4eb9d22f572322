/* automaton.h -- the shared status block of an automaton (rsm_shm.fsm).
 *
 * The body of a RSM_KIND_AUTOMATON segment is one rsm_automaton.  It holds no queue: the
 * automaton's inbox is a separate Ring segment named "<name>.inbox.<generation>".  This
 * block is what every process (posters, joiners, the supervisor, `rsm-shm inspect`) reads
 * to learn where the automaton is in its life.
 *
 * The mode word (a futex word):
 *   bits 0-7   the mode, RSM_FSM_IDLE .. RSM_FSM_DEAD;
 *   bit  8     RSM_FSM_RESTART_PENDING: DEAD, but a supervisor may still restart it
 *              (joiners keep waiting until the supervisor clears it or dies);
 *   bits 16-31 the incarnation tag: `generation` modulo 2^16.  Only a supervisor restart
 *              changes it (DEAD|RESTART_PENDING -> IDLE of the next generation); every
 *              other transition keeps it.  Whoever declares a host dead read the word
 *              before judging the host, and CASes from that word: a declaration about an
 *              incarnation that has since been replaced fails instead of killing the new
 *              one.  (A declarer would have to sleep through 65536 restarts between its
 *              read and its CAS to be fooled.)
 * Legal transitions (each one CAS on the whole word, so two processes never both win):
 *   IDLE     -> RUNNING     the host delivered START                  (host)
 *   RUNNING  -> SIGNALED    drain() was called; the inbox ring is closed (anyone)
 *   IDLE     -> SIGNALED    drain() before the host started            (anyone)
 *   SIGNALED -> DRAINING    the host saw the signal and delivered DRAIN (host)
 *   any      -> DEAD        EXIT delivered, a handler raised, or the host process died
 *                           (host, or whoever notices the death first)
 *   DEAD|RESTART_PENDING -> IDLE   a supervisor restarts it (generation + 1, new tag)
 *   DEAD|RESTART_PENDING -> DEAD   the supervisor gives up
 * Every successful CAS wakes the joiners sleeping on the word (if any: nwaiters).
 *
 * Fields other than the mode word have a single writer at a time: the host while it runs,
 * and whoever wins the CAS to DEAD afterwards.  The host record (host_kind .. host_start)
 * of a new generation is zeroed before the CAS that publishes its tag, so a reader that
 * sees the new tag never pairs it with the previous incarnation's host.  The writer fills exit_kind, the counters
 * and the error text *before* the CAS that publishes DEAD (seq_cst), and readers load the
 * mode first (acquire), so a joiner that sees DEAD also sees the error text.  The text
 * fields are NUL-padded UTF-8 with an explicit length; readers clamp the length to the
 * field size and treat the bytes as untrusted (a writer may have died mid-write).
 *
 * Python (rsm_shm/fsm/_status.py) reads and writes the fields through cffi; cffi's API
 * mode checks every offset declared in automaton.cdef against this header at build time.
 */
#ifndef RSM_AUTOMATON_H
#define RSM_AUTOMATON_H

#include "rsm_common.h"

#include <limits.h>

enum {
    RSM_FSM_IDLE = 0,      /* created, no host running yet */
    RSM_FSM_RUNNING = 1,   /* a host delivered START and takes commands */
    RSM_FSM_SIGNALED = 2,  /* drain() requested; the host has not acted on it yet */
    RSM_FSM_DRAINING = 3,  /* DRAIN delivered; finishing the inbox, then EXIT */
    RSM_FSM_DEAD = 4       /* ended: see exit_kind */
};
#define RSM_FSM_MODE_MASK 0xFFu
#define RSM_FSM_RESTART_PENDING 0x100u
#define RSM_FSM_GEN_SHIFT 16
#define RSM_FSM_GEN_MASK 0xFFFF0000u

enum {
    RSM_FSM_EXIT_NONE = 0,    /* not ended */
    RSM_FSM_EXIT_CLEAN = 1,   /* drained: EXIT delivered */
    RSM_FSM_EXIT_ERROR = 2,   /* the handler raised; error_text holds the traceback */
    RSM_FSM_EXIT_KILLED = 3   /* the host process died without ending (SIGKILL, crash) */
};

enum { RSM_FSM_HOST_NONE = 0, RSM_FSM_HOST_THREAD = 1, RSM_FSM_HOST_PROCESS = 2 };

#define RSM_FSM_STATE_TEXT_MAX 128
#define RSM_FSM_ERROR_TEXT_MAX 8192

typedef struct rsm_automaton {
    _Atomic uint32_t mode;        /*   0 futex word: mode | RSM_FSM_RESTART_PENDING */
    _Atomic uint32_t nwaiters;    /*   4 joiners asleep on `mode` */
    uint32_t exit_kind;           /*   8 RSM_FSM_EXIT_* of the last incarnation */
    uint32_t host_kind;           /*  12 RSM_FSM_HOST_* */
    int32_t host_pid;             /*  16 process running the handler (0: none yet) */
    uint32_t host_tid;            /*  20 its thread id */
    uint64_t host_start;          /*  24 host_pid's start time (/proc/pid/stat #22): pid reuse guard */
    int32_t supervisor_pid;       /*  32 0: unsupervised */
    uint32_t restarts;            /*  36 restarts so far */
    uint64_t supervisor_start;    /*  40 supervisor_pid's start time */
    uint64_t generation;          /*  48 incarnation number; names the inbox ring */
    uint64_t commands;            /*  56 CMDs delivered (all incarnations), published per command */
    uint64_t transitions;         /*  64 TRANSITIONs delivered */
    uint64_t dropped;             /*  72 commands left by incarnations that were restarted (readers
                                   *     add a DEAD incarnation's own: taken - commands + its inbox) */
    int64_t started_ns;           /*  80 CLOCK_REALTIME ns when the current incarnation started */
    int64_t ended_ns;             /*  88 CLOCK_REALTIME ns when it ended (0: running) */
    uint32_t state_len;           /*  96 bytes used in state_text */
    uint32_t error_len;           /* 100 bytes used in error_text */
    char state_text[RSM_FSM_STATE_TEXT_MAX];  /* 104 repr() of the current state, truncated */
    char error_text[RSM_FSM_ERROR_TEXT_MAX];  /* 232 the error that ended it, truncated */
    uint64_t taken;               /* 8424 CMDs taken out of the inbox (all incarnations), published
                                   *      per batch before the batch is delivered: taken - commands
                                   *      are in the host's hands.  A supervisor restart adds those
                                   *      (and the dead inbox's) to dropped and sets taken = commands
                                   *      before it publishes IDLE. */
} rsm_automaton;

RSM_STATIC_ASSERT(offsetof(rsm_automaton, host_start) == 24, "rsm_automaton.host_start");
RSM_STATIC_ASSERT(offsetof(rsm_automaton, generation) == 48, "rsm_automaton.generation");
RSM_STATIC_ASSERT(offsetof(rsm_automaton, started_ns) == 80, "rsm_automaton.started_ns");
RSM_STATIC_ASSERT(offsetof(rsm_automaton, state_text) == 104, "rsm_automaton.state_text");
RSM_STATIC_ASSERT(offsetof(rsm_automaton, error_text) == 232, "rsm_automaton.error_text");
RSM_STATIC_ASSERT(offsetof(rsm_automaton, taken) == 232 + RSM_FSM_ERROR_TEXT_MAX, "rsm_automaton.taken");
RSM_STATIC_ASSERT(sizeof(rsm_automaton) == 240 + RSM_FSM_ERROR_TEXT_MAX, "rsm_automaton size");
RSM_STATIC_ASSERT((RSM_FSM_GEN_MASK & (RSM_FSM_MODE_MASK | RSM_FSM_RESTART_PENDING)) == 0, "mode word bits");

/* The mode word (acquire): pairs with the seq_cst CAS that published it. */
static inline uint32_t rsm_fsm_load(rsm_automaton *a)
{
    return atomic_load_explicit(&a->mode, memory_order_acquire);
}

/* Replace the mode word if it still equals `expected`; 1 on success (joiners woken), 0 if
 * it had changed (the caller re-reads and decides again). */
static inline int rsm_fsm_cas(rsm_automaton *a, uint32_t expected, uint32_t desired)
{
    uint32_t seen = expected;
    if (!atomic_compare_exchange_strong(&a->mode, &seen, desired))
        return 0;
    /* seq_cst CAS then seq_cst load: a joiner that incremented nwaiters before we looked
     * is woken; one that increments it later sees the new word inside futex_wait. */
    if (atomic_load(&a->nwaiters) != 0)
        rsm_futex_wake(&a->mode, INT_MAX);
    return 1;
}

/* Sleep (at most one slice) while the mode word equals `seen`.  RSM_OK once it differs,
 * RSM_TIMEOUT when the absolute CLOCK_MONOTONIC deadline passed (< 0: none), RSM_SLICE
 * when the slice ended first (Python checks liveness and signals, then calls again). */
static inline int rsm_fsm_wait(rsm_automaton *a, uint32_t seen, int64_t deadline_ns)
{
    if (atomic_load(&a->mode) != seen)
        return RSM_OK;
    if (deadline_ns >= 0 && rsm_now_ns() >= deadline_ns)
        return RSM_TIMEOUT;
    atomic_fetch_add(&a->nwaiters, 1);
    rsm_futex_wait(&a->mode, seen, rsm_slice_end(deadline_ns));
    atomic_fetch_sub(&a->nwaiters, 1);
    if (atomic_load(&a->mode) != seen)
        return RSM_OK;
    if (deadline_ns >= 0 && rsm_now_ns() >= deadline_ns)
        return RSM_TIMEOUT;
    return RSM_SLICE;
}

#endif
