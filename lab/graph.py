"""A picture of a lab: Graphviz DOT of its nodes, NAT routers, LANs and links, and the
overlay tunnels between the nodes, with their live state when the lab runs.

to_dot(plan, statuses) is pure: it turns a LabPlan (lab.topology) and, optionally,
every agent's status (lab.run.statuses: {"org/cn": status}) into DOT text. Only
render() does I/O: it writes the text, or an image made by Graphviz's `dot`.

What is drawn:
  nodes        a box per node: name, organization and mode, overlay network, prefixes
               (filled by mode; a red border when its agent gave no status)
  NAT routers  a grey hexagon with its outside address
  underlay     LANs as dashed ellipses with their subnets, links and NAT inside links as
               edges between their members; all thin and grey, addresses as labels
  tunnels      one edge per IKE connection pair (one per local x remote endpoint of the
               same family, as the planner makes them), between the two nodes:
                 no statuses: grey, "planned" (the lab is not running)
                 established: green, labelled with the babel metric each end sees
                 CHILD_SA not INSTALLED or interface down at either end: red, dashed,
                   labelled "down" (the tooltip says which end and why)
                 up without a babel neighbour yet: orange
  via routes   (via_routes=True) a dotted blue arrow from a node to a peer whose
               network babel reaches through a third node's tunnel, labelled "via X"

Which tunnels exist comes from the planner itself (aronet.core.planner.desired on
each node's config), so the picture shows exactly the connections the agents make.
The planner needs the organizations' public keys, which names and tunnels do not
depend on: to_dot uses fixed stand-in keys, so it needs no lab files and its output
is deterministic.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aronet import keys
from aronet.core import planner
from aronet.core.registry import registry_document
from aronet.core.state import Connection
from aronet.core.status import Route, Status
from aronet.errors import AronetError
from aronet.load import build_registry

from .topology import LabPlan, lab_configs

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}
DOT_SUFFIXES = (".dot", ".gv")

# colours
UP = "#2e7d32"
DOWN = "#c62828"
PARTIAL = "#ef6c00"
PLANNED = "#9e9e9e"
UNDERLAY = "#b0b0b0"
VIA = "#1565c0"
FILL = {"vrf": "#dbe9f6", "netns": "#e3f1df"}


@dataclass(frozen=True)
class TunnelEnd:
    node: str  # the node's name in the plan (its common name)
    name: str  # its XFRM interface / connection name
    initiates: bool


@dataclass(frozen=True)
class Tunnel:
    """One IKE connection as both ends know it."""

    family: str
    a: TunnelEnd
    b: TunnelEnd
    ids: tuple[str, str] = field(compare=False)  # the IKE identities of a and b


# ---------------------------------------------------------------- planned tunnels


def _stand_in_key(organization: str) -> bytes:
    """A fixed Ed25519 key per organization: the planner wants one, the tunnels and
    their names do not depend on it."""
    seed = hashlib.sha256(f"aronet-lab graph:{organization}".encode()).digest()
    return keys.private_pem(Ed25519PrivateKey.from_private_bytes(seed))


def planned_tunnels(plan: LabPlan) -> list[Tunnel]:
    """Every connection the planner gives the lab's nodes, paired across the two ends
    (a connection's identities are its local and remote IKE ids). Pure."""
    configs = lab_configs(plan, {o: _stand_in_key(o) for o in plan.organizations})
    registry = build_registry(registry_document(configs), f"{plan.lab}/registry.json")
    short = {f"{n.organization}/{n.name}": n.name for n in plan.nodes}
    ends: dict[frozenset, list[tuple[Connection, str]]] = {}
    for config in configs:
        for c in planner.desired(config, registry).state.of(Connection):
            ends.setdefault(frozenset((c.local_id, c.remote_id)), []).append(
                (c, short[config.node.name]))
    tunnels = []
    for pair in ends.values():
        (c1, n1), (c2, n2) = sorted(pair, key=lambda e: e[1])  # the planner pairs them all
        tunnels.append(Tunnel(c1.family, TunnelEnd(n1, c1.name, c1.initiate),
                              TunnelEnd(n2, c2.name, c2.initiate), (c1.local_id, c1.remote_id)))
    return sorted(tunnels, key=lambda t: (t.a.node, t.b.node, t.family, t.ids))


# ---------------------------------------------------------------- DOT text


def _q(text: object) -> str:
    """A DOT double-quoted string; "\\n" written by this module stays a line break."""
    s = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def _attrs(**attrs) -> str:
    items = [f"{k}={_q(v)}" for k, v in attrs.items() if v is not None]
    return f" [{', '.join(items)}]" if items else ""


def _nid(name: str) -> str:
    return _q(f"node:{name}")


def _rid(name: str) -> str:
    return _q(f"nat:{name}")


def _sid(name: str) -> str:
    return _q(f"seg:{name}")


def _blocked_pairs(plan: LabPlan) -> set[frozenset]:
    """Pairs the switch blocks (topology `blocked:`), from the comments of the switch's
    rules: their direct tunnels cannot come up."""
    out = set()
    for rs in plan.rulesets:
        if rs.ns != plan.switch_ns:
            continue
        for obj in json.loads(rs.batch).get("nftables", []):
            comment = obj.get("add", {}).get("rule", {}).get("comment", "")
            if comment.startswith("blocked "):
                out.add(frozenset(comment.split()[1:]))
    return out


def _end_view(status: Status | None, end: TunnelEnd) -> tuple[bool, str, int | None]:
    """(up, what is wrong or its state, babel metric) of one end of a tunnel."""
    if status is None:
        return False, f"{end.node}: no status from its agent", None
    if status.error is not None:
        return False, f"{end.node}: {status.error}", None
    _, t = status.tunnels().get(end.name, (None, None))
    if t is None:
        return False, f"{end.node}: {end.name} not in its status", None
    state = (f"{end.node} {end.name}: IKE {t.ike}, CHILD_SA {t.child}, "
             f"interface {'up' if t.interface_up else 'down'}, babel metric {t.babel_metric}")
    return t.up, state, t.babel_metric


def _tunnel_edge(t: Tunnel, statuses: dict[str, Status] | None, ident: dict[str, str], blocked: bool) -> str:
    who = f"{t.a.node} {t.a.name} -- {t.b.node} {t.b.name} ({t.family})"
    initiators = [e.node for e in (t.a, t.b) if e.initiates]
    role = f"; {' and '.join(initiators)} initiates" if initiators else ""
    note = " (blocked on the underlay)" if blocked else ""
    common = {"fontsize": "9"}
    if statuses is None:
        attrs = {**common, "color": PLANNED, "fontcolor": PLANNED, "style": "dotted" if blocked
                 else "solid", "penwidth": "1.2", "label": f"{t.family}{' blocked' if blocked else ''}",
                 "tooltip": f"planned: {who}{role}{note}"}
    else:
        views = [_end_view(statuses.get(ident[e.node]), e) for e in (t.a, t.b)]
        detail = "\n".join(v[1] for v in views)
        metrics = [v[2] for v in views]
        if not all(v[0] for v in views):
            attrs = {**common, "color": DOWN, "fontcolor": DOWN, "style": "dashed", "penwidth": "2",
                     "label": "down" + (" (blocked)" if blocked else ""),
                     "tooltip": f"down: {who}{role}{note}\n{detail}"}
        elif None in metrics:
            attrs = {**common, "color": PARTIAL, "fontcolor": PARTIAL, "style": "solid",
                     "penwidth": "2", "label": f"{t.family} up, no babel neighbour",
                     "tooltip": f"up, babel not yet: {who}{role}\n{detail}"}
        else:
            m = str(metrics[0]) if metrics[0] == metrics[1] else f"{metrics[0]}/{metrics[1]}"
            attrs = {**common, "color": UP, "fontcolor": UP, "style": "solid", "penwidth": "2.5",
                     "label": f"{t.family} metric {m}", "tooltip": f"established: {who}{role}\n{detail}"}
    return f"  {_nid(t.a.node)} -- {_nid(t.b.node)}{_attrs(**attrs)};"


def _via_edges(plan: LabPlan, statuses: dict[str, Status]) -> list[str]:
    """A node's routes to a peer whose next hop is a tunnel to another node."""
    short = {f"{n.organization}/{n.name}": n.name for n in plan.nodes}
    lines = []
    for n in plan.nodes:
        status = statuses.get(f"{n.organization}/{n.name}")
        if status is None or status.error is not None:
            continue
        peer_of = {name: p.peer for name, (p, _) in status.tunnels().items()}
        via: dict[tuple[str, str], list[Route]] = {}
        for p in status.peers:
            for r in p.routes:
                hop = peer_of.get(r.interface)
                if hop and hop != p.peer and p.peer in short and hop in short:
                    via.setdefault((short[p.peer], short[hop]), []).append(r)
        for (owner, hop), routes in sorted(via.items()):
            metric = min((r.metric for r in routes if r.metric is not None), default=None)
            prefixes = ", ".join(sorted(r.prefix for r in routes))
            lines.append(f"  {_nid(n.name)} -- {_nid(owner)}" + _attrs(
                color=VIA, fontcolor=VIA, style="dotted", dir="forward", arrowsize="0.6",
                constraint="false", fontsize="8", penwidth="1.2", label=f"via {hop}",
                tooltip=f"{n.name} reaches {owner} ({prefixes}) through {hop}, metric {metric}")
                + ";")
    return lines


def _segment_subnets(plan: LabPlan, segment: str) -> list[str]:
    nets = {str(a.network) for n in (*plan.nodes, *plan.routers)
            for i in _interfaces(n) if i.segment == segment for a in (i.ipv4, i.ipv6) if a}
    return sorted(nets, key=lambda s: (ipaddress.ip_network(s).version, s))


def _interfaces(member) -> tuple:
    if hasattr(member, "interfaces"):
        return member.interfaces
    return (member.outside, *member.inside)


def _faults(seg) -> list[str]:
    out = []
    if seg.loss:
        out.append(f"loss {seg.loss}%")
    if seg.delay_ms is not None:
        out.append(f"delay {seg.delay_ms:g} ms")
    if seg.rate is not None:
        out.append(f"rate {seg.rate}")
    return out


def _member_id(plan: LabPlan, name: str) -> str:
    return _rid(name) if any(r.name == name for r in plan.routers) else _nid(name)


def _iface_label(plan: LabPlan, member: str, segment: str) -> tuple[str, str]:
    """(short label, tooltip) of a member's interface on a segment."""
    holder = next((n for n in (*plan.nodes, *plan.routers) if n.name == member), None)
    for i in _interfaces(holder) if holder else ():
        if i.segment == segment:
            addrs = [str(a.ip) for a in (i.ipv4, i.ipv6) if a]
            short = f"{i.name} {addrs[0]}" if addrs else i.name
            return short, f"{member} {i.name} ({i.ns}): {', '.join(addrs) or 'no address'}"
    return "", member


def to_dot(plan: LabPlan, statuses: dict[str, Status] | None = None, *, via_routes: bool = True) -> str:
    """The lab as a Graphviz graph. statuses: {"org/cn": agent status} as lab.run.statuses
    returns it (an agent that does not answer has a Status with its error), or None when
    the lab does not run: then the planned tunnels are grey."""
    ident = {n.name: f"{n.organization}/{n.name}" for n in plan.nodes}
    blocked = _blocked_pairs(plan)
    live = statuses is not None
    title = (f"lab {plan.lab}: " + (
        "live tunnels\ngreen: established (babel metric); red dashed: down; "
        "blue dotted: route through a third node; grey: underlay" if live
        else "planned tunnels (the lab is not running)\ngrey: underlay"))
    lines = [
        f"graph {_q(plan.lab)} {{",
        "  graph" + _attrs(label=title, labelloc="t", fontname="Helvetica", fontsize="12",
                           outputorder="edgesfirst") + ";",
        f"  node{_attrs(fontname='Helvetica', fontsize='10')};",
        f"  edge{_attrs(fontname='Helvetica', fontsize='9')};",
        "",
        "  // nodes",
    ]
    for n in plan.nodes:
        prefixes = n.config.get("daemon", {}).get("prefixs", [])
        label = "\n".join([n.name, f"{n.organization} · {n.mode}", n.network, *prefixes])
        missing = live and (ident[n.name] not in statuses or statuses[ident[n.name]].error is not None)
        tooltip = f"{ident[n.name]}: mode {n.mode}, namespace {n.ns}" + (
            f", router namespace {n.agent_ns}" if n.agent_ns != n.ns else "") + (
            f", behind NAT router {n.nat}" if n.nat else "") + (
            "; its agent gave no status" if missing else "")
        lines.append(f"  {_nid(n.name)}" + _attrs(
            shape="box", style="rounded,filled", fillcolor=FILL.get(n.mode, "#eeeeee"),
            color=DOWN if missing else "#555555", penwidth="2.5" if missing else "1.2",
            label=label, tooltip=tooltip) + ";")
    if plan.routers:
        lines += ["", "  // NAT routers"]
    for r in plan.routers:
        outside = [str(a.ip) for a in (r.outside.ipv4, r.outside.ipv6) if a]
        inside = sorted({m for i in r.inside for s in plan.segments if s.name == i.segment
                         for m in s.members if m != r.name})
        lines.append(f"  {_rid(r.name)}" + _attrs(
            shape="hexagon", style="filled", fillcolor="#eeeeee", color=UNDERLAY, fontcolor="#555555",
            label="\n".join([r.name, "NAT router", *outside[:1]]),
            tooltip=f"NAT router {r.name} ({r.ns}): outside {', '.join(outside) or '-'}; "
                    f"inside: {', '.join(inside)}") + ";")

    lines += ["", "  // underlay: LANs, links, NAT inside links"]
    for seg in plan.segments:
        subnets = _segment_subnets(plan, seg.name)
        faults = _faults(seg)
        style = dict(color=UNDERLAY, fontcolor="#808080", fontsize="8", penwidth="0.8")
        if seg.kind == "lan" or len(seg.members) != 2:
            lines.append(f"  {_sid(seg.name)}" + _attrs(
                shape="ellipse", style="dashed", color=UNDERLAY, fontcolor="#808080", fontsize="9",
                label="\n".join([f"LAN {seg.name}", *subnets, *faults]),
                tooltip=f"LAN {seg.name}: bridge {seg.bridge} in {plan.switch_ns}") + ";")
            for m in seg.members:
                label, tip = _iface_label(plan, m, seg.name)
                lines.append(f"  {_member_id(plan, m)} -- {_sid(seg.name)}"
                             + _attrs(**style, label=label, tooltip=tip) + ";")
        else:
            a, b = seg.members
            kind = "NAT inside link" if seg.kind == "nat" else f"link {seg.name}"
            tips = [_iface_label(plan, m, seg.name)[1] for m in seg.members]
            lines.append(f"  {_member_id(plan, a)} -- {_member_id(plan, b)}" + _attrs(
                **style, label="\n".join([kind, *subnets[:1], *faults]),
                tooltip=f"{kind}: " + "; ".join(tips)) + ";")

    lines += ["", "  // overlay tunnels" + (" (live)" if live else " (planned)")]
    for t in planned_tunnels(plan):
        lines.append(_tunnel_edge(t, statuses, ident,
                                  frozenset((t.a.node, t.b.node)) in blocked))
    if live and via_routes:
        via = _via_edges(plan, statuses)
        if via:
            lines += ["", "  // routes through a third node", *via]
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- output


def render(dot: str, path: str) -> str:
    """Write the graph to path: DOT text for .dot/.gv, else an image by the extension
    (.svg, .png, .pdf) made with Graphviz's `dot` (Debian package graphviz).
    Returns path."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in DOT_SUFFIXES:
        with open(path, "w", encoding="utf-8") as f:
            f.write(dot)
        return path
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise AronetError(f"{path}: unknown graph format {suffix or '(no extension)'!r}; "
                          f"use one of {', '.join((*DOT_SUFFIXES, *FORMATS))}")
    exe = shutil.which("dot")
    if exe is None:
        raise AronetError(f"cannot write {path}: Graphviz's `dot` is not installed "
                          "(Debian: apt-get install graphviz); a .dot file needs no Graphviz")
    try:
        r = subprocess.run([exe, f"-T{fmt}", "-o", path], input=dot.encode(), capture_output=True,
                           timeout=120)
    except subprocess.TimeoutExpired:
        raise AronetError(f"cannot write {path}: dot took longer than 120 s") from None
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()
        raise AronetError(f"cannot write {path}: dot failed: {err or f'exit status {r.returncode}'}")
    return path
