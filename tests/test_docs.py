"""The documentation builds with warnings as errors: a broken cross-reference, a page left
out of the table of contents or a docstring that does not parse fails the suite."""

import os
import subprocess
import sys

import pytest

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


@pytest.mark.timeout(300)
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="sphinx is in the [test] extra; install it with pip install -e '.[test]'")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS, str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "html" / "index.html").exists()
