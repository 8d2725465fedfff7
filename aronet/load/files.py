"""Reading an input file: the one reader of config.json, registry.json and the lab's
topologies, and JSON with a line and column for each syntax error.

read_text reads only a regular file, and only up to a size limit: a FIFO, a device
(/dev/zero, /dev/urandom) or a directory is refused at once, and a file larger than
the limit is refused from its size, never read. parse_json refuses duplicate keys
and documents nested deeper than MAX_DEPTH, each with its JSON path.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys

from ..errors import InputError, Problem, json_path

MiB = 1 << 20
CONFIG_LIMIT = 1 * MiB  # config.json, and a lab topology
TOPOLOGY_LIMIT = 1 * MiB
REGISTRY_LIMIT = 16 * MiB  # registry.json: thousands of nodes
MAX_DEPTH = 32  # containers inside containers; aronet's own documents need 4


def read_text(path: str, limit: int = REGISTRY_LIMIT) -> str:
    """A whole input file, at most limit bytes of UTF-8; an unreadable one, one that
    is no regular file, a larger one or one that is not UTF-8 is an InputError
    naming it."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(Problem(path, "$", f"cannot read: {e.strerror}")) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):  # the words open() would have given
            raise InputError(Problem(path, "$", f"cannot read: {os.strerror(errno.EISDIR)}"))
        if not stat.S_ISREG(st.st_mode):
            raise InputError(Problem(path, "$", f"not a regular file ({_kind(st.st_mode)})"))
        if st.st_size > limit:
            raise InputError(Problem(path, "$", f"{st.st_size} bytes is too large; at most "
                                     f"{limit} bytes are read"))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(Problem(path, "$", f"cannot read: {e.strerror}")) from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while being read
        raise InputError(Problem(path, "$", f"more than {limit} bytes is too large"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(Problem(path, "$", f"not UTF-8 text ({e.reason})")) from None


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "not a file"


def read_json(path: str, limit: int = REGISTRY_LIMIT):
    return parse_json(read_text(path, limit), path)


class _Duplicates(dict):
    """An object that had a key twice (the first value is kept for the walk)."""

    duplicates: list[str]


def _pairs(pairs: list) -> dict:
    out: dict = {}
    dups = []
    for k, v in pairs:
        if k in out:
            dups.append(k)
        else:
            out[k] = v
    if not dups:
        return out
    marked = _Duplicates(out)
    marked.duplicates = dups
    return marked


def parse_json(text: str, file: str):
    """JSON, with duplicate keys and nesting deeper than MAX_DEPTH refused."""
    try:
        doc = json.loads(text, object_pairs_hook=_pairs)
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
    problems = structure_problems(doc, file)
    if problems:
        raise InputError(problems)
    return doc


def structure_problems(doc, file: str, max_depth: int = MAX_DEPTH) -> list[Problem]:
    """Duplicate keys (objects made by parse_json's hook) and nesting deeper than
    max_depth, each with its path. Iterative: any depth is safe to walk."""
    problems = []
    stack = [(doc, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                problems.append(Problem(file, json_path(path), f"{value!r} holds a lone "
                                        "surrogate (\\ud800-\\udfff), which is no character"))
            continue
        if not isinstance(value, dict | list):
            continue
        if len(path) >= max_depth:
            problems.append(Problem(file, json_path(path), f"nested too deeply: at most "
                                    f"{max_depth} levels of objects and arrays"))
            continue
        if isinstance(value, dict):
            for k in value:
                if isinstance(k, str) and not _encodable(k):
                    problems.append(Problem(file, json_path([*path, k]), f"the key {k!r} holds a "
                                            "lone surrogate (\\ud800-\\udfff), which is no character"))
        if isinstance(value, _Duplicates):
            for k in value.duplicates:
                problems.append(Problem(file, json_path([*path, k]), f"duplicate key {k!r}: "
                                        "each key may appear once in an object"))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        stack.extend((v, [*path, k]) for k, v in reversed(list(items)))
    return problems


def _encodable(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_hint(e: json.JSONDecodeError) -> str:
    rest = e.doc[e.pos :].lstrip()
    if rest.startswith(("#", "//")):
        return " (comments are not allowed in JSON)"
    before = e.doc[: e.pos].rstrip()
    if before.endswith(",") and rest[:1] in ("}", "]"):
        return " (a trailing comma is not allowed in JSON)"
    return ""
