"""The datadriven harness itself: parsing, comparison and the RSM_REWRITE mode."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from datadriven import REWRITE_ENV, ScriptError, parse, run_file  # noqa: E402

pytestmark = pytest.mark.timeout(30)

SCRIPT = """# a comment
echo a b k=v
----
a b {'k': 'v'}

# another
silent
----
ok
"""


def _handler(c):
    if c.cmd == "echo":
        return f"{' '.join(c.args)} {c.kwargs}"
    return ""


def test_parse_and_run(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text(SCRIPT)
    cases, trailing = parse(str(p))
    assert [c.cmd for c in cases] == ["echo", "silent"]
    assert cases[0].args == ["a", "b"] and cases[0].kwargs == {"k": "v"}
    assert cases[1].leading == ["", "# another"]
    run_file(str(p), _handler)  # matches


def test_mismatch_names_the_line(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text(SCRIPT.replace("a b {'k': 'v'}", "wrong"))
    with pytest.raises(AssertionError, match=r"s.txt:2: output of 'echo a b k=v' differs"):
        run_file(str(p), _handler)


def test_rewrite_regenerates_expectations(tmp_path, monkeypatch):
    p = tmp_path / "s.txt"
    p.write_text(SCRIPT.replace("a b {'k': 'v'}", "stale\nlines"))
    monkeypatch.setenv(REWRITE_ENV, "1")
    run_file(str(p), _handler)
    assert p.read_text() == SCRIPT
    monkeypatch.delenv(REWRITE_ENV)
    run_file(str(p), _handler)


def test_blank_output_lines_are_kept_readable(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("cmd\n----\nx\n.\ny\n")
    run_file(str(p), lambda c: "x\n\ny")


def test_missing_separator_is_a_script_error(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("cmd\nnot a separator\n")
    with pytest.raises(ScriptError):
        parse(str(p))
