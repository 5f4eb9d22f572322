/* fast_module.c -- rsm_shm._fast: CPython entry points for the hottest paths.
 *
 * Lock/RLock (FastLock), the semaphores (FastSem) and Event (FastEvent) in fast_sync.c,
 * and the ring's one-message put/get (FastRing) in fast_ring.c, are small CPython types
 * the Python classes derive from, exactly as multiprocessing.synchronize.Lock derives from
 * _multiprocessing.SemLock.  Each call is one C entry: the attempt with the GIL held (a
 * cffi call alone costs ~48 ns here, an uncontended acquire is one CAS), then, if it must
 * wait, a slice loop with the GIL released around each futex wait.  Two mechanisms serve
 * every blocking call of the package, Python ones included: Pins (fast_pins.c) and the
 * deadline converter (fast_deadline.c).  fast.h lists the files.
 *
 * This file: the module, and the one way a C status becomes an exception here -- through
 * rsm_shm._errors.raise_for(code, obj, op), the package's one place for that. */
#include "fast.h"

static PyObject *raise_for; /* rsm_shm._errors.raise_for */

PyObject *rsm_fast_raise(PyObject *obj, int code, const char *op)
{
    PyObject *argv[3] = {PyLong_FromLong(code), obj, NULL};
    if (!argv[0])
        return NULL;
    if (op && !(argv[2] = PyUnicode_FromString(op))) {
        Py_DECREF(argv[0]);
        return NULL;
    }
    PyObject *r = PyObject_Vectorcall(raise_for, argv, op ? 3 : 2, NULL);
    Py_DECREF(argv[0]);
    Py_XDECREF(argv[2]);
    Py_XDECREF(r); /* raise_for always raises */
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"deadline", (PyCFunction)(void (*)(void))rsm_deadline_py, METH_FASTCALL,
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
    if (PyType_Ready(&rsm_pins_type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastmodule);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Pins", (PyObject *)&rsm_pins_type) < 0 || rsm_deadline_add_constants(m) < 0 ||
        rsm_fast_sync_add(m) < 0 || rsm_fast_ring_add(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
