"""plan_lab: the underlay a Topology needs, and each node's config.json. Pure.

Every LAN and every link is a bridge in the switch namespace, so loss, delay,
blocks, partitions and ESP drops all happen there, and a node's own namespace holds
nothing of the lab's but its veths. A NAT router has one outside leg and a direct
veth to each node behind it.
"""

from __future__ import annotations

import dataclasses

from aronet.model import node_address

from .model import (
    Address,
    Bridge,
    Interface,
    LabPlan,
    Netem,
    NodePlan,
    NodeSpec,
    Route,
    RouterPlan,
    Ruleset,
    SegmentPlan,
    Sysctl,
    Topology,
    Veth,
)
from .names import TABLE, agent_ifname, bridge_name, key_reference, namespace, port_name, switch_namespace
from .nft import nat_batch, switch_batch


@dataclasses.dataclass
class _Wiring:
    """What the segments make: every member's interfaces, and the switch's side."""

    ifaces: dict[str, list[Interface]] = dataclasses.field(default_factory=dict)
    bridges: list[Bridge] = dataclasses.field(default_factory=list)
    veths: list[Veth] = dataclasses.field(default_factory=list)
    addresses: list[Address] = dataclasses.field(default_factory=list)
    segments: list[SegmentPlan] = dataclasses.field(default_factory=list)
    netems: list[Netem] = dataclasses.field(default_factory=list)


def plan_lab(t: Topology) -> LabPlan:
    lab = t.name
    sw = switch_namespace(lab)
    w = _wire(t, sw)
    routes: list[Route] = []
    sysctls = [Sysctl(sw, "net.ipv6.conf.all.disable_ipv6", "1"),
               Sysctl(sw, "net.ipv6.conf.default.disable_ipv6", "1")]
    rulesets: list[Ruleset] = []
    routers = [_router(t, r.name, r.outside, w, routes, sysctls, rulesets) for r in t.nat]
    node_plans = [_node(t, n, tuple(w.ifaces.get(n.name, ()))) for n in t.nodes]

    plan = LabPlan(
        lab=lab, file=t.file, switch_ns=sw,
        namespaces=(sw, *(namespace(lab, r.name) for r in t.nat),
                    *(namespace(lab, n.name) for n in t.nodes)),
        nodes=tuple(node_plans), routers=tuple(routers), segments=tuple(w.segments),
        bridges=tuple(w.bridges), veths=tuple(w.veths), addresses=tuple(w.addresses),
        routes=tuple(routes), sysctls=tuple(sysctls), rulesets=(), netems=tuple(w.netems),
        organizations=tuple(sorted({n.organization for n in t.nodes})))
    switch_rules = Ruleset(sw, "bridge", TABLE, switch_batch(plan, t))
    return dataclasses.replace(plan, rulesets=(switch_rules, *rulesets))


def _wire(t: Topology, sw: str) -> _Wiring:
    """Each segment: a bridge in the switch with a veth to each member, or (a NAT
    inside link) one veth from the router to the node; the members' addresses."""
    w = _Wiring()
    counters: dict[str, int] = {}
    for seg in t.segments:
        bridge = bridge_name(seg.name) if seg.switched else None
        if bridge:
            w.bridges.append(Bridge(sw, bridge, seg.name))
        ports = []
        ends = []
        for m in seg.members:
            counters[m.name] = counters.get(m.name, 0) + 1
            port = port_name(seg.name, m.name) if seg.switched else None
            ports.append(port)
            iface = Interface(seg.name, m.name, namespace(t.name, m.name), f"eth{counters[m.name]}",
                              m.ipv4, m.ipv6, port)
            w.ifaces.setdefault(m.name, []).append(iface)
            ends.append(iface)
            if m.ipv4:
                w.addresses.append(Address(iface.ns, iface.name, str(m.ipv4)))
            if m.ipv6:
                w.addresses.append(Address(iface.ns, iface.name, str(m.ipv6), nodad=seg.nodad))
            if port:
                w.veths.append(Veth(sw, port, iface.ns, iface.name, bridge))
                if seg.delay_ms is not None or seg.rate is not None:
                    w.netems.append(Netem(sw, port, seg.delay_ms, seg.rate))
        if not seg.switched:
            router_end, node_end = ends
            w.veths.append(Veth(router_end.ns, router_end.name, node_end.ns, node_end.name))
        w.segments.append(SegmentPlan(seg.name, seg.kind, bridge, tuple(m.name for m in seg.members),
                                      tuple(ports), seg.loss, seg.delay_ms, seg.rate))
    return w


def _router(t: Topology, name: str, outside: str, w: _Wiring, routes: list[Route],
            sysctls: list[Sysctl], rulesets: list[Ruleset]) -> RouterPlan:
    """A NAT router: forwarding on, a default route out of its outside leg, its NAT
    table; and the default routes of the nodes behind it, through it."""
    mine = w.ifaces[name]
    out_iface = next(i for i in mine if i.segment == outside)
    inside = tuple(i for i in mine if i is not out_iface)
    ns = namespace(t.name, name)
    sysctls += [Sysctl(ns, "net.ipv4.ip_forward", "1"),
                Sysctl(ns, "net.ipv6.conf.all.forwarding", "1")]
    if out_iface.ipv4:
        routes.append(Route(ns, "0.0.0.0/0", out_iface.name))
    if out_iface.ipv6:
        routes.append(Route(ns, "::/0", out_iface.name))
    rulesets.append(Ruleset(ns, "inet", TABLE, nat_batch(out_iface.name)))
    for leg in inside:
        node_if = next(i for i in w.ifaces[t.segment(leg.segment).members[1].name]
                       if i.segment == leg.segment)
        if leg.ipv4:
            routes.append(Route(node_if.ns, "0.0.0.0/0", node_if.name, str(leg.ipv4.ip)))
        if leg.ipv6:
            routes.append(Route(node_if.ns, "::/0", node_if.name, str(leg.ipv6.ip)))
    return RouterPlan(name, ns, out_iface, inside)


def _node(t: Topology, n: NodeSpec, mine: tuple[Interface, ...]) -> NodePlan:
    ns = namespace(t.name, n.name)
    config = config_doc(t, n, mine)
    agent_ns = config["daemon"]["ifname"] if n.mode == "netns" else ns
    extra = tuple(str(a) for a in n.extra_ip)
    overlay = str(node_address(n.network))
    return NodePlan(
        name=n.name, organization=n.organization, mode=n.mode, ns=ns, agent_ns=agent_ns,
        port=n.port, nat=n.nat, interfaces=mine, network=str(n.network),
        overlay_address=overlay, extra_ip=extra, ping_targets=(*extra, overlay), config=config)


def config_doc(t: Topology, n: NodeSpec, ifaces: tuple[Interface, ...]) -> dict:
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
    babel = {k: v for k, v in (("hello_interval", n.babel_hello),
                               ("update_interval", n.babel_update)) if v is not None}
    if n.babel_prefix_origin:
        babel["prefix_origin"] = True
    if babel:
        daemon["babel"] = babel
    if n.dpd_delay is not None:
        daemon["ike"] = {"dpd_delay": n.dpd_delay}
    return {
        "private_key": key_reference(n.organization),
        "organization": n.organization,
        "common_name": n.name,
        "daemon": daemon,
        "endpoints": endpoints,
    }
