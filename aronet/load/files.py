"""Reading an input file: its text, and JSON with a line and column for each syntax error."""

from __future__ import annotations

import json
import re
import sys

from ..errors import InputError, Problem


def read_text(path: str) -> str:
    """A whole input file; an unreadable one is an InputError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise InputError(Problem(path, "$", f"cannot read: {e.strerror}")) from None
    except UnicodeDecodeError as e:
        raise InputError(Problem(path, "$", f"not UTF-8 text ({e.reason})")) from None


def read_json(path: str):
    return parse_json(read_text(path), path)


def parse_json(text: str, file: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(Problem(file, f"line {e.lineno}, column {e.colno}",
                                 f"invalid JSON: {e.msg}{_json_hint(e)}")) from None
    except ValueError:  # an integer literal longer than Python's int() accepts
        m = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1},}}", text)
        pos = m.start() if m else 0
        line, col = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        digits = len(m.group()) if m else 0
        message = f"invalid JSON: a number of {digits} digits is too long"
        raise InputError(Problem(file, f"line {line}, column {col}", message)) from None
    except RecursionError:
        raise InputError(Problem(file, "$", "invalid JSON: nested too deeply")) from None


def _json_hint(e: json.JSONDecodeError) -> str:
    rest = e.doc[e.pos :].lstrip()
    if rest.startswith(("#", "//")):
        return " (comments are not allowed in JSON)"
    before = e.doc[: e.pos].rstrip()
    if before.endswith(",") and rest[:1] in ("}", "]"):
        return " (a trailing comma is not allowed in JSON)"
    return ""
