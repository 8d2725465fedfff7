"""Topology defaults and groups: what nodes inherit, in which order, and the paths
of the problems (lab/topology/inherit.py, lab/schema/topology.schema.json)."""

from __future__ import annotations

import pytest

from aronet.errors import InputError
from lab.topology import parse_topology, plan_lab

BASE = """\
name: t
defaults:
  mode: netns
  routing: bird
  babel: {hello_interval: 0.5, update_interval: 2}
groups:
  edge:
    routing: babeld
    babel: {hello_interval: 0.25}
    endpoints: [ip4]
    ike: {dpd_delay: 7}
  core:
    mode: vrf
nodes:
  a: {organization: o, group: edge}
  b: {organization: o, group: edge, routing: bird, babel: {update_interval: 3}}
  c: {organization: o, group: core}
  d: {organization: o}
lans:
  wan: {members: [a, b, c, d]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(InputError) as e:
        parse_topology(text, "t.yaml")
    return [str(p) for p in e.value.problems]


def test_a_node_over_its_group_over_the_defaults():
    t = parse_topology(BASE, "t.yaml")
    got = {n.name: (n.mode, n.routing, n.babel_hello, n.babel_update, n.dpd_delay, n.group,
                    tuple(e.family for e in n.endpoints)) for n in t.nodes}
    assert got == {
        "a": ("netns", "babeld", 0.25, 2, 7, "edge", ("ip4",)),
        "b": ("netns", "bird", 0.25, 3, 7, "edge", ("ip4",)),
        "c": ("vrf", "bird", 0.5, 2, None, "core", ("ip4", "ip6")),
        "d": ("netns", "bird", 0.5, 2, None, None, ("ip4", "ip6")),
    }


def test_the_inherited_values_reach_the_configs():
    plan = plan_lab(parse_topology(BASE, "t.yaml"))
    daemon = {n.name: n.config["daemon"] for n in plan.nodes}
    assert daemon["a"]["babel"] == {"hello_interval": 0.25, "update_interval": 2}
    assert daemon["a"]["ike"] == {"dpd_delay": 7} and "ike" not in daemon["d"]
    assert daemon["b"]["routing"] == "bird" and daemon["a"]["routing"] == "babeld"
    assert [len(n.config["endpoints"]) for n in plan.nodes] == [1, 1, 2, 2]


def test_without_defaults_or_groups_nothing_changes():
    text = "name: t\noptions: {babel: {hello_interval: 0.3}, ike: {dpd_delay: 4}}\n" \
           "nodes: {a: {organization: o}, b: {organization: o}}\nlans: {wan: {members: [a, b]}}\n"
    plan = plan_lab(parse_topology(text, "t.yaml"))
    assert all(n.config["daemon"]["babel"] == {"hello_interval": 0.3, "update_interval": 1.0}
               and n.config["daemon"]["ike"] == {"dpd_delay": 4} for n in plan.nodes)


def test_defaults_over_options():
    text = BASE.replace("name: t\n", "name: t\noptions: {port: 4500, nodad: false}\n")
    t = parse_topology(text, "t.yaml")
    assert {n.port for n in t.nodes} == {4500}
    assert t.nodes[0].routing == "babeld"


@pytest.mark.parametrize("change,expected", [
    (("a: {organization: o, group: edge}", "a: {organization: o, group: edg}"),
     ["t.yaml: $.nodes.a.group: 'edg' is not a group (groups: edge, core)"]),
    (("  core:\n    mode: vrf\n", "  core:\n    mode: bsd\n"),
     ['t.yaml: $.groups.core.mode: "bsd" is not one of "vrf", "netns"']),
    (("  routing: bird\n", "  routing: frr\n"),
     ['t.yaml: $.defaults.routing: "frr" is not one of "bird", "babeld"']),
    (("    endpoints: [ip4]\n", "    endpoints: [ip5]\n"),
     ['t.yaml: $.groups.edge.endpoints[0]: "ip5" is not one of "ip4", "ip6"']),
    (("    endpoints: [ip4]\n", "    endpoints: [{family: ip4, via: nowhere}]\n"),
     ["t.yaml: $.groups.edge.endpoints[0].via: 'nowhere' is not a LAN or link"]),
    (("  core:\n    mode: vrf\n", "  core:\n    mode: vrf\n    routing: babeld\n"),
     ["t.yaml: $.nodes.c: mode vrf (from $.groups.core.mode) with routing babeld (from "
      "$.groups.core.routing): babeld runs in netns mode only"]),
    (("  mode: netns\n", "  mode: netns\n  color: red\n"),
     ["t.yaml: $.defaults: Additional properties are not allowed ('color' was unexpected)"]),
])
def test_problems_point_where_the_value_is_written(change, expected):
    assert problems(BASE.replace(*change)) == expected


def test_a_value_in_both_options_and_defaults_is_a_problem():
    text = BASE.replace("name: t\n", "name: t\noptions: {routing: babeld, babel: {hello_interval: 1}}\n")
    assert problems(text) == [
        "t.yaml: $.defaults.routing: also set in $.options.routing; set it in one place "
        "(nodes inherit defaults:)",
        "t.yaml: $.defaults.babel.hello_interval: also set in $.options.babel.hello_interval; set "
        "it in one place (nodes inherit defaults:)"]


def test_a_group_name_is_a_name():
    text = BASE.replace("  edge:\n", "  'e dge':\n")
    assert any(p.startswith('t.yaml: $.groups["e dge"]') for p in problems(text))


def test_up_mode_is_checked_as_if_every_node_said_so():
    """`up --mode netns` on a topology whose nodes say vrf, with babeld for all: the
    override comes first, so the vrf-with-babeld rule sees netns."""
    from lab.topology import parse_topology

    text = ("name: t\noptions: {routing: babeld}\nnodes:\n  a: {organization: o, mode: vrf}\n"
            "  b: {organization: o}\nlans:\n  wan: {members: [a, b]}\n")
    with pytest.raises(InputError, match="babeld runs in netns mode only"):
        parse_topology(text, "t.yaml")
    topo = parse_topology(text, "t.yaml", mode="netns")
    assert {n.mode for n in topo.nodes} == {"netns"}
