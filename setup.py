"""Build hooks: the cffi binding (API mode) and the small CPython fast-path module."""
import glob

from setuptools import Extension, setup

C_SOURCES = sorted(p for p in glob.glob("csrc/*.c") if not p.endswith("fastpath.c"))

setup(
    cffi_modules=["csrc/build_native.py:ffibuilder"],
    ext_modules=[
        Extension(
            "rsm_shm._fast",
            sources=["csrc/fastpath.c"] + C_SOURCES,
            include_dirs=["csrc"],
            extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-D_GNU_SOURCE"],
        )
    ],
)
