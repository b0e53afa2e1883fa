"""What a GitHub Actions runner gives a step, and how a step talks back to it.

Inputs arrive as ``INPUT_<NAME>`` variables (``action.yml`` passes them explicitly, since a
composite action's steps do not get them automatically); outputs are appended to
``$GITHUB_OUTPUT``, Markdown to ``$GITHUB_STEP_SUMMARY``, annotations are workflow commands on
stdout (https://docs.github.com/actions/reference/workflow-commands-for-github-actions).
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from pathlib import Path


def get_input(name: str, default: str = "") -> str:
    """``api-key`` is read from INPUT_API_KEY or INPUT_API-KEY (how JavaScript actions spell it)."""
    up = name.upper()
    for var in (f"INPUT_{up.replace('-', '_')}", f"INPUT_{up}"):
        if os.environ.get(var, "").strip():
            return os.environ[var].strip()
    return default


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotate(level: str, message: str, file: str | None = None, line: int | None = None, col: int | None = None,
             title: str | None = None) -> None:  # fmt: skip
    """``::error file=F,line=L,col=C,title=T::message`` (level: error, warning, notice)."""
    props = [f"{k}={_escape_prop(str(v))}" for k, v in (("file", file), ("line", line), ("col", col), ("title", title)) if v]
    sys.stdout.write(f"::{level}{' ' + ','.join(props) if props else ''}::{_escape_data(message)}\n")
    sys.stdout.flush()


def set_output(name: str, value: str) -> None:
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    delim = f"ghadelimiter_{uuid.uuid4().hex}"  # the multiline form: safe whatever the value holds
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{name}<<{delim}\n{value}\n{delim}\n")


def write_summary(markdown: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(markdown.rstrip() + "\n")


def event() -> dict:
    path = os.environ.get("GITHUB_EVENT_PATH")
    if not path or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8"))


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],]|\n')


def key_lines(text: str) -> dict[str, int]:
    """The line of every object key in a JSON text, by dotted path (``rl.temperature``,
    ``data.split.1``), so a validation error can point at the field in the file."""
    lines: dict[str, int] = {}
    stack: list[list] = []  # [kind, current key or index, expecting a key]
    line = 1
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok == "\n":
            line += 1
        elif tok in "{[":
            if stack and stack[-1][0] == "[":
                lines.setdefault(_path(stack), line)
            stack.append([tok, 0 if tok == "[" else None, tok == "{"])
        elif tok in "}]":
            stack and stack.pop()
        elif tok == ",":
            if stack and stack[-1][0] == "[":
                stack[-1][1] += 1
            elif stack:
                stack[-1][2] = True
        elif stack and stack[-1][0] == "{" and stack[-1][2]:
            stack[-1][1], stack[-1][2] = json.loads(tok), False
            lines.setdefault(_path(stack), line)
            line += tok.count("\n")
    return lines


def _path(stack: list[list]) -> str:
    return ".".join(str(f[1]) for f in stack if f[1] is not None)


def line_of(lines: dict[str, int], loc: str) -> int:
    """The line of ``loc`` or of its nearest parent present in the file (a missing field)."""
    parts = loc.split(".") if loc else []
    while parts:
        if ".".join(parts) in lines:
            return lines[".".join(parts)]
        parts.pop()
    return 1
