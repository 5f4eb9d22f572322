/* fast_ring.c -- rsm_shm._fast.FastRing: a ring's one-message put and get in one C call.
 *
 * rsm_shm.Ring derives from FastRing as Lock derives from FastLock.  put, put_nowait,
 * get and get_nowait make their first attempt here with the GIL held (rsm_ring_put1 /
 * rsm_ring_get1: a few atomics and the copy), which costs a fraction of a cffi call that
 * releases and retakes the GIL.  Holding the GIL is also what keeps the mapping alive
 * during the attempt: close() needs the GIL, so no pin is taken (Pins, fast_pins.c).
 *
 * A put that finds the ring full or a get that finds it empty waits here too, when the
 * timeout is one queue.Queue accepts: the same slice loop as the locks' (fast_sync.c),
 * with the mapping pinned and the GIL released around each rsm_ring_put/rsm_ring_get
 * slice; between slices signal handlers run (Ctrl-C), a close() from another thread
 * ends the wait with ValueError, and the ring's policy runs.  A consumer that keeps up
 * with its producer finds the ring empty on most gets, so this wait is on the hot path:
 * one C call per message, no Python frame.
 *
 * Everything else -- an argument to judge, a try that must wait for the reservation
 * lock, a role to settle, a message larger than COPY_MAX, a timeout beyond
 * threading.TIMEOUT_MAX -- goes to the Ring's slow paths in Python, which pin the mapping
 * and release the GIL while they wait.  The functions given at _bind are the whole
 * protocol with the Python class (each called with the ring first):
 *
 *     put_slow(ring, data, timeout, status)    status: why C did not finish the put
 *     get_slow(ring, timeout, status) -> bytes
 *     on_slice(ring, role, suspect, suspect_pid, suspect_pos) -> bytes or None
 *         between slices: repair what a dead peer left (rsm_ring_op's suspect); for a
 *         get, a message a dead consumer had claimed, delivered to this caller
 *
 * A slow path that takes over after C waited starts the timeout afresh: that happens
 * only when the single-producer/consumer role moved or for a message too large for
 * COPY_MAX, never on the paths a steady stream takes.  Only messages up to COPY_MAX are
 * copied with the GIL held (a few microseconds at most).  The receive buffer is one per
 * handle, which the GIL serializes; a get that waits receives into its own stack buffer.
 */
#include "fast.h"

#include <string.h>

/* The largest message copied with the GIL held, and the size of the receive buffer gets
 * copy into first (then into a new bytes object).  A larger message takes the slow path
 * (which grows its per-thread buffer and releases the GIL while it copies). */
#define COPY_MAX (64 * 1024)
/* A get that waits receives messages up to this size into a buffer on its stack (the
 * GIL is released then, so the handle's buffer is not ours); a larger one stays in the
 * ring and is taken into the handle's buffer once the GIL is back. */
#define WAIT_BUF 4096

typedef struct {
    PyObject_HEAD
    rsm_ring *ring;     /* the control block inside the mapping; NULL while unbound */
    rsm_pins *pins;     /* the segment's Pins: an open segment is checked before each call */
    PyObject *put_slow; /* the functions given at _bind (see the top of this file) */
    PyObject *get_slow;
    PyObject *on_slice;
    char *buf;          /* receive buffer (PyMem), used with the GIL held */
    uint64_t cap;
} FastRing;

/* queue.Queue's rule: None, or an int or float >= 0 (not NaN).  1: try now; 0: let the
 * slow path judge (and raise). */
