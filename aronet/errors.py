"""The project's errors.

Bad input is never a traceback: it is an InputError carrying every Problem found,
each with the file, the JSON path and the reason. The CLI prints them and exits 2.
A failure of the system (kernel, daemon) is a SystemError naming the system, the
object and the cause.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    path: str  # "$", "$.daemon.prefixs[0]", "$[1].nodes[0].endpoints[2].port"
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class AronetError(Exception):
    """Base class: anything aronet reports to a user without a traceback."""

    exit_code = 1


class InputError(AronetError):
    """One or more problems with an input file. Nothing on the system was changed."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem):
        if isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def report_error(e: AronetError, prog: str, unchanged: str = "nothing was changed") -> int:
    """What every command line does with an error it caught: print it (every problem
    of bad input, then their count) and return the exit status."""
    if isinstance(e, InputError):
        for problem in e.problems:
            print(problem, file=sys.stderr)
        n = len(e.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found; {unchanged}", file=sys.stderr)
    else:
        print(f"{prog}: {e}", file=sys.stderr)
    return e.exit_code


class ApplyError(AronetError):
    """A system (netlink, nft, vici, bird, kernel) refused an operation."""

    exit_code = 1

    def __init__(self, system: str, obj: str, cause: str):
        self.system, self.obj, self.cause = system, obj, cause
        super().__init__(f"{system}: {obj}: {cause}")


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def json_path(parts) -> str:
    """Render a path of keys and indexes the way every message shows it, on one
    line: a key that is not a simple name is quoted and escaped, $.nodes["a b"]."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and _SIMPLE_KEY.fullmatch(p):
            out += f".{p}"
        else:
            out += f"[{json.dumps(p if isinstance(p, str) else str(p))}]"
    return out
