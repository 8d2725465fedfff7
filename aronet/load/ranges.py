"""Which address ranges a node may claim: special-purpose ranges no node may own,
the shortest prefix a node may claim, and the local policy of which ranges this
node accepts from the registry at all (config.json daemon.accept_prefixes; its
default is aronet.model.DEFAULT_ACCEPT).

Every network and prefix a node claims ends up as a route on every other node (and
in its babel filter and nft source check), so a claim of 0.0.0.0/1, of loopback or
of another node's underlay endpoint would take over traffic that is not the
overlay's. Pure: plain data and ipaddress arithmetic.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

Prefix = IPv4Network | IPv6Network

MIN_PREFIXLEN = {4: 8, 6: 16}  # nothing broader: 0.0.0.0/1, ::/1, 2000::/3 ...

SPECIAL: tuple[tuple[Prefix, str], ...] = tuple((ip_network(n), why) for n, why in (
    ("0.0.0.0/8", "'this network'"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, with the broadcast address 255.255.255.255"),
    ("::/128", "the unspecified address"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
))


def claim_problem(net: Prefix) -> str | None:
    """Why no node may claim net (a network or prefix), or None."""
    shortest = MIN_PREFIXLEN[net.version]
    if net.prefixlen < shortest:
        return (f"{net} is too broad: a node claims IPv{net.version} prefixes of "
                f"/{shortest} or longer")
    for special, why in SPECIAL:
        if special.version == net.version and net.overlaps(special):
            return f"{net} is in the special-purpose range {special} ({why}); no node can claim it"
    return None


def outside_policy(net: Prefix, accept: Iterable[Prefix]) -> bool:
    """True when net lies in none of the accepted ranges."""
    return not any(net.version == a.version and net.subnet_of(a) for a in accept)


class AddressIndex:
    """Networks, to ask fast which of them holds an address (thousands of each).

    items: (network, anything). holding(address) returns the anything of every
    network that contains the address, in no particular order."""

    def __init__(self, items: Iterable[tuple[Prefix, object]]):
        items = list(items)
        self._by_version: dict[int, tuple[list[int], list[int], list]] = {}
        for version in (4, 6):
            rows = sorted(((int(n.network_address), int(n.broadcast_address), tag)
                           for n, tag in items if n.version == version), key=lambda r: r[:2])
            reach, top = [], -1
            for _, end, _tag in rows:
                top = max(top, end)
                reach.append(top)
            self._by_version[version] = ([r[0] for r in rows], reach, rows)

    def holding(self, address: str) -> list:
        try:
            ip = ip_address(address)
        except ValueError:
            return []
        starts, reach, rows = self._by_version[ip.version]
        value = int(ip)
        i = bisect.bisect_right(starts, value)
        found = []
        while i > 0 and reach[i - 1] >= value:  # only networks that reach this far
            i -= 1
            if rows[i][1] >= value:
                found.append(rows[i][2])
        return found
