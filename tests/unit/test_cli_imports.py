"""The command line imports only what a command needs: `aronet --help` and the
commands that only talk to a running agent (status, events, metrics, daemon info)
start without jsonschema, cryptography or pyroute2, which cost most of a short
command's start-up (issue 23). Each command runs in a fresh interpreter, which then
reports the heavy modules it holds. This checks the import set, not a time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("jsonschema", "cryptography", "pyroute2")

# argv: the heavy modules (comma-separated), then the command line for aronet.cli.main;
# prints the exit code, what the command wrote, and which of those modules are loaded
_PROBE = """
import contextlib, io, json, sys
from aronet.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        rc = main(sys.argv[2:])
    except SystemExit as e:
        rc = e.code
held = sorted(m for m in sys.argv[1].split(",") if m in sys.modules)
print(json.dumps({"rc": rc, "held": held, "out": out.getvalue(), "err": err.getvalue()}))
"""


def run(*argv: str) -> dict:
    r = subprocess.run([sys.executable, "-c", _PROBE, ",".join(HEAVY), *argv], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_help_imports_none_of_them():
    r = run("--help")
    assert r["rc"] == 0 and "COMMAND" in r["out"]
    assert r["held"] == []


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["events", "--count", "1"],
                                     ["metrics"], ["daemon", "info"], ["daemon", "stop"]])
def test_a_command_for_the_agent_imports_none_of_them(tmp_path, command):
    """With no agent running it fails fast (exit 1, the socket named), having
    imported nothing heavy: neither finding the socket nor asking needs them."""
    r = run(*command, "--runtime-dir", str(tmp_path))
    assert r["rc"] == 1 and "no agent is running" in r["err"], r
    assert str(tmp_path) in r["err"]
    assert r["held"] == []


def test_the_probe_sees_a_command_that_needs_them(tmp_path):
    """The check above can fail: a command that reads a config (to find the socket
    from it) loads and checks it, so it holds the schema checker and the key parser."""
    r = run("status", "-c", str(tmp_path / "config.json"))
    assert r["rc"] == 2 and "config.json" in r["err"], r
    assert set(r["held"]) >= {"jsonschema", "cryptography"}
