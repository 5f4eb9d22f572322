/* fastpath.c -- rsm_shm._fast: CPython entry points for the hottest paths.
 *
 * Lock/RLock (FastLock), the semaphores (FastSem) and Event (FastEvent) derive from these
 * small CPython types, exactly as multiprocessing.synchronize.Lock derives from
 * _multiprocessing.SemLock.  Each call is one C entry: the attempt with the GIL held (a
 * cffi call alone costs ~48 ns here, an uncontended acquire is one CAS), then, if it must
 * wait, the slice loop with the GIL released around each futex wait and
 * PyErr_CheckSignals() between slices (Ctrl-C).  The algorithms stay in lock.c, sem.c and
 * event.c; policy stays in Python, in functions each object hands over at _bind (the
 * whole protocol between these types and their Python classes):
 *
 *     FastLock._bind(address, pins, recursive, internal, owner_is_dead, tell_owner_died)
 *         owner_is_dead(lock, tid) -> bool   between slices: may a waiter take it over?
 *         tell_owner_died(lock)              a holder that recovered a dead owner's lock
 *     FastSem._bind(address, pins, reclaim_dead_holders)
 *         reclaim_dead_holders(sem) -> int   robust semaphores: permits given back
 *     FastEvent._bind(address, pins)
 *
 * `pins` is the segment's Pins (below).  A status C does not handle becomes its exception
 * in rsm_shm._errors.raise_for(code, obj), the package's one place for that.
 *
 * Two things here serve every blocking call of the package, Python ones included: Pins,
 * the protocol that keeps a segment mapped while any call uses it, and deadline(), the one
 * converter from a user's timeout to a deadline (docs/blocking.md has the table).
 */
#include "fast.h"

#include <math.h>
#include <string.h>

/* ---- Pins: the one protocol between a segment's mapping and every C call into it ----
 *
 * Every rsm_shm segment owns one Pins object (rsm_shm/segment.py).  A call that hands raw
 * pointers into the mapping to C -- and every C call may release the GIL -- holds a pin
 * for its duration: `with segment.pins:` in Python, pins_enter()/pins_exit() here.
 * close() marks the Pins closed (new calls raise ValueError) and the mapping is released
 * (`on_unmap()`, given by the segment) only when the last pin is gone, so no C call can
 * ever run on an unmapped page.  Everything runs under the GIL: plain counters suffice.
 */
typedef struct {
    PyObject_HEAD
    Py_ssize_t users;   /* calls in progress that hold raw pointers into the mapping */
    int closed;         /* close() was called: new calls fail with ValueError */
    int unmapped;       /* on_unmap() ran: the mapping is gone */
    PyObject *on_unmap; /* called once, when closed and the last pin is released */
    PyObject *label;    /* names the object in messages: "Lock 'jobs'" */
} Pins;

static PyTypeObject PinsType;

static int pins_raise_closed(Pins *p)
{
    PyErr_Format(PyExc_ValueError, "%S is closed", p->label);
    return -1;
}

static int pins_enter(Pins *p)
{
    if (p->closed)
        return pins_raise_closed(p);
    p->users++;
    return 0;
}

static int pins_unmap(Pins *p)
{
    if (p->unmapped || p->users > 0)
        return 0;
    p->unmapped = 1; /* first: on_unmap may run Python code that switches threads */
    PyObject *r = PyObject_CallNoArgs(p->on_unmap);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int pins_exit(Pins *p)
{
    if (--p->users == 0 && p->closed)
        return pins_unmap(p);
    return 0;
}

/* For the other files of _fast (fast.h), to which Pins are opaque. */
int rsm_pins_check(PyObject *o) { return PyObject_TypeCheck(o, &PinsType); }
int rsm_pins_open(PyObject *pins) { return ((Pins *)pins)->closed ? pins_raise_closed((Pins *)pins) : 0; }

static int Pins_init(Pins *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"on_unmap", "label", NULL};
    PyObject *on_unmap, *label;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OU:Pins", kwlist, &on_unmap, &label))
        return -1;
    if (!PyCallable_Check(on_unmap)) {
        PyErr_SetString(PyExc_TypeError, "Pins(on_unmap, label): on_unmap must be callable");
        return -1;
    }
    Py_XSETREF(self->on_unmap, Py_NewRef(on_unmap));
    Py_XSETREF(self->label, Py_NewRef(label));
    return 0;
}

