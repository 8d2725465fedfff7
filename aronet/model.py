"""The validated model of config.json and registry.json.

Pure, immutable data. Everything here has already passed aronet.load's checks, so
the core can rely on it: addresses parse, families match, names are unique, and no
two nodes own overlapping networks or prefixes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

Prefix = IPv4Network | IPv6Network

FAMILIES = ("ip4", "ip6")
DEFAULT_PORT = 12025
RESERVED_SUFFIX = 0xFFFF  # bits 64..79 of a node's network: "{network}:ffff::/80"
ROUTING_DAEMONS = ("bird", "babeld")
# The one place the default routing daemon is chosen, per mode, from `aronet-lab bench`
# (README, Benchmarks): with the same 150 ms hello babeld reroutes in about 0.8 s where
# BIRD 2.0.12 needs about 1.6-1.9 s, at about the same control traffic; but babeld 1.12 hears no
# babel packet inside a VRF, so VRF mode keeps BIRD.
DEFAULT_ROUTING = {"netns": "babeld", "vrf": "bird"}
# daemon.accept_prefixes when a config leaves it out: the ranges this node accepts
# other nodes' networks and prefixes from. The private (RFC 1918), shared (RFC 6598)
# and ULA (RFC 4193) ranges, and the documentation ranges (RFC 5737, RFC 3849), which
# are routed nowhere on the Internet either and which the examples and the lab use.
DEFAULT_ACCEPT: tuple[Prefix, ...] = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32",
))


@dataclass(frozen=True, order=True)
class Endpoint:
    """Where a node can be reached. address is an IP literal, a hostname, or None
    (unknown, e.g. behind NAT: such a node only initiates)."""

    family: str
    serial_number: int
    address: str | None
    port: int

    @property
    def is_ip(self) -> bool:
        if self.address is None:
            return False
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class Node:
    organization: str
    common_name: str
    public_key: str  # PEM text of the organization's Ed25519 key
    network: IPv6Interface  # e.g. fd66::1/64: the node's overlay address and network
    prefixes: tuple[Prefix, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.organization, self.common_name)

    @property
    def name(self) -> str:
        return f"{self.organization}/{self.common_name}"

    @property
    def address(self) -> IPv6Address:
        return node_address(self.network)

    @property
    def sid_range(self) -> IPv6Network:
        return reserved_range(self.network.network)

    @property
    def port(self) -> int:
        return self.endpoints[0].port if self.endpoints else DEFAULT_PORT

    @property
    def ipv4_prefixes(self) -> tuple[IPv4Network, ...]:
        return tuple(p for p in self.prefixes if p.version == 4)

    @property
    def ipv6_prefixes(self) -> tuple[IPv6Network, ...]:
        return tuple(p for p in self.prefixes if p.version == 6)


@dataclass(frozen=True)
class Settings:
    """How this node runs. Every name the agent puts on a machine is here."""

    mode: str = "vrf"  # "vrf" | "netns"
    routing: str = DEFAULT_ROUTING["vrf"]  # one of ROUTING_DAEMONS: which daemon runs babel
    ifname: str = "aronet"  # VRF device, or netns name and host-side veth
    tunnel_prefix: str = "ar-"  # XFRM interfaces: f"{tunnel_prefix}{if_id:08x}"
    route_table: int = 128  # VRF table
    mtu: int = 1400  # XFRM interface MTU
    babel_hello: float = 1.0  # seconds
    babel_update: float = 4.0  # seconds
    prefix_origin: bool = False  # import a prefix only from its owner's babel router ids (babeld)
    dpd_delay: int = 10  # seconds
    extra_ip: tuple[IPv4Interface | IPv6Interface, ...] = ()
    accept_prefixes: tuple[Prefix, ...] = DEFAULT_ACCEPT  # what other nodes may claim here


SIGNATURE_MODES = ("off", "optional", "required")
EXPIRY_ACTIONS = ("freeze", "fail")


@dataclass(frozen=True)
class RegistryPolicy:
    """config.json's `registry` block: which registries this node accepts (aronet.trust).
    No block: signature "off", today's behaviour (any valid registry, unsigned)."""

    signature: str = "off"  # one of SIGNATURE_MODES
    mesh: str = ""  # the statement's mesh must be this one
    trusted_keys: tuple[str, ...] = ()  # signer keys, "ed25519:BASE64" or PEM
    threshold: int = 1  # valid signatures needed, by distinct trusted keys
    on_expiry: str = "freeze"  # one of EXPIRY_ACTIONS
    clock_skew: float = 300.0  # seconds either way
    source: str | None = None  # an absolute path or an http(s) URL the agent fetches from
    fetch_interval: float = 900.0  # seconds
    fetch_timeout: float = 30.0  # seconds

    @property
    def checks(self) -> bool:
        return self.signature != "off"


METRIC_DETAILS = ("summary", "peer")
METRICS_INTERVAL = 5.0  # seconds: what a scrape reads is at most this old


@dataclass(frozen=True)
class MetricsSettings:
    """config.json's `metrics` block: Prometheus metrics (aronet.core.metrics), served
    on one address of the agent's own namespace (never a wildcard, never an overlay
    address) and/or written to a node_exporter textfile. detail "summary" leaves out
    every per-connection and per-interface series (a full mesh has n-1 of each)."""

    listen: tuple[str, int] | None = None  # (IP address, port)
    textfile: str | None = None  # an absolute path
    detail: str = "peer"  # one of METRIC_DETAILS
    interval: float = METRICS_INTERVAL  # how often the agent observes for them

    @property
    def per_peer(self) -> bool:
        return self.detail == "peer"


@dataclass(frozen=True)
class Config:
    file: str
    node: Node  # this node, as its own config describes it
    settings: Settings
    private_key_pem: bytes = field(repr=False, compare=False, default=b"")
    registry: RegistryPolicy = field(default_factory=RegistryPolicy)
    metrics: MetricsSettings | None = None  # None: no metrics block, none exported


@dataclass(frozen=True)
class Registry:
    file: str
    nodes: tuple[Node, ...]  # sorted by key

    org_keys: dict[str, str] = field(default_factory=dict, compare=False)  # org -> PEM
    paths: dict[tuple[str, str], tuple] = field(default_factory=dict, compare=False)  # for messages

    @cached_property
    def by_key(self) -> dict[tuple[str, str], Node]:
        return {n.key: n for n in self.nodes}

    def get(self, key: tuple[str, str]) -> Node | None:
        return self.by_key.get(key)


def node_address(network: IPv6Interface) -> IPv6Address:
    """The node's own overlay address: the given one, or ::1 of the network when the
    host part is zero (the all-zero address is the subnet-router anycast)."""
    if network.ip == network.network.network_address:
        return network.network.network_address + 1
    return network.ip


def reserved_range(network: IPv6Network) -> IPv6Network:
    """{network}:ffff::/80: bits 64..79 of the network's first /64 set to ffff."""
    base = int(network.network_address) >> 64 << 64
    return IPv6Network((base | (RESERVED_SUFFIX << 48), 80))
