/* fast.h -- what the files of rsm_shm._fast (csrc/fast*.c) share with each other.
 *
 *     fast_module.c    the module: init, the constants, the one way a status becomes an
 *                      exception (rsm_fast_raise)
 *     fast_core.c      the link to the C core in rsm_shm._native (core_api.h)
 *     fast_pins.c      Pins: the protocol that keeps a segment mapped while C uses it
 *     fast_deadline.c  the one converter from a user's timeout to a deadline
 *     fast_sync.c      FastLock, FastSem, FastEvent: the primitives' entry points and
 *                      their slice loop
 *     fast_ring.c      FastRing: a ring's one-message put and get
 *
 * Everything here runs with the GIL held unless a comment says otherwise. */
#ifndef RSM_FAST_H
#define RSM_FAST_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The C core lives in rsm_shm._native; calls to it go through its table (core_api.h). */
#define RSM_CORE_VIA_TABLE
#include "core_api.h"

/* _fast exports nothing but PyInit__fast. */
#define RSM_FAST_INTERNAL __attribute__((visibility("hidden")))

/* Between two slices of a blocking call, every how many slices the waiter frees the wait
 * queue slots of dead waiters (rsm_shm/sync/_base.py has the same number). */
#define RSM_REAP_EVERY_SLICES 20

/* ---- fast_module.c ------------------------------------------------------------------ */

/* Raise the exception status `code` means, through rsm_shm._errors.raise_for(code, obj,
 * op) (`op` may be NULL: raise_for's default).  Always returns NULL. */
RSM_FAST_INTERNAL PyObject *rsm_fast_raise(PyObject *obj, int code, const char *op);

/* ---- fast_pins.c: Pins ---------------------------------------------------------------
 *
 * Every rsm_shm segment owns one Pins object (rsm_shm/segment.py).  A call that hands raw
 * pointers into the mapping to C -- and every C call may release the GIL -- holds a pin
 * for its duration: `with segment.pins:` in Python, rsm_pins_enter()/rsm_pins_exit() in
 * C.  close() marks the Pins closed (new calls raise ValueError) and the mapping is
 * released (`on_unmap()`, given by the segment) only when the last pin is gone, so no C
 * call can ever run on an unmapped page.  Everything runs under the GIL: plain counters
 * suffice.  The fields are read directly by the entry points; only fast_pins.c and the
 * functions below change them. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t users;   /* calls in progress that hold raw pointers into the mapping */
    int closed;         /* close() was called: new calls fail with ValueError */
    int unmapped;       /* on_unmap() ran: the mapping is gone */
    PyObject *on_unmap; /* called once, when closed and the last pin is released */
    PyObject *label;    /* names the object in messages: "Lock 'jobs'" */
} rsm_pins;

RSM_FAST_INTERNAL extern PyTypeObject rsm_pins_type;

/* 1 if `o` is an rsm_shm._fast.Pins, else 0. */
RSM_FAST_INTERNAL int rsm_pins_check(PyObject *o);
/* -1 with "<label> is closed" (ValueError) set. */
RSM_FAST_INTERNAL int rsm_pins_raise_closed(rsm_pins *p);
/* 0 if the segment is open, else -1 with "<label> is closed" (ValueError) set. */
RSM_FAST_INTERNAL int rsm_pins_open(rsm_pins *p);
/* Pin: 0, or -1 with ValueError if closed. */
RSM_FAST_INTERNAL int rsm_pins_enter(rsm_pins *p);
/* Pin whether closed or not: for a call that already holds a pin (or runs on behalf of
 * one, see FastObj.internal in fast_sync.c), so the mapping is known to be there. */
RSM_FAST_INTERNAL void rsm_pins_hold(rsm_pins *p);
/* Unpin; the last one out after close() unmaps.  0, or -1 with the exception on_unmap
 * raised. */
RSM_FAST_INTERNAL int rsm_pins_exit(rsm_pins *p);
/* rsm_pins_exit() for a call that ends with `status` (< 0: an exception is set, which
 * survives the unpinning).  Returns `status`, or -1 if unpinning raised. */
RSM_FAST_INTERNAL int rsm_pins_exit_keep(rsm_pins *p, int status);

/* ---- fast_deadline.c: the one converter from a user's timeout to a deadline ----------
 *
 * Used by every blocking call of the package, here and (through _fast.deadline()) in
 * Python; docs/blocking.md has the table.  The result is an absolute CLOCK_MONOTONIC
 * time in ns, or one of: */
#define DEADLINE_FOREVER (-1)   /* wait without limit */
#define DEADLINE_TRY (0)        /* try once, never sleep */
#define DEADLINE_TOO_LARGE (-2) /* beyond threading.TIMEOUT_MAX: OverflowError, but only once
                                   the call finds it must wait (as threading does) */
/* The rules of the standard classes each of our calls mirrors: */
enum {
    RULE_LOCK = 0,  /* threading.Lock.acquire(blocking, timeout): -1 = forever, other
                       negatives ValueError, a timeout with blocking=False ValueError */
    RULE_WAIT = 1,  /* Event.wait, Condition.wait, Semaphore.acquire, Barrier.wait: None =
                       forever, <= 0 = try once */
    RULE_QUEUE = 2, /* queue.Queue.get/put: None = forever, negative ValueError, 0 = try once */
};

/* `timeout` NULL means the argument was not passed.  Returns 0, or -1 with an exception. */
RSM_FAST_INTERNAL int rsm_deadline_convert(PyObject *timeout, int rule, int blocking, int64_t *deadline);
/* OverflowError for DEADLINE_TOO_LARGE once a call finds it must wait; returns -1. */
RSM_FAST_INTERNAL int rsm_deadline_raise_too_large(void);
/* deadline(timeout, rule, blocking=True) -> int, for the Python callers. */
RSM_FAST_INTERNAL PyObject *rsm_deadline_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* Add DEADLINE_*, RULE_* and TIMEOUT_MAX to the module; 0 or -1. */
RSM_FAST_INTERNAL int rsm_deadline_add_constants(PyObject *module);

/* ---- fast_sync.c / fast_ring.c: add their types to the module; 0 or -1 ------------- */
RSM_FAST_INTERNAL int rsm_fast_sync_add(PyObject *module);
RSM_FAST_INTERNAL int rsm_fast_ring_add(PyObject *module);

#endif
