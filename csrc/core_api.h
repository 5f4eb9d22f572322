/* core_api.h -- the C core's entry points as a table, so the core is linked exactly once.
 *
 * rsm_shm has two extension modules: `rsm_shm._native` (cffi, API mode) holds the whole C
 * core (every csrc/ file not named fast*.c), and `rsm_shm._fast` (the CPython-API entry
 * points of the hot paths, csrc/fast*.c) holds none of it.  _fast calls the core through
 * this table of function pointers, which it fetches from _native when it is imported
 * (fast_core.c).  So there is one copy of every global of the core -- the cached pid and
 * thread ids, the fork handler that resets them (rsm_common.c) -- whichever module calls.
 *
 * Why a table and not one shared library both link: a plain .so next to the extensions
 * needs rpath/$ORIGIN handling and a build step setuptools has no notion of, and wheels
 * repairers (auditwheel) rename such libraries; a table needs nothing from the build but
 * one exported address, and costs one indirect call where a direct (cross-file, never
 * inlined) call was made before: a predicted indirect call costs about the same (the
 * uncontended Lock/RLock figures of tools/bench_sync.py did not move).  The inline fast
 * paths in the headers (rsm_lock_try_fast, ...) are still inlined into _fast.
 *
 * fast*.c files are written against the core's ordinary names: RSM_CORE_VIA_TABLE is
 * defined before this header is included (fast.h does it), and the macros at the end send
 * each name through the table.  So the inline functions of the headers, compiled into
 * _fast too, must not call core functions (lock.h's release says "wake" instead).  A core function they call that is missing from the table
 * shows up as an undefined `rsm_*` symbol when _fast is imported (tests/test_build.py
 * also checks that _fast defines and needs no rsm_* symbol).
 */
#ifndef RSM_CORE_API_H
#define RSM_CORE_API_H

#include "event.h"
#include "lock.h"
#include "ring.h"
#include "rsm_common.h"
#include "sem.h"
#include "waitq.h"

/* Bump when a member is added, removed or changes type: _fast refuses a _native of
 * another build (the two modules of one installation always match; this catches a stale
 * in-place build). */
#define RSM_CORE_API_VERSION 3u

/* X(name) for every core function _fast calls; the table's members bear the same names. */
#define RSM_CORE_FUNCTIONS(X)                                                                 \
    X(rsm_now_ns) X(rsm_gettid) X(rsm_getpid) X(rsm_wq_reap)                                  \
    X(rsm_lock_acquire) X(rsm_lock_release) X(rsm_lock_release_foreign) X(rsm_lock_recover)   \
    X(rsm_lock_abandon) X(rsm_lock_wake) X(rsm_rlock_acquire) X(rsm_rlock_release)            \
    X(rsm_sem_acquire) X(rsm_sem_release) X(rsm_sem_abandon)                                  \
    X(rsm_event_wait) X(rsm_event_set) X(rsm_event_clear) X(rsm_event_abandon)                \
    X(rsm_ring_put1) X(rsm_ring_get1) X(rsm_ring_max_message) X(rsm_ring_put) X(rsm_ring_get)    \
    X(rsm_ring_abandon)

typedef struct rsm_core_api {
    uint32_t version; /* RSM_CORE_API_VERSION */
    uint32_t size;    /* sizeof(rsm_core_api) */
#define RSM_CORE_MEMBER(name) __typeof__(&name) name;
    RSM_CORE_FUNCTIONS(RSM_CORE_MEMBER)
#undef RSM_CORE_MEMBER
} rsm_core_api;

/* In _native (core_api.c): the table's address, as an integer cffi hands to Python. */
uintptr_t rsm_core_api_address(void);

#ifdef RSM_CORE_VIA_TABLE
/* In _fast (fast_core.c): the table, set once at import before any type is created.
 * Hidden: _fast exports nothing but its PyInit function. */
__attribute__((visibility("hidden"))) extern const rsm_core_api *rsm_core;

/* A macro is not expanded again inside its own expansion, so `rsm_core->rsm_gettid` names
 * the member.  Keep this list equal to RSM_CORE_FUNCTIONS. */
#define rsm_now_ns (rsm_core->rsm_now_ns)
#define rsm_gettid (rsm_core->rsm_gettid)
#define rsm_getpid (rsm_core->rsm_getpid)
#define rsm_wq_reap (rsm_core->rsm_wq_reap)
#define rsm_lock_acquire (rsm_core->rsm_lock_acquire)
#define rsm_lock_release (rsm_core->rsm_lock_release)
#define rsm_lock_release_foreign (rsm_core->rsm_lock_release_foreign)
#define rsm_lock_recover (rsm_core->rsm_lock_recover)
#define rsm_lock_abandon (rsm_core->rsm_lock_abandon)
#define rsm_lock_wake (rsm_core->rsm_lock_wake)
#define rsm_rlock_acquire (rsm_core->rsm_rlock_acquire)
#define rsm_rlock_release (rsm_core->rsm_rlock_release)
#define rsm_sem_acquire (rsm_core->rsm_sem_acquire)
#define rsm_sem_release (rsm_core->rsm_sem_release)
#define rsm_sem_abandon (rsm_core->rsm_sem_abandon)
#define rsm_event_wait (rsm_core->rsm_event_wait)
#define rsm_event_set (rsm_core->rsm_event_set)
#define rsm_event_clear (rsm_core->rsm_event_clear)
#define rsm_event_abandon (rsm_core->rsm_event_abandon)
#define rsm_ring_put1 (rsm_core->rsm_ring_put1)
#define rsm_ring_get1 (rsm_core->rsm_ring_get1)
#define rsm_ring_max_message (rsm_core->rsm_ring_max_message)
#define rsm_ring_put (rsm_core->rsm_ring_put)
#define rsm_ring_get (rsm_core->rsm_ring_get)
#define rsm_ring_abandon (rsm_core->rsm_ring_abandon)

/* Fetch the table from rsm_shm._native; 0, or -1 with ImportError set.  Python.h first. */
__attribute__((visibility("hidden"))) int rsm_core_attach(void);
#endif

#endif
