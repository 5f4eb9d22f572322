/* fastpath.c -- rsm_shm._fast: GIL-holding entry points for the uncontended Lock path.
 *
 * A cffi call releases and retakes the GIL around every call (~48 ns here); an
 * uncontended acquire is one CAS (~5 ns).  So Lock derives from this small CPython type,
 * whose acquire()/release() try the lock.h fast path while holding the GIL, exactly as
 * multiprocessing.synchronize.Lock derives from _multiprocessing.SemLock.  Anything that
 * may block (or needs policy: owner death, errors) calls back into the Python methods
 * _acquire_slow / _release_slow, which go through cffi and release the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "lock.h"

typedef struct {
    PyObject_HEAD
    rsm_lock *lock;   /* NULL while unbound/closed: every call then takes the slow path */
} FastLock;

static PyObject *str_acquire_slow;
static PyObject *str_release_slow;

static PyObject *call_slow(PyObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *stack[8];
    if (nargs + nkw + 1 > 8) {
        PyErr_SetString(PyExc_TypeError, "too many arguments");
        return NULL;
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        stack[i + 1] = args[i];
    return PyObject_VectorcallMethod(name, stack, (size_t)(nargs + 1), kwnames);
}

static PyObject *FastLock_acquire(FastLock *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* Only the plain `acquire()` / `acquire(True)` forms take the inline path; any timeout
     * or keyword goes to Python, which validates arguments like threading.Lock. */
    if (self->lock && !kwnames && (nargs == 0 || (nargs == 1 && args[0] == Py_True))) {
        if (rsm_lock_try_fast(self->lock, rsm_gettid(), rsm_getpid()))
            Py_RETURN_TRUE;
    }
    return call_slow((PyObject *)self, str_acquire_slow, args, nargs, kwnames);
}

static PyObject *FastLock_enter(FastLock *self, PyObject *Py_UNUSED(ignored))
{
    if (self->lock && rsm_lock_try_fast(self->lock, rsm_gettid(), rsm_getpid()))
        Py_RETURN_TRUE;
    return call_slow((PyObject *)self, str_acquire_slow, NULL, 0, NULL);
}

static PyObject *FastLock_release(FastLock *self, PyObject *Py_UNUSED(ignored))
{
    if (self->lock && rsm_lock_release_fast(self->lock, rsm_gettid()))
        Py_RETURN_NONE;
    return call_slow((PyObject *)self, str_release_slow, NULL, 0, NULL);
}

static PyObject *FastLock_exit(FastLock *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    PyObject *r = FastLock_release(self, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* _bind(address): point at the rsm_lock inside a mapping (0 unbinds).  Python guarantees
 * the mapping outlives the binding: close() unbinds before it unmaps. */
static PyObject *FastLock_bind(FastLock *self, PyObject *arg)
{
    unsigned long long addr = PyLong_AsUnsignedLongLong(arg);
    if (addr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (addr % _Alignof(rsm_lock) != 0) {
        PyErr_SetString(PyExc_ValueError, "misaligned lock address");
        return NULL;
    }
    self->lock = (rsm_lock *)(uintptr_t)addr;
    Py_RETURN_NONE;
}

static PyMethodDef FastLock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))FastLock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)FastLock_release, METH_NOARGS, "release()"},
    {"__enter__", (PyCFunction)FastLock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))FastLock_exit, METH_FASTCALL, NULL},
    {"_bind", (PyCFunction)FastLock_bind, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rsm_shm._fast.FastLock",
    .tp_basicsize = sizeof(FastLock),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "GIL-holding fast path of rsm_shm.Lock (internal).",
    .tp_methods = FastLock_methods,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef fastmodule = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rsm_shm._fast",
    .m_doc = "Fast paths that keep the GIL (internal).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fast(void)
{
    str_acquire_slow = PyUnicode_InternFromString("_acquire_slow");
    str_release_slow = PyUnicode_InternFromString("_release_slow");
    if (!str_acquire_slow || !str_release_slow)
        return NULL;
    if (PyType_Ready(&FastLockType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastmodule);
    if (!m)
        return NULL;
    Py_INCREF(&FastLockType);
    if (PyModule_AddObject(m, "FastLock", (PyObject *)&FastLockType) < 0) {
        Py_DECREF(&FastLockType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
