/* fast_sync.c -- rsm_shm._fast.FastLock, FastSem and FastEvent: the C entry points of
 * Lock/RLock, the semaphores and Event (fast_module.c says why they exist).
 *
 * Each call is one C entry: the attempt with the GIL held, then, if it must wait, the
 * slice loop (blocking_loop below) with the GIL released around each futex wait and
 * PyErr_CheckSignals() between slices (Ctrl-C).  The algorithms stay in lock.c, sem.c
 * and event.c; policy stays in Python, in functions each object hands over at _bind (the
 * whole protocol between these types and their Python classes):
 *
 *     FastLock._bind(address, pins, recursive, internal, owner_is_dead, tell_owner_died)
 *         owner_is_dead(lock, tid) -> bool   between slices: may a waiter take it over?
 *         tell_owner_died(lock)              a holder that recovered a dead owner's lock
 *     FastSem._bind(address, pins, reclaim_dead_holders)
 *         reclaim_dead_holders(sem) -> int   robust semaphores: permits given back
 *     FastEvent._bind(address, pins)
 *
 * `pins` is the segment's Pins (fast_pins.c).  A status C does not handle becomes its
 * exception through rsm_fast_raise (rsm_shm._errors.raise_for).
 */
#include "fast.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    void *obj;          /* rsm_lock / rsm_sem / rsm_event inside the mapping */
    rsm_pins *pins;     /* the segment's pins; NULL while unbound */
    int recursive;      /* FastLock only: an RLock */
    int internal;       /* a private part of a larger object (Barrier's lock): usable while
                           that object's call still pins the mapping, even after close() */
    PyObject *policy[2]; /* the functions given at _bind (see the top of this file) */
} FastObj;

/* The struct, or NULL if this handle may not touch it (closed, or never bound). */
static inline void *live(FastObj *self)
{
    rsm_pins *p = self->pins;
    if (!p || (p->closed && (!self->internal || p->unmapped)))
        return NULL;
    return self->obj;
}

typedef FastObj FastLock;

static inline int try_fast(FastLock *self, rsm_lock *l)
{
    return self->recursive ? rsm_rlock_try_fast(l, rsm_gettid(), rsm_getpid())
                           : rsm_lock_try_fast(l, rsm_gettid(), rsm_getpid());
}

static inline int release_fast(FastLock *self, rsm_lock *l)
{
    return self->recursive ? rsm_rlock_release_fast(l, rsm_gettid()) : rsm_lock_release_fast(l, rsm_gettid());
}

/* Call policy function `i` with the object first (and one argument if `arg`). */
static PyObject *call_policy(FastObj *self, int i, PyObject *arg)
{
    PyObject *argv[2] = {(PyObject *)self, arg};
    return PyObject_Vectorcall(self->policy[i], argv, arg ? 2 : 1, NULL);
}

/* Closed (or never bound): the ValueError names the object that owns the segment (a
 * Condition's lock says "Condition 'x' is closed"). */
static PyObject *fail_closed(FastObj *self)
{
    if (!self->pins)
        return rsm_fast_raise((PyObject *)self, RSM_CLOSED, NULL);
    rsm_pins_raise_closed(self->pins);
    return NULL;
}

typedef int (*wait_step)(void *obj, rsm_waiter *w, int64_t deadline);
typedef void (*wait_abandon)(void *obj, rsm_waiter *w);
/* Policy between slices: 0 = keep waiting, a status = stop with it, -1 = exception. */
typedef int (*wait_policy)(FastObj *self, void *obj, rsm_waiter *w);

/* The slice loop (the same steps as run_blocking in rsm_shm/sync/_base.py), in C: the
 * mapping stays pinned throughout; between slices signal handlers run, a close() from
 * another thread ends the wait with ValueError, and policy runs.  Returns the final
 * status, or -1 with a Python exception set. */
