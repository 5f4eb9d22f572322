/* fastpath.c -- rsm_shm._fast: CPython entry points for the hottest paths.
 *
 * Lock/RLock (FastLock), the semaphores (FastSem) and Event (FastEvent) derive from these
 * small CPython types, exactly as multiprocessing.synchronize.Lock derives from
 * _multiprocessing.SemLock.  Each call is one C entry: the attempt with the GIL held (a
 * cffi call alone costs ~48 ns here, an uncontended acquire is one CAS), then, if it must
 * wait, the slice loop with the GIL released around each futex wait and
 * PyErr_CheckSignals() between slices (Ctrl-C).  The algorithms stay in lock.c, sem.c and
 * event.c; policy stays in Python: between slices a Lock waiter asks
 * `self._owner_is_dead(tid)`, and a holder that recovered a dead owner's lock is told by
 * `self._tell_owner_died()`; `self._fail(code)` turns a status into its exception.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The C core lives in rsm_shm._native; calls to it go through its table (core_api.h). */
#define RSM_CORE_VIA_TABLE
#include "core_api.h"

#include <math.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    void *obj;          /* rsm_lock / rsm_sem / rsm_event; NULL while unbound or closed */
    PyObject *seg;      /* the rsm_shm.segment.Segment: pinned around blocking calls */
    PyObject *pins;     /* seg._pins, the list of pins (segment.py begin_use) */
    int recursive;      /* FastLock only: an RLock */
} FastObj;

typedef FastObj FastLock;

static inline int try_fast(FastLock *self)
{
    rsm_lock *l = (rsm_lock *)self->obj;
    return self->recursive ? rsm_rlock_try_fast(l, rsm_gettid(), rsm_getpid())
                           : rsm_lock_try_fast(l, rsm_gettid(), rsm_getpid());
}

static inline int release_fast(FastLock *self)
{
    rsm_lock *l = (rsm_lock *)self->obj;
    return self->recursive ? rsm_rlock_release_fast(l, rsm_gettid()) : rsm_lock_release_fast(l, rsm_gettid());
}

static PyObject *str_fail, *str_pins, *str_maybe_unmap, *str_owner_is_dead, *str_tell_owner_died,
    *str_reclaim_dead_holders;

#define REAP_EVERY_SLICES 20

/* threading.Event/Semaphore-style timeout: None -> no deadline; <= 0 -> try once. */
static int deadline_from(PyObject *timeout, int64_t *deadline)
{
    if (timeout == NULL || timeout == Py_None) {
        *deadline = -1;
        return 0;
    }
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    if (t <= 0) {
        *deadline = 0;
        return 0;
    }
    if (t > 1e9) { /* about 31 years: treat as forever rather than overflow */
        *deadline = -1;
        return 0;
    }
    int64_t ns = (int64_t)(t * 1e9);
    *deadline = rsm_now_ns() + (ns > 0 ? ns : 1);
    return 0;
}

/* Hand a status to the Python side, which raises the right exception. */
static PyObject *fail(PyObject *self, int code)
{
    PyObject *c = PyLong_FromLong(code);
    if (!c)
        return NULL;
    PyObject *r = PyObject_CallMethodOneArg(self, str_fail, c);
    Py_DECREF(c);
    return r;
}

typedef int (*wait_step)(void *obj, rsm_waiter *w, int64_t deadline);
typedef void (*wait_abandon)(void *obj, rsm_waiter *w);
/* Policy between slices: 0 = keep waiting, a status = stop with it, -1 = exception. */
typedef int (*wait_policy)(FastObj *self, void *obj, rsm_waiter *w);

/* The slice loop of run_blocking (rsm_shm/sync/_base.py), in C.  Returns the final
 * status, or -1 with a Python exception set. */