static int timeout_ok(PyObject *t)
{
    if (t == Py_None)
        return 1;
    if (PyFloat_Check(t))
        return PyFloat_AS_DOUBLE(t) >= 0; /* false for NaN */
    if (PyLong_Check(t)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(t, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return overflow == 0 ? v >= 0 : 0; /* huge values: the slow path says how it treats them */
    }
    return 0;
}

/* The ring, or NULL with ValueError set if the handle is closed (or was never bound). */
static rsm_ring *open_ring(FastRing *self)
{
    if (!self->pins) {
        PyErr_SetString(PyExc_ValueError, "ring handle is not open");
        return NULL;
    }
    if (rsm_pins_open(self->pins) < 0)
        return NULL;
    return self->ring;
}

/* Parse (data, timeout=None) or (timeout=None), positional or keyword. */
static int parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int with_data,
                      PyObject **data, PyObject **timeout)
{
    PyObject *slots[2] = {NULL, NULL}; /* data, timeout (or timeout alone) */
    static const char *const names_put[] = {"data", "timeout"};
    static const char *const names_get[] = {"timeout"};
    const char *const *names = with_data ? names_put : names_get;
    Py_ssize_t max = with_data ? 2 : 1;
    if (nargs > max) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", fname, max, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        slots[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < max && PyUnicode_CompareWithASCIIString(key, names[i]) != 0)
            i++;
        if (i == max) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
            return -1;
        }
        if (slots[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, names[i]);
            return -1;
        }
        slots[i] = args[nargs + k];
    }
    if (with_data) {
        if (!slots[0]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument 'data'", fname);
            return -1;
        }
        *data = slots[0];
        *timeout = slots[1] ? slots[1] : Py_None;
    } else {
        *timeout = slots[0] ? slots[0] : Py_None;
    }
    return 0;
}

/* ---- waiting in C ---------------------------------------------------------------------- */

/* One blocking put or get in progress: the waiter and op live on the caller's stack. */
typedef struct {
    FastRing *self;
    rsm_pins *pins; /* a reference of our own: a rebind must not free it under us */
    rsm_ring *ring;
    uint32_t role; /* RSM_RING_ROLE_PRODUCER or _CONSUMER */
    rsm_waiter w;
    rsm_ring_op op;
    int slices;
} ring_wait;

static void wait_begin(ring_wait *rw, FastRing *self, rsm_ring *ring, uint32_t role)
{
    memset(rw, 0, sizeof *rw);
    rw->self = self;
    rw->ring = ring;
    rw->role = role;
    rw->w.slot = RSM_WAITER_NONE;
    rw->pins = (rsm_pins *)Py_NewRef(self->pins);
    rsm_pins_hold(rw->pins); /* open_ring() just checked it */
}

/* Between two slices: signal handlers, a close() from another thread, dead waiters, the
 * ring's policy.  0: keep waiting; 1: *out is a message the policy delivered; -1: an
 * exception is set.  In both last cases the waiter has left the wait queue. */
static int wait_between_slices(ring_wait *rw, PyObject **out)
{
    rsm_ring *ring = rw->ring;
    if (PyErr_CheckSignals() < 0)
        goto leave;
    if (rw->pins->closed) {
        PyErr_Format(PyExc_ValueError, "%S was closed while this thread waited on it", rw->pins->label);
        goto leave;
    }
    if (++rw->slices % RSM_REAP_EVERY_SLICES == 0)
        rsm_wq_reap((rsm_waitq *)((char *)ring +
                                  (rw->role == RSM_RING_ROLE_PRODUCER ? ring->pwq_offset : ring->cwq_offset)));
    PyObject *argv[5] = {(PyObject *)rw->self, PyLong_FromUnsignedLong(rw->role),
                         PyLong_FromUnsignedLong(rw->op.suspect), PyLong_FromLong(rw->op.suspect_pid),
                         PyLong_FromUnsignedLongLong(rw->op.suspect_pos)};
    PyObject *r = NULL;
    if (argv[1] && argv[2] && argv[3] && argv[4])
        r = PyObject_Vectorcall(rw->self->on_slice, argv, 5, NULL);
    for (int i = 1; i < 5; i++)
        Py_XDECREF(argv[i]);
    if (!r)
        goto leave;
    if (r == Py_None) {
        Py_DECREF(r);
        return 0;
    }
    rsm_ring_abandon(ring, &rw->w, rw->role);
    *out = r;
    return 1;
leave:
    rsm_ring_abandon(ring, &rw->w, rw->role); /* passes on a wake-up we consumed */
    return -1;
}

/* Unpin; returns `result` (NULL: an exception is set), or NULL if unpinning raised. */
static PyObject *wait_end(ring_wait *rw, PyObject *result)
{
    if (rsm_pins_exit_keep(rw->pins, result ? 0 : -1) < 0)
        Py_CLEAR(result);
    Py_DECREF(rw->pins);
    return result;
}

/* Wait until the put of data[0:len] (len <= COPY_MAX) is done.  Returns None, NULL with
 * an exception, or NULL with no exception when the slow path must take over. */
