/* fast_core.c -- rsm_shm._fast's link to the C core: fetch the function table from
 * rsm_shm._native at import (core_api.h says why the core is linked only there). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define RSM_CORE_VIA_TABLE
#include "core_api.h"

const rsm_core_api *rsm_core;

int rsm_core_attach(void)
{
    if (rsm_core)
        return 0;
    PyObject *native = PyImport_ImportModule("rsm_shm._native");
    if (!native)
        return -1;
    PyObject *lib = PyObject_GetAttrString(native, "lib");
    Py_DECREF(native);
    if (!lib)
        return -1;
    PyObject *address = PyObject_CallMethod(lib, "rsm_core_api_address", NULL);
    Py_DECREF(lib);
    if (!address)
        return -1;
    const rsm_core_api *table = (const rsm_core_api *)PyLong_AsVoidPtr(address);
    Py_DECREF(address);
    if (!table)
        return -1;
    if (table->version != RSM_CORE_API_VERSION || table->size != sizeof(rsm_core_api)) {
        PyErr_Format(PyExc_ImportError,
                     "rsm_shm._fast expects C core table version %u (%zu bytes) but rsm_shm._native "
                     "has version %u (%u bytes): the two extension modules come from different "
                     "builds; reinstall rsm_shm",
                     RSM_CORE_API_VERSION, sizeof(rsm_core_api), table->version, table->size);
        return -1;
    }
    rsm_core = table;
    return 0;
}