static int blocking_loop(FastObj *self, wait_step step, wait_abandon abandon, wait_policy policy, rsm_waitq *q,
                         int64_t deadline)
{
    rsm_waiter w;
    memset(&w, 0, sizeof w);
    w.slot = RSM_WAITER_NONE;
    /* Pin the mapping (Segment._pins, see segment.py begin_use): list append/pop are what
     * begin_use/end_use do, done here without two Python calls on the wake-up path. */
    if (!self->seg || !self->pins) {
        PyErr_SetString(PyExc_ValueError, "rsm_shm object is closed");
        return -1;
    }
    PyObject *seg = Py_NewRef(self->seg); /* close() may drop self->seg while we wait */
    PyObject *pins = Py_NewRef(self->pins);
    if (PyList_Append(pins, Py_None) < 0) {
        Py_DECREF(pins);
        Py_DECREF(seg);
        return -1;
    }
    void *obj = self->obj;
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
        if (self->obj == NULL) { /* closed by another thread while we waited */
            abandon(obj, &w);
            PyErr_SetString(PyExc_ValueError, "rsm_shm object was closed while this thread waited on it");
            status = -1;
            break;
        }
        if (++slices % REAP_EVERY_SLICES == 0)
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
    PyObject *exc = NULL, *val = NULL, *tb = NULL;
    if (status < 0)
        PyErr_Fetch(&exc, &val, &tb);
    Py_ssize_t n = PyList_GET_SIZE(pins);
    int ok = n > 0 && PyList_SetSlice(pins, n - 1, n, NULL) == 0;
    PyObject *r = Py_NewRef(Py_None);
    if (ok && self->obj == NULL && PyList_GET_SIZE(pins) == 0) {
        Py_DECREF(r);
        r = PyObject_CallMethodNoArgs(seg, str_maybe_unmap); /* closed meanwhile: last one out unmaps */
    }
    Py_DECREF(pins);
    Py_DECREF(seg);
    Py_XDECREF(r);
    if (status < 0)
        PyErr_Restore(exc, val, tb);
    else if (!ok || !r)
        return -1;
    return status;
}

/* _bind(address, segment, recursive=False) / _bind(0, None): point at the struct inside
 * the segment's mapping.  Python unbinds before it unmaps (close()). */
static PyObject *FastObj_bind(FastObj *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "_bind(address, segment, recursive=False)");
        return NULL;
    }
    unsigned long long addr = PyLong_AsUnsignedLongLong(args[0]);
    if (addr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (addr % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "misaligned object address");
        return NULL;
    }
    int recursive = nargs == 3 ? PyObject_IsTrue(args[2]) : 0;
    if (recursive < 0)
        return NULL;
    PyObject *pins = NULL;
    if (args[1] != Py_None) {
        pins = PyObject_GetAttr(args[1], str_pins);
        if (!pins)
            return NULL;
        if (!PyList_CheckExact(pins)) {
            Py_DECREF(pins);
            PyErr_SetString(PyExc_TypeError, "segment._pins must be a list");
            return NULL;
        }
    }
    self->obj = addr ? (void *)(uintptr_t)addr : NULL;
    self->recursive = recursive;
    Py_XSETREF(self->seg, args[1] == Py_None ? NULL : Py_NewRef(args[1]));
    Py_XSETREF(self->pins, pins);
    Py_RETURN_NONE;
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
    PyObject *dead = PyObject_CallMethodOneArg((PyObject *)self, str_owner_is_dead, tid);
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

/* threading.Lock.acquire's argument rules -> deadline (0: try once, -1: none). */
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
    double t = -1;
    if (timeout && (t = PyFloat_AsDouble(timeout)) == -1.0 && PyErr_Occurred())
        return -1;
    if (!blocking) {
        if (t != -1) {
            PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
            return -1;
        }
        *deadline = 0;
        return 0;
    }
    if (t == -1) {
        *deadline = -1;
        return 0;
    }
    if (t < 0 || isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return -1;
    }
    if (t > 1e9) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return -1;
    }
    int64_t ns = (int64_t)(t * 1e9);
    *deadline = rsm_now_ns() + (ns > 0 ? ns : 1);
    return 0;
}

