"""The rules of a topology that its JSON Schema cannot say, each problem with its
path: names, who is behind which NAT router, the members of each LAN and link,
interface names that fit Linux, the addresses written out and their overlaps, the
endpoints and the blocked pairs.

check_rules looks only at values whose type the schema accepted, and returns a
Draft: what the rules learnt, from which lab.topology.addresses completes the
Topology (the values left out) when no rule was broken.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Interface, IPv6Network

from aronet.errors import json_path
from aronet.load import Collector, parse_network, parse_prefix

from .model import KINDS, EndpointSpec, Prefix
from .names import IFNAMSIZ, SWITCH, bridge_name, port_name


def as_dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def as_list(x) -> list:
    return x if isinstance(x, list) else []


def as_str(x) -> str | None:
    return x if isinstance(x, str) else None


@dataclass
class RawSegment:
    name: str
    kind: str
    path: list  # where the segment is defined
    name_path: list | None  # where its name is written (None: automatic)
    members: list[tuple[str, list]]  # (name, path)
    spec: dict
    ipv4: IPv4Network | bool | None = True  # True: automatic; None: none
    ipv6: IPv6Network | bool | None = True


Attachment = tuple[RawSegment, list]  # a segment, and where the member is written on it


@dataclass
class Draft:
    """A topology document as the rules have read it, in file order."""

    nodes: dict[str, dict]  # name -> spec
    nat: dict[str, dict]  # name -> spec; also those that clash with a node
    routers: set[str] = field(default_factory=set)  # the NAT routers that are no node
    behind: dict[str, tuple[str, list]] = field(default_factory=dict)  # node -> (router, path)
    segments: list[RawSegment] = field(default_factory=list)  # LANs then links
    attach: dict[str, list[Attachment]] = field(default_factory=dict)  # member -> its segments
    owned: list[tuple[Prefix, str, list]] = field(default_factory=list)  # (net, owner, path)
    networks: dict[str, IPv6Interface | None] = field(default_factory=dict)  # None: automatic
    prefixes: dict[str, tuple[Prefix, ...] | None] = field(default_factory=dict)
    outside: dict[str, RawSegment] = field(default_factory=dict)  # router -> its outside leg
    endpoints: dict[str, list[EndpointSpec]] = field(default_factory=dict)
    blocked: list[tuple[str, str]] = field(default_factory=list)

    @property
    def known(self) -> set[str]:
        return set(self.nodes) | self.routers


def check_rules(doc: dict, check: Collector, origins: dict[str, dict[str, list]] | None = None) -> Draft:
    """origins: where each node's inherited values are written (lab.topology.inherit)."""
    d = Draft(nodes={k: as_dict(v) for k, v in as_dict(doc.get("nodes")).items() if isinstance(k, str)},
              nat={k: as_dict(v) for k, v in as_dict(doc.get("nat")).items() if isinstance(k, str)})
    d.routers = _names(d, check)
    d.behind = _behind(d, check)
    d.segments = _segments(doc, check)
    d.attach = _attachments(d, check)
    _upstreams(d, check)
    _interface_names(d.segments, check)
    _addresses(d, check)
    _endpoints_all(d, check, origins or {})
    d.blocked = _blocked(doc, d, check)
    return d


def _names(d: Draft, check: Collector) -> set[str]:
    """Nodes and NAT routers share one space; "sw" names the switch."""
    for kind, names in (("nodes", d.nodes), ("nat", d.nat)):
        for name in names:
            if name == SWITCH:
                check.add([kind, name], f"{name!r} is reserved: the lab's switch namespace "
                          f"is <lab>-{SWITCH}")
    for name in d.nat:
        if name in d.nodes:
            check.add(["nat", name], f"{name!r} is already a node ({json_path(['nodes', name])}); nodes and "
                      "NAT routers need different names")
    return {n for n in d.nat if n not in d.nodes}