static PyObject *put_wait(FastRing *self, rsm_ring *ring, const char *data, uint64_t len, int64_t deadline)
{
    ring_wait rw;
    wait_begin(&rw, self, ring, RSM_RING_ROLE_PRODUCER);
    PyObject *result = NULL;
    for (;;) {
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = rsm_ring_put(ring, &rw.w, data, len, deadline, &rw.op);
        Py_END_ALLOW_THREADS
        if (r == RSM_OK) {
            result = Py_NewRef(Py_None);
            break;
        }
        if (r == RSM_SLICE) {
            PyObject *got = NULL;
            int b = wait_between_slices(&rw, &got);
            if (b == 0)
                continue;
            if (b > 0) { /* a producer's policy delivers nothing: a bug in on_slice */
                Py_DECREF(got);
                PyErr_SetString(PyExc_SystemError, "Ring on_slice returned a message to a put");
            }
            break;
        }
        if (r != RSM_NOT_OWNER && r != RSM_RETRY && r != RSM_INVAL)
            rsm_fast_raise((PyObject *)self, r, "put"); /* Full (timeout), ShutDown, corrupt */
        break; /* NULL, no exception set: the slow path takes over */
    }
    return wait_end(&rw, result);
}

/* Wait for a message.  Returns bytes, NULL with an exception, or NULL with no exception
 * when the slow path must take over. */
static PyObject *get_wait(FastRing *self, rsm_ring *ring, int64_t deadline)
{
    char buf[WAIT_BUF];
    ring_wait rw;
    wait_begin(&rw, self, ring, RSM_RING_ROLE_CONSUMER);
    PyObject *result = NULL;
    for (;;) {
        int64_t n;
        Py_BEGIN_ALLOW_THREADS
        n = rsm_ring_get(ring, &rw.w, buf, sizeof buf, deadline, &rw.op);
        Py_END_ALLOW_THREADS
        if (n >= 0) {
            result = PyBytes_FromStringAndSize(buf, (Py_ssize_t)n);
            break;
        }
        if (n == -RSM_SLICE) {
            if (wait_between_slices(&rw, &result) == 0)
                continue;
            break;
        }
        if (n == -RSM_OVERFLOW) {
            /* Larger than the stack buffer (nothing was taken, the waiter left the queue):
             * take it into the handle's buffer with the GIL held. */
            n = rsm_ring_get1(ring, self->buf, self->cap);
            if (n >= 0) {
                result = PyBytes_FromStringAndSize(self->buf, (Py_ssize_t)n);
                break;
            }
            if (n == -RSM_WOULDBLOCK)
                continue; /* another consumer took it: wait again */
        }
        if (n != -RSM_NOT_OWNER && n != -RSM_RETRY && n != -RSM_OVERFLOW)
            rsm_fast_raise((PyObject *)self, (int)-n, "get"); /* Empty (timeout), ShutDown, corrupt */
        break; /* NULL, no exception set: the slow path takes over */
    }
    return wait_end(&rw, result);
}

/* ---- put and get ------------------------------------------------------------------------ */

static PyObject *put_status(FastRing *self, PyObject *data, PyObject *timeout, int status)
{
    PyObject *st = PyLong_FromLong(status);
    if (!st)
        return NULL;
    PyObject *argv[4] = {(PyObject *)self, data, timeout, st};
    PyObject *r = PyObject_Vectorcall(self->put_slow, argv, 4, NULL);
    Py_DECREF(st);
    return r;
}

/* After an attempt that did not put: wait here if the timeout allows and C can.  Returns
 * the put's result, or NULL with no exception set when the slow path must take over. */
static PyObject *put_blocking(FastRing *self, rsm_ring *ring, const char *data, uint64_t len, PyObject *timeout,
                              int status)
{
    if (status != RSM_WOULDBLOCK && status != RSM_RETRY)
        return NULL; /* closed, too large, ...: the slow path says so */
    int64_t deadline;
    if (rsm_deadline_convert(timeout, RULE_QUEUE, 1, &deadline) < 0)
        return NULL; /* the exception is queue.Queue's (timeout_ok() admitted the type) */
    if (deadline == DEADLINE_TRY) {
        if (status == RSM_WOULDBLOCK)
            return rsm_fast_raise((PyObject *)self, RSM_WOULDBLOCK, "put"); /* queue.Full */
        return NULL; /* a busy reservation lock: the slow path waits a grace period */
    }
    if (deadline == DEADLINE_TOO_LARGE)
        return NULL;
    return put_wait(self, ring, data, len, deadline);
}