/* `tried`: the caller already made the GIL-holding attempt (do not repeat the CAS). */
static PyObject *lock_acquire_deadline(FastLock *self, int64_t deadline, int tried)
{
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    if (!tried && try_fast(self))
        Py_RETURN_TRUE;
    rsm_lock *l = (rsm_lock *)self->obj;
    int r = blocking_loop(self, self->recursive ? rlock_step : lock_step, lock_abandon, lock_policy, &l->wq,
                          deadline);
    if (r < 0)
        return NULL;
    if (r == RSM_OK)
        Py_RETURN_TRUE;
    if (r == RSM_TIMEOUT)
        Py_RETURN_FALSE;
    if (r == RSM_OWNER_DEAD) {
        PyObject *told = PyObject_CallMethodNoArgs((PyObject *)self, str_tell_owner_died);
        if (!told) {
            /* Telling failed (warning turned into an error): do not keep the lock, and
             * keep its OWNER_DIED mark so the next holder is told instead. */
            if (self->recursive)
                rsm_rlock_release(l, 0);
            else
                rsm_lock_release(l, 0);
            return NULL;
        }
        Py_DECREF(told);
        Py_RETURN_TRUE;
    }
    return fail((PyObject *)self, r);
}

static PyObject *FastLock_acquire(FastLock *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int tried = 0;
    if (self->obj && nargs == 0 && !kwnames) { /* the common form, first */
        if (try_fast(self))
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
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    rsm_lock *l = (rsm_lock *)self->obj;
    int released = release_fast(self);
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
        return fail((PyObject *)self, r);
    Py_RETURN_NONE;
}

static PyObject *FastLock_locked(FastLock *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    return PyBool_FromLong((atomic_load(&((rsm_lock *)self->obj)->word) & RSM_TID_MASK) != 0);
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
    return fail((PyObject *)self, r);
}

/* Robust semaphores, between slices: give back the permits of dead holders (Python
 * judges liveness, rsm_shm/sync/semaphore.py; C reclaims each slot in one CAS).
 * Returns how many permits came back, or -1 with an exception set. */
static long reclaim_dead_holders(FastObj *self)
{
    PyObject *n = PyObject_CallMethodNoArgs((PyObject *)self, str_reclaim_dead_holders);
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

static PyObject *sem_acquire_deadline(FastObj *self, int64_t deadline)
{
    static const rsm_waiter try_waiter = {.slot = RSM_WAITER_NONE};
    rsm_waiter w = try_waiter; /* with deadline 0 the C code never enqueues */
    rsm_sem *s = (rsm_sem *)self->obj;
    int robust = (s->flags & RSM_SEM_ROBUST) != 0;
    int r = rsm_sem_acquire(s, &w, 0);
    if (r == RSM_TIMEOUT && deadline == 0 && robust) {
        /* A try that fails looks for dead holders once: nobody else may be waiting to. */
        long got = reclaim_dead_holders(self);
        if (got < 0)
            return NULL;
        if (got > 0)
            r = rsm_sem_acquire(s, &w, 0);
    }
    if (r != RSM_TIMEOUT || deadline == 0)
        return sem_result(self, r);
    r = blocking_loop(self, sem_step, sem_abandon, robust ? sem_policy : NULL, &s->wq, deadline);
    return r < 0 ? NULL : sem_result(self, r);
}

static PyObject *FastSem_acquire(FastObj *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    int blocking;
    PyObject *timeout;
    int64_t deadline;
    if (parse_blocking_timeout(args, nargs, kwnames, &blocking, &timeout) < 0)
        return NULL;
    if (!blocking && timeout != Py_None) {
        PyErr_SetString(PyExc_ValueError, "can't specify timeout for non-blocking acquire");
        return NULL;
    }
    if (!blocking)
        deadline = 0;
    else if (deadline_from(timeout, &deadline) < 0)
        return NULL;
    return sem_acquire_deadline(self, deadline);
}

static PyObject *FastSem_wait(FastObj *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    PyObject *timeout;
    int64_t deadline;
    if (parse_timeout(args, nargs, kwnames, &timeout) < 0 || deadline_from(timeout, &deadline) < 0)
        return NULL;
    return sem_acquire_deadline(self, deadline);
}

static PyObject *FastSem_enter(FastObj *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    return sem_acquire_deadline(self, -1);
}

static PyObject *FastSem_release(FastObj *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
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
    int r = rsm_sem_release((rsm_sem *)self->obj, (uint32_t)n);
    if (r != RSM_OK)
        return fail((PyObject *)self, r);
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
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    rsm_event *e = (rsm_event *)self->obj;
    PyObject *timeout;
    int64_t deadline;
    if (parse_timeout(args, nargs, kwnames, &timeout) < 0)
        return NULL;
    if (atomic_load(&e->word) == 1)
        Py_RETURN_TRUE;
    if (deadline_from(timeout, &deadline) < 0)
        return NULL;
    if (deadline == 0)
        Py_RETURN_FALSE;
    int r = blocking_loop(self, event_step, event_abandon, NULL, &e->wq, deadline);
    if (r < 0)
        return NULL;
    if (r == RSM_OK)
        Py_RETURN_TRUE;
    if (r == RSM_TIMEOUT)
        Py_RETURN_FALSE;
    return fail((PyObject *)self, r);
}

static PyObject *FastEvent_set(FastObj *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    rsm_event_set((rsm_event *)self->obj);
    Py_RETURN_NONE;
}

static PyObject *FastEvent_clear(FastObj *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    rsm_event_clear((rsm_event *)self->obj);
    Py_RETURN_NONE;
}

static PyObject *FastEvent_is_set(FastObj *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->obj)
        return fail((PyObject *)self, RSM_CLOSED);
    return PyBool_FromLong(atomic_load(&((rsm_event *)self->obj)->word) == 1);
}

static int FastObj_traverse(FastObj *self, visitproc visit, void *arg)
{
    Py_VISIT(self->seg);
    Py_VISIT(self->pins);
    return 0;
}

static int FastObj_clear_refs(FastObj *self)
{
    Py_CLEAR(self->seg);
    Py_CLEAR(self->pins);
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
    {"_bind", (PyCFunction)(void (*)(void))FastObj_bind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef FastSem_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))FastSem_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=None) -> bool"},
    {"release", (PyCFunction)(void (*)(void))FastSem_release, METH_FASTCALL, "release(n=1)"},
    {"_wait", (PyCFunction)(void (*)(void))FastSem_wait, METH_FASTCALL | METH_KEYWORDS, "_wait(timeout=None) -> bool"},
    {"__enter__", (PyCFunction)FastSem_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))FastObj_exit, METH_FASTCALL, NULL},
    {"_bind", (PyCFunction)(void (*)(void))FastObj_bind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef FastEvent_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))FastEvent_wait, METH_FASTCALL | METH_KEYWORDS, "wait(timeout=None) -> bool"},
    {"set", (PyCFunction)FastEvent_set, METH_NOARGS, "set()"},
    {"clear", (PyCFunction)FastEvent_clear, METH_NOARGS, "clear()"},
    {"is_set", (PyCFunction)FastEvent_is_set, METH_NOARGS, "is_set() -> bool"},
    {"_bind", (PyCFunction)(void (*)(void))FastObj_bind, METH_FASTCALL, NULL},
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

