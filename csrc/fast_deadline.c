/* fast_deadline.c -- the one converter from a user's timeout to an absolute deadline,
 * used by every blocking call of the package: the C entry points directly, Python
 * through _fast.deadline() (constants and rules in fast.h; docs/blocking.md has the
 * table of what each call accepts). */
#include "fast.h"

#include <math.h>

/* threading.TIMEOUT_MAX in seconds: PY_TIMEOUT_MAX is in microseconds; CPython floors it.
 * (PyErr_Format has no float conversions -- 3.12 raises SystemError on %f -- so messages
 * print it as a long long.) */
#define TIMEOUT_MAX_S floor((double)PY_TIMEOUT_MAX / 1e6)

int rsm_deadline_convert(PyObject *timeout, int rule, int blocking, int64_t *deadline)
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
                     rule == RULE_LOCK ? "" : " or None", Py_TYPE(timeout)->tp_name);
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

int rsm_deadline_raise_too_large(void)
{
    PyErr_Format(PyExc_OverflowError, "timeout value is too large (threading.TIMEOUT_MAX is %lld s)",
                 (long long)TIMEOUT_MAX_S);
    return -1;
}

PyObject *rsm_deadline_py(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
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
    if (rsm_deadline_convert(args[0], rule, blocking, &d) < 0)
        return NULL;
    return PyLong_FromLongLong(d);
}

int rsm_deadline_add_constants(PyObject *m)
{
    if (PyModule_AddIntConstant(m, "DEADLINE_FOREVER", DEADLINE_FOREVER) < 0 ||
        PyModule_AddIntConstant(m, "DEADLINE_TRY", DEADLINE_TRY) < 0 ||
        PyModule_AddIntConstant(m, "DEADLINE_TOO_LARGE", DEADLINE_TOO_LARGE) < 0 ||
        PyModule_AddIntConstant(m, "RULE_LOCK", RULE_LOCK) < 0 || PyModule_AddIntConstant(m, "RULE_WAIT", RULE_WAIT) < 0 ||
        PyModule_AddIntConstant(m, "RULE_QUEUE", RULE_QUEUE) < 0)
        return -1;
    PyObject *max = PyFloat_FromDouble(TIMEOUT_MAX_S);
    if (!max)
        return -1;
    int r = PyModule_AddObjectRef(m, "TIMEOUT_MAX", max);
    Py_DECREF(max);
    return r;
}