/* May an infinite wait of this thread sleep without a timer (rsm_wq_wait)?  The slices
 * exist for what a waiter must check on its own: signals (Ctrl-C), a close() from another
 * thread, the caller's policy (owner death, dead holders).  With no policy, on the main
 * thread (where the kernel delivers a process's signals, which interrupt the sleep: the
 * loop then runs as after a slice) and with no other Python thread (nobody to close() the
 * handle meanwhile), none of them needs a timer. */
static int may_sleep_untimed(FastObj *self)
{
    if (self->internal || rsm_gettid() != (uint32_t)rsm_getpid())
        return 0;
    PyThreadState *ts = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(PyThreadState_Get()));
    return ts != NULL && PyThreadState_Next(ts) == NULL;
}

/* `untimed_ok`: the primitive allows timer-less sleeps (no policy; wakes go to the oldest
 * waiter first: see rsm_wq_wait). */
static int blocking_loop(FastObj *self, wait_step step, wait_abandon abandon, wait_policy policy, rsm_waitq *q,
                         int64_t deadline, int untimed_ok)
{
    void *obj = live(self);
    if (!obj) {
        PyObject *r = fail_closed(self);
        Py_XDECREF(r);
        return -1;
    }
    rsm_waiter w;
    memset(&w, 0, sizeof w);
    w.slot = RSM_WAITER_NONE;
    w.untimed = untimed_ok && !policy && deadline == DEADLINE_FOREVER && may_sleep_untimed(self);
    if (deadline == DEADLINE_TOO_LARGE) { /* only an error if we must wait */
        int r = step(obj, &w, DEADLINE_TRY);
        return r == RSM_TIMEOUT ? rsm_deadline_raise_too_large() : r;
    }
    rsm_pins *pins = (rsm_pins *)Py_NewRef(self->pins); /* a rebind must not free it under us */
    rsm_pins_hold(pins); /* live() held: may pin even if closed (an internal part, see live()) */
    int status, slices = 0;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        status = step(obj, &w, deadline);
        Py_END_ALLOW_THREADS
        if (status != RSM_SLICE)
            break;
        if (PyErr_CheckSignals() < 0) {
            abandon(obj, &w);
            status = -1;
            break;
        }
        if (pins->closed && !self->internal) { /* closed by another thread while we waited */
            abandon(obj, &w);
            PyErr_Format(PyExc_ValueError, "%S was closed while this thread waited on it", pins->label);
            status = -1;
            break;
        }
        if (++slices % RSM_REAP_EVERY_SLICES == 0)
            rsm_wq_reap(q);
        if (policy) {
            int decided = policy(self, obj, &w);
            if (decided < 0)
                abandon(obj, &w);
            if (decided != 0) {
                status = decided;
                break;
            }
        }
    }
    status = rsm_pins_exit_keep(pins, status); /* after close(), the last one out unmaps */
    Py_DECREF(pins);
    return status;
}

/* The common part of each type's _bind(address, pins, ...): point at the struct inside the
 * mapping that `pins` (the segment's Pins) guards.  Every entry checks the pins first.
 * `npolicy` functions follow at args[first]. */
static PyObject *bind(FastObj *self, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage,
                      Py_ssize_t first, int npolicy)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments (%zd given)", usage, want, nargs);
        return NULL;
    }
    unsigned long long addr = PyLong_AsUnsignedLongLong(args[0]);
    if (addr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (addr == 0 || addr % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "misaligned object address");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[1], &rsm_pins_type)) {
        PyErr_Format(PyExc_TypeError, "%s: pins must be an rsm_shm._fast.Pins", usage);
        return NULL;
    }
    for (int i = 0; i < npolicy; i++)
        if (!PyCallable_Check(args[first + i])) {
            PyErr_Format(PyExc_TypeError, "%s: argument %zd must be callable", usage, first + i + 1);
            return NULL;
        }
    self->obj = (void *)(uintptr_t)addr;
    Py_XSETREF(self->pins, (rsm_pins *)Py_NewRef(args[1]));
    for (int i = 0; i < 2; i++)
        Py_XSETREF(self->policy[i], i < npolicy ? Py_NewRef(args[first + i]) : NULL);
    Py_RETURN_NONE;
}

