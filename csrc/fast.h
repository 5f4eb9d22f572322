/* fast.h -- what the files of rsm_shm._fast (csrc/fast*.c) share with each other.
 *
 * Pins (fastpath.c) stay opaque outside fastpath.c: the other files hold a Pins as a
 * PyObject and use these functions.  Everything here runs with the GIL held. */
#ifndef RSM_FAST_H
#define RSM_FAST_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The C core lives in rsm_shm._native; calls to it go through its table (core_api.h). */
#define RSM_CORE_VIA_TABLE
#include "core_api.h"

/* _fast exports nothing but PyInit__fast. */
#define RSM_FAST_INTERNAL __attribute__((visibility("hidden")))

/* 1 if `o` is an rsm_shm._fast.Pins, else 0. */
RSM_FAST_INTERNAL int rsm_pins_check(PyObject *o);
/* 0 if the segment is open, else -1 with "<label> is closed" (ValueError) set. */
RSM_FAST_INTERNAL int rsm_pins_open(PyObject *pins);

/* fast_ring.c: add FastRing to the module; 0 or -1 with an exception set. */
RSM_FAST_INTERNAL int rsm_fast_ring_add(PyObject *module);

#endif
