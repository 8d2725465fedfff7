"""BIRD adapter: write the config atomically, run BIRD with a private control socket
(inside the router namespace in netns mode), reconfigure only when the config
changed, and read babel's neighbours and routes through birdc.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from ..core.bird import Version, parse_version
from ..core.names import netns_path
from ..errors import ApplyError
from .files import write_atomic


def installed_version(binary: str = "bird") -> Version | None:
    path = shutil.which(binary)
    if path is None:
        return None
    r = subprocess.run([path, "--version"], capture_output=True, text=True)
    return parse_version(r.stderr or r.stdout)


class Bird:
    name = "bird"

    def __init__(self, *, conf_path: str, socket_path: str, netns: str = "",
                 binary: str = "bird", client: str = "birdc"):
        self.conf_path, self.socket_path, self.netns = conf_path, socket_path, netns
        self.binary, self.client = binary, client

    def command(self) -> list[str]:
        """argv for the supervisor: BIRD in the foreground, logging to stderr."""
        argv = [self.binary, "-f", "-c", self.conf_path, "-s", self.socket_path]
        if self.netns:
            argv = ["nsenter", f"--net={netns_path(self.netns)}", "--", *argv]
        return argv

    def write(self, text: str) -> bool:
        """Write the config; True when it changed (then configure() is due)."""
        return write_atomic(self.conf_path, text)

    def runnable(self, text: str) -> bool:
        return True  # BIRD runs without interfaces

    def prepare(self) -> None:
        """Before every start: nothing; BIRD replaces a stale socket itself."""

    def files(self) -> list[str]:
        return [self.conf_path, self.socket_path]

    def version(self) -> str | None:
        v = installed_version(self.binary)
        return ".".join(map(str, v)) if v else None

    def reload(self) -> bool:
        """BIRD takes every change at run time (`configure`)."""
        self.configure()
        return True

    def babel_state(self) -> tuple[list[dict], list[dict]]:
        return self.neighbors(), self.routes()

    def birdc(self, *args: str, timeout: float = 10) -> str:
        try:
            r = subprocess.run([self.client, "-s", self.socket_path, *args],
                               capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise ApplyError("bird", self.client, "not installed (Debian package bird2)") from None
        except subprocess.TimeoutExpired:
            raise ApplyError("bird", " ".join(args), f"no answer in {timeout} s") from None
        if r.returncode != 0 or "Unable to connect" in r.stdout:
            raise ApplyError("bird", " ".join(args), (r.stderr or r.stdout).strip())
        return r.stdout

    def configure(self) -> None:
        """`configure soft`: a changed filter (a registry change alters the set of
        prefixes babel may import) applies to the routes babel hears from then on. A
        plain `configure` would restart the babel protocol, whose routes BIRD cannot
        reload in place, and drop every route until its neighbours are heard again:
        traffic that the change does not concern would stop (1.2 s, measured). A route
        the new filter refuses goes at its next update (update interval), or with its
        tunnel."""
        out = self.birdc("configure", "soft")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise ApplyError("bird", "configure", out.strip())

    def neighbors(self) -> list[dict]:
        """babel neighbours: address, interface, metric, routes, hellos, expiry."""
        return parse_neighbors(self.birdc("show", "babel", "neighbors"))

    def routes(self) -> list[dict]:
        """Routes babel selected: prefix, next hop, interface, metric."""
        return parse_routes(self.birdc("show", "route", "protocol", "aronet_babel"))


_NEIGHBOR = re.compile(
    r"^(?P<addr>[0-9a-f:]+)\s+(?P<iface>\S+)\s+(?P<metric>\d+)\s+(?P<routes>\d+)\s+"
    r"(?P<hellos>[0-9a-f]+)\s+(?P<expiry>[\d.]+)", re.I)


def parse_neighbors(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        m = _NEIGHBOR.match(line.strip())
        if m:
            d = m.groupdict()
            out.append({"address": d["addr"], "interface": d["iface"], "metric": int(d["metric"]),
                        "routes": int(d["routes"]), "hellos": d["hellos"],
                        "expires": float(d["expiry"])})
    return out


_ROUTE = re.compile(r"^(?P<prefix>[0-9a-f:.]+/\d+)\s+\S+\s+\[aronet_babel\b", re.I)
_VIA = re.compile(r"via (?P<via>\S+) on (?P<iface>\S+)")
_METRIC = re.compile(r"\[aronet_babel [^\]]*\] \S* ?\((?P<pref>\d+)/(?P<metric>\d+)\)")


def parse_routes(text: str) -> list[dict]:
    """`show route protocol aronet_babel`: a route line, then its next-hop line."""
    out, current = [], None
    for line in text.splitlines():
        m = _ROUTE.match(line)
        if m:
            mm = _METRIC.search(line)
            current = {"prefix": m["prefix"], "via": None, "interface": None,
                       "metric": int(mm["metric"]) if mm else None}
            out.append(current)
            continue
        v = _VIA.search(line)
        if v and current is not None and current["via"] is None:
            current["via"], current["interface"] = v["via"], v["iface"]
    return out