static PyObject *FastLock_bind(FastObj *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char usage[] = "_bind(address, pins, recursive, internal, owner_is_dead, tell_owner_died)";
    int recursive = nargs == 6 ? PyObject_IsTrue(args[2]) : 0;
    int internal = nargs == 6 ? PyObject_IsTrue(args[3]) : 0;
    if (recursive < 0 || internal < 0)
        return NULL;
    PyObject *r = bind(self, args, nargs, 6, usage, 4, 2);
    if (r) {
        self->recursive = recursive;
        self->internal = internal;
    }
    return r;
}

static PyObject *FastSem_bind(FastObj *self, PyObject *const *args, Py_ssize_t nargs)
{
    return bind(self, args, nargs, 3, "_bind(address, pins, reclaim_dead_holders)", 2, 1);
}

static PyObject *FastEvent_bind(FastObj *self, PyObject *const *args, Py_ssize_t nargs)
{
    return bind(self, args, nargs, 2, "_bind(address, pins)", 2, 0);
}

/* ---- FastLock ------------------------------------------------------------------------- */

static int lock_step(void *obj, rsm_waiter *w, int64_t d) { return rsm_lock_acquire((rsm_lock *)obj, w, d); }
static int rlock_step(void *obj, rsm_waiter *w, int64_t d) { return rsm_rlock_acquire((rsm_lock *)obj, w, d); }
static void lock_abandon(void *obj, rsm_waiter *w) { rsm_lock_abandon((rsm_lock *)obj, w); }

/* Between slices: is the owner dead?  Python decides (rsm_shm/sync/lock.py); C takes the
 * lock over in one CAS if so. */
static int lock_policy(FastObj *self, void *obj, rsm_waiter *w)
{
    rsm_lock *l = (rsm_lock *)obj;
    uint32_t owner = atomic_load(&l->word) & RSM_TID_MASK;
    if (owner == 0)
        return 0;
    PyObject *tid = PyLong_FromUnsignedLong(owner);
    if (!tid)
        return -1;
    PyObject *dead = call_policy(self, 0, tid);
    Py_DECREF(tid);
    if (!dead)
        return -1;
    int is_dead = PyObject_IsTrue(dead);
    Py_DECREF(dead);
    if (is_dead < 0)
        return -1;
    if (is_dead && rsm_lock_recover(l, owner, w) == RSM_OWNER_DEAD)
        return RSM_OWNER_DEAD;
    return 0;
}

/* Parse acquire(blocking=True, timeout=-1) and convert with threading.Lock's rules. */
static int lock_deadline(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int64_t *deadline)
{
    int blocking = 1;
    PyObject *timeout = NULL;
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "acquire() takes at most 2 arguments");
        return -1;
    }
    if (nargs >= 1 && (blocking = PyObject_IsTrue(args[0])) < 0)
        return -1;
    if (nargs == 2)
        timeout = args[1];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i), *val = args[nargs + i];
        if (PyUnicode_CompareWithASCIIString(key, "blocking") == 0 && nargs < 1) {
            if ((blocking = PyObject_IsTrue(val)) < 0)
                return -1;
        } else if (PyUnicode_CompareWithASCIIString(key, "timeout") == 0 && nargs < 2) {
            timeout = val;
        } else {
            PyErr_Format(PyExc_TypeError, "acquire() got an unexpected keyword argument '%U'", key);
            return -1;
        }
    }
    return rsm_deadline_convert(timeout, RULE_LOCK, blocking, deadline);
}

