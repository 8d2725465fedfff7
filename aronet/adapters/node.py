"""One node's adapters together, and the drift between the machine and the desired
state: what the agent applies on every sync, and what `aronet check` prints.

The four systems are observed as the planner describes them: the kernel (netlink),
aronet's nft table, charon's connections (VICI) and the routing daemon's config file.
The difference is a plan per system; an empty plan everywhere is the proof of sync.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import planner
from ..core.bird import Version
from ..core.diff import Plan, diff
from ..core.planner import Desired
from ..core.state import Connection, NftTable, RoutingConfig, State
from ..errors import AronetError
from ..model import Settings
from ..paths import Paths
from .babeld import Babeld
from .bird import Bird, installed_version
from .netlink import Netlink
from .nft import Nft
from .routing import RoutingDaemon
from .vici import Vici

NETLINK_KINDS = ("netns", "sysctl", "vrf", "veth", "xfrm", "address", "route")


def routing_daemon(name: str, paths: Paths, netns: str) -> RoutingDaemon:
    """The adapter for daemon.routing, with this instance's private files."""
    if name == "babeld":
        return Babeld(conf_path=paths.babeld_conf, socket_path=paths.babeld_socket,
                      pid_path=paths.babeld_pid, state_path=paths.babeld_state, netns=netns)
    return Bird(conf_path=paths.bird_conf, socket_path=paths.bird_socket, netns=netns)


@dataclass(frozen=True)
class Drift:
    """What differs, per system. vici is None when charon could not be asked."""

    netlink: Plan
    nft: Plan
    vici: Plan | None
    routing: bool  # the routing daemon's config file is not what the planner rendered
    vici_error: str = ""

    @property
    def in_sync(self) -> bool:
        return not (self.netlink or self.nft or self.vici or self.routing) and self.vici is not None

    def lines(self, routing_file: str) -> list[str]:
        out = [f"netlink {a}" for a in self.netlink] + [f"nft {a}" for a in self.nft]
        if self.vici is None:
            out.append(f"vici: cannot observe charon: {self.vici_error}")
        else:
            out += [f"vici {a}" for a in self.vici]
        if self.routing:
            out.append(f"routing: {routing_file} differs from the planned config")
        return out


class NodeAdapters:
    def __init__(self, settings: Settings, paths: Paths):
        self.router_ns = settings.ifname if settings.mode == "netns" else ""
        self.netlink = Netlink(settings)
        self.nft = Nft()
        self.vici = Vici(paths.vici_socket)
        self.routing = routing_daemon(settings.routing, paths, self.router_ns)
        # the BIRD config is rendered for the BIRD that runs here
        self.bird_version: Version = (installed_version() if settings.routing == "bird" else None) \
            or planner.DEFAULT_BIRD_VERSION

    def netlink_plan(self, d: Desired) -> Plan:
        want = State(frozenset(r for r in d.state.resources if r.kind in NETLINK_KINDS))
        sysctls = [r for r in want.resources if r.kind == "sysctl"]
        return diff(want, self.netlink.observe(sysctls))

    def nft_plan(self, d: Desired) -> Plan:
        return diff(State(frozenset(d.state.of(NftTable))), self.nft.observe([self.router_ns]))

    def vici_plan(self, d: Desired, *, by_name: bool = False) -> Plan:
        want = d.state.of(Connection)
        return diff(State(frozenset(want)), self.vici.observe(want if by_name else ()))

    def routing_differs(self, d: Desired) -> bool:
        (conf,) = d.state.of(RoutingConfig)
        try:
            with open(self.routing.conf_path) as f:
                return f.read() != conf.text
        except OSError:
            return True

    def drift(self, d: Desired, *, loaded_here: bool = False) -> Drift:
        """Observe everything, change nothing. loaded_here: this process (the agent)
        loaded charon's connections, so they are compared in full; from any other
        process they are compared by name (VICI's list-conns does not return everything
        load-conn was given)."""
        try:
            if not loaded_here:
                self.vici.connect(timeout=3)
            vici, why = self.vici_plan(d, by_name=not loaded_here), ""
        except AronetError as e:
            vici, why = None, str(e)
        return Drift(self.netlink_plan(d), self.nft_plan(d), vici, self.routing_differs(d), why)
