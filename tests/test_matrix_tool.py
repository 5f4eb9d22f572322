"""tools/test_matrix.py (the suite on every supported CPython) and what pyproject.toml says
about those versions stay in step."""
from __future__ import annotations

import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _matrix_module():
    spec = importlib.util.spec_from_file_location("test_matrix_tool_under_test", os.path.join(ROOT, "tools", "test_matrix.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classifiers_name_exactly_the_versions_the_matrix_tests():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    classified = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', text)
    matrix = _matrix_module()
    assert tuple(classified) == matrix.VERSIONS
    (floor,) = re.findall(r'^requires-python = ">=(3\.\d+)"$', text, re.M)
    assert floor == matrix.VERSIONS[0]


def test_the_matrix_reads_pytest_closing_counts():
    parse = _matrix_module().parse_counts
    assert parse("....\n== 2 failed, 1100 passed, 14 skipped, 1 error in 301.22s (0:05:01) ==\n") == {
        "failed": 2, "passed": 1100, "skipped": 14, "errors": 1}
    assert parse("1 passed, 3 warnings in 0.50s\n") == {"passed": 1, "warnings": 3}
    assert parse("ERROR: file or directory not found: nope\n") == {}