/* `tried`: the caller already made the GIL-holding attempt (do not repeat the CAS). */
static PyObject *lock_acquire_deadline(FastLock *self, int64_t deadline, int tried)
{
    rsm_lock *l = (rsm_lock *)live(self);
    if (!l)
        return fail_closed(self);
    if (!tried && try_fast(self, l))
        Py_RETURN_TRUE;
    /* Our own pin: telling a recovered owner runs Python, after the loop's pin is gone. */
    rsm_pins *pins = (rsm_pins *)Py_NewRef(self->pins);
    rsm_pins_hold(pins);
    PyObject *result = NULL;
    int r = blocking_loop(self, self->recursive ? rlock_step : lock_step, lock_abandon, lock_policy, &l->wq,
                          deadline, 0);
    if (r < 0) {
        result = NULL;
    } else if (r == RSM_OK) {
        result = Py_NewRef(Py_True);
    } else if (r == RSM_TIMEOUT) {
        result = Py_NewRef(Py_False);
    } else if (r == RSM_OWNER_DEAD) {
        PyObject *told = call_policy(self, 1, NULL);
        if (!told) {
            /* Telling failed (warning turned into an error): do not keep the lock, and
             * keep its OWNER_DIED mark so the next holder is told instead. */
            if (self->recursive)
                rsm_rlock_release(l, 0);
            else
                rsm_lock_release(l, 0);
        } else {
            Py_DECREF(told);
            result = Py_NewRef(Py_True);
        }
    } else {
        result = rsm_fast_raise((PyObject *)self, r, NULL);
    }
    int unpinned = rsm_pins_exit_keep(pins, result ? 0 : -1);
    Py_DECREF(pins);
    if (unpinned < 0)
        Py_CLEAR(result);
    return result;
}

static PyObject *FastLock_acquire(FastLock *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int tried = 0;
    rsm_lock *l = (rsm_lock *)live(self);
    if (l && nargs == 0 && !kwnames) { /* the common form, first */
        if (try_fast(self, l))
            Py_RETURN_TRUE;
        tried = 1;
    }
    int64_t deadline;
    if (lock_deadline(args, nargs, kwnames, &deadline) < 0)
        return NULL;
    return lock_acquire_deadline(self, deadline, tried);
}

static PyObject *FastLock_enter(FastLock *self, PyObject *Py_UNUSED(ignored))
{
    return lock_acquire_deadline(self, -1, 0);
}

static PyObject *FastLock_release(FastLock *self, PyObject *Py_UNUSED(ignored))
{
    rsm_lock *l = (rsm_lock *)live(self);
    if (!l)
        return fail_closed(self);
    int released = release_fast(self, l);
    if (released) {
        if (released == RSM_RELEASED_WAKE)
            rsm_lock_wake(l);
        Py_RETURN_NONE;
    }
    int r;
    if (self->recursive) {
        r = rsm_rlock_release(l, 1);
    } else {
        r = rsm_lock_release(l, 1);
        if (r == RSM_NOT_OWNER)
            r = rsm_lock_release_foreign(l); /* threading.Lock: any thread may release it */
    }
    if (r != RSM_OK)
        return rsm_fast_raise((PyObject *)self, r, NULL);
    Py_RETURN_NONE;
}

static PyObject *FastLock_locked(FastLock *self, PyObject *Py_UNUSED(ignored))
{
    rsm_lock *l = (rsm_lock *)live(self);
    if (!l)
        return fail_closed(self);
    return PyBool_FromLong((atomic_load(&l->word) & RSM_TID_MASK) != 0);
}

/* ---- FastSem / FastEvent -------------------------------------------------------------- */

static int sem_step(void *obj, rsm_waiter *w, int64_t d) { return rsm_sem_acquire((rsm_sem *)obj, w, d); }
static void sem_abandon(void *obj, rsm_waiter *w) { rsm_sem_abandon((rsm_sem *)obj, w); }
static int event_step(void *obj, rsm_waiter *w, int64_t d) { return rsm_event_wait((rsm_event *)obj, w, 1, 1, d); }
static void event_abandon(void *obj, rsm_waiter *w) { rsm_event_abandon((rsm_event *)obj, w); }

