"""The layering rule (docs/architecture.md): the Raft core imports nothing but the standard library."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest


def test_raft_core_loads_no_native_or_shared_memory_code():
    code = (
        "import sys, rsm_shm.raft.core, rsm_shm.raft.driver, rsm_shm.raft.sim; "
        "bad = sorted(m for m in sys.modules if m.startswith('rsm_shm') and not m.startswith('rsm_shm.raft')"
        " and m not in ('rsm_shm', 'rsm_shm._lazy')); "
        "bad += [m for m in ('_cffi_backend', 'psutil', 'mmap') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


LAZY_PACKAGES = ("rsm_shm", "rsm_shm.raft", "rsm_shm.cluster")


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_names_resolve(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match=f"module {package!r} has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018 (the lookup is the test)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_names_match_the_static_view(package):
    # The names under `if TYPE_CHECKING:` (what type checkers see) are the lazy exports.
    module = importlib.import_module(package)
    with open(module.__file__) as f:
        tree = ast.parse(f.read())
    static = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom), ast.dump(imp)
                static.update(alias.asname or alias.name for alias in imp.names)
    assert static == set(module._EXPORTS)
