"""Desired and observed state, as immutable resources.

A node's state is a set of resources. Each resource has a `key` (its identity: what
the system would call the same object) and content. Two states are compared key by
key (aronet.core.diff). Adapters observe the system into these same types.

`ns` is the network namespace a resource lives in: "" is the agent's own namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class Resource:
    kind: ClassVar[str] = "resource"
    # Creation order; removal runs in reverse. Things others depend on come first.
    order: ClassVar[int] = 0

    @property
    def key(self) -> tuple:
        raise NotImplementedError

    @property
    def where(self) -> str:
        ns = getattr(self, "ns", "")
        return f"netns {ns}" if ns else "host"


@dataclass(frozen=True)
class Namespace(Resource):
    kind: ClassVar[str] = "netns"
    order: ClassVar[int] = 10
    name: str

    @property
    def key(self):
        return (self.name,)

    def __str__(self):
        return f"netns {self.name}"


@dataclass(frozen=True)
class Sysctl(Resource):
    """scope: "netns" (per namespace; removed with it) or "global" (shared by the whole
    kernel: it stays after the agent stops). restorable is False where the kernel
    refuses to go back (nf_hooks_lwtunnel cannot return to 0 once on)."""

    kind: ClassVar[str] = "sysctl"
    order: ClassVar[int] = 20
    ns: str
    name: str
    value: str
    scope: str = "netns"
    restorable: bool = True
    why: str = field(default="", compare=False)

    @property
    def key(self):
        return (self.ns, self.name)

    def __str__(self):
        lasting = "" if self.restorable else ", cannot be restored"
        return f"sysctl {self.name}={self.value} ({self.where}; scope {self.scope}{lasting})"


@dataclass(frozen=True)
class Vrf(Resource):
    kind: ClassVar[str] = "vrf"
    order: ClassVar[int] = 30
    ns: str
    name: str
    table: int

    @property
    def key(self):
        return (self.ns, self.name)

    def __str__(self):
        return f"vrf {self.name} table {self.table} ({self.where})"


@dataclass(frozen=True)
class Veth(Resource):
    """A veth pair: `name` in `ns`, `peer` in `peer_ns`."""

    kind: ClassVar[str] = "veth"
    order: ClassVar[int] = 30
    ns: str
    name: str
    peer: str
    peer_ns: str
    mtu: int = 1500

    @property
    def key(self):
        return (self.ns, self.name)

    def __str__(self):
        return f"veth {self.name} ({self.where}) <-> {self.peer} (netns {self.peer_ns})"


@dataclass(frozen=True)
class XfrmInterface(Resource):
    """Created in the agent's namespace with its if_id (where the SAs live), then moved
    into `ns` and/or enslaved to `master`. The same if_id serves in and out."""

    kind: ClassVar[str] = "xfrm"
    order: ClassVar[int] = 40
    ns: str
    name: str
    if_id: int
    mtu: int
    master: str | None = None
    multicast: bool = True  # BIRD 2.0.12's babel ignores interfaces without it
    peer: str = field(default="", compare=False)  # org/cn, for people

    @property
    def key(self):
        return (self.ns, self.name)

    def __str__(self):
        extra = f" master {self.master}" if self.master else ""
        mc = " multicast" if self.multicast else ""
        return (f"xfrm {self.name} if_id {self.if_id:#010x} mtu {self.mtu}{mc}"
                f"{extra} ({self.where}) peer {self.peer}")


@dataclass(frozen=True)
class Address(Resource):
    kind: ClassVar[str] = "address"
    order: ClassVar[int] = 50
    ns: str
    dev: str
    address: str  # with prefix length
    nodad: bool = False

    @property
    def key(self):
        return (self.ns, self.dev, self.address)

    def __str__(self):
        return f"address {self.address} dev {self.dev}{' nodad' if self.nodad else ''} ({self.where})"


@dataclass(frozen=True)
class Route(Resource):
    """One route per (ns, table, dst).
    type: "unicast" | "unreachable"; gateway may be IPv6 for an IPv4 dst (RTA_VIA);
    encap: () | ("seg6", "encap", sid) | ("seg6local", action[, nh4])."""

    kind: ClassVar[str] = "route"
    order: ClassVar[int] = 60
    ns: str
    table: int
    dst: str
    dev: str | None = None
    gateway: str | None = None
    encap: tuple = ()
    type: str = "unicast"
    mtu: int | None = None
    peer: str = field(default="", compare=False)

    @property
    def key(self):
        return (self.ns, self.table, self.dst)

    def __str__(self):
        s = f"route {self.dst}"
        if self.type != "unicast":
            s = f"route {self.type} {self.dst}"
        if self.encap:
            s += " encap " + " ".join(map(str, self.encap))
        if self.gateway:
            s += f" via {self.gateway}"
        if self.dev:
            s += f" dev {self.dev}"
        if self.mtu:
            s += f" mtu {self.mtu}"
        return s + f" table {self.table} ({self.where})"


@dataclass(frozen=True)
class NftTable(Resource):
    """A whole nftables table, replaced atomically. `ruleset` is the libnftables JSON
    that creates it (a string, so the resource stays hashable). Two tables are equal
    when their `summary` is: every rule's chain and comment (the comments carry the
    rule's parameters) and every set's elements. nft 1.0.6 lists rules in a
    normalised form, so the summary, not the JSON text, is what observation can
    compare."""

    kind: ClassVar[str] = "nft"
    order: ClassVar[int] = 70
    ns: str
    family: str
    name: str
    summary: tuple
    ruleset: str = field(default="", repr=False, compare=False)

    @property
    def key(self):
        return (self.ns, self.family, self.name)

    def __str__(self):
        return f"nft table {self.family} {self.name} ({self.where})"


@dataclass(frozen=True)
class Connection(Resource):
    """One IKEv2 connection (and its one CHILD_SA) to one endpoint of a peer."""

    kind: ClassVar[str] = "conn"
    order: ClassVar[int] = 80
    name: str
    peer: str  # org/cn
    family: str
    if_id: int
    local_addrs: str
    remote_addrs: str
    local_port: int
    remote_port: int
    local_id: str
    remote_id: str
    remote_pubkey: str = field(repr=False)
    local_pubkey: str = field(default="", repr=False)
    initiate: bool = False
    dpd_delay: int = 10
    ike_proposal: str = "aes256gcm16-prfsha384-x25519"
    esp_proposal: str = "aes256gcm16-x25519"

    @property
    def key(self):
        return (self.name,)

    def __str__(self):
        role = "initiate" if self.initiate else "respond"
        return (f"conn {self.name} {self.family} {self.local_addrs}:{self.local_port} -> "
                f"{self.remote_addrs}:{self.remote_port} if_id {self.if_id:#010x} {role} "
                f"peer {self.peer} [{self.remote_id}]")


@dataclass(frozen=True)
class RoutingConfig(Resource):
    """The routing daemon's configuration file: `daemon` is "bird" or "babeld"."""

    kind: ClassVar[str] = "routing"
    order: ClassVar[int] = 90
    ns: str
    daemon: str
    text: str = field(repr=False)

    @property
    def key(self):
        return (self.ns,)

    @property
    def file_name(self) -> str:
        return f"{self.daemon}.conf"

    def __str__(self):
        return f"{self.daemon} config ({self.where}, {len(self.text.splitlines())} lines)"


KINDS = (Namespace, Sysctl, Vrf, Veth, XfrmInterface, Address, Route, NftTable, Connection,
         RoutingConfig)


@dataclass(frozen=True)
class State:
    """A node's resources. `of(kind)` gives them by key."""

    resources: frozenset[Resource] = frozenset()

    def index(self) -> dict[tuple, Resource]:
        return {(r.kind, *r.key): r for r in self.resources}

    def of(self, kind: type[Resource]) -> list[Resource]:
        return sorted((r for r in self.resources if isinstance(r, kind)), key=lambda r: r.key)
