/* event.h -- broadcast primitives: Event, Gate and Countdown.
 *
 * Each has one state word and a wait queue; state changes that may release waiters wake
 * every waiter, which re-check the word (so a dead or slow waiter costs nothing).
 *
 * Event word:     bit 0 set; bits 1-31 count the set() calls that found it clear (wrapping).
 *                 One CAS changes both, so a waiter woken by a set() can tell whether that
 *                 set() happened after its wait began: a wake-up that lands late (its setter
 *                 was preempted between the CAS and the wake) must not end a wait that began
 *                 after a clear() that followed it.
 * Gate word:      bit 31 OPEN; bits 0-30 entries since it last opened.  With auto_close = N
 *                 the N-th entry closes it in the same CAS that counts it.
 * Countdown word: bits 0-30 remaining count; bit 31 DONE (set once the count reached zero
 *                 and the zero-reacher's action finished; waiters wait for DONE).
 */
#ifndef RSM_EVENT_H
#define RSM_EVENT_H

#include "waitq.h"

#define RSM_GATE_OPEN 0x80000000u
#define RSM_COUNTDOWN_DONE 0x80000000u
#define RSM_COUNT_MASK 0x7FFFFFFFu
enum { RSM_TOKEN_SIGNAL = 4 };  /* wake token of Event.set (lock.h and sem.h define 0-3) */

typedef struct rsm_event {
    _Atomic uint32_t word;
    uint32_t aux;                 /* Gate: auto_close (0: never) */
    _Atomic uint32_t generation;  /* bumped by Gate.open / Countdown.reset */
    _Atomic int32_t finisher_pid; /* Countdown: process running the action */
    uint32_t _pad[4];
    rsm_waitq wq;
} rsm_event;

RSM_STATIC_ASSERT(offsetof(rsm_event, wq) == 32, "rsm_event.wq offset");

size_t rsm_event_size(uint32_t nslots);
void rsm_event_init(rsm_event *e, uint32_t word, uint32_t aux, uint32_t nslots);

#define RSM_EVENT_SET 1u
/* Wait until (word & mask) == want (Event: mask 1, want 1; Countdown: DONE).  Event: a
 * wait woken by set() returns RSM_OK even if clear() followed (threading's semantics), but
 * only for a set() counted in the word after the wait began (w->stage keeps the count seen
 * then, across slices). */
int rsm_event_wait(rsm_event *e, rsm_waiter *w, uint32_t mask, uint32_t want, int64_t deadline_ns);
void rsm_event_set(rsm_event *e);
void rsm_event_clear(rsm_event *e);
void rsm_event_abandon(rsm_event *e, rsm_waiter *w);

/* Gate: pass through once open (counting the entry). */
int rsm_gate_enter(rsm_event *e, rsm_waiter *w, int64_t deadline_ns);
void rsm_gate_open(rsm_event *e);
void rsm_gate_close(rsm_event *e);

/* Countdown: *reached_zero = 1 if this call took the count to zero: the caller runs the
 * action and then calls rsm_countdown_finish().  RSM_OVERFLOW if n exceeds the count. */
int rsm_countdown_down(rsm_event *e, uint32_t n, int *reached_zero);
void rsm_countdown_finish(rsm_event *e);
void rsm_countdown_reset(rsm_event *e, uint32_t count);

#endif
