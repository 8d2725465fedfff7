"""aronet-lab topologies: load and check a YAML file, then plan the lab.

Three steps, like the agent's load / validate / plan:

- load_topology(path) reads YAML (syntax errors give line and column), checks it
  against lab/schema/topology.schema.json, then against the rules below, and reports
  every problem at once, each with its path (aronet.errors.Problem). Values left out
  are assigned here, deterministically from the lab name and the file's order.
- plan_lab(topology) is pure: every namespace, veth, bridge, address, route, sysctl
  and nft ruleset of the underlay, and each node's config.json document.
- write_lab_files(plan, directory) is the only I/O: one Ed25519 key per organization,
  each node's config.json, and registry.json made by aronet.core.registry, the
  generator `aronet registry build` uses (the lab has no second one).

Names (written once, here). A lab name has no "-", so "<lab>-" prefixes are disjoint
between labs:
  namespaces   node / NAT router  <lab>-<name>      the switch  <lab>-sw
  agent netns  netns-mode nodes:  daemon.ifname = ar<8 hex of sha256(lab/node)>
               (it names the agent's router namespace, which is global)
  interfaces   in a node or router: eth1, eth2, ... in the order of its attachments
               (LANs, then links, then NAT inside links, each in file order)
               in the switch: bridge br-<segment>, port <segment>-<member>
  links        named by `name:`, else l<index> (l1 is the first link)
Every interface name is checked to fit Linux's 15 bytes before anything is planned.

Addresses left out (g = sha256("aronet-lab:" + lab)):
  ULA /48      fd + 40 bits of g             overlay of node i: <ula>:<i>::1/64
  underlay     IPv4 10.<g[5]>.<k>.0/24, IPv6 <ula>:<1000+k>::/64 for segment k
               (LANs, links, NAT inside links); member j gets host j+1
  prefixes     one IPv4 172.<16 + g[6] % 16>.<i>.0/24 for node i
  extra_ip     the first host of the node's first IPv4 prefix
An automatic value skips anything that overlaps an explicit one (or an earlier
automatic one), so the result is collision-free.

Underlay model: every LAN and every link is a bridge in the switch namespace, so
loss, delay, blocks, partitions and ESP drops all happen there (table `bridge
aronet_lab`), and a node's own namespace holds nothing of the lab's but its veths.
A NAT router is a namespace with one outside leg (on a LAN or link) and a direct
veth to each node behind it; it masquerades what leaves the outside leg (table
`inet aronet_lab`). There is no underlay routing between segments: a node reaches
the members of its own LANs and links.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import ipaddress
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Interface,
    IPv6Network,
)
from pathlib import Path

import jsonschema
import yaml

from aronet import keys
from aronet.core.nft import match, meta
from aronet.core.registry import registry_document
from aronet.errors import InputError, Problem, json_path
from aronet.load import build_config, build_registry, load_config, parse_network, parse_prefix, read_text
from aronet.model import DEFAULT_PORT, Config, node_address

Prefix = IPv4Network | IPv6Network

IFNAMSIZ = 15
SWITCH = "sw"  # the switch namespace is f"{lab}-{SWITCH}"; no node may take the name
TABLE = "aronet_lab"  # the lab's nft table, in the switch (bridge) and NAT routers (inet)
DEFAULT_MODE = "netns"  # the host kernel has no VRF; say `mode: vrf` for the VM
# The lab's babel timers unless a topology sets its own: faster than aronet's defaults
# (hello 1 s, update 4 s) so that babeld reroutes in under a second (0.74-0.80 s median
# under TCG; with a 200 ms hello, 0.97-0.99 s), at about six times the control traffic
# (README, Benchmarks).
LAB_BABEL_HELLO = 0.15
LAB_BABEL_UPDATE = 1.0
KINDS = {"lan": "LAN", "link": "link", "nat": "NAT link"}
SCHEMA_FILE = Path(__file__).with_name("schema") / "topology.schema.json"

_PATTERN_HINTS = {
    "lab": "must be 1 to 12 lowercase letters or digits, starting with a letter "
    "(it prefixes every namespace of the lab, so it has no '-')",
    "name": "must be 1 to 63 letters, digits, '_' or '-', starting with a letter or digit",
    "organization": "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a "
    "letter or digit",
    "rate": "is not a rate like 10mbit, 512kbit or 1gbit",
}


# ================================================================ the topology


@dataclass(frozen=True)
class Options:
    mode: str = DEFAULT_MODE
    routing: str | None = None  # None: aronet's default (daemon.routing left out)
    port: int = DEFAULT_PORT
    nodad: bool = True
    babel_hello: float = LAB_BABEL_HELLO
    babel_update: float = LAB_BABEL_UPDATE
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


# ================================================================ loading


def load_topology(path: str | os.PathLike, *, name: str | None = None) -> Topology:
    """Read, check and complete a topology. name: run it under another lab name
    (several labs from one file at once); it is checked like the file's own."""
    path = str(path)
    return parse_topology(read_text(path), path, name=name)