def _behind(d: Draft, check: Collector) -> dict[str, tuple[str, list]]:
    """Who is behind which NAT router: nodes only, each behind one."""
    behind: dict[str, tuple[str, list]] = {}
    for r, spec in d.nat.items():
        if r not in d.routers:
            continue
        for j, n in enumerate(as_list(spec.get("inside"))):
            p = ["nat", r, "inside", j]
            if not isinstance(n, str):
                continue
            if n in d.routers:
                check.add(p, f"{n!r} is a NAT router; only nodes can be behind NAT")
            elif n not in d.nodes:
                check.add(p, f"{n!r} is not a node")
            elif n in behind:
                check.add(p, f"{n!r} is already behind NAT router {behind[n][0]!r} "
                          f"({json_path(behind[n][1])}); a node behind NAT has exactly one upstream")
            else:
                behind[n] = (r, p)
    return behind


def _attachments(d: Draft, check: Collector) -> dict[str, list[Attachment]]:
    """Members: known, once per segment; nodes behind NAT are on nothing else."""
    known = d.known
    attach: dict[str, list[Attachment]] = {n: [] for n in known}
    for seg in d.segments:
        first: dict[str, list] = {}
        for m, p in seg.members:
            if m not in known:
                check.add(p, f"{m!r} is not a node or NAT router")
                continue
            if m in first:
                what = (f"{m!r} is at both ends; a link joins two different members"
                        if seg.kind == "link"
                        else f"{m!r} is already a member at {json_path(first[m])}")
                check.add(p, what)
                continue
            first[m] = p
            if m in d.behind:
                r, rp = d.behind[m]
                check.add(p, f"{m!r} is behind NAT router {r!r} ({json_path(rp)}); a node behind "
                          "NAT has exactly one upstream, its NAT router")
                continue
            attach[m].append((seg, p))
    return attach


def _upstreams(d: Draft, check: Collector) -> None:
    """Each node has an upstream; each NAT router exactly one outside leg."""
    for n in d.nodes:
        if n not in d.behind and n in d.attach and not d.attach[n]:
            check.add(["nodes", n], f"{n!r} is on no LAN or link and behind no NAT router; it "
                      "needs an upstream")
    for r in sorted(d.routers, key=list(d.nat).index):
        legs = d.attach[r]
        if not legs:
            check.add(["nat", r], f"NAT router {r!r} is on no LAN or link; it needs exactly one "
                      "outside leg")
        for _seg, p in legs[1:]:
            first_seg, first_p = legs[0]
            check.add(p, f"NAT router {r!r} is already on {KINDS[first_seg.kind]} "
                      f"{first_seg.name!r} ({json_path(first_p)}); a NAT router has exactly one "
                      "outside leg")


def _interface_names(segments: list[RawSegment], check: Collector) -> None:
    """Interface names must fit (the switch holds the long ones)."""
    for seg in segments:
        bridge = bridge_name(seg.name)
        if len(bridge.encode()) > IFNAMSIZ and seg.name_path is not None:
            check.add(seg.name_path, f"its bridge {bridge!r} would have {len(bridge.encode())} "
                      f"bytes; Linux interface names have at most {IFNAMSIZ}: shorten the "
                      f"{KINDS[seg.kind]} name")
        for m, p in seg.members:
            port = port_name(seg.name, m)
            if len(port.encode()) > IFNAMSIZ:
                check.add(p, f"its switch port {port!r} would have {len(port.encode())} bytes; "
                          f"Linux interface names have at most {IFNAMSIZ}: shorten the "
                          f"{KINDS[seg.kind]} name or {m!r}")


