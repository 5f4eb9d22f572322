"""Build hooks: the cffi binding (API mode) and the small CPython fast-path module.

The C core (csrc/*.c but fast*.c) is compiled once, into ``rsm_shm._native``;
``rsm_shm._fast`` is only csrc/fast*.c and calls the core through a table it fetches
from ``_native`` at import (csrc/core_api.h), so the core's globals exist once.
"""
import glob

from setuptools import Extension, setup

FAST_SOURCES = sorted(glob.glob("csrc/fast*.c"))

setup(
    cffi_modules=["csrc/build_native.py:ffibuilder"],
    ext_modules=[
        Extension(
            "rsm_shm._fast",
            sources=FAST_SOURCES,
            include_dirs=["csrc"],
            extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-D_GNU_SOURCE"],
        )
    ],
)
