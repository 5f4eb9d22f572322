"""Lazy re-exports for a package's ``__init__`` (PEP 562).

A package lists its public names and the submodule that defines each; the names are
imported on first use, so importing the package stays cheap (``import rsm_shm.raft`` loads
no native code).  The package also imports the same names under ``if TYPE_CHECKING:`` so
type checkers and IDEs see the real types; tests/test_layering.py checks the two lists
agree.  Standard library only: the Raft core imports this module.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of *package* for ``exports`` (public name ->
    module, relative to the package, e.g. ``".core"``).  A resolved name is stored in the
    package's namespace, so later lookups do not come back here."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
