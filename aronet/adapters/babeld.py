"""babeld adapter: write the config atomically, run babeld with a private read-write
local socket, state file and pid file (inside the router namespace in netns mode),
apply what of a changed config babeld takes at run time over that socket, and read
its neighbours and routes from `dump` in the fields the BIRD adapter gives.

babeld's own files are private to this instance and never shared with another:
it will not start while a pid file or socket of a dead predecessor exists
("creat(...): File exists", "local_server_socket: Address already in use"), so
`prepare` removes them before every start; the state file (its sequence number, kept
across restarts as babeld intends) lives in the agent's state directory.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess

from ..core import babeld as core
from ..core.names import netns_path
from ..errors import ApplyError
from .files import write_atomic

REPLY_ENDS = ("ok", "no", "bad")


class Babeld:
    name = "babeld"

    def __init__(self, *, conf_path: str, socket_path: str, pid_path: str, state_path: str,
                 netns: str = "", binary: str = "babeld", timeout: float = 5.0):
        self.conf_path, self.socket_path, self.netns = conf_path, socket_path, netns
        self.pid_path, self.state_path = pid_path, state_path
        self.binary, self.timeout = binary, timeout
        self.loaded: str | None = None  # the config the running babeld has

    def command(self) -> list[str]:
        """argv for the supervisor: babeld in the foreground, logging to stderr."""
        argv = [self.binary, "-c", self.conf_path, "-G", self.socket_path,
                "-S", self.state_path, "-I", self.pid_path]
        if self.netns:
            argv = ["nsenter", f"--net={netns_path(self.netns)}", "--", *argv]
        return argv

    def version(self) -> str | None:
        try:
            r = subprocess.run([self.binary, "-V"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        word = (r.stderr or r.stdout).strip()
        return word.removeprefix("babeld-") or None

    def write(self, text: str) -> bool:
        """Write the config; True when it changed (then reload() is due)."""
        return write_atomic(self.conf_path, text)

    def runnable(self, text: str) -> bool:
        return core.runnable(text)

    def prepare(self) -> None:
        """Before every start: remove what a dead babeld left, remember the config it
        is about to read."""
        for path in (self.pid_path, self.socket_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.loaded = _read(self.conf_path)

    def files(self) -> list[str]:
        """What the agent removes when it stops (not the state file: it is kept)."""
        return [self.conf_path, self.socket_path, self.pid_path]

    def reload(self) -> bool:
        """Apply the written config to the running babeld over its socket. False when
        babeld cannot take the change at run time (its filters changed): restart it."""
        new = _read(self.conf_path)
        lines = core.live_changes(self.loaded or "", new)
        if lines is None:
            return False
        for line in lines:
            self.request(line)
        self.loaded = new
        return True

    def request(self, line: str) -> list[str]:
        """One request on the local socket; its reply lines without the final "ok"."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.socket_path)
                f = s.makefile("rw", encoding="utf-8", newline="\n")
                _reply(f, "greeting")
                f.write(line + "\n")
                f.flush()
                out = _reply(f, line)
                with contextlib.suppress(OSError):
                    f.write("quit\n")
                    f.flush()
                return out
        except (OSError, TimeoutError) as e:
            raise ApplyError("babeld", line, f"local socket {self.socket_path}: {e}") from None

    def babel_state(self) -> tuple[list[dict], list[dict]]:
        """(neighbours, routes) as the BIRD adapter gives them, from one `dump`."""
        return parse_dump(self.request("dump"))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _reply(f, what: str) -> list[str]:
    lines = []
    for raw in f:
        line = raw.rstrip("\n")
        if line in REPLY_ENDS:
            if line != "ok":
                raise ApplyError("babeld", what, f"answered {line!r}" + (
                    f": {'; '.join(lines)}" if lines else ""))
            return lines
        lines.append(line)
    raise ApplyError("babeld", what, "the local socket closed before the answer ended")


def _fields(words: list[str]) -> dict[str, str]:
    """'add route <id> prefix P from S installed yes ...' -> {"prefix": P, ...}."""
    return dict(zip(words[3::2], words[4::2], strict=False))


def parse_dump(lines: list[str]) -> tuple[list[dict], list[dict]]:
    """Neighbours: address, interface, metric (babeld's cost: 65535 unreachable),
    routes (how many installed routes use it), hellos (hellos heard of the last 16),
    expires (babeld does not say: None). Routes: the installed (selected) ones, with
    prefix, via, interface, metric."""
    neighbours, routes = [], []
    for line in lines:
        words = line.split()
        if len(words) < 3 or words[0] != "add":
            continue
        f = _fields(words)
        if words[1] == "neighbour" and "address" in f:
            neighbours.append({"address": f["address"], "interface": f.get("if"),
                               "metric": _int(f.get("cost")), "routes": 0,
                               "rxcost": _int(f.get("rxcost")), "txcost": _int(f.get("txcost")),
                               "rtt": float(f["rtt"]) if f.get("rtt") else None,  # ms
                               "hellos": str(bin(int(f.get("reach", "0"), 16)).count("1")),
                               "expires": None})
        elif words[1] == "route" and f.get("installed") == "yes" and "prefix" in f:
            if f.get("from") not in (None, "::/0", "0.0.0.0/0"):
                continue  # source-specific: aronet never announces one
            routes.append({"prefix": f["prefix"], "via": f.get("via"), "interface": f.get("if"),
                           "metric": _int(f.get("metric"))})
    for n in neighbours:
        n["routes"] = sum(1 for r in routes if (r["via"], r["interface"]) == (n["address"], n["interface"]))
    return neighbours, routes


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