def _addresses(d: Draft, check: Collector) -> None:
    """Addresses written out, and overlaps among them."""
    owned = d.owned
    for seg in d.segments:
        _segment_addresses(seg, check)
        for fam in ("ipv4", "ipv6"):
            net = getattr(seg, fam)
            if isinstance(net, IPv4Network | IPv6Network):
                owned.append((net, f"{KINDS[seg.kind]} {seg.name}", [*seg.path, fam]))
    for n, spec in d.nodes.items():
        base = ["nodes", n]
        text = as_str(spec.get("network"))
        d.networks[n] = None
        if text is not None:
            net, err = parse_network(text)
            if err:
                check.add([*base, "network"], err)
            else:
                d.networks[n] = net
                owned.append((net.network, f"node {n}", [*base, "network"]))
        d.prefixes[n] = None
        if isinstance(spec.get("prefixes"), list):
            found = []
            for i, t in enumerate(spec["prefixes"]):
                if not isinstance(t, str):
                    continue
                pfx, err = parse_prefix(t)
                if err:
                    check.add([*base, "prefixes", i], err)
                    continue
                found.append(pfx)
                owned.append((pfx, f"node {n}", [*base, "prefixes", i]))
            d.prefixes[n] = tuple(found)
    for i, (net, owner, path) in enumerate(owned):
        for other, other_owner, other_path in owned[:i]:
            if other_owner != owner and net.version == other.version and net.overlaps(other):
                check.add(path, f"{net} overlaps {other} of {other_owner} ({json_path(other_path)})")
                break


def _endpoints_all(d: Draft, check: Collector, origins: dict[str, dict[str, list]]) -> None:
    d.outside = {r: legs[0][0] for r, legs in d.attach.items() if r in d.routers and legs}
    seg_by_name = {s.name: s for s in d.segments}
    for n, spec in d.nodes.items():
        legs = d.attach.get(n) or []
        home = d.outside.get(d.behind[n][0]) if n in d.behind else (legs[0][0] if legs else None)
        d.endpoints[n] = _endpoints(n, spec, home, d.behind.get(n), {s.name for s, _ in legs},
                                    seg_by_name, check,
                                    origins.get(n, {}).get("endpoints", ["nodes", n, "endpoints"]))


def _blocked(doc: dict, d: Draft, check: Collector) -> list[tuple[str, str]]:
    """Blocked pairs: two known members that meet on the switch, each pair once."""
    known = d.known
    blocked: list[tuple[str, str]] = []
    seen_pairs: dict[frozenset, int] = {}
    for i, pair in enumerate(as_list(doc.get("blocked"))):
        pair = as_list(pair)
        if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            continue
        bad = False
        for j, x in enumerate(pair):
            if x not in known:
                check.add(["blocked", i, j], f"{x!r} is not a node or NAT router")
                bad = True
        if bad:
            continue
        a, b = pair
        face_a = d.behind[a][0] if a in d.behind else a
        face_b = d.behind[b][0] if b in d.behind else b
        key = frozenset(pair)
        if a == b:
            check.add(["blocked", i], f"{a!r} is named twice; a block is between two members")
        elif face_a == face_b:
            check.add(["blocked", i], f"{a!r} and {b!r} meet at NAT router {face_a!r}, not on the "
                      "switch, so their traffic cannot be blocked there")
        elif key in seen_pairs:
            check.add(["blocked", i], f"the same pair as $.blocked[{seen_pairs[key]}]")
        else:
            seen_pairs[key] = i
            blocked.append((a, b))
    return blocked


def _segments(doc: dict, check: Collector) -> list[RawSegment]:
    """LANs then links, in file order, with their names checked for uniqueness."""
    out: list[RawSegment] = []
    names: dict[str, list] = {}
    for name, spec in as_dict(doc.get("lans")).items():
        if not isinstance(name, str):
            continue
        spec = as_dict(spec)
        members = [(m, ["lans", name, "members", j]) for j, m in enumerate(as_list(spec.get("members")))
                   if isinstance(m, str)]
        out.append(RawSegment(name, "lan", ["lans", name], ["lans", name], members, spec))
        names[name] = ["lans", name]
    for i, raw in enumerate(as_list(doc.get("links"))):
        if isinstance(raw, list):
            spec, between, bpath = {}, raw, ["links", i]
        elif isinstance(raw, dict):
            spec, between, bpath = raw, as_list(raw.get("between")), ["links", i, "between"]
        else:
            continue
        explicit = as_str(spec.get("name"))
        name = explicit or f"l{i + 1}"
        name_path = ["links", i, "name"] if explicit else None
        if name in names:
            if explicit:
                check.add(name_path, f"{name!r} is already the name of {json_path(names[name])}")
            else:
                check.add(["links", i], f"its automatic name {name!r} is already the name of "
                          f"{json_path(names[name])}; give this link a name")
            continue
        names[name] = name_path or ["links", i]
        members = [(m, [*bpath, j]) for j, m in enumerate(between) if isinstance(m, str)]
        out.append(RawSegment(name, "link", ["links", i], name_path, members, spec))
    return out


