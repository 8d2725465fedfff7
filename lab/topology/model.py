"""The lab's data, frozen: a Topology as load_topology completes it, and the
LabPlan that plan_lab makes of it (every namespace, veth, bridge, address, route,
sysctl and nft ruleset of the underlay, and each node's config.json document)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Interface,
    IPv6Network,
)

from aronet.model import DEFAULT_PORT

Prefix = IPv4Network | IPv6Network

DEFAULT_MODE = "netns"  # the host kernel has no VRF; say `mode: vrf` for the VM
# The lab's babel timers unless a topology sets its own: faster than aronet's defaults
# (hello 1 s, update 4 s) so that babeld reroutes in under a second (0.74-0.80 s median
# under TCG; with a 200 ms hello, 0.97-0.99 s), at about six times the control traffic
# (README, Benchmarks).
LAB_BABEL_HELLO = 0.15
LAB_BABEL_UPDATE = 1.0
KINDS = {"lan": "LAN", "link": "link", "nat": "NAT link"}


# ================================================================ the topology


@dataclass(frozen=True)
class Options:
    mode: str = DEFAULT_MODE
    routing: str | None = None  # None: aronet's default (daemon.routing left out)
    port: int = DEFAULT_PORT
    nodad: bool = True
    babel_hello: float = LAB_BABEL_HELLO
    babel_update: float = LAB_BABEL_UPDATE
    babel_prefix_origin: bool = False
    dpd_delay: int | None = None


@dataclass(frozen=True)
class EndpointSpec:
    family: str  # "ip4" | "ip6"
    via: str | None  # the segment whose address is published; None behind NAT


@dataclass(frozen=True)
class NodeSpec:
    name: str
    organization: str
    mode: str
    routing: str | None
    network: IPv6Interface
    prefixes: tuple[Prefix, ...]
    extra_ip: tuple[IPv4Address, ...]
    endpoints: tuple[EndpointSpec, ...]
    port: int
    nat: str | None  # the NAT router in front of it
    group: str | None = None  # the group it inherits from (lab.topology.inherit)
    babel_hello: float | None = LAB_BABEL_HELLO
    babel_update: float | None = LAB_BABEL_UPDATE
    babel_prefix_origin: bool = False
    dpd_delay: int | None = None


@dataclass(frozen=True)
class NatSpec:
    name: str
    inside: tuple[str, ...]
    outside: str  # the segment of its outside leg


@dataclass(frozen=True)
class Member:
    name: str
    ipv4: IPv4Interface | None
    ipv6: IPv6Interface | None


@dataclass(frozen=True)
class Segment:
    """A LAN, a link or a NAT inside link (router first, then the node)."""

    name: str
    kind: str  # "lan" | "link" | "nat"
    members: tuple[Member, ...]
    ipv4: IPv4Network | None
    ipv6: IPv6Network | None
    nodad: bool = True
    loss: int = 0  # percent, each way
    delay_ms: float | None = None
    rate: str | None = None

    @property
    def switched(self) -> bool:
        return self.kind != "nat"

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)


@dataclass(frozen=True)
class Topology:
    file: str
    name: str
    options: Options
    nodes: tuple[NodeSpec, ...]
    nat: tuple[NatSpec, ...]
    segments: tuple[Segment, ...]
    blocked: tuple[tuple[str, str], ...]

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    def router(self, name: str) -> NatSpec:
        return next(r for r in self.nat if r.name == name)

    def segment(self, name: str) -> Segment:
        return next(s for s in self.segments if s.name == name)


# ================================================================ the plan


@dataclass(frozen=True)
class Interface:
    """One end of an attachment, as its namespace sees it."""

    segment: str
    member: str
    ns: str
    name: str
    ipv4: IPv4Interface | None
    ipv6: IPv6Interface | None
    switch_port: str | None  # its peer in the switch namespace (None: NAT inside link)


@dataclass(frozen=True)
class Veth:
    ns: str
    name: str
    peer_ns: str
    peer: str
    master: str | None = None  # the bridge `name` joins, in ns


@dataclass(frozen=True)
class Bridge:
    ns: str
    name: str
    segment: str


@dataclass(frozen=True)
class Address:
    ns: str
    dev: str
    address: str  # "10.1.2.3/24"
    nodad: bool = False


@dataclass(frozen=True)
class Route:
    ns: str
    dst: str  # "0.0.0.0/0" | "::/0"
    dev: str
    gateway: str | None = None


@dataclass(frozen=True)
class Sysctl:
    ns: str
    name: str  # dotted, e.g. net.ipv4.ip_forward
    value: str


@dataclass(frozen=True)
class Ruleset:
    """A whole nft table as one libnftables JSON batch, replaced atomically."""

    ns: str
    family: str
    table: str
    batch: str


@dataclass(frozen=True)
class Netem:
    ns: str
    dev: str
    delay_ms: float | None
    rate: str | None


@dataclass(frozen=True)
class NodePlan:
    name: str
    organization: str
    mode: str
    ns: str  # its "host" namespace, where its agent runs
    agent_ns: str  # where its overlay addresses live: the agent's netns, or ns (vrf)
    port: int
    nat: str | None
    interfaces: tuple[Interface, ...]
    network: str
    overlay_address: str
    extra_ip: tuple[str, ...]
    ping_targets: tuple[str, ...]  # extra_ip, then the overlay address
    config: dict = field(hash=False, compare=False)  # config.json; the writer copies it

    @property
    def underlay_addresses(self) -> tuple[str, ...]:
        return tuple(str(a.ip) for i in self.interfaces for a in (i.ipv4, i.ipv6) if a)


@dataclass(frozen=True)
class RouterPlan:
    name: str
    ns: str
    outside: Interface
    inside: tuple[Interface, ...]


@dataclass(frozen=True)
class SegmentPlan:
    name: str
    kind: str
    bridge: str | None
    members: tuple[str, ...]
    ports: tuple[str | None, ...]  # per member, in the switch (None for NAT links)
    loss: int
    delay_ms: float | None
    rate: str | None


@dataclass(frozen=True)
class LabPlan:
    lab: str
    file: str
    switch_ns: str
    namespaces: tuple[str, ...]  # the switch, NAT routers, nodes: in creation order
    nodes: tuple[NodePlan, ...]
    routers: tuple[RouterPlan, ...]
    segments: tuple[SegmentPlan, ...]
    bridges: tuple[Bridge, ...]
    veths: tuple[Veth, ...]
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]
    sysctls: tuple[Sysctl, ...]
    rulesets: tuple[Ruleset, ...]
    netems: tuple[Netem, ...]
    organizations: tuple[str, ...]

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in lab {self.lab}")

    def router(self, name: str) -> RouterPlan:
        for r in self.routers:
            if r.name == name:
                return r
        raise KeyError(f"no NAT router {name!r} in lab {self.lab}")

    def segment(self, name: str) -> SegmentPlan:
        for s in self.segments:
            if s.name == name:
                return s
        raise KeyError(f"no LAN or link {name!r} in lab {self.lab}")

    def face(self, name: str) -> str:
        """The member whose switch ports carry name's underlay traffic: a node
        behind NAT shows its router's face."""
        for n in self.nodes:
            if n.name == name:
                return n.nat or n.name
        self.router(name)
        return name

    def ports_of(self, name: str) -> tuple[str, ...]:
        face = self.face(name)
        return tuple(p for s in self.segments for m, p in zip(s.members, s.ports, strict=True)
                     if m == face and p is not None)

    @property
    def agent_namespaces(self) -> tuple[str, ...]:
        """Namespaces the agents make (netns mode); not the underlay's, but the lab's."""
        return tuple(n.agent_ns for n in self.nodes if n.agent_ns != n.ns)
