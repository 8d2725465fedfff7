"""Parsing the values of config.json and registry.json that a schema cannot check:
networks, prefixes, addresses and endpoints. Each problem goes to a Collector.
What a node may claim at all (no special-purpose range, nothing too broad) is
aronet.load.ranges'."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from ipaddress import IPv6Interface

from ..errors import Problem, json_path
from ..model import FAMILIES, Endpoint, reserved_range
from .ranges import claim_problem

MAX_ENDPOINTS = 64  # per node: every peer makes a connection to each one

HOSTNAME = re.compile(  # to be matched in full (fullmatch): no trailing newline
    r"^(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)


# Each parser returns (value, None) or (None, message).


def _ip_interface(text: str):
    """ipaddress.ip_interface without IPv6 zone ids ("fe80::1%eth0"): an overlay
    network, a prefix or an endpoint is never scoped to one of this host's links."""
    if "%" in text:
        raise ValueError(text)
    return ipaddress.ip_interface(text)


def parse_network(text: str):
    try:
        iface = _ip_interface(text)
    except ValueError:
        return None, f"{text!r} is not an IPv6 network (like fd66::1/64)"
    if iface.version != 6:
        return None, f"{text!r} is IPv{iface.version}; the overlay network must be IPv6"
    if "/" not in text:
        return None, f"{text!r} has no prefix length; write it like fd66::1/64"
    if iface.network.prefixlen > 64:
        return None, (f"{text!r} has prefix length /{iface.network.prefixlen}; "
                      "it must be /64 or shorter")
    node_addr = iface.ip if iface.ip != iface.network.network_address else None
    if node_addr is not None and node_addr in reserved_range(iface.network):
        return None, (
            f"the node address {node_addr} lies in the reserved range "
            f"{reserved_range(iface.network)} (used for SRv6 SIDs)"
        )
    claim = claim_problem(iface.network)
    if claim:
        return None, claim
    return iface, None


def parse_prefix(text: str):
    """A prefix a node claims: an IP prefix no special-purpose range meets."""
    net, err = parse_range(text)
    if err:
        return None, err
    claim = claim_problem(net)
    return (None, claim) if claim else (net, None)


def parse_range(text: str):
    """Any IP prefix (what daemon.accept_prefixes lists)."""
    try:
        return _ip_interface(text).network, None
    except ValueError:
        return None, f"{text!r} is not an IP prefix (like 192.168.128.0/24 or 2001:db8::/48)"


def parse_interface(text: str):
    try:
        return _ip_interface(text), None
    except ValueError:
        return None, f"{text!r} is not an IP address (like 192.168.128.1 or 192.168.128.1/24)"


def one_line(text: str) -> str:
    """text with every character that is not printable (a newline, a control
    character) escaped as repr would: a problem is always one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Collector:
    """Problems for one file, with the path prefix of the place being checked."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def add(self, path: Iterable, message: str) -> None:
        self.problems.append(Problem(self.file, json_path(path), one_line(message)))


MAX_SERIAL = 2**32 - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,9}")


def serial_number(raw) -> int | None:
    """An endpoint's serial number: an integer, or a decimal string as ranet writes it
    ("0"); None when it is neither (the schema has said why)."""
    if isinstance(raw, str):
        return int(raw) if _DECIMAL.fullmatch(raw) else None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    return None


def endpoints_of(raw, path: list, out: Collector) -> tuple[Endpoint, ...]:
    """Endpoints of one node. Rules: the family matches the address; a hostname or
    null address names its family; one port on all endpoints (one charon, one NAT-T
    port); serial numbers unique per family (strongSwan takes two SAs with the same
    identities for duplicates). serial_number defaults to the endpoint's index."""
    if not isinstance(raw, list):
        return ()
    if len(raw) > MAX_ENDPOINTS:
        out.add(path, f"{len(raw)} endpoints; a node has at most {MAX_ENDPOINTS} (every peer "
                "makes a connection to each)")
        return ()
    result = []
    ports: dict[int, int] = {}
    serials: dict[tuple[str, int], int] = {}
    for i, ep in enumerate(raw):
        if not isinstance(ep, dict):
            continue
        p = [*path, i]
        family = endpoint_family(ep, p, out)
        port = ep.get("port")
        if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
            if ports and port not in ports:
                first = next(iter(ports))
                out.add([*p, "port"], f"port {port} differs from port {first} of endpoint "
                        f"[{ports[first]}]; a node uses one port on all its endpoints")
            ports.setdefault(port, i)
        else:
            port = None
        raw_sn = ep.get("serial_number", i)
        sn = serial_number(raw_sn)
        if sn is None or sn > MAX_SERIAL:  # an integer's range is the schema's to report
            if sn is not None and isinstance(raw_sn, str):
                out.add([*p, "serial_number"], f"{raw_sn!r} is greater than the maximum of {MAX_SERIAL}")
            continue
        if family is None:
            continue
        if (family, sn) in serials:
            out.add([*p, "serial_number"], f"serial_number {sn} is already used by {family} "
                    f"endpoint [{serials[family, sn]}]; give each endpoint of a family its own")
        serials.setdefault((family, sn), i)
        if port is not None:
            result.append(Endpoint(family=family, serial_number=sn, address=ep["address"],
                                   port=port))
    return tuple(result)


def endpoint_family(ep: dict, p: list, out: Collector) -> str | None:
    """The endpoint's address family, or None (and a problem, unless the schema
    already reported one)."""
    address, fam = ep.get("address"), ep.get("address_family")
    if fam not in (None, *FAMILIES):
        return None
    if isinstance(address, str):
        try:
            if "%" in address:  # a zone id ("fe80::1%eth0") means nothing to other nodes
                raise ValueError(address)
            ip = ipaddress.ip_address(address)
        except ValueError:
            if not HOSTNAME.fullmatch(address):
                out.add([*p, "address"], f"{address!r} is neither an IP address nor a hostname")
                return None
            if fam is None:
                out.add([*p, "address_family"],
                        f"hostname {address!r} needs an explicit address_family "
                        '("ip4" or "ip6")')
            return fam
        family = f"ip{ip.version}"
        if fam is not None and fam != family:
            out.add([*p, "address_family"],
                    f"{fam!r} does not match the address {address} (which is {family})")
            return None
        return family
    if address is None and "address" in ep:
        if fam is None:
            out.add([*p, "address_family"],
                    'a null address needs an explicit address_family ("ip4" or "ip6")')
        return fam
    return None


def prefixes_of(raw, path: list, out: Collector) -> tuple:
    result = []
    if isinstance(raw, list):
        for i, text in enumerate(raw):
            if isinstance(text, str):
                net, err = parse_prefix(text)
                if err:
                    out.add([*path, i], err)
                else:
                    result.append(net)
    return tuple(result)


def network_of(raw, path: list, out: Collector) -> IPv6Interface | None:
    if not isinstance(raw, str):
        return None
    net, err = parse_network(raw)
    if err:
        out.add(path, err)
    return net
