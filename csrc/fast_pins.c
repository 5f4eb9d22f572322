/* fast_pins.c -- rsm_shm._fast.Pins: the one protocol between a segment's mapping and
 * every call that hands pointers into it to C (fast.h says how it works). */
#include "fast.h"

int rsm_pins_raise_closed(rsm_pins *p)
{
    PyErr_Format(PyExc_ValueError, "%S is closed", p->label);
    return -1;
}

int rsm_pins_check(PyObject *o) { return PyObject_TypeCheck(o, &rsm_pins_type); }

int rsm_pins_open(rsm_pins *p) { return p->closed ? rsm_pins_raise_closed(p) : 0; }

int rsm_pins_enter(rsm_pins *p)
{
    if (p->closed)
        return rsm_pins_raise_closed(p);
    p->users++;
    return 0;
}

void rsm_pins_hold(rsm_pins *p) { p->users++; }

static int pins_unmap(rsm_pins *p)
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

int rsm_pins_exit(rsm_pins *p)
{
    if (--p->users == 0 && p->closed)
        return pins_unmap(p);
    return 0;
}

int rsm_pins_exit_keep(rsm_pins *p, int status)
{
    PyObject *exc = NULL, *val = NULL, *tb = NULL;
    if (status < 0)
        PyErr_Fetch(&exc, &val, &tb);
    int unpinned = rsm_pins_exit(p);
    if (status < 0) {
        if (unpinned < 0)
            PyErr_Clear(); /* the call's own exception wins */
        PyErr_Restore(exc, val, tb);
        return status;
    }
    return unpinned < 0 ? -1 : status;
}

static int Pins_init(rsm_pins *self, PyObject *args, PyObject *kwds)
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

static PyObject *Pins_enter(rsm_pins *self, PyObject *Py_UNUSED(ignored))
{
    if (rsm_pins_enter(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Pins_exit(rsm_pins *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    if (self->users <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Pins.__exit__ without a matching __enter__");
        return NULL;
    }
    if (rsm_pins_exit(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Pins_close(rsm_pins *self, PyObject *Py_UNUSED(ignored))
{
    self->closed = 1;
    if (pins_unmap(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Pins_get_closed(rsm_pins *self, void *Py_UNUSED(c)) { return PyBool_FromLong(self->closed); }
static PyObject *Pins_get_unmapped(rsm_pins *self, void *Py_UNUSED(c)) { return PyBool_FromLong(self->unmapped); }
static PyObject *Pins_get_users(rsm_pins *self, void *Py_UNUSED(c)) { return PyLong_FromSsize_t(self->users); }
static PyObject *Pins_get_label(rsm_pins *self, void *Py_UNUSED(c)) { return Py_NewRef(self->label); }

static int Pins_set_label(rsm_pins *self, PyObject *value, void *Py_UNUSED(c))
{
    if (!value || !PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "Pins.label must be a str");
        return -1;
    }
    Py_XSETREF(self->label, Py_NewRef(value));
    return 0;
}

static int Pins_traverse(rsm_pins *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_unmap);
    return 0;
}

static int Pins_clear(rsm_pins *self)
{
    Py_CLEAR(self->on_unmap);
    return 0;
}

static void Pins_dealloc(rsm_pins *self)
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

PyTypeObject rsm_pins_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rsm_shm._fast.Pins",
    .tp_basicsize = sizeof(rsm_pins),
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