def parse_topology(text: str, file: str, *, name: str | None = None) -> Topology:
    doc, problems = _parse_yaml(text, file)
    if name is not None and isinstance(doc, dict):
        doc["name"] = name
    problems += _schema_problems(doc, file)
    topology = None
    if isinstance(doc, dict):
        check = _Check(file)
        topology = _build(doc, check)
        problems += check.problems
    if problems:
        raise InputError(problems)
    assert topology is not None
    return topology


class _Loader(yaml.SafeLoader):
    """SafeLoader that notes duplicate keys (PyYAML silently keeps the last one)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[tuple[object, yaml.Mark, yaml.Mark]] = []

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    self.duplicates.append((key, key_node.start_mark, seen[key]))
                else:
                    seen[key] = key_node.start_mark
            except TypeError:  # an unhashable key: construct_mapping reports it
                pass
        return super().construct_mapping(node, deep=deep)


def _where(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _parse_yaml(text: str, file: str) -> tuple[object, list[Problem]]:
    loader = _Loader(text)
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = _where(mark) if mark else "$"
        reason = "; ".join(x for x in (e.context, e.problem) if x)
        raise InputError(Problem(file, where, f"invalid YAML: {reason}")) from None
    except yaml.YAMLError as e:
        raise InputError(Problem(file, "$", f"invalid YAML: {e}")) from None
    finally:
        loader.dispose()
    problems = [Problem(file, _where(mark), f"duplicate key {key!r} (first at {_where(first)})")
                for key, mark, first in loader.duplicates]
    return doc, problems


@cache
def _validator():
    schema = json.loads(SCHEMA_FILE.read_text())
    # As aronet.load: 12025.0 is no integer, True is no number.
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
        "integer": lambda _, x: isinstance(x, int) and not isinstance(x, bool),
        "number": lambda _, x: (isinstance(x, int) and not isinstance(x, bool))
        or (isinstance(x, float) and math.isfinite(x)),
    })
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)
    return cls(schema)


def _schema_problems(doc, file: str) -> list[Problem]:
    out = []
    for err in _validator().iter_errors(doc):
        path = list(err.absolute_path)
        if "propertyNames" in err.relative_schema_path or "propertyNames" in err.schema_path:
            path.append(err.instance)  # the bad key itself, not the mapping that holds it
        message = _schema_message(err, path)
        out.append(Problem(file, json_path(path), message))
    return sorted(set(out), key=out.index)


def _schema_message(err: jsonschema.ValidationError, path: list) -> str:
    last = path[-1] if path else None
    if err.validator == "pattern":
        if path == ["name"]:
            key = "lab"
        elif last in ("organization", "rate"):
            key = last
        else:
            key = "name"
        return f"{err.instance!r} {_PATTERN_HINTS[key]}"
    if err.validator == "enum":
        choices = ", ".join(json.dumps(c) for c in err.validator_value)
        return f"{json.dumps(err.instance)} is not one of {choices}"
    if err.validator == "const" and err.validator_value is False:
        return "true is not allowed: give a prefix, or false for none"
    if err.validator == "type" and isinstance(err.instance, bool) and err.validator_value != "boolean":
        return f"{err.instance!r} is not of type {err.validator_value!r}"
    if err.validator in ("minItems", "maxItems") and (
            last == "between" or (len(path) == 2 and path[0] in ("links", "blocked"))):
        return f"{err.instance!r} is not a pair of two names"
    return err.message


# ---------------------------------------------------------------- the semantic rules


class _Check:
    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def add(self, path, message: str) -> None:
        self.problems.append(Problem(self.file, json_path(path), message))


def _dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x) -> list:
    return x if isinstance(x, list) else []


def _str(x) -> str | None:
    return x if isinstance(x, str) else None


@dataclass
class _RawSegment:
    name: str
    kind: str
    path: list  # where the segment is defined
    name_path: list | None  # where its name is written (None: automatic)
    members: list[tuple[str, list]]  # (name, path)
    spec: dict
    ipv4: IPv4Network | bool | None = True  # True: automatic; None: none
    ipv6: IPv6Network | bool | None = True


def _build(doc: dict, check: _Check) -> Topology | None:
    lab = _str(doc.get("name"))
    opts = _options(_dict(doc.get("options")))
    nodes_raw = {k: _dict(v) for k, v in _dict(doc.get("nodes")).items() if isinstance(k, str)}
    nat_raw = {k: _dict(v) for k, v in _dict(doc.get("nat")).items() if isinstance(k, str)}
    problems_before = len(check.problems)

    # Names: nodes and NAT routers share one space; "sw" names the switch.
    for kind, names in (("nodes", nodes_raw), ("nat", nat_raw)):
        for name in names:
            if name == SWITCH:
                check.add([kind, name], f"{name!r} is reserved: the lab's switch namespace "
                          f"is <lab>-{SWITCH}")
    for name in nat_raw:
        if name in nodes_raw:
            check.add(["nat", name], f"{name!r} is already a node ($.nodes.{name}); nodes and "
                      "NAT routers need different names")
    routers = {n for n in nat_raw if n not in nodes_raw}

    # NAT: who is behind which router.
    behind: dict[str, tuple[str, list]] = {}
    for r, spec in nat_raw.items():
        if r not in routers:
            continue
        for j, n in enumerate(_list(spec.get("inside"))):
            p = ["nat", r, "inside", j]
            if not isinstance(n, str):
                continue
            if n in routers:
                check.add(p, f"{n!r} is a NAT router; only nodes can be behind NAT")
            elif n not in nodes_raw:
                check.add(p, f"{n!r} is not a node")
            elif n in behind:
                check.add(p, f"{n!r} is already behind NAT router {behind[n][0]!r} "
                          f"({json_path(behind[n][1])}); a node behind NAT has exactly one upstream")
            else:
                behind[n] = (r, p)

    segments = _segments(doc, check)
    seg_by_name = {s.name: s for s in segments}

    # Members: known, once per segment; nodes behind NAT are on nothing else.
    known = set(nodes_raw) | routers
    attach: dict[str, list[tuple[_RawSegment, list]]] = {n: [] for n in known}
    for seg in segments:
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
            if m in behind:
                r, rp = behind[m]
                check.add(p, f"{m!r} is behind NAT router {r!r} ({json_path(rp)}); a node behind "
                          "NAT has exactly one upstream, its NAT router")
                continue
            attach[m].append((seg, p))
    for n in nodes_raw:
        if n not in behind and n in attach and not attach[n]:
            check.add(["nodes", n], f"{n!r} is on no LAN or link and behind no NAT router; it "
                      "needs an upstream")
    for r in sorted(routers, key=list(nat_raw).index):
        legs = attach[r]
        if not legs:
            check.add(["nat", r], f"NAT router {r!r} is on no LAN or link; it needs exactly one "
                      "outside leg")
        for _seg, p in legs[1:]:
            first_seg, first_p = legs[0]
            check.add(p, f"NAT router {r!r} is already on {KINDS[first_seg.kind]} "
                      f"{first_seg.name!r} ({json_path(first_p)}); a NAT router has exactly one "
                      "outside leg")

    # Interface names must fit (the switch holds the long ones).
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

    # Addresses written out, and overlaps among them.
    owned: list[tuple[Prefix, str, list]] = []
    for seg in segments:
        _segment_addresses(seg, check)
        for fam in ("ipv4", "ipv6"):
            net = getattr(seg, fam)
            if isinstance(net, IPv4Network | IPv6Network):
                owned.append((net, f"{KINDS[seg.kind]} {seg.name}", [*seg.path, fam]))
    networks: dict[str, IPv6Interface | None] = {}
    prefixes: dict[str, tuple[Prefix, ...] | None] = {}
    for n, spec in nodes_raw.items():
        base = ["nodes", n]
        text = _str(spec.get("network"))
        networks[n] = None
        if text is not None:
            net, err = parse_network(text)
            if err:
                check.add([*base, "network"], err)
            else:
                networks[n] = net
                owned.append((net.network, f"node {n}", [*base, "network"]))
        prefixes[n] = None
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
            prefixes[n] = tuple(found)
    for i, (net, owner, path) in enumerate(owned):
        for other, other_owner, other_path in owned[:i]:
            if other_owner != owner and net.version == other.version and net.overlaps(other):
                check.add(path, f"{net} overlaps {other} of {other_owner} ({json_path(other_path)})")
                break

    # Endpoints.
    endpoints: dict[str, list[EndpointSpec]] = {}
    outside = {r: legs[0][0] for r, legs in attach.items() if r in routers and legs}
    for n, spec in nodes_raw.items():
        legs = attach.get(n) or []
        home = outside.get(behind[n][0]) if n in behind else (legs[0][0] if legs else None)
        endpoints[n] = _endpoints(n, spec, home, behind.get(n), {s.name for s, _ in legs},
                                  seg_by_name, check)

    # Blocked pairs.
    blocked: list[tuple[str, str]] = []
    seen_pairs: dict[frozenset, int] = {}
    for i, pair in enumerate(_list(doc.get("blocked"))):
        pair = _list(pair)
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
        face_a = behind[a][0] if a in behind else a
        face_b = behind[b][0] if b in behind else b
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

    if len(check.problems) > problems_before or lab is None or not _valid_doc(doc):
        return None

    # ---------------------------------------------------------- automatic values
    g = hashlib.sha256(f"aronet-lab:{lab}".encode()).digest()
    ula = IPv6Network(((0xFD << 120) | (int.from_bytes(g[:5], "big") << 80), 48))
    taken: list[Prefix] = [net for net, _, _ in owned]

    def allocate(candidates: Iterator[Prefix], what: str, path: list):
        for net in candidates:
            if not any(net.version == t.version and net.overlaps(t) for t in taken):
                taken.append(net)
                return net
        check.add(path, f"no free {what} is left for automatic addressing; give it explicitly")
        return None

    v4_underlay = IPv4Network(f"10.{g[5]}.0.0/16")
    v4_prefixes = IPv4Network(f"172.{16 + g[6] % 16}.0.0/16")

    def v4(base: IPv4Network, start: int):
        for k in range(start, 256):
            yield IPv4Network((int(base.network_address) + (k << 8), 24))

    def v6(offset: int, start: int, stop: int):
        for k in range(start, stop):
            yield IPv6Network((int(ula.network_address) + ((offset + k) << 64), 64))

    # NAT inside links are segments too; they carry the families of the outside leg.
    for r, spec in nat_raw.items():
        seg_out = outside[r]
        for n in _list(spec.get("inside")):
            segments.append(_RawSegment(
                name=f"{r}:{n}", kind="nat", path=["nat", r], name_path=None,
                members=[(r, []), (n, [])], spec={},
                ipv4=True if seg_out.ipv4 is not None else None,
                ipv6=True if seg_out.ipv6 is not None else None))
    done_segments = []
    for k, seg in enumerate(segments, start=1):
        if seg.ipv4 is True:
            seg.ipv4 = allocate(v4(v4_underlay, k), "IPv4 /24 for the underlay", seg.path)
        if seg.ipv6 is True:
            seg.ipv6 = allocate(v6(0x1000, k, 0xF000), "IPv6 /64 for the underlay", seg.path)
        members = tuple(
            Member(m, _host(seg.ipv4, j), _host(seg.ipv6, j)) for j, (m, _) in enumerate(seg.members))
        spec = seg.spec
        done_segments.append(Segment(
            name=seg.name, kind=seg.kind, members=members, ipv4=seg.ipv4, ipv6=seg.ipv6,
            nodad=spec.get("nodad", opts.nodad), loss=spec.get("loss", 0),
            delay_ms=spec.get("delay"), rate=spec.get("rate")))

    nodes = []
    for i, (n, spec) in enumerate(nodes_raw.items(), start=1):
        net = networks[n]
        if net is None:
            sub = allocate(v6(0, i, 0x1000), "IPv6 /64 for an overlay network", ["nodes", n])
            net = IPv6Interface(f"{sub.network_address + 1}/64") if sub else None
        pfx = prefixes[n]
        if pfx is None:
            got = allocate(v4(v4_prefixes, i), "IPv4 /24 for a node prefix", ["nodes", n])
            pfx = (got,) if got else ()
        first_v4 = next((p for p in pfx if p.version == 4), None)
        extra = (next(iter(first_v4.hosts()), first_v4.network_address),) if first_v4 else ()
        nodes.append(NodeSpec(
            name=n, organization=spec["organization"], mode=spec.get("mode", opts.mode),
            routing=spec.get("routing", opts.routing),
            network=net, prefixes=pfx, extra_ip=extra, endpoints=tuple(endpoints[n]),
            port=spec.get("port", opts.port), nat=behind[n][0] if n in behind else None))

    if len(check.problems) > problems_before:
        return None
    nats = tuple(NatSpec(r, tuple(_list(spec.get("inside"))), outside[r].name)
                 for r, spec in nat_raw.items())
    return Topology(file=check.file, name=lab, options=opts, nodes=tuple(nodes), nat=nats,
                    segments=tuple(done_segments), blocked=tuple(blocked))


def _valid_doc(doc: dict) -> bool:
    return not any(True for _ in _validator().iter_errors(doc))


def _options(raw: dict) -> Options:
    babel, ike = _dict(raw.get("babel")), _dict(raw.get("ike"))
    return Options(
        mode=raw.get("mode", DEFAULT_MODE), routing=raw.get("routing"), port=raw.get("port", DEFAULT_PORT),
        nodad=raw.get("nodad", True), babel_hello=babel.get("hello_interval", LAB_BABEL_HELLO),
        babel_update=babel.get("update_interval", LAB_BABEL_UPDATE), dpd_delay=ike.get("dpd_delay"))


def _segments(doc: dict, check: _Check) -> list[_RawSegment]:
    """LANs then links, in file order, with their names checked for uniqueness."""
    out: list[_RawSegment] = []
    names: dict[str, list] = {}
    for name, spec in _dict(doc.get("lans")).items():
        if not isinstance(name, str):
            continue
        spec = _dict(spec)
        members = [(m, ["lans", name, "members", j]) for j, m in enumerate(_list(spec.get("members")))
                   if isinstance(m, str)]
        out.append(_RawSegment(name, "lan", ["lans", name], ["lans", name], members, spec))
        names[name] = ["lans", name]
    for i, raw in enumerate(_list(doc.get("links"))):
        if isinstance(raw, list):
            spec, between, bpath = {}, raw, ["links", i]
        elif isinstance(raw, dict):
            spec, between, bpath = raw, _list(raw.get("between")), ["links", i, "between"]
        else:
            continue
        explicit = _str(spec.get("name"))
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
        out.append(_RawSegment(name, "link", ["links", i], name_path, members, spec))
    return out


def _segment_addresses(seg: _RawSegment, check: _Check) -> None:
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


def _host(net: IPv4Network | IPv6Network | None, index: int):
    if net is None:
        return None
    return ipaddress.ip_interface(f"{net.network_address + index + 1}/{net.prefixlen}")


def _endpoints(n: str, spec: dict, home: _RawSegment | None, nat: tuple[str, list] | None,
               on: set[str], segs: dict[str, _RawSegment], check: _Check) -> list[EndpointSpec]:
    """A node's endpoints: given ones checked, or one per family of its first
    attachment (behind NAT: of the router's outside leg)."""
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
        p = ["nodes", n, "endpoints", i]
        if isinstance(ep, str):
            family, via = ep, None
        elif isinstance(ep, dict) and isinstance(ep.get("family"), str):
            family, via = ep["family"], _str(ep.get("via"))
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
            check.add(p, f"the same endpoint as $.nodes.{n}.endpoints[{seen[item]}]")
            continue
        seen[item] = i
        out.append(item)
    return out


# ================================================================ names


def namespace(lab: str, name: str) -> str:
    return f"{lab}-{name}"


def switch_namespace(lab: str) -> str:
    return namespace(lab, SWITCH)


def bridge_name(segment: str) -> str:
    return f"br-{segment}"


def port_name(segment: str, member: str) -> str:
    return f"{segment}-{member}"


def agent_ifname(lab: str, node: str) -> str:
    """daemon.ifname of a netns-mode node: it names the agent's router namespace,
    which is global, so it is unique per lab and node (10 bytes, as the schema allows)."""
    return "ar" + hashlib.sha256(f"{lab}/{node}".encode()).hexdigest()[:8]


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


def plan_lab(t: Topology) -> LabPlan:
    lab = t.name
    sw = switch_namespace(lab)
    counters: dict[str, int] = {}
    ifaces: dict[str, list[Interface]] = {}
    bridges, veths, addresses, seg_plans, netems = [], [], [], [], []

    for seg in t.segments:
        bridge = bridge_name(seg.name) if seg.switched else None
        if bridge:
            bridges.append(Bridge(sw, bridge, seg.name))
        ports = []
        ends = []
        for m in seg.members:
            counters[m.name] = counters.get(m.name, 0) + 1
            port = port_name(seg.name, m.name) if seg.switched else None
            ports.append(port)
            iface = Interface(seg.name, m.name, namespace(lab, m.name), f"eth{counters[m.name]}",
                              m.ipv4, m.ipv6, port)
            ifaces.setdefault(m.name, []).append(iface)
            ends.append(iface)
            if m.ipv4:
                addresses.append(Address(iface.ns, iface.name, str(m.ipv4)))
            if m.ipv6:
                addresses.append(Address(iface.ns, iface.name, str(m.ipv6), nodad=seg.nodad))
            if port:
                veths.append(Veth(sw, port, iface.ns, iface.name, bridge))
                if seg.delay_ms is not None or seg.rate is not None:
                    netems.append(Netem(sw, port, seg.delay_ms, seg.rate))
        if not seg.switched:
            router_end, node_end = ends
            veths.append(Veth(router_end.ns, router_end.name, node_end.ns, node_end.name))
        seg_plans.append(SegmentPlan(seg.name, seg.kind, bridge, tuple(m.name for m in seg.members),
                                     tuple(ports), seg.loss, seg.delay_ms, seg.rate))

    routes: list[Route] = []
    sysctls = [Sysctl(sw, "net.ipv6.conf.all.disable_ipv6", "1"),
               Sysctl(sw, "net.ipv6.conf.default.disable_ipv6", "1")]
    rulesets = []
    routers = []
    for r in t.nat:
        mine = ifaces[r.name]
        out_iface = next(i for i in mine if i.segment == r.outside)
        inside = tuple(i for i in mine if i is not out_iface)
        routers.append(RouterPlan(r.name, namespace(lab, r.name), out_iface, inside))
        ns = namespace(lab, r.name)
        sysctls += [Sysctl(ns, "net.ipv4.ip_forward", "1"),
                    Sysctl(ns, "net.ipv6.conf.all.forwarding", "1")]
        if out_iface.ipv4:
            routes.append(Route(ns, "0.0.0.0/0", out_iface.name))
        if out_iface.ipv6:
            routes.append(Route(ns, "::/0", out_iface.name))
        rulesets.append(Ruleset(ns, "inet", TABLE, _nat_batch(out_iface.name)))
        for leg in inside:
            node_if = next(i for i in ifaces[t.segment(leg.segment).members[1].name]
                           if i.segment == leg.segment)
            if leg.ipv4:
                routes.append(Route(node_if.ns, "0.0.0.0/0", node_if.name, str(leg.ipv4.ip)))
            if leg.ipv6:
                routes.append(Route(node_if.ns, "::/0", node_if.name, str(leg.ipv6.ip)))

    node_plans = []
    for n in t.nodes:
        ns = namespace(lab, n.name)
        mine = tuple(ifaces.get(n.name, ()))
        config = _config_doc(t, n, mine)
        agent_ns = config["daemon"]["ifname"] if n.mode == "netns" else ns
        extra = tuple(str(a) for a in n.extra_ip)
        overlay = str(node_address(n.network))
        node_plans.append(NodePlan(
            name=n.name, organization=n.organization, mode=n.mode, ns=ns, agent_ns=agent_ns,
            port=n.port, nat=n.nat, interfaces=mine, network=str(n.network),
            overlay_address=overlay, extra_ip=extra, ping_targets=(*extra, overlay), config=config))

    plan = LabPlan(
        lab=lab, file=t.file, switch_ns=sw,
        namespaces=(sw, *(namespace(lab, r.name) for r in t.nat),
                    *(namespace(lab, n.name) for n in t.nodes)),
        nodes=tuple(node_plans), routers=tuple(routers), segments=tuple(seg_plans),
        bridges=tuple(bridges), veths=tuple(veths), addresses=tuple(addresses),
        routes=tuple(routes), sysctls=tuple(sysctls), rulesets=(), netems=tuple(netems),
        organizations=tuple(sorted({n.organization for n in t.nodes})))
    switch_rules = Ruleset(sw, "bridge", TABLE, _switch_batch(plan, t))
    return dataclasses.replace(plan, rulesets=(switch_rules, *rulesets))


def _config_doc(t: Topology, n: NodeSpec, ifaces: tuple[Interface, ...]) -> dict:
    """The node's config.json, as aronet reads it. private_key points at the key
    file write_lab_files puts next to the node directories."""
    endpoints = []
    for ep in n.endpoints:
        if n.nat:
            endpoints.append({"address": None, "address_family": ep.family, "port": n.port})
            continue
        iface = next(i for i in ifaces if i.segment == ep.via)
        addr = iface.ipv4 if ep.family == "ip4" else iface.ipv6
        endpoints.append({"address": str(addr.ip), "port": n.port})
    daemon: dict = {
        "network": str(n.network),
        "prefixs": [str(p) for p in n.prefixes],
        "mode": n.mode,
        **({"routing": n.routing} if n.routing else {}),
        "extra_ip": [str(a) for a in n.extra_ip],
    }
    if n.mode == "netns":
        daemon["ifname"] = agent_ifname(t.name, n.name)
    o = t.options
    babel = {k: v for k, v in (("hello_interval", o.babel_hello),
                               ("update_interval", o.babel_update)) if v is not None}
    if babel:
        daemon["babel"] = babel
    if o.dpd_delay is not None:
        daemon["ike"] = {"dpd_delay": o.dpd_delay}
    return {
        "private_key": key_reference(n.organization),
        "organization": n.organization,
        "common_name": n.name,
        "daemon": daemon,
        "endpoints": endpoints,
    }


def key_reference(organization: str) -> str:
    """private_key in a node's config.json: relative to <dir>/<node>/."""
    return f"../keys/{organization}.pem"


# ---------------------------------------------------------------- nft (libnftables JSON)


def _table(family: str) -> dict:
    return {"table": {"family": family, "name": TABLE}}


def _chain(family: str, name: str, hook: str | None = None, type_: str = "filter",
           prio: int = 0) -> dict:
    c = {"family": family, "table": TABLE, "name": name}
    if hook:
        c.update(type=type_, hook=hook, prio=prio, policy="accept")
    return {"chain": c}


def _rule(family: str, chain: str, *expr: dict, comment: str | None = None) -> dict:
    r = {"family": family, "table": TABLE, "chain": chain, "expr": list(expr)}
    if comment:
        r["comment"] = comment
    return {"rule": r}


def _names(values) -> object:
    values = sorted(set(values))
    return values[0] if len(values) == 1 else {"set": values}


def _batch(family: str, objects: list[dict]) -> str:
    """Replace the table atomically: add (so delete cannot fail), delete, create."""
    table = _table(family)
    return json.dumps({"nftables": [{"add": table}, {"delete": table}, {"add": table},
                                    *({"add": o} for o in objects)]}, sort_keys=True)


def _nat_batch(outside: str) -> str:
    fam = "inet"
    return _batch(fam, [
        _chain(fam, "postrouting", "postrouting", "nat", 100),
        _chain(fam, "forward", "forward"),
        _rule(fam, "postrouting", match(meta("oifname"), outside), {"masquerade": None},
              comment="masquerade"),
        # As a home router: nothing from outside starts a connection inside.
        _rule(fam, "forward", match(meta("iifname"), outside),
              match({"ct": {"key": "state"}}, {"set": ["established", "related"]}, "!="),
              {"drop": None}, comment="no unsolicited inbound"),
    ])


SWITCH_CHAINS = ("blocked", "loss", "fault")  # fault: partitions and ESP drops; heal flushes it


def _switch_batch(plan: LabPlan, t: Topology) -> str:
    fam = "bridge"
    objects = [_chain(fam, "forward", "forward")]
    objects += [_chain(fam, c) for c in SWITCH_CHAINS]
    objects += [_rule(fam, "forward", {"jump": {"target": c}}) for c in SWITCH_CHAINS]
    for a, b in t.blocked:
        objects += _between(plan, "blocked", a, b, (), f"blocked {_pair(a, b)}")
    for seg in plan.segments:
        if seg.loss:
            objects.append(loss_rule(plan, seg.name, seg.loss))
    return _batch(fam, objects)


def _pair(a: str, b: str) -> str:
    return " ".join(sorted((a, b)))


def _between(plan: LabPlan, chain: str, a: str, b: str, expr: tuple, comment: str) -> list[dict]:
    """Rules in the switch's chain that drop frames from a's ports to b's and back,
    when they also match expr."""
    pa, pb = plan.ports_of(a), plan.ports_of(b)
    if plan.face(a) == plan.face(b):
        raise ValueError(f"{a!r} and {b!r} meet at NAT router {plan.face(a)!r}, not on the switch")
    if not pa or not pb:
        raise ValueError(f"{a if not pa else b!r} has no switch port")
    out = []
    for src, dst in ((pa, pb), (pb, pa)):
        out.append(_rule("bridge", chain, match(meta("iifname"), _names(src)),
                         match(meta("oifname"), _names(dst)), *expr, {"drop": None},
                         comment=comment))
    return out


def loss_rule(plan: LabPlan, segment: str, pct: int) -> dict:
    """Drop pct % of the frames entering the segment's bridge (so pct each way)."""
    seg = plan.segment(segment)
    if not seg.bridge:
        raise ValueError(f"{segment!r} is a NAT inside link; loss applies to LANs and links")
    if not 0 <= pct <= 100:
        raise ValueError(f"loss {pct} is not a percentage")
    ports = [p for p in seg.ports if p]
    # numgen mod 100 yields 0..99, and nft refuses "< 100": 100 % is a plain drop.
    chance = () if pct == 100 else (
        match({"numgen": {"mode": "random", "mod": 100, "offset": 0}}, pct, "<"),)
    return _rule("bridge", "loss", match(meta("iifname"), _names(ports)), *chance,
                 {"drop": None}, comment=f"loss {segment}")


def partition_rules(plan: LabPlan, a: str, b: str) -> list[dict]:
    return _between(plan, "fault", a, b, (), f"partition {_pair(a, b)}")


def drop_esp_rules(plan: LabPlan, a: str, b: str) -> list[dict]:
    """ESP-in-UDP between a and b: UDP on either's NAT-T port whose first 4 payload
    bytes are non-zero (IKE there starts with the 4 zero bytes of the non-ESP
    marker; a 1-byte NAT-T keepalive is too short to match)."""
    ports = _names({_port(plan, a), _port(plan, b)})
    comment = f"drop-esp {_pair(a, b)}"
    not_ike = match({"payload": {"base": "th", "offset": 64, "len": 32}}, 0, "!=")
    out = []
    for field_ in ("dport", "sport"):
        port = match({"payload": {"protocol": "udp", "field": field_}}, ports)
        out += _between(plan, "fault", a, b, (port, not_ike), comment)
    return out


def _port(plan: LabPlan, name: str) -> int:
    for n in plan.nodes:
        if n.name == name:
            return n.port
    raise ValueError(f"{name!r} is not a node")


# ================================================================ keys, configs, registry


def lab_configs(plan: LabPlan, org_keys: Mapping[str, bytes | str]) -> list[Config]:
    """Each node's Config as the agent would load it, with its organization's key
    inline (org_keys: organization -> private PEM). Pure."""
    configs = []
    for n in plan.nodes:
        doc = copy.deepcopy(n.config)
        pem = org_keys[n.organization]
        doc["private_key"] = pem.decode() if isinstance(pem, bytes) else pem
        configs.append(build_config(doc, f"{plan.lab}/{n.name}/config.json"))
    return configs


def lab_registry(plan: LabPlan, org_keys: Mapping[str, bytes | str]) -> list[dict]:
    """registry.json for the lab, from aronet.core.registry.registry_document."""
    return registry_document(lab_configs(plan, org_keys))


@dataclass(frozen=True)
class LabFiles:
    directory: str
    registry: str
    configs: dict[str, str] = field(hash=False)  # node -> config.json
    keys: dict[str, str] = field(hash=False)  # organization -> key file


def write_lab_files(plan: LabPlan, directory: str | os.PathLike) -> LabFiles:
    """<dir>/keys/<org>.pem (new Ed25519 keys, mode 0600), <dir>/<node>/config.json
    and <dir>/registry.json. The configs are read back with aronet.load, as the
    agent will read them, and the registry is built from them and checked."""
    directory = str(directory)
    key_dir = os.path.join(directory, "keys")
    os.makedirs(key_dir, mode=0o700, exist_ok=True)
    key_files = {}
    for org in plan.organizations:
        key_files[org] = os.path.join(key_dir, f"{org}.pem")
        keys.write_private(key_files[org], keys.generate(), force=True)
    config_files = {}
    for n in plan.nodes:
        path = os.path.join(directory, n.name, "config.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_json(path, n.config)
        config_files[n.name] = path
    registry_path = os.path.join(directory, "registry.json")
    document = registry_document([load_config(config_files[n.name]) for n in plan.nodes])
    build_registry(document, registry_path)  # the lab never writes a registry aronet refuses
    _write_json(registry_path, document)
    return LabFiles(directory, registry_path, config_files, key_files)


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