static PyObject *ring_put(FastRing *self, PyObject *data, PyObject *timeout)
{
    rsm_ring *ring = open_ring(self);
    if (!ring)
        return NULL;
    int status = RSM_RETRY; /* not tried: the slow path judges the arguments */
    if (timeout_ok(timeout)) {
        PyObject *r = NULL;
        if (PyBytes_CheckExact(data)) {
            if (PyBytes_GET_SIZE(data) <= COPY_MAX) {
                const char *p = PyBytes_AS_STRING(data);
                uint64_t len = (uint64_t)PyBytes_GET_SIZE(data);
                status = rsm_ring_put1(ring, p, len);
                if (status == RSM_OK)
                    Py_RETURN_NONE;
                r = put_blocking(self, ring, p, len, timeout, status);
            }
        } else {
            Py_buffer view;
            if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) == 0) {
                if (view.len <= COPY_MAX) {
                    status = rsm_ring_put1(ring, view.buf, (uint64_t)view.len);
                    if (status == RSM_OK)
                        r = Py_NewRef(Py_None);
                    else
                        r = put_blocking(self, ring, view.buf, (uint64_t)view.len, timeout, status);
                }
                PyBuffer_Release(&view);
            } else {
                PyErr_Clear(); /* not a contiguous buffer: the slow path says what is wrong */
            }
        }
        if (r || PyErr_Occurred())
            return r;
    }
    return put_status(self, data, timeout, status);
}

static PyObject *ring_get(FastRing *self, PyObject *timeout)
{
    rsm_ring *ring = open_ring(self);
    if (!ring)
        return NULL;
    int64_t n = -RSM_RETRY;
    if (timeout_ok(timeout)) {
        n = rsm_ring_get1(ring, self->buf, self->cap);
        if (n >= 0)
            return PyBytes_FromStringAndSize(self->buf, (Py_ssize_t)n);
        if (n == -RSM_WOULDBLOCK) {
            int64_t deadline;
            if (rsm_deadline_convert(timeout, RULE_QUEUE, 1, &deadline) < 0)
                return NULL;
            if (deadline == DEADLINE_TRY)
                return rsm_fast_raise((PyObject *)self, RSM_WOULDBLOCK, "get"); /* queue.Empty */
            if (deadline != DEADLINE_TOO_LARGE) {
                PyObject *r = get_wait(self, ring, deadline);
                if (r || PyErr_Occurred())
                    return r;
                n = -RSM_RETRY; /* the slow path takes over */
            }
        }
    }
    PyObject *st = PyLong_FromLongLong(-n);
    if (!st)
        return NULL;
    PyObject *argv[3] = {(PyObject *)self, timeout, st};
    PyObject *r = PyObject_Vectorcall(self->get_slow, argv, 3, NULL);
    Py_DECREF(st);
    return r;
}

static PyObject *FastRing_put(FastRing *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *data, *timeout;
    if (nargs == 1 && !kwnames) /* the common form, first */
        return ring_put(self, args[0], Py_None);
    if (parse_args("put", args, nargs, kwnames, 1, &data, &timeout) < 0)
        return NULL;
    return ring_put(self, data, timeout);
}

static PyObject *zero; /* the timeout of put_nowait / get_nowait */

static PyObject *FastRing_put_nowait(FastRing *self, PyObject *data) { return ring_put(self, data, zero); }

static PyObject *FastRing_get(FastRing *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout;
    if (nargs == 0 && !kwnames)
        return ring_get(self, Py_None);
    if (parse_args("get", args, nargs, kwnames, 0, NULL, &timeout) < 0)
        return NULL;
    return ring_get(self, timeout);
}

static PyObject *FastRing_get_nowait(FastRing *self, PyObject *Py_UNUSED(ignored)) { return ring_get(self, zero); }

/* _bind(address, pins, put_slow, get_slow, on_slice): point at the ring control block
 * inside the mapping that `pins` guards; the functions take the ring first (see the top
 * of this file). */