def _segment_addresses(seg: RawSegment, check: Collector) -> None:
    """Parse the segment's ipv4 / ipv6 (auto when left out, none when false)."""
    count = len(seg.members)
    for fam, version, example in (("ipv4", 4, "10.0.0.0/24"), ("ipv6", 6, "fd00:1::/64")):
        raw = seg.spec.get(fam, True)
        if raw is False:
            setattr(seg, fam, None)
            continue
        if not isinstance(raw, str):
            continue
        path = [*seg.path, fam]
        setattr(seg, fam, None)
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            check.add(path, f"{raw!r} is not an IPv{version} prefix (like {example})")
            continue
        if net.version != version:
            check.add(path, f"{raw!r} is IPv{net.version}; {fam} takes an IPv{version} prefix "
                      f"(like {example})")
            continue
        if "/" not in raw:
            check.add(path, f"{raw!r} has no prefix length (like {example})")
            continue
        room = net.num_addresses - (2 if version == 4 else 1)
        if room < count:
            check.add(path, f"{net} has room for {max(room, 0)} addresses; this "
                      f"{KINDS[seg.kind]} has {count} members")
            continue
        setattr(seg, fam, net)
    if seg.spec.get("ipv4", True) is False and seg.spec.get("ipv6", True) is False:
        check.add(seg.path, f"ipv4 and ipv6 are both false; a {KINDS[seg.kind]} needs at least one")


def _endpoints(n: str, spec: dict, home: RawSegment | None, nat: tuple[str, list] | None,
               on: set[str], segs: dict[str, RawSegment], check: Collector,
               base: list) -> list[EndpointSpec]:
    """A node's endpoints: given ones checked, or one per family of its first
    attachment (behind NAT: of the router's outside leg). base: where they are
    written (the node's, or the group or defaults it inherits them from)."""
    families = {"ip4": "ipv4", "ip6": "ipv6"}
    raw = spec.get("endpoints")
    if not isinstance(raw, list):
        if home is None:
            return []
        return [EndpointSpec(fam, None if nat else home.name)
                for fam, attr in families.items() if getattr(home, attr) is not None]
    out: list[EndpointSpec] = []
    seen: dict[EndpointSpec, int] = {}
    for i, ep in enumerate(raw):
        p = [*base, i]
        if isinstance(ep, str):
            family, via = ep, None
        elif isinstance(ep, dict) and isinstance(ep.get("family"), str):
            family, via = ep["family"], as_str(ep.get("via"))
        else:
            continue
        if family not in families:
            continue
        if nat is not None:
            if via is not None:
                check.add([*p, "via"], f"{n!r} is behind NAT: its endpoints have no address, so "
                          "via means nothing")
                continue
            seg = home
        elif via is not None:
            if via not in segs:
                check.add([*p, "via"], f"{via!r} is not a LAN or link")
                continue
            if via not in on:
                check.add([*p, "via"], f"{n!r} is not on {KINDS[segs[via].kind]} {via!r}")
                continue
            seg = segs[via]
        else:
            seg = home
        if seg is None:
            continue
        if seg.spec.get(families[family], True) is False:
            where = f", the outside leg of NAT router {nat[0]!r}," if nat else ""
            check.add(p, f"{KINDS[seg.kind]} {seg.name!r}{where} has no IPv{family[-1]} "
                      f"({families[family]}: false)")
            continue
        item = EndpointSpec(family, None if nat else seg.name)
        if item in seen:
            check.add(p, f"the same endpoint as {json_path([*base, seen[item]])}")
            continue
        seen[item] = i
        out.append(item)
    return out