static PyObject *Pins_enter(Pins *self, PyObject *Py_UNUSED(ignored))
{
    if (pins_enter(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Pins_exit(Pins *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    if (self->users <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Pins.__exit__ without a matching __enter__");
        return NULL;
    }
    if (pins_exit(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Pins_close(Pins *self, PyObject *Py_UNUSED(ignored))
{
    self->closed = 1;
    if (pins_unmap(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Pins_get_closed(Pins *self, void *Py_UNUSED(c)) { return PyBool_FromLong(self->closed); }
static PyObject *Pins_get_unmapped(Pins *self, void *Py_UNUSED(c)) { return PyBool_FromLong(self->unmapped); }
static PyObject *Pins_get_users(Pins *self, void *Py_UNUSED(c)) { return PyLong_FromSsize_t(self->users); }
static PyObject *Pins_get_label(Pins *self, void *Py_UNUSED(c)) { return Py_NewRef(self->label); }

static int Pins_set_label(Pins *self, PyObject *value, void *Py_UNUSED(c))
{
    if (!value || !PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "Pins.label must be a str");
        return -1;
    }
    Py_XSETREF(self->label, Py_NewRef(value));
    return 0;
}

static int Pins_traverse(Pins *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_unmap);
    return 0;
}

static int Pins_clear(Pins *self)
{
    Py_CLEAR(self->on_unmap);
    return 0;
}

static void Pins_dealloc(Pins *self)
{
    PyObject_GC_UnTrack(self);
    Pins_clear(self);
    Py_CLEAR(self->label);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Pins_methods[] = {
    {"__enter__", (PyCFunction)Pins_enter, METH_NOARGS, "Pin the mapping (ValueError if closed)."},
    {"__exit__", (PyCFunction)(void (*)(void))Pins_exit, METH_FASTCALL, "Unpin; the last one out after close() unmaps."},
    {"close", (PyCFunction)Pins_close, METH_NOARGS, "Refuse new pins; unmap now or when the last pin goes."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Pins_getset[] = {
    {"closed", (getter)Pins_get_closed, NULL, "close() was called", NULL},
    {"unmapped", (getter)Pins_get_unmapped, NULL, "the mapping was released", NULL},
    {"users", (getter)Pins_get_users, NULL, "pins held right now", NULL},
    {"label", (getter)Pins_get_label, (setter)Pins_set_label, "names the object in messages", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PinsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rsm_shm._fast.Pins",
    .tp_basicsize = sizeof(Pins),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Pins(on_unmap, label): counts the calls that hold raw pointers into a mapping (internal).",
    .tp_methods = Pins_methods,
    .tp_getset = Pins_getset,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pins_init,
    .tp_traverse = (traverseproc)Pins_traverse,
    .tp_clear = (inquiry)Pins_clear,
    .tp_dealloc = (destructor)Pins_dealloc,
};

/* ---- the primitives' entry types ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    void *obj;          /* rsm_lock / rsm_sem / rsm_event inside the mapping */
    Pins *pins;         /* the segment's pins; NULL while unbound */
    int recursive;      /* FastLock only: an RLock */
    int internal;       /* a private part of a larger object (Barrier's lock): usable while
                           that object's call still pins the mapping, even after close() */
    PyObject *policy[2]; /* the functions given at _bind (see the top of this file) */
} FastObj;

/* The struct, or NULL if this handle may not touch it (closed, or never bound). */
static inline void *live(FastObj *self)
{
    Pins *p = self->pins;
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

static PyObject *raise_for; /* rsm_shm._errors.raise_for */

#define REAP_EVERY_SLICES 20

/* ---- Deadlines: the one converter from a user's timeout to an absolute deadline -------
 *
 * Used by every blocking call, here and (through deadline()) in Python.  The result is an
 * absolute CLOCK_MONOTONIC time in ns, or one of: */
#define DEADLINE_FOREVER (-1)  /* wait without limit */
#define DEADLINE_TRY (0)       /* try once, never sleep */
#define DEADLINE_TOO_LARGE (-2) /* beyond threading.TIMEOUT_MAX: OverflowError, but only once
                                   the call finds it must wait (as threading does) */
/* The rules of the standard classes each of our calls mirrors (see docs/blocking.md): */
enum {
    RULE_LOCK = 0,  /* threading.Lock.acquire(blocking, timeout): -1 = forever, other
                       negatives ValueError, a timeout with blocking=False ValueError */
    RULE_WAIT = 1,  /* Event.wait, Condition.wait, Semaphore.acquire, Barrier.wait: None =
                       forever, <= 0 = try once */
    RULE_QUEUE = 2, /* queue.Queue.get/put: None = forever, negative ValueError, 0 = try once */
};
/* threading.TIMEOUT_MAX in seconds: PY_TIMEOUT_MAX is in microseconds; CPython floors it.
 * (PyErr_Format has no float conversions -- 3.12 raises SystemError on %f -- so messages
 * print it as a long long.) */
#define TIMEOUT_MAX_S floor((double)PY_TIMEOUT_MAX / 1e6)

static const char *type_name(PyObject *o) { return Py_TYPE(o)->tp_name; }

/* `timeout` NULL means the argument was not passed.  Returns 0, or -1 with an exception. */
static int deadline_convert(PyObject *timeout, int rule, int blocking, int64_t *deadline)
{
    if (timeout == NULL || (timeout == Py_None && rule != RULE_LOCK)) {
        *deadline = blocking ? DEADLINE_FOREVER : DEADLINE_TRY;
        return 0;
    }
    if (!blocking && rule == RULE_WAIT) { /* threading.Semaphore.acquire(False, timeout) */
        PyErr_SetString(PyExc_ValueError, "can't specify timeout for non-blocking acquire");
        return -1;
    }
    double t;
    if (PyFloat_Check(timeout)) {
        t = PyFloat_AS_DOUBLE(timeout);
    } else if (PyLong_Check(timeout)) {
        t = PyLong_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred()) {
            PyErr_Format(PyExc_OverflowError, "timeout value is too large: %R", timeout);
            return -1;
        }
    } else {
        PyErr_Format(PyExc_TypeError, "timeout must be a number (int or float)%s, not %.100s",
                     rule == RULE_LOCK ? "" : " or None", type_name(timeout));
        return -1;
    }
    if (isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a number, not NaN");
        return -1;
    }
    if (rule == RULE_LOCK) {
        /* threading.Lock converts first (inf and huge values: OverflowError), then checks */
        if (!isfinite(t) || t > TIMEOUT_MAX_S || t < -TIMEOUT_MAX_S) {
            PyErr_Format(PyExc_OverflowError, "timeout value is too large: %R (threading.TIMEOUT_MAX is %lld)",
                         timeout, (long long)TIMEOUT_MAX_S);
            return -1;
        }
        if (!blocking) {
            if (t != -1) {
                PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
                return -1;
            }
            *deadline = DEADLINE_TRY;
            return 0;
        }
        if (t == -1) {
            *deadline = DEADLINE_FOREVER;
            return 0;
        }
        if (t < 0) {
            PyErr_Format(PyExc_ValueError, "timeout value must be a non-negative number or -1, not %R", timeout);
            return -1;
        }
    } else if (!blocking) { /* queue.Queue.get(block=False, timeout): the timeout is ignored */
        *deadline = DEADLINE_TRY;
        return 0;
    } else if (rule == RULE_QUEUE && t < 0) {
        PyErr_Format(PyExc_ValueError, "'timeout' must be a non-negative number, not %R", timeout);
        return -1;
    }
    if (t <= 0) {
        *deadline = DEADLINE_TRY;
        return 0;
    }
    if (t > TIMEOUT_MAX_S) { /* inf included */
        *deadline = DEADLINE_TOO_LARGE;
        return 0;
    }
    int64_t now = rsm_now_ns();
    double ns = t * 1e9;
    if (ns >= (double)(INT64_MAX - now)) { /* past the end of int64 ns: centuries away */
        *deadline = DEADLINE_FOREVER;
        return 0;
    }
    *deadline = now + (ns >= 1 ? (int64_t)ns : 1);
    return 0;
}

static int raise_too_large(void)
{
    PyErr_Format(PyExc_OverflowError, "timeout value is too large (threading.TIMEOUT_MAX is %lld s)",
                 (long long)TIMEOUT_MAX_S);
    return -1;
}

/* deadline(timeout, rule, blocking=True) -> int: the converter, for the Python callers. */
static PyObject *py_deadline(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "deadline(timeout, rule, blocking=True)");
        return NULL;
    }
    int rule = PyLong_AsLong(args[1]);
    if (rule == -1 && PyErr_Occurred())
        return NULL;
    if (rule < RULE_LOCK || rule > RULE_QUEUE) {
        PyErr_Format(PyExc_ValueError, "unknown timeout rule %d", rule);
        return NULL;
    }
    int blocking = nargs == 3 ? PyObject_IsTrue(args[2]) : 1;
    if (blocking < 0)
        return NULL;
    int64_t d;
    if (deadline_convert(args[0], rule, blocking, &d) < 0)
        return NULL;
    return PyLong_FromLongLong(d);
}

/* Raise the exception a status means (rsm_shm._errors.raise_for(code, obj)); NULL. */
static PyObject *fail(PyObject *self, int code)
{
    PyObject *c = PyLong_FromLong(code);
    if (!c)
        return NULL;
    PyObject *argv[2] = {c, self};
    PyObject *r = PyObject_Vectorcall(raise_for, argv, 2, NULL);
    Py_DECREF(c);
    Py_XDECREF(r); /* raise_for always raises */
    return NULL;
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
        return fail((PyObject *)self, RSM_CLOSED);
    pins_raise_closed(self->pins);
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
static int blocking_loop(FastObj *self, wait_step step, wait_abandon abandon, wait_policy policy, rsm_waitq *q,
                         int64_t deadline)
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
    if (deadline == DEADLINE_TOO_LARGE) { /* only an error if we must wait */
        int r = step(obj, &w, DEADLINE_TRY);
        return r == RSM_TIMEOUT ? raise_too_large() : r;
    }
    Pins *pins = (Pins *)Py_NewRef(self->pins); /* a rebind must not free it under us */
    pins->users++; /* live() held: may pin even if closed (an internal part, see live()) */
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
    int unpinned = pins_exit(pins); /* after close(), the last one out unmaps */
    Py_DECREF(pins);
    if (status < 0)
        PyErr_Restore(exc, val, tb);
    else if (unpinned < 0)
        return -1;
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
    if (!PyObject_TypeCheck(args[1], &PinsType)) {
        PyErr_Format(PyExc_TypeError, "%s: pins must be an rsm_shm._fast.Pins", usage);
        return NULL;
    }
    for (int i = 0; i < npolicy; i++)
        if (!PyCallable_Check(args[first + i])) {
            PyErr_Format(PyExc_TypeError, "%s: argument %zd must be callable", usage, first + i + 1);
            return NULL;
        }
    self->obj = (void *)(uintptr_t)addr;
    Py_XSETREF(self->pins, (Pins *)Py_NewRef(args[1]));
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
    return deadline_convert(timeout, RULE_LOCK, blocking, deadline);
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
    Pins *pins = (Pins *)Py_NewRef(self->pins);
    pins->users++;
    PyObject *result = NULL;
    int r = blocking_loop(self, self->recursive ? rlock_step : lock_step, lock_abandon, lock_policy, &l->wq,
                          deadline);
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
        result = fail((PyObject *)self, r);
    }
    PyObject *exc = NULL, *val = NULL, *tb = NULL;
    if (!result)
        PyErr_Fetch(&exc, &val, &tb);
    int unpinned = pins_exit(pins);
    Py_DECREF(pins);
    if (!result) {
        PyErr_Restore(exc, val, tb);
    } else if (unpinned < 0) {
        Py_DECREF(result);
        return NULL;
    }
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
        return fail((PyObject *)self, r);
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
    return fail((PyObject *)self, r);
}

/* Robust semaphores, between slices: give back the permits of dead holders (Python
 * judges liveness, rsm_shm/sync/semaphore.py; C reclaims each slot in one CAS).
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
    if (blocking && deadline_convert(timeout, RULE_WAIT, 1, &deadline) < 0)
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
    r = blocking_loop(self, sem_step, sem_abandon, robust ? sem_policy : NULL, &s->wq, deadline);
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
    rsm_event *e = (rsm_event *)live(self);
    if (!e)
        return fail_closed(self);
    PyObject *timeout;
    int64_t deadline;
    if (parse_timeout(args, nargs, kwnames, &timeout) < 0)
        return NULL;
    if (atomic_load(&e->word) == 1)
        Py_RETURN_TRUE;
    if (deadline_convert(timeout, RULE_WAIT, 1, &deadline) < 0)
        return NULL;
    if (deadline == DEADLINE_TRY)
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
    return PyBool_FromLong(atomic_load(&e->word) == 1);
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

static PyMethodDef module_methods[] = {
    {"deadline", (PyCFunction)(void (*)(void))py_deadline, METH_FASTCALL,
     "deadline(timeout, rule, blocking=True) -> int: the absolute CLOCK_MONOTONIC deadline in ns, "
     "DEADLINE_FOREVER, DEADLINE_TRY or DEADLINE_TOO_LARGE, by the rules RULE_LOCK, RULE_WAIT or RULE_QUEUE"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastmodule = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rsm_shm._fast",
    .m_doc = "Fast paths that keep the GIL (internal).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__fast(void)
{
    if (rsm_core_attach() < 0)
        return NULL;
    PyObject *errors = PyImport_ImportModule("rsm_shm._errors");
    if (!errors)
        return NULL;
    Py_XSETREF(raise_for, PyObject_GetAttrString(errors, "raise_for"));
    Py_DECREF(errors);
    if (!raise_for)
        return NULL;
    if (PyType_Ready(&PinsType) < 0 || PyType_Ready(&FastLockType) < 0 || PyType_Ready(&FastSemType) < 0 ||
        PyType_Ready(&FastEventType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastmodule);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Pins", (PyObject *)&PinsType) < 0 ||
        PyModule_AddObjectRef(m, "FastLock", (PyObject *)&FastLockType) < 0 ||
        PyModule_AddObjectRef(m, "FastSem", (PyObject *)&FastSemType) < 0 ||
        PyModule_AddObjectRef(m, "FastEvent", (PyObject *)&FastEventType) < 0 ||
        PyModule_AddIntConstant(m, "DEADLINE_FOREVER", DEADLINE_FOREVER) < 0 ||
        PyModule_AddIntConstant(m, "DEADLINE_TRY", DEADLINE_TRY) < 0 ||
        PyModule_AddIntConstant(m, "DEADLINE_TOO_LARGE", DEADLINE_TOO_LARGE) < 0 ||
        PyModule_AddIntConstant(m, "RULE_LOCK", RULE_LOCK) < 0 ||
        PyModule_AddIntConstant(m, "RULE_WAIT", RULE_WAIT) < 0 ||
        PyModule_AddIntConstant(m, "RULE_QUEUE", RULE_QUEUE) < 0 ||
        PyModule_AddObject(m, "TIMEOUT_MAX", PyFloat_FromDouble(TIMEOUT_MAX_S)) < 0 || rsm_fast_ring_add(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