static int parse_blocking_timeout(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                                  int *blocking, PyObject **timeout)
{
    *blocking = 1;
    *timeout = Py_None;
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "acquire() takes at most 2 arguments");
        return -1;
    }
    if (nargs >= 1 && (*blocking = PyObject_IsTrue(args[0])) < 0)
        return -1;
    if (nargs == 2)
        *timeout = args[1];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i), *val = args[nargs + i];
        if (PyUnicode_CompareWithASCIIString(key, "blocking") == 0 && nargs < 1) {
            if ((*blocking = PyObject_IsTrue(val)) < 0)
                return -1;
        } else if (PyUnicode_CompareWithASCIIString(key, "timeout") == 0 && nargs < 2) {
            *timeout = val;
        } else {
            PyErr_Format(PyExc_TypeError, "acquire() got an unexpected keyword argument '%U'", key);
            return -1;
        }
    }
    return 0;
}

/* Parse `(timeout=None)`, positional or keyword; *timeout stays NULL when absent. */
static int parse_timeout(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **timeout)
{
    *timeout = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "wait() takes at most 1 argument (timeout)");
        return -1;
    }
    if (nargs == 1)
        *timeout = args[0];
    else if (nkw == 1) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "timeout") != 0) {
            PyErr_Format(PyExc_TypeError, "wait() got an unexpected keyword argument '%U'",
                         PyTuple_GET_ITEM(kwnames, 0));
            return -1;
        }
        *timeout = args[0];
    }
    return 0;
}

static PyObject *sem_result(FastObj *self, int r)
{
    if (r == RSM_OK)
        Py_RETURN_TRUE;
    if (r == RSM_TIMEOUT)
        Py_RETURN_FALSE;
    return rsm_fast_raise((PyObject *)self, r, NULL);
}

/* Robust semaphores, between slices: give back the permits of dead holders (Python
 * judges liveness, rsm_shm/sync/semaphore.py; C reclaims each cell in one tagged step).
 * Returns how many permits came back, or -1 with an exception set. */
static long reclaim_dead_holders(FastObj *self)
{
    PyObject *n = call_policy(self, 0, NULL);
    if (!n)
        return -1;
    long got = PyLong_AsLong(n);
    Py_DECREF(n);
    return got;
}

static int sem_policy(FastObj *self, void *obj, rsm_waiter *w)
{
    (void)obj;
    (void)w;
    return reclaim_dead_holders(self) < 0 ? -1 : 0;
}

/* threading.Semaphore's order: try first; the timeout is only converted (and judged)
 * when the call must wait.  `timeout` NULL: not passed (wait forever). */
static PyObject *sem_acquire_timeout(FastObj *self, int blocking, PyObject *timeout)
{
    rsm_sem *s = (rsm_sem *)live(self);
    if (!s)
        return fail_closed(self);
    static const rsm_waiter try_waiter = {.slot = RSM_WAITER_NONE};
    rsm_waiter w = try_waiter; /* with deadline 0 the C code never enqueues */
    int robust = (s->flags & RSM_SEM_ROBUST) != 0;
    int r = rsm_sem_acquire(s, &w, DEADLINE_TRY);
    if (r != RSM_TIMEOUT)
        return sem_result(self, r);
    int64_t deadline = DEADLINE_TRY;
    if (blocking && rsm_deadline_convert(timeout, RULE_WAIT, 1, &deadline) < 0)
        return NULL;
    if (deadline == DEADLINE_TRY) {
        if (robust) {
            /* A try that fails looks for dead holders once: nobody else may be waiting to. */
            long got = reclaim_dead_holders(self);
            if (got < 0)
                return NULL;
            if (got > 0)
                r = rsm_sem_acquire(s, &w, DEADLINE_TRY);
        }
        return sem_result(self, r);
    }
    /* LIFO wakes the newest waiter first: a sleeper without a timer could lose its turn to
     * a dead newer one (rsm_wq_wait), so LIFO semaphores keep their slices. */
    r = blocking_loop(self, sem_step, sem_abandon, robust ? sem_policy : NULL, &s->wq, deadline,
                      s->policy != RSM_LOCK_LIFO);
    return r < 0 ? NULL : sem_result(self, r);
}

