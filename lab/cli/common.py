"""What the command modules share: the topology argument, the lab options, printing
a report or a JSON document, and where a command that writes files puts them."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import run as labrun

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
# Set by the host when it forwards a command that writes files to the persistent VM:
# the guest sees the host's files read-only, so it writes here (a directory shared
# read-write) and the host moves the result where the user asked.
OUT_ENV = "ARONET_LAB_OUT"


def topology(path: str) -> str:
    """A topology file, or the name of a bundled example ("seed")."""
    if not os.path.exists(path) and os.path.exists(os.path.join(EXAMPLES, f"{path}.yaml")):
        return os.path.join(EXAMPLES, f"{path}.yaml")
    return path


def emit(report, as_json: bool) -> None:
    if as_json:
        print_json(report.as_json())
    else:
        sys.stdout.write(report.as_text())


def print_json(doc) -> None:
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


def lab_args(sp: argparse.ArgumentParser, topology_arg: bool = False) -> None:
    if topology_arg:
        sp.add_argument("topology", help="topology file, or a bundled example: seed, dualstack, ring")
    sp.add_argument("--name", help="lab name (default: the topology's)")
    sp.add_argument("--dir", help=f"lab directory (default {labrun.DEFAULT_ROOT}/NAME)")


def ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive numbers: {text!r}")
    return values


def out_dir(asked: str) -> str:
    """Where a command writes the files it was asked to put in `asked`."""
    return os.environ.get(OUT_ENV) or asked
