"""Build the cffi binding ``rsm_shm._native`` (API mode) from every C file in csrc/.

Used by setup.py through ``cffi_modules``.  The declarations live in ``csrc/*.cdef``
(one per concern, concatenated), the code in ``csrc/*.c`` minus the CPython fast-path
module (``csrc/fast*.c``, built separately by setup.py as ``rsm_shm._fast``, which calls
this module's copy of the core through the table of csrc/core_api.h).
"""
import glob
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
# -fno-semantic-interposition and -Bsymbolic-functions: nobody interposes the core's
# functions, so calls between them (rsm_getpid from sem.c, a helper in its own file) may
# be inlined or made directly instead of through the PLT; the symbols stay exported (the
# core's table and cffi use them).
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-D_GNU_SOURCE", "-fno-semantic-interposition"]
LDFLAGS = ["-Wl,-Bsymbolic-functions"]

# The C core: every C file but the CPython-API ones of rsm_shm._fast (fast*.c).
SOURCES = sorted(
    os.path.relpath(p, os.path.dirname(HERE))
    for p in glob.glob(os.path.join(HERE, "*.c"))
    if not os.path.basename(p).startswith("fast")
)

ffibuilder = FFI()
for cdef in sorted(glob.glob(os.path.join(HERE, "*.cdef"))):
    with open(cdef) as f:
        ffibuilder.cdef(f.read())

_includes = "".join(f'#include "{os.path.basename(h)}"\n' for h in sorted(glob.glob(os.path.join(HERE, "*.h"))))
ffibuilder.set_source(
    "rsm_shm._native",
    _includes,
    sources=SOURCES,
    include_dirs=["csrc"],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
