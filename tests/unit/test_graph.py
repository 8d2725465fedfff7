"""lab/graph.py: DOT of a planned lab, with canned agent statuses.

The statuses are built here the way the agent builds them (aronet.daemon.agent
status: peers[].tunnels[] and peers[].routes[]), with the tunnel names the planner
gives each node under freshly generated keys, so the test also shows that the
graph's stand-in keys do not change a tunnel's name.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from aronet import keys
from aronet.core import planner
from aronet.core.registry import registry_document
from aronet.core.state import Connection
from aronet.core.status import Status
from aronet.errors import AronetError
from aronet.load import build_registry
from lab import graph
from lab.topology import lab_configs, load_topology, plan_lab

EXAMPLES = Path(__file__).resolve().parents[2] / "lab" / "examples"
EDGE = re.compile(r'^\s*"(?P<a>[^"]+)" -- "(?P<b>[^"]+)"(?: \[(?P<attrs>.*)\])?;$')
ATTR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def seed():
    return plan_lab(load_topology(EXAMPLES / "seed.yaml"))


@pytest.fixture(scope="module")
def connections(seed):
    """{node: [Connection]} as the running agents would have them (real, fresh keys)."""
    org_keys = {o: keys.private_pem(keys.generate()) for o in seed.organizations}
    configs = lab_configs(seed, org_keys)
    registry = build_registry(registry_document(configs), "registry.json")
    return {c.node.common_name: planner.desired(c, registry).state.of(Connection)
            for c in configs}


def ident(plan, name: str) -> str:
    n = plan.node(name)
    return f"{n.organization}/{n.name}"


def canned(plan, connections, *, down=(), iface_down=(), metric=96, routes=None) -> dict:
    """Every agent's status with every tunnel established, except: (node, peer) in
    `down` has its CHILD_SA missing at node's end, (node, peer) in `iface_down` its
    interface down. routes: {node: [(owner, prefix, via peer)]}."""
    out = {}
    for n in plan.nodes:
        peers: dict[str, dict] = {}
        for c in sorted(connections[n.name], key=lambda c: c.name):
            peer = c.peer.split("/")[1]
            child_up = (n.name, peer) not in down
            peers.setdefault(c.peer, {"peer": c.peer, "tunnels": [], "routes": []})["tunnels"].append({
                "name": c.name, "family": c.family, "remote": c.remote_addrs,
                "initiator": c.initiate, "ike": "ESTABLISHED",
                "child": "INSTALLED" if child_up else "NONE", "interface": c.name,
                "interface_up": child_up and (n.name, peer) not in iface_down,
                "babel_neighbor": "fe80::1" if child_up else None,
                "babel_metric": metric if child_up else None,
            })
        for owner, prefix, via in (routes or {}).get(n.name, []):
            tunnel = next(c.name for c in connections[n.name] if c.peer == ident(plan, via))
            peers[ident(plan, owner)]["routes"].append(
                {"prefix": prefix, "via": "fe80::2", "interface": tunnel, "metric": 2 * metric})
        out[ident(plan, n.name)] = Status.from_json({"node": ident(plan, n.name), "mode": n.mode,
                                                     "peers": [peers[k] for k in sorted(peers)]})
    return out


def edges(dot: str) -> list[dict]:
    out = []
    for line in dot.splitlines():
        m = EDGE.match(line)
        if m:
            attrs = {k: v.replace('\\"', '"').replace("\\n", "\n")
                     for k, v in ATTR.findall(m["attrs"] or "")}
            out.append({"a": m["a"], "b": m["b"], **attrs})
    return out


def tunnels(dot: str) -> list[dict]:
    return [e for e in edges(dot) if e["a"].startswith("node:") and e["b"].startswith("node:")
            and e.get("dir") != "forward"]


def pair(e: dict) -> frozenset:
    return frozenset((e["a"].removeprefix("node:"), e["b"].removeprefix("node:")))


# ---------------------------------------------------------------- planned (lab not running)


def test_planned_lab_draws_nodes_routers_lans_and_grey_tunnels(seed):
    dot = graph.to_dot(seed, None)
    assert dot.startswith('graph "seed" {') and dot.rstrip().endswith("}")
    for n in seed.nodes:
        assert f'"node:{n.name}" [' in dot
        prefixes = n.config["daemon"]["prefixs"]
        label = "\\n".join([n.name, f"{n.organization} · {n.mode}", n.network, *prefixes])
        assert f'label="{label}"' in dot
    assert '"nat:gw" [' in dot and "NAT router" in dot
    assert '"seg:wan" [' in dot and "LAN wan" in dot
    # underlay edges: every member of the LAN, and the NAT inside link
    under = [e for e in edges(dot) if e["color"] == graph.UNDERLAY]
    assert {e["a"] for e in under if e["b"] == "seg:wan"} == {"node:moon", "node:earth",
                                                              "node:mars", "nat:gw"}
    assert any({e["a"], e["b"]} == {"nat:gw", "node:sun"} for e in under)
    # tunnels: one per IKE connection, all planned (grey), none down
    t = tunnels(dot)
    assert len(t) == 7  # 6 node pairs; earth and mars also pair their IPv6 endpoints
    assert all(e["color"] == graph.PLANNED and e["style"] == "solid" for e in t)
    assert sorted(e["label"] for e in t if pair(e) == {"earth", "mars"}) == ["ip4", "ip6"]
    assert "down" not in dot and "planned tunnels" in dot


def test_planned_tunnels_match_the_planner_on_both_ends(seed, connections):
    names = {(n, c.name) for n, cs in connections.items() for c in cs}
    ends = {(e.node, e.name) for t in graph.planned_tunnels(seed) for e in (t.a, t.b)}
    assert ends == names  # every connection of every node, each in exactly one tunnel
    assert sum(len(cs) for cs in connections.values()) == 2 * len(graph.planned_tunnels(seed))
    # sun is behind NAT: it initiates everything it has
    assert all(e.initiates for t in graph.planned_tunnels(seed) for e in (t.a, t.b)
               if e.node == "sun")


def test_output_is_deterministic(seed):
    assert graph.to_dot(seed, None) == graph.to_dot(seed, None)


def test_blocked_pairs_are_marked_in_the_plan():
    ring = plan_lab(load_topology(EXAMPLES / "ring.yaml"))
    t = tunnels(graph.to_dot(ring, None))
    blocked = {pair(e) for e in t if "blocked" in e["label"]}
    assert blocked == {frozenset(p) for p in (("n1", "n3"), ("n1", "n4"), ("n2", "n4"),
                                              ("n2", "n5"), ("n3", "n5"))}
    assert all(e["style"] == "dotted" for e in t if pair(e) in blocked)


# ---------------------------------------------------------------- live


def test_every_tunnel_established_shows_its_babel_metric(seed, connections):
    dot = graph.to_dot(seed, canned(seed, connections))
    t = tunnels(dot)
    assert len(t) == 7
    assert all(e["color"] == graph.UP and e["style"] == "solid" for e in t)
    assert all(e["label"].endswith("metric 96") for e in t)
    assert graph.DOWN not in dot and "live tunnels" in dot


def test_one_tunnel_down_is_red_and_dashed(seed, connections):
    dot = graph.to_dot(seed, canned(seed, connections, down={("moon", "mars")}))
    t = tunnels(dot)
    red = [e for e in t if e["color"] == graph.DOWN]
    assert len(red) == 1
    (e,) = red
    assert pair(e) == {"moon", "mars"}
    assert e["style"] == "dashed" and e["label"] == "down"
    assert "moon" in e["tooltip"] and "CHILD_SA NONE" in e["tooltip"]
    assert all(x["color"] == graph.UP for x in t if x is not e)


def test_an_interface_down_counts_as_down(seed, connections):
    t = tunnels(graph.to_dot(seed, canned(seed, connections, iface_down={("sun", "earth")})))
    (e,) = [e for e in t if e["color"] == graph.DOWN]
    assert pair(e) == {"sun", "earth"} and e["style"] == "dashed"
    assert "interface down" in e["tooltip"]


def test_an_agent_without_status_takes_its_tunnels_down_and_is_outlined(seed, connections):
    statuses = canned(seed, connections)
    statuses[ident(seed, "sun")] = Status.unanswered(ident(seed, "sun"), "connection refused")
    dot = graph.to_dot(seed, statuses)
    red = [e for e in tunnels(dot) if e["color"] == graph.DOWN]
    assert {frozenset(pair(e)) for e in red} == {frozenset(("sun", x))
                                                  for x in ("moon", "earth", "mars")}
    sun = next(line for line in dot.splitlines() if line.startswith('  "node:sun" ['))
    assert f'color="{graph.DOWN}"' in sun and "no status" in sun
    del statuses[ident(seed, "sun")]  # missing entirely: the same
    assert len([e for e in tunnels(graph.to_dot(seed, statuses))
                if e["color"] == graph.DOWN]) == 3


def test_up_without_babel_neighbour_is_orange(seed, connections):
    t = tunnels(graph.to_dot(seed, canned(seed, connections, metric=None)))
    assert all(e["color"] == graph.PARTIAL and "no babel" in e["label"] for e in t)


def test_routes_through_a_third_node_are_marked(seed, connections):
    statuses = canned(seed, connections, down={("moon", "mars"), ("mars", "moon")},
                      routes={"moon": [("mars", "fd69::/64", "earth")]})
    dot = graph.to_dot(seed, statuses)
    via = [e for e in edges(dot) if e.get("dir") == "forward"]
    assert len(via) == 1
    (v,) = via
    assert (v["a"], v["b"], v["label"], v["style"]) == ("node:moon", "node:mars", "via earth",
                                                         "dotted")
    assert "fd69::/64" in v["tooltip"]
    assert graph.to_dot(seed, statuses, via_routes=False).count('dir="forward"') == 0


def test_labels_are_escaped():
    assert graph._q('a "b" \\ c\nd') == '"a \\"b\\" \\\\ c\\nd"'


# ---------------------------------------------------------------- render


def test_render_dot_text_and_formats(seed, tmp_path):
    dot = graph.to_dot(seed, None)
    path = tmp_path / "seed.dot"
    assert graph.render(dot, str(path)) == str(path)
    assert path.read_text() == dot
    with pytest.raises(AronetError, match="unknown graph format"):
        graph.render(dot, str(tmp_path / "seed.jpeg"))


def test_render_without_graphviz_says_so(seed, tmp_path, monkeypatch):
    monkeypatch.setattr(graph.shutil, "which", lambda _name: None)
    with pytest.raises(AronetError, match="apt-get install graphviz"):
        graph.render(graph.to_dot(seed, None), str(tmp_path / "seed.svg"))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("live", [False, True])
def test_render_svg_contains_every_node(seed, connections, tmp_path, live):
    statuses = canned(seed, connections, down={("moon", "mars")}) if live else None
    path = tmp_path / "seed.svg"
    graph.render(graph.to_dot(seed, statuses), str(path))
    svg = path.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for name in ("moon", "earth", "sun", "mars", "gw", "LAN wan"):
        assert f">{name}</text>" in svg
    png = tmp_path / "seed.png"
    graph.render(graph.to_dot(seed, statuses), str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