static PyObject *FastRing_bind(FastRing *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "_bind(address, pins, put_slow, get_slow, on_slice)");
        return NULL;
    }
    unsigned long long addr = PyLong_AsUnsignedLongLong(args[0]);
    if (addr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (addr == 0 || addr % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "misaligned ring address");
        return NULL;
    }
    if (!rsm_pins_check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_bind: pins must be an rsm_shm._fast.Pins");
        return NULL;
    }
    if (!PyCallable_Check(args[2]) || !PyCallable_Check(args[3]) || !PyCallable_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "_bind: put_slow, get_slow and on_slice must be callable");
        return NULL;
    }
    if (rsm_pins_open((rsm_pins *)args[1]) < 0)
        return NULL;
    rsm_ring *ring = (rsm_ring *)(uintptr_t)addr;
    uint64_t cap = rsm_ring_max_message(ring); /* checked by rsm_ring_check before binding */
    if (cap > COPY_MAX)
        cap = COPY_MAX;
    char *buf = PyMem_Realloc(self->buf, cap ? cap : 1);
    if (!buf)
        return PyErr_NoMemory();
    self->buf = buf;
    self->cap = cap;
    self->ring = ring;
    Py_XSETREF(self->pins, (rsm_pins *)Py_NewRef(args[1]));
    Py_XSETREF(self->put_slow, Py_NewRef(args[2]));
    Py_XSETREF(self->get_slow, Py_NewRef(args[3]));
    Py_XSETREF(self->on_slice, Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

static int FastRing_traverse(FastRing *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pins);
    Py_VISIT(self->put_slow);
    Py_VISIT(self->get_slow);
    Py_VISIT(self->on_slice);
    return 0;
}

static int FastRing_clear(FastRing *self)
{
    self->ring = NULL;
    Py_CLEAR(self->pins);
    Py_CLEAR(self->put_slow);
    Py_CLEAR(self->get_slow);
    Py_CLEAR(self->on_slice);
    return 0;
}

static void FastRing_dealloc(FastRing *self)
{
    PyObject_GC_UnTrack(self);
    FastRing_clear(self);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FastRing_methods[] = {
    {"put", (PyCFunction)(void (*)(void))FastRing_put, METH_FASTCALL | METH_KEYWORDS,
     "put($self, data, timeout=None)\n--\n\n"
     "Append one message (bytes, bytearray, memoryview or any contiguous buffer).\n\n"
     "Blocks while there is no room: ``timeout=None`` forever, ``0`` not at all, else up\n"
     "to ``timeout`` seconds, then raises ``queue.Full``.  Raises :class:`ShutDown` if the\n"
     "ring is shut down (also while waiting), ValueError if the message is larger than\n"
     ":attr:`max_message` or the handle is closed, RuntimeError if the ring is\n"
     "single-producer and another live thread is its producer."},
    {"put_nowait", (PyCFunction)FastRing_put_nowait, METH_O,
     "put_nowait($self, data, /)\n--\n\n"
     "``put(data, timeout=0)``: raises ``queue.Full`` at once if there is no room."},
    {"get", (PyCFunction)(void (*)(void))FastRing_get, METH_FASTCALL | METH_KEYWORDS,
     "get($self, timeout=None)\n--\n\n"
     "Remove and return the oldest message (bytes).\n\n"
     "Blocks while the ring is empty: ``timeout=None`` forever, ``0`` not at all, else up\n"
     "to ``timeout`` seconds, then raises ``queue.Empty``.  Raises :class:`ShutDown`\n"
     "once the ring is shut down and drained (also while waiting), ValueError if the\n"
     "handle is closed, RuntimeError if the ring is single-consumer and another live\n"
     "thread is its consumer."},
    {"get_nowait", (PyCFunction)FastRing_get_nowait, METH_NOARGS,
     "get_nowait($self, /)\n--\n\n"
     "``get(timeout=0)``: raises ``queue.Empty`` at once if there is nothing."},
    {"_bind", (PyCFunction)(void (*)(void))FastRing_bind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastRingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rsm_shm._fast.FastRing",
    .tp_basicsize = sizeof(FastRing),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "C entry points of rsm_shm.Ring's one-message put and get (internal).",
    .tp_methods = FastRing_methods,
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)FastRing_traverse,
    .tp_clear = (inquiry)FastRing_clear,
    .tp_dealloc = (destructor)FastRing_dealloc,
};

int rsm_fast_ring_add(PyObject *module)
{
    if (!zero && !(zero = PyLong_FromLong(0)))
        return -1;
    if (PyType_Ready(&FastRingType) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "FastRing", (PyObject *)&FastRingType);
}