static PyObject *FastSem_acquire(FastObj *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int blocking;
    PyObject *timeout;
    if (parse_blocking_timeout(args, nargs, kwnames, &blocking, &timeout) < 0)
        return NULL;
    if (!blocking && timeout != Py_None) {
        PyErr_SetString(PyExc_ValueError, "can't specify timeout for non-blocking acquire");
        return NULL;
    }
    return sem_acquire_timeout(self, blocking, timeout);
}

static PyObject *FastSem_wait(FastObj *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout;
    if (parse_timeout(args, nargs, kwnames, &timeout) < 0)
        return NULL;
    return sem_acquire_timeout(self, 1, timeout);
}

static PyObject *FastSem_enter(FastObj *self, PyObject *Py_UNUSED(ignored))
{
    return sem_acquire_timeout(self, 1, NULL);
}

static PyObject *FastSem_release(FastObj *self, PyObject *const *args, Py_ssize_t nargs)
{
    rsm_sem *s = (rsm_sem *)live(self);
    if (!s)
        return fail_closed(self);
    long n = 1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "release() takes at most 1 argument");
        return NULL;
    }
    if (nargs == 1) {
        if (!PyLong_Check(args[0])) {
            PyErr_SetString(PyExc_TypeError, "n must be an integer");
            return NULL;
        }
        n = PyLong_AsLong(args[0]);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 1) {
            PyErr_SetString(PyExc_ValueError, "n must be one or more");
            return NULL;
        }
        if (n > (long)RSM_SEM_VALUE_MAX)
            n = (long)RSM_SEM_VALUE_MAX;
    }
    int r = rsm_sem_release(s, (uint32_t)n);
    if (r != RSM_OK)
        return rsm_fast_raise((PyObject *)self, r, NULL);
    Py_RETURN_NONE;
}

static PyTypeObject FastLockType; /* defined below (FAST_TYPE) */

/* __exit__(exc_type, exc, tb) of locks and semaphores alike: release(), whatever happened. */
static PyObject *FastObj_exit(FastObj *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    if (PyObject_TypeCheck((PyObject *)self, &FastLockType))
        return FastLock_release(self, NULL);
    return FastSem_release(self, NULL, 0);
}

static PyObject *FastEvent_wait(FastObj *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    rsm_event *e = (rsm_event *)live(self);
    if (!e)
        return fail_closed(self);
    PyObject *timeout;
    int64_t deadline;
    if (parse_timeout(args, nargs, kwnames, &timeout) < 0)
        return NULL;
    if ((atomic_load(&e->word) & RSM_EVENT_SET) != 0)
        Py_RETURN_TRUE;
    if (rsm_deadline_convert(timeout, RULE_WAIT, 1, &deadline) < 0)
        return NULL;
    if (deadline == DEADLINE_TRY)
        Py_RETURN_FALSE;
    int r = blocking_loop(self, event_step, event_abandon, NULL, &e->wq, deadline, 1); /* set() wakes all */
    if (r < 0)
        return NULL;
    if (r == RSM_OK)
        Py_RETURN_TRUE;
    if (r == RSM_TIMEOUT)
        Py_RETURN_FALSE;
    return rsm_fast_raise((PyObject *)self, r, NULL);
}

static PyObject *FastEvent_set(FastObj *self, PyObject *Py_UNUSED(ignored))
{
    rsm_event *e = (rsm_event *)live(self);
    if (!e)
        return fail_closed(self);
    rsm_event_set(e);
    Py_RETURN_NONE;
}

static PyObject *FastEvent_clear(FastObj *self, PyObject *Py_UNUSED(ignored))
{
    rsm_event *e = (rsm_event *)live(self);
    if (!e)
        return fail_closed(self);
    rsm_event_clear(e);
    Py_RETURN_NONE;
}

