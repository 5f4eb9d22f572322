"""A small datadriven test harness in the style of cockroachdb/datadriven (used by etcd raft).

A script is a sequence of test cases::

    # comments start with '#'
    command arg1 arg2 key=value
    ----
    expected output line 1
    expected output line 2

Cases are separated by a blank line; the expected output therefore never contains a
blank line (the harness prints ``ok`` for an empty output).  Running a script calls a
handler per case and compares its output to the expectation.  With the environment
variable ``RSM_REWRITE=1`` the expectations are replaced by the actual outputs and the
file is rewritten -- review the diff before committing it: an expectation is a claim that
the behaviour is right.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

REWRITE_ENV = "RSM_REWRITE"
SEPARATOR = "----"
EMPTY_OUTPUT = "ok"


@dataclass
class Case:
    """One command of a script: ``cmd`` and its arguments (``key=value`` ones go to
    ``kwargs``, the others stay positional in ``args``)."""

    path: str
    line: int
    text: str  # the command line as written
    cmd: str
    args: List[str]
    kwargs: Dict[str, str]
    expected: str
    leading: List[str] = field(default_factory=list)  # comments/blank lines before it

    @property
    def pos(self) -> str:
        return f"{self.path}:{self.line}"

    def int_arg(self, i: int) -> int:
        try:
            return int(self.args[i])
        except (IndexError, ValueError):
            raise ValueError(f"{self.pos}: {self.cmd} needs an integer argument #{i + 1}") from None

    def flag(self, key: str, default: bool) -> bool:
        v = self.kwargs.get(key)
        if v is None:
            return default
        if v not in ("true", "false"):
            raise ValueError(f"{self.pos}: {key}= must be true or false, not {v!r}")
        return v == "true"


class ScriptError(ValueError):
    """The script itself is malformed."""


def parse(path: str) -> Tuple[List[Case], List[str]]:
    """Parse a script; return its cases and the trailing comment lines."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cases: List[Case] = []
    leading: List[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip() or ln.lstrip().startswith("#"):
            leading.append(ln)
            i += 1
            continue
        start = i + 1
        text = ln.strip()
        i += 1
        if i >= len(lines) or lines[i] != SEPARATOR:
            raise ScriptError(f"{path}:{start}: expected {SEPARATOR!r} after command {text!r}")
        i += 1
        out: List[str] = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        words = text.split()
        args = [w for w in words[1:] if "=" not in w]
        kwargs = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        cases.append(Case(path, start, text, words[0], args, kwargs, "\n".join(out), leading))
        leading = []
    return cases, leading


def run_file(path: str, handler: Callable[[Case], str]) -> None:
    """Run every case of ``path`` through ``handler``; raise AssertionError on the first
    mismatch (all of them are computed and rewritten when RSM_REWRITE=1)."""
    cases, trailing = parse(path)
    rewrite = os.environ.get(REWRITE_ENV) == "1"
    chunks: List[str] = []
    for c in cases:
        actual = handler(c).rstrip("\n")
        # a blank line would end the case early when the file is read back
        if not actual.strip():
            actual = EMPTY_OUTPUT
        actual = "\n".join(ln if ln.strip() else "." for ln in actual.split("\n"))
        if rewrite:
            chunks.extend(c.leading)
            chunks.extend([c.text, SEPARATOR, actual])
            continue
        if actual != c.expected:
            diff = "\n".join(
                difflib.unified_diff(c.expected.split("\n"), actual.split("\n"), "expected", "actual", lineterm="")
            )
            raise AssertionError(f"{c.pos}: output of {c.text!r} differs:\n{diff}")
    if rewrite:
        chunks.extend(trailing)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(chunks) + "\n")
