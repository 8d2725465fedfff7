"""The values a topology leaves out, assigned deterministically from the lab name
and the file's order (g = sha256("aronet-lab:" + lab)):

  ULA /48      fd + 40 bits of g             overlay of node i: <ula>:<i>::1/64
  underlay     IPv4 10.<g[5]>.<k>.0/24, IPv6 <ula>:<1000+k>::/64 for segment k
               (LANs, links, NAT inside links); member j gets host j+1
  prefixes     one IPv4 172.<16 + g[6] % 16>.<i>.0/24 for node i
  extra_ip     the first host of the node's first IPv4 prefix

An automatic value skips anything that overlaps an explicit one (or an earlier
automatic one), so the result is collision-free.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Interface, IPv6Network

from aronet.load import Collector

from .model import Member, NodeSpec, Options, Prefix, Segment
from .rules import Draft, RawSegment, as_dict, as_list


class _Allocator:
    """Hands out the first free candidate; taken: every network already owned."""

    def __init__(self, lab: str, taken: list[Prefix], check: Collector):
        g = hashlib.sha256(f"aronet-lab:{lab}".encode()).digest()
        self.ula = IPv6Network(((0xFD << 120) | (int.from_bytes(g[:5], "big") << 80), 48))
        self.v4_underlay = IPv4Network(f"10.{g[5]}.0.0/16")
        self.v4_prefixes = IPv4Network(f"172.{16 + g[6] % 16}.0.0/16")
        self.taken = taken
        self.check = check

    def allocate(self, candidates: Iterator[Prefix], what: str, path: list):
        for net in candidates:
            if not any(net.version == t.version and net.overlaps(t) for t in self.taken):
                self.taken.append(net)
                return net
        self.check.add(path, f"no free {what} is left for automatic addressing; give it explicitly")
        return None

    @staticmethod
    def v4(base: IPv4Network, start: int):
        for k in range(start, 256):
            yield IPv4Network((int(base.network_address) + (k << 8), 24))

    def v6(self, offset: int, start: int, stop: int):
        for k in range(start, stop):
            yield IPv6Network((int(self.ula.network_address) + ((offset + k) << 64), 64))


def complete(lab: str, opts: Options, d: Draft, check: Collector
             ) -> tuple[tuple[Segment, ...], tuple[NodeSpec, ...]]:
    """The segments (NAT inside links included) and nodes, every value assigned.
    A value that finds no room is a problem in check."""
    alloc = _Allocator(lab, [net for net, _, _ in d.owned], check)
    _add_nat_links(d)
    return _segments(d, alloc, opts), _nodes(d, alloc, opts)


def _add_nat_links(d: Draft) -> None:
    """NAT inside links are segments too; they carry the families of the outside leg."""
    for r, spec in d.nat.items():
        seg_out = d.outside[r]
        for n in as_list(spec.get("inside")):
            d.segments.append(RawSegment(
                name=f"{r}:{n}", kind="nat", path=["nat", r], name_path=None,
                members=[(r, []), (n, [])], spec={},
                ipv4=True if seg_out.ipv4 is not None else None,
                ipv6=True if seg_out.ipv6 is not None else None))


def _segments(d: Draft, alloc: _Allocator, opts: Options) -> tuple[Segment, ...]:
    done = []
    for k, seg in enumerate(d.segments, start=1):
        if seg.ipv4 is True:
            seg.ipv4 = alloc.allocate(alloc.v4(alloc.v4_underlay, k), "IPv4 /24 for the underlay",
                                      seg.path)
        if seg.ipv6 is True:
            seg.ipv6 = alloc.allocate(alloc.v6(0x1000, k, 0xF000), "IPv6 /64 for the underlay",
                                      seg.path)
        members = tuple(
            Member(m, _host(seg.ipv4, j), _host(seg.ipv6, j)) for j, (m, _) in enumerate(seg.members))
        spec = seg.spec
        done.append(Segment(
            name=seg.name, kind=seg.kind, members=members, ipv4=seg.ipv4, ipv6=seg.ipv6,
            nodad=spec.get("nodad", opts.nodad), loss=spec.get("loss", 0),
            delay_ms=spec.get("delay"), rate=spec.get("rate")))
    return tuple(done)


def _nodes(d: Draft, alloc: _Allocator, opts: Options) -> tuple[NodeSpec, ...]:
    nodes = []
    for i, (n, spec) in enumerate(d.nodes.items(), start=1):
        net = d.networks[n]
        if net is None:
            sub = alloc.allocate(alloc.v6(0, i, 0x1000), "IPv6 /64 for an overlay network",
                                 ["nodes", n])
            net = IPv6Interface(f"{sub.network_address + 1}/64") if sub else None
        pfx = d.prefixes[n]
        if pfx is None:
            got = alloc.allocate(alloc.v4(alloc.v4_prefixes, i), "IPv4 /24 for a node prefix",
                                 ["nodes", n])
            pfx = (got,) if got else ()
        first_v4 = next((p for p in pfx if p.version == 4), None)
        extra = (next(iter(first_v4.hosts()), first_v4.network_address),) if first_v4 else ()
        babel, ike = as_dict(spec.get("babel")), as_dict(spec.get("ike"))
        nodes.append(NodeSpec(
            name=n, organization=spec["organization"], mode=spec.get("mode", opts.mode),
            routing=spec.get("routing", opts.routing),
            network=net, prefixes=pfx, extra_ip=extra, endpoints=tuple(d.endpoints[n]),
            port=spec.get("port", opts.port), nat=d.behind[n][0] if n in d.behind else None,
            group=spec.get("group"), babel_hello=babel.get("hello_interval", opts.babel_hello),
            babel_update=babel.get("update_interval", opts.babel_update),
            babel_prefix_origin=babel.get("prefix_origin", opts.babel_prefix_origin) is True,
            dpd_delay=ike.get("dpd_delay", opts.dpd_delay)))
    return tuple(nodes)


def _host(net: IPv4Network | IPv6Network | None, index: int):
    if net is None:
        return None
    return ipaddress.ip_interface(f"{net.network_address + index + 1}/{net.prefixlen}")