static struct PyModuleDef fastmodule = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rsm_shm._fast",
    .m_doc = "Fast paths that keep the GIL (internal).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fast(void)
{
    if (rsm_core_attach() < 0)
        return NULL;
    str_fail = PyUnicode_InternFromString("_fail");
    str_pins = PyUnicode_InternFromString("_pins");
    str_maybe_unmap = PyUnicode_InternFromString("_maybe_unmap");
    str_owner_is_dead = PyUnicode_InternFromString("_owner_is_dead");
    str_tell_owner_died = PyUnicode_InternFromString("_tell_owner_died");
    str_reclaim_dead_holders = PyUnicode_InternFromString("_reclaim_dead_holders");
    if (!str_fail || !str_pins || !str_maybe_unmap || !str_owner_is_dead || !str_tell_owner_died ||
        !str_reclaim_dead_holders)
        return NULL;
    if (PyType_Ready(&FastLockType) < 0 || PyType_Ready(&FastSemType) < 0 || PyType_Ready(&FastEventType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastmodule);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "FastLock", (PyObject *)&FastLockType) < 0 ||
        PyModule_AddObjectRef(m, "FastSem", (PyObject *)&FastSemType) < 0 ||
        PyModule_AddObjectRef(m, "FastEvent", (PyObject *)&FastEventType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