static PyObject *FastEvent_is_set(FastObj *self, PyObject *Py_UNUSED(ignored))
{
    rsm_event *e = (rsm_event *)live(self);
    if (!e)
        return fail_closed(self);
    return PyBool_FromLong((atomic_load(&e->word) & RSM_EVENT_SET) != 0);
}

static int FastObj_traverse(FastObj *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pins);
    Py_VISIT(self->policy[0]);
    Py_VISIT(self->policy[1]);
    return 0;
}

static int FastObj_clear_refs(FastObj *self)
{
    Py_CLEAR(self->pins);
    Py_CLEAR(self->policy[0]);
    Py_CLEAR(self->policy[1]);
    return 0;
}

static void FastObj_dealloc(FastObj *self)
{
    PyObject_GC_UnTrack(self);
    FastObj_clear_refs(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FastLock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))FastLock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)FastLock_release, METH_NOARGS, "release()"},
    {"locked", (PyCFunction)FastLock_locked, METH_NOARGS, "locked() -> bool"},
    {"__enter__", (PyCFunction)FastLock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))FastObj_exit, METH_FASTCALL, NULL},
    {"_bind", (PyCFunction)(void (*)(void))FastLock_bind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef FastSem_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))FastSem_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=None) -> bool"},
    {"release", (PyCFunction)(void (*)(void))FastSem_release, METH_FASTCALL, "release(n=1)"},
    {"_wait", (PyCFunction)(void (*)(void))FastSem_wait, METH_FASTCALL | METH_KEYWORDS, "_wait(timeout=None) -> bool"},
    {"__enter__", (PyCFunction)FastSem_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))FastObj_exit, METH_FASTCALL, NULL},
    {"_bind", (PyCFunction)(void (*)(void))FastSem_bind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef FastEvent_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))FastEvent_wait, METH_FASTCALL | METH_KEYWORDS, "wait(timeout=None) -> bool"},
    {"set", (PyCFunction)FastEvent_set, METH_NOARGS, "set()"},
    {"clear", (PyCFunction)FastEvent_clear, METH_NOARGS, "clear()"},
    {"is_set", (PyCFunction)FastEvent_is_set, METH_NOARGS, "is_set() -> bool"},
    {"_bind", (PyCFunction)(void (*)(void))FastEvent_bind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

/* The three types differ only in name, doc and methods. */
#define FAST_TYPE(cname, pyname, doc, methods)                                                   \
    static PyTypeObject cname = {                                                               \
        PyVarObject_HEAD_INIT(NULL, 0).tp_name = pyname,                                        \
        .tp_basicsize = sizeof(FastObj),                                                        \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,               \
        .tp_doc = doc,                                                                          \
        .tp_methods = methods,                                                                  \
        .tp_new = PyType_GenericNew,                                                            \
        .tp_traverse = (traverseproc)FastObj_traverse,                                          \
        .tp_clear = (inquiry)FastObj_clear_refs,                                                \
        .tp_dealloc = (destructor)FastObj_dealloc,                                              \
    }

FAST_TYPE(FastLockType, "rsm_shm._fast.FastLock", "C entry points of rsm_shm.Lock and RLock (internal).",
          FastLock_methods);
FAST_TYPE(FastSemType, "rsm_shm._fast.FastSem", "C entry points of rsm_shm's semaphores (internal).",
          FastSem_methods);
FAST_TYPE(FastEventType, "rsm_shm._fast.FastEvent", "C entry points of rsm_shm.Event (internal).",
          FastEvent_methods);

int rsm_fast_sync_add(PyObject *m)
{
    if (PyType_Ready(&FastLockType) < 0 || PyType_Ready(&FastSemType) < 0 || PyType_Ready(&FastEventType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "FastLock", (PyObject *)&FastLockType) < 0 ||
        PyModule_AddObjectRef(m, "FastSem", (PyObject *)&FastSemType) < 0 ||
        PyModule_AddObjectRef(m, "FastEvent", (PyObject *)&FastEventType) < 0)
        return -1;
    return 0;
}
