"""aronet-lab topologies (lab/topology/): loading, every problem at once with its
path, automatic addressing, names, the plan, and the files made with aronet's own
registry generator. Pure, except write_lab_files into tmp_path."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aronet import keys
from aronet.errors import InputError
from aronet.load import build_config, build_registry, load_both, load_config
from lab.topology import (
    IFNAMSIZ,
    agent_ifname,
    drop_esp_rules,
    lab_configs,
    lab_registry,
    load_topology,
    loss_rule,
    parse_topology,
    partition_rules,
    plan_lab,
    write_lab_files,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "lab" / "examples").glob("*.yaml"))
SEED = next(p for p in EXAMPLES if p.name == "seed.yaml")


def plan_of(text: str, name: str | None = None):
    return plan_lab(parse_topology(text, "t.yaml", name=name))


def problems_of(text: str) -> list[str]:
    with pytest.raises(InputError) as exc:
        parse_topology(text, "t.yaml")
    return [str(p) for p in exc.value.problems]


def org_keys(plan) -> dict[str, bytes]:
    return {org: keys.private_pem(keys.generate()) for org in plan.organizations}


def interface_names(plan) -> list[tuple[str, str]]:
    """(namespace, name) of every interface the plan makes."""
    out = [(b.ns, b.name) for b in plan.bridges]
    for v in plan.veths:
        out += [(v.ns, v.name), (v.peer_ns, v.peer)]
    return out


def nets(plan) -> list:
    """Every network the lab owns: overlay networks, prefixes, underlay subnets."""
    out = []
    for n in plan.nodes:
        out.append(ipaddress.ip_interface(n.network).network)
        out += [ipaddress.ip_network(p) for p in n.config["daemon"]["prefixs"]]
    subnets = {a.network for i in itertools.chain(
        (i for n in plan.nodes for i in n.interfaces),
        (i for r in plan.routers for i in (r.outside, *r.inside)))
        for a in (i.ipv4, i.ipv6) if a}
    return out + sorted(subnets, key=str)


def check_plan(plan) -> None:
    """The promises of every plan: short, unique interface names; one owner per
    network; one address per interface end; configs and registry aronet accepts."""
    names = interface_names(plan)
    assert all(len(name.encode()) <= IFNAMSIZ for _, name in names), names
    assert len(set(names)) == len(names)
    owned = nets(plan)
    for a, b in itertools.combinations(owned, 2):
        assert not (a.version == b.version and a.overlaps(b)), (a, b)
    addresses = [a.address.split("/")[0] for a in plan.addresses]
    assert len(set(addresses)) == len(addresses)
    assert len(set(plan.namespaces)) == len(plan.namespaces)
    assert all(ns.startswith(f"{plan.lab}-") for ns in plan.namespaces)
    registry = build_registry(lab_registry(plan, org_keys(plan)), "registry.json")
    assert {n.common_name for n in registry.nodes} == {n.name for n in plan.nodes}


# ---------------------------------------------------------------- the examples


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_loads_and_plans(path):
    plan = plan_lab(load_topology(path))
    check_plan(plan)
    assert plan.nodes


def test_the_issues_examples_are_there():
    assert {"dualstack.yaml", "ring.yaml", "seed.yaml"} <= {p.name for p in EXAMPLES}


def test_seed_matches_the_seed_configs():
    """The lab's seed is examples/seed: same organizations, modes, networks,
    prefixes, extra_ip and endpoint families; sun has address null."""
    plan = plan_lab(load_topology(SEED))
    seed_dir = SEED.parents[2] / "examples" / "seed"
    for node in plan.nodes:
        original = json.loads((seed_dir / node.name / "config.json").read_text())
        mine = node.config
        assert mine["organization"] == original["organization"]
        assert mine["common_name"] == original["common_name"]
        for key in ("network", "prefixs", "mode", "extra_ip"):
            assert mine["daemon"][key] == original["daemon"][key], (node.name, key)
        families = [ep.get("address_family") or f"ip{ipaddress.ip_address(ep['address']).version}"
                    for ep in mine["endpoints"]]
        expected = [ep.get("address_family") or
                    f"ip{ipaddress.ip_address(ep['address']).version}"
                    for ep in original["endpoints"]]
        assert families == expected, node.name
    sun = plan.node("sun")
    assert sun.nat == "gw"
    assert sun.config["endpoints"] == [{"address": None, "address_family": "ip4", "port": 12025}]
    assert plan.ports_of("sun") == plan.ports_of("gw") == ("wan-gw",)


def test_seed_plan_in_detail():
    plan = plan_lab(load_topology(SEED, name="demo"))
    assert plan.namespaces == ("demo-sw", "demo-gw", "demo-moon", "demo-earth", "demo-sun",
                               "demo-mars")
    assert [(b.ns, b.name) for b in plan.bridges] == [("demo-sw", "br-wan")]
    assert [(v.ns, v.name, v.peer_ns, v.peer, v.master) for v in plan.veths] == [
        ("demo-sw", "wan-moon", "demo-moon", "eth1", "br-wan"),
        ("demo-sw", "wan-earth", "demo-earth", "eth1", "br-wan"),
        ("demo-sw", "wan-mars", "demo-mars", "eth1", "br-wan"),
        ("demo-sw", "wan-gw", "demo-gw", "eth1", "br-wan"),
        ("demo-gw", "eth2", "demo-sun", "eth1", None),
    ]
    gw = plan.router("gw")
    sun = plan.node("sun")
    assert gw.outside.name == "eth1" and [i.name for i in gw.inside] == ["eth2"]
    assert [(r.ns, r.dst, r.dev, r.gateway) for r in plan.routes] == [
        ("demo-gw", "0.0.0.0/0", "eth1", None),
        ("demo-gw", "::/0", "eth1", None),
        ("demo-sun", "0.0.0.0/0", "eth1", str(gw.inside[0].ipv4.ip)),
        ("demo-sun", "::/0", "eth1", str(gw.inside[0].ipv6.ip)),
    ]
    assert {(s.ns, s.name, s.value) for s in plan.sysctls} >= {
        ("demo-gw", "net.ipv4.ip_forward", "1"), ("demo-gw", "net.ipv6.conf.all.forwarding", "1")}
    # IPv6 addresses are nodad (the default), IPv4 never carries the flag
    assert all(a.nodad == (":" in a.address) for a in plan.addresses)
    assert sun.ping_targets == ("192.168.130.1", "fd68::1")
    assert sun.agent_ns == agent_ifname("demo", "sun") == sun.config["daemon"]["ifname"]
    assert plan.node("moon").agent_ns == "demo-moon"  # vrf: the node's own namespace
    assert "ifname" not in plan.node("moon").config["daemon"]
    moon = plan.node("moon")
    assert moon.config["endpoints"] == [{"address": str(moon.interfaces[0].ipv4.ip),
                                         "port": 12025}]
    (switch,) = [r for r in plan.rulesets if r.ns == "demo-sw"]
    (router,) = [r for r in plan.rulesets if r.ns == "demo-gw"]
    assert (switch.family, switch.table, router.family, router.table) == (
        "bridge", "aronet_lab", "inet", "aronet_lab")
    masq = [o["add"]["rule"] for o in json.loads(router.batch)["nftables"]
            if "rule" in o.get("add", {}) and o["add"]["rule"].get("comment") == "masquerade"]
    assert masq[0]["expr"] == [
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth1"}},
        {"masquerade": None}]


def test_ring_blocks_every_pair_but_neighbours():
    plan = plan_lab(load_topology(next(p for p in EXAMPLES if p.name == "ring.yaml")))
    (switch,) = plan.rulesets
    comments = {o["add"]["rule"]["comment"] for o in json.loads(switch.batch)["nftables"]
                if "rule" in o.get("add", {}) and "comment" in o["add"]["rule"]}
    names = [n.name for n in plan.nodes]
    ring = {frozenset((names[i], names[(i + 1) % 5])) for i in range(5)}
    blocked = {frozenset(c.split()[1:]) for c in comments if c.startswith("blocked")}
    assert blocked == {frozenset(p) for p in itertools.combinations(names, 2)} - ring


def test_dualstack_endpoints_via_a_link():
    plan = plan_lab(load_topology(next(p for p in EXAMPLES if p.name == "dualstack.yaml")))
    a1 = plan.node("a1")
    assert [ep["address"] for ep in a1.config["endpoints"]] == [
        str(a1.interfaces[0].ipv4.ip), str(a1.interfaces[0].ipv6.ip), "192.0.2.1"]
    c2 = plan.node("c2")
    assert c2.config["endpoints"] == [
        {"address": None, "address_family": "ip6", "port": 12025},
        {"address": None, "address_family": "ip4", "port": 12025}]
    assert plan.node("c1").config["endpoints"][0]["port"] == 4500
    assert plan.node("a2").config["daemon"]["babel"] == {"hello_interval": 0.2,
                                                         "update_interval": 1}
    assert plan.node("a2").config["daemon"]["ike"] == {"dpd_delay": 2}


# ---------------------------------------------------------------- every problem at once

BAD = """\
name: Bad-Lab
options: {mode: bsd}
nodes:
  moon: {organization: example, network: 10.0.0.1/24, prefixes: [192.168.128.0/24, nonsense]}
  earth: {organization: example, prefixes: [192.168.128.128/25]}
  sun: {organization: example, endpoints: [{family: ip4, via: wan}]}
  lonely: {organization: example}
  sw: {organization: example, colour: blue}
  jupitersaturn: {organization: example}
nat:
  gw: {inside: [sun, pluto]}
  gw2: {inside: [sun]}
lans:
  wan: {members: [moon, earth, sun, gw, moon, jupitersaturn], ipv4: 10.9.0.0/30, ipv6: 10.1.0.0/24}
  backbone12345: {members: [moon], ipv4: false, ipv6: false}
links:
  - [moon, moon]
  - {between: [moon, earth, mars]}
  - {between: [earth, gw], name: wan}
blocked:
  - [moon, venus]
  - [sun, gw]
"""

BAD_EXPECTED = [
    "t.yaml: $.name: 'Bad-Lab' must be 1 to 12 lowercase letters or digits, starting with a "
    "letter (it prefixes every namespace of the lab, so it has no '-')",
    't.yaml: $.options.mode: "bsd" is not one of "vrf", "netns"',
    "t.yaml: $.nodes.sw: Additional properties are not allowed ('colour' was unexpected)",
    "t.yaml: $.links[1].between: ['moon', 'earth', 'mars'] is not a pair of two names",
    "t.yaml: $.nodes.sw: 'sw' is reserved: the lab's switch namespace is <lab>-sw",
    "t.yaml: $.nat.gw.inside[1]: 'pluto' is not a node",
    "t.yaml: $.nat.gw2.inside[0]: 'sun' is already behind NAT router 'gw' ($.nat.gw.inside[0]); "
    "a node behind NAT has exactly one upstream",
    "t.yaml: $.links[2].name: 'wan' is already the name of $.lans.wan",
    "t.yaml: $.lans.wan.members[2]: 'sun' is behind NAT router 'gw' ($.nat.gw.inside[0]); a node "
    "behind NAT has exactly one upstream, its NAT router",
    "t.yaml: $.lans.wan.members[4]: 'moon' is already a member at $.lans.wan.members[0]",
    "t.yaml: $.links[0][1]: 'moon' is at both ends; a link joins two different members",
    "t.yaml: $.links[1].between[2]: 'mars' is not a node or NAT router",
    "t.yaml: $.nodes.lonely: 'lonely' is on no LAN or link and behind no NAT router; it needs an "
    "upstream",
    "t.yaml: $.nodes.sw: 'sw' is on no LAN or link and behind no NAT router; it needs an upstream",
    "t.yaml: $.nat.gw2: NAT router 'gw2' is on no LAN or link; it needs exactly one outside leg",
    "t.yaml: $.lans.wan.members[5]: its switch port 'wan-jupitersaturn' would have 17 bytes; Linux "
    "interface names have at most 15: shorten the LAN name or 'jupitersaturn'",
    "t.yaml: $.lans.backbone12345: its bridge 'br-backbone12345' would have 16 bytes; Linux "
    "interface names have at most 15: shorten the LAN name",
    "t.yaml: $.lans.backbone12345.members[0]: its switch port 'backbone12345-moon' would have 18 "
    "bytes; Linux interface names have at most 15: shorten the LAN name or 'moon'",
    "t.yaml: $.lans.wan.ipv4: 10.9.0.0/30 has room for 2 addresses; this LAN has 6 members",
    "t.yaml: $.lans.wan.ipv6: '10.1.0.0/24' is IPv4; ipv6 takes an IPv6 prefix (like fd00:1::/64)",
    "t.yaml: $.lans.backbone12345: ipv4 and ipv6 are both false; a LAN needs at least one",
    "t.yaml: $.nodes.moon.network: '10.0.0.1/24' is IPv4; the overlay network must be IPv6",
    "t.yaml: $.nodes.moon.prefixes[1]: 'nonsense' is not an IP prefix (like 192.168.128.0/24 or "
    "2001:db8::/48)",
    "t.yaml: $.nodes.earth.prefixes[0]: 192.168.128.128/25 overlaps 192.168.128.0/24 of node moon "
    "($.nodes.moon.prefixes[0])",
    "t.yaml: $.nodes.sun.endpoints[0].via: 'sun' is behind NAT: its endpoints have no address, so "
    "via means nothing",
    "t.yaml: $.blocked[0][1]: 'venus' is not a node or NAT router",
    "t.yaml: $.blocked[1]: 'sun' and 'gw' meet at NAT router 'gw', not on the switch, so their "
    "traffic cannot be blocked there",
]


def test_a_bad_topology_reports_every_problem_at_once():
    assert problems_of(BAD) == BAD_EXPECTED


def test_bridge_names_and_the_15_byte_boundary():
    # "br-" + 12 bytes = 15: fits; 13 bytes: does not.
    ok = "name: x\nnodes: {a: {organization: o}}\nlans: {abcdefghijkl: {members: [a]}}\n"
    plan = plan_of(ok)
    assert [b.name for b in plan.bridges] == ["br-abcdefghijkl"]
    assert [v.name for v in plan.veths] == ["abcdefghijkl-a"]
    long = ok.replace("abcdefghijkl", "abcdefghijklm")
    assert problems_of(long) == [
        "t.yaml: $.lans.abcdefghijklm: its bridge 'br-abcdefghijklm' would have 16 bytes; Linux "
        "interface names have at most 15: shorten the LAN name",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("name: x\nnodes:\n  a: {organization: b\n",
     ["t.yaml: line 4, column 1: invalid YAML: while parsing a flow mapping; expected ',' or '}', "
      "but got '<stream end>'"]),
    ("name: x\nnodes:\n\ta: 1\n",
     ["t.yaml: line 3, column 1: invalid YAML: while scanning for the next token; found character "
      "'\\t' that cannot start any token"]),
    ("name: x\nnodes:\n  a: {organization: o}\n  a: {organization: p}\nlans: {w: {members: [a]}}\n",
     ["t.yaml: line 4, column 3: duplicate key 'a' (first at line 3, column 3)"]),
    ("- just\n- a list\n", ["t.yaml: $: ['just', 'a list'] is not of type 'object'"]),
    ("", ["t.yaml: $: None is not of type 'object'"]),
])
def test_yaml_problems(text, expected):
    assert problems_of(text) == expected


@pytest.mark.parametrize(("change", "expected"), [
    ({"options": {"port": 12025.0}}, ["$.options.port: 12025.0 is not of type 'integer'"]),
    ({"options": {"babel": {"hello_interval": True}}},
     ["$.options.babel.hello_interval: True is not of type 'number'"]),
    ({"nodes": {"Bad!": {"organization": "o"}}},
     ["$.nodes[\"Bad!\"]: 'Bad!' must be 1 to 63 letters, digits, '_' or '-', starting with a letter "
      "or digit",
      "$.nodes[\"Bad!\"]: 'Bad!' is on no LAN or link and behind no NAT router; it needs an upstream"]),
    ({"lans": {"w": {"ipv4": True}}},
     ["$.lans.w.ipv4: true is not allowed: give a prefix, or false for none"]),
    ({"lans": {"w": {"ipv4": "10.1.0.0"}}},
     ["$.lans.w.ipv4: '10.1.0.0' has no prefix length (like 10.0.0.0/24)"]),
    ({"lans": {"w": {"rate": "fast"}}},
     ["$.lans.w.rate: 'fast' is not a rate like 10mbit, 512kbit or 1gbit"]),
    ({"lans": {"w": {"loss": 101}}},
     ["$.lans.w.loss: 101 is greater than the maximum of 100"]),
    ({"links": [["a", "a"]]}, ["$.links[0][1]: 'a' is at both ends; a link joins two different "
                               "members"]),
    ({"lans": {"l1": {"members": ["a"]}}, "links": [["a", "b"]]},
     ["$.links[0]: its automatic name 'l1' is already the name of $.lans.l1; give this link a name"]),
    ({"nodes": {"a": {"organization": "o", "endpoints": ["ip4", "ip4"]}}},
     ["$.nodes.a.endpoints[1]: the same endpoint as $.nodes.a.endpoints[0]"]),
    ({"nodes": {"a": {"organization": "o", "endpoints": [{"family": "ip4", "via": "zz"}]}}},
     ["$.nodes.a.endpoints[0].via: 'zz' is not a LAN or link"]),
    ({"lans": {"w": {"members": ["a"], "ipv6": False}, "v": {"members": ["b"]}},  # a: not on v
      "nodes": {"a": {"organization": "o", "endpoints": ["ip6", {"family": "ip4", "via": "v"}]}}},
     ["$.nodes.a.endpoints[0]: LAN 'w' has no IPv6 (ipv6: false)",
      "$.nodes.a.endpoints[1].via: 'a' is not on LAN 'v'"]),
    ({"nodes": {"a": {"organization": "o", "network": "fd00:1::1/80"}}},
     ["$.nodes.a.network: 'fd00:1::1/80' has prefix length /80; it must be /64 or shorter"]),
    ({"nodes": {"a": {"organization": "o", "prefixes": ["fd00:1::/48"]},
                "b": {"organization": "o", "network": "fd00:1:0:5::1/64"}}},
     ["$.nodes.b.network: fd00:1:0:5::/64 overlaps fd00:1::/48 of node a ($.nodes.a.prefixes[0])"]),
    ({"lans": {"w": {"members": ["a", "b"], "ipv4": "192.168.1.0/24"}},
      "nodes": {"a": {"organization": "o", "prefixes": ["192.168.0.0/16"]}}},
     ["$.nodes.a.prefixes[0]: 192.168.0.0/16 overlaps 192.168.1.0/24 of LAN w ($.lans.w.ipv4)"]),
    ({"nat": {"g": {"inside": ["b"]}, "h": {"inside": ["g"]}},
      "lans": {"w": {"members": ["a", "g"]}, "v": {"members": ["g"]}}},
     ["$.nat.h.inside[0]: 'g' is a NAT router; only nodes can be behind NAT",
      "$.lans.v.members[0]: NAT router 'g' is already on LAN 'w' ($.lans.w.members[1]); a NAT "
      "router has exactly one outside leg",
      "$.nat.h: NAT router 'h' is on no LAN or link; it needs exactly one outside leg"]),
    ({"nat": {"a": {"inside": ["b"]}}},
     ["$.nat.a: 'a' is already a node ($.nodes.a); nodes and NAT routers need different names"]),
    ({"nat": {"g": {"inside": ["b"]}}, "lans": {"w": {"members": ["a", "g"], "ipv6": False}},
      "nodes": {"b": {"organization": "o", "endpoints": ["ip6"]}}},
     ["$.nodes.b.endpoints[0]: LAN 'w', the outside leg of NAT router 'g', has no IPv6 "
      "(ipv6: false)"]),
    ({"blocked": [["a", "b"], ["b", "a"], ["a", "a"]]},
     ["$.blocked[1]: the same pair as $.blocked[0]",
      "$.blocked[2]: 'a' is named twice; a block is between two members"]),
])
def test_one_rule_at_a_time(change, expected):
    """A valid two-node lab, with one thing changed (mappings are merged, lists replaced)."""
    doc = {"name": "x", "nodes": {"a": {"organization": "o"}, "b": {"organization": "o"}},
           "lans": {"w": {"members": ["a", "b"]}}}

    def merge(into: dict, change: dict) -> dict:
        for key, value in change.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    text = yaml.safe_dump(merge(doc, change), sort_keys=False)
    assert [p.split(": ", 1)[1] for p in problems_of(text)] == expected


def test_read_problems(tmp_path):
    with pytest.raises(InputError) as exc:
        load_topology(tmp_path / "missing.yaml")
    assert [str(p) for p in exc.value.problems] == [
        f"{tmp_path}/missing.yaml: $: cannot read: No such file or directory"]


def test_the_lab_name_can_be_overridden_and_is_checked():
    assert load_topology(SEED, name="other").name == "other"
    with pytest.raises(InputError) as exc:
        load_topology(SEED, name="a-b")
    assert [p.path for p in exc.value.problems] == ["$.name"]


# ---------------------------------------------------------------- automatic addressing


def test_automatic_addressing_is_deterministic():
    for path in EXAMPLES:
        assert plan_lab(load_topology(path)) == plan_lab(load_topology(path))
        configs = [n.config for n in plan_lab(load_topology(path)).nodes]
        assert configs == [n.config for n in plan_lab(load_topology(path)).nodes]


def test_automatic_addresses_depend_on_the_lab_name():
    a, b = (plan_lab(load_topology(SEED, name=n)) for n in ("one", "two"))
    assert a.node("moon").interfaces[0].ipv4 != b.node("moon").interfaces[0].ipv4
    assert a.node("moon").interfaces[0].ipv6 != b.node("moon").interfaces[0].ipv6
    # the explicit ones do not
    assert a.node("moon").network == b.node("moon").network == "fd66::1/64"


def test_automatic_addresses_skip_explicit_ones():
    """Take the values the first plan chose automatically and give them explicitly to
    others: the automatic ones move on, and nothing overlaps."""
    text = ("name: x\nnodes: {a: {organization: o}, b: {organization: o}, c: {organization: o}}\n"
            "lans: {w: {members: [a, b]}}\nlinks: [[b, c]]\n")
    first = plan_of(text)
    b_net = first.node("b").network
    b_pfx = first.node("b").config["daemon"]["prefixs"][0]
    link_v4 = str(first.node("c").interfaces[0].ipv4.network)
    link_v6 = str(first.node("c").interfaces[0].ipv6.network)
    second = plan_of(text.replace(
        "a: {organization: o}",
        f"a: {{organization: o, network: '{b_net}', prefixes: [{b_pfx}, {link_v4}, '{link_v6}']}}"))
    check_plan(second)
    assert second.node("a").network == b_net
    assert second.node("b").network != b_net
    assert second.node("b").config["daemon"]["prefixs"] != [b_pfx]
    assert str(second.node("c").interfaces[0].ipv4.network) != link_v4


def test_extra_ip_is_the_first_host_of_the_first_ipv4_prefix():
    plan = plan_of("name: x\nnodes:\n  a: {organization: o, prefixes: ['2001:db8::/48', "
                   "10.77.0.0/16, 10.78.0.0/24]}\n  b: {organization: o, prefixes: []}\n"
                   "lans: {w: {members: [a, b]}}\n")
    a, b = plan.node("a"), plan.node("b")
    assert a.extra_ip == ("10.77.0.1",)
    assert a.ping_targets == ("10.77.0.1", str(ipaddress.ip_interface(a.network).ip))
    assert b.extra_ip == () and b.config["daemon"]["prefixs"] == []
    assert b.ping_targets == (b.overlay_address,)


# ---------------------------------------------------------------- names, labs


def test_two_labs_have_disjoint_names():
    a, b = (plan_lab(load_topology(SEED, name=n)) for n in ("lab1", "lab12"))
    assert not set(a.namespaces) & set(b.namespaces)
    assert not set(a.agent_namespaces) & set(b.agent_namespaces)
    assert all(not ns.startswith("lab1-") for ns in b.namespaces)
    assert all(len(ns) <= 10 for ns in a.agent_namespaces)  # daemon.ifname's limit


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_nodes=st.integers(1, 9),
    off_lan=st.sets(st.integers(0, 8)),
    links=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=5),
    natted=st.sets(st.integers(0, 8), max_size=3),
    families=st.sampled_from([{}, {"ipv6": False}, {"ipv4": False}]),
    lab=st.from_regex(r"[a-z][a-z0-9]{0,11}", fullmatch=True),
)
def test_random_labs_keep_the_promises(n_nodes, off_lan, links, natted, families, lab):
    """Random labs: a LAN, point-to-point links, nodes behind one NAT router. A node
    off the LAN gets a link to the first public node, so each has an upstream."""
    names = [f"n{i}" for i in range(n_nodes)]
    natted = {names[i] for i in natted if i < n_nodes}
    public = [n for n in names if n not in natted]
    lan = [n for i, n in enumerate(public) if i not in off_lan or i == 0]
    pairs = [(public[i % len(public)], public[j % len(public)]) for i, j in links if public]
    pairs += [(public[0], n) for n in public if n not in lan]
    doc = {"name": lab, "nodes": {n: {"organization": f"o{i % 3}"} for i, n in enumerate(names)},
           "lans": {"wan": {"members": [*lan, "gw"] if natted else lan, **families}},
           "links": [list(p) for p in pairs if p[0] != p[1]]}
    if natted:
        doc["nat"] = {"gw": {"inside": sorted(natted)}}
    if not doc["lans"]["wan"]["members"]:
        del doc["lans"]
    plan = plan_lab(parse_topology(yaml.safe_dump(doc), "t.yaml"))
    check_plan(plan)
    for node in plan.nodes:
        assert node.config["endpoints"], node.name


# ---------------------------------------------------------------- configs, registry, files


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_configs_and_registry_pass_aronets_checks(path):
    plan = plan_lab(load_topology(path))
    pems = org_keys(plan)
    configs = lab_configs(plan, pems)
    for cfg, node in zip(configs, plan.nodes, strict=True):
        assert cfg.node.common_name == node.name
        assert cfg.settings.mode == node.mode
        assert [str(a.ip) for a in cfg.settings.extra_ip] == list(node.extra_ip)
    registry = build_registry(lab_registry(plan, pems), "registry.json")
    assert len(registry.nodes) == len(plan.nodes)
    assert set(registry.org_keys) == set(plan.organizations)


def test_the_plan_never_holds_a_key():
    plan = plan_lab(load_topology(SEED))
    for node in plan.nodes:
        assert node.config["private_key"] == f"../keys/{node.organization}.pem"
        with pytest.raises(InputError):  # no key file there: nothing secret in the plan
            build_config(node.config, "config.json", base_dir="/nonexistent")


def test_write_lab_files(tmp_path):
    plan = plan_lab(load_topology(SEED, name="files"))
    files = write_lab_files(plan, tmp_path)
    assert sorted(files.keys) == ["example", "example2"]
    for org, path in files.keys.items():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        keys.parse_private(Path(path).read_bytes())
        assert path == str(tmp_path / "keys" / f"{org}.pem")
    registry = json.loads((tmp_path / "registry.json").read_text())
    assert [o["organization"] for o in registry] == ["example", "example2"]
    for node in plan.nodes:
        path = tmp_path / node.name / "config.json"
        assert files.configs[node.name] == str(path)
        assert json.loads(path.read_text()) == node.config
        config, reg = load_both(str(path), files.registry)
        assert reg.get(config.node.key) is not None
    # the two nodes of an organization share its key
    moon, earth = (load_config(files.configs[n]) for n in ("moon", "earth"))
    assert moon.node.public_key == earth.node.public_key
    assert not list(tmp_path.rglob("*.tmp"))


def test_writing_again_makes_new_keys(tmp_path):
    plan = plan_lab(load_topology(SEED, name="again"))
    first = Path(write_lab_files(plan, tmp_path).keys["example"]).read_bytes()
    second = Path(write_lab_files(plan, tmp_path).keys["example"]).read_bytes()
    assert first != second
    build_registry(json.loads((tmp_path / "registry.json").read_text()), "registry.json")


# ---------------------------------------------------------------- fault rules (pure)


def _exprs(rules):
    return [(r["rule"]["chain"], r["rule"]["comment"], r["rule"]["expr"]) for r in rules]


def test_partition_rules_use_the_nat_routers_ports():
    plan = plan_lab(load_topology(SEED))
    rules = partition_rules(plan, "sun", "moon")
    assert _exprs(rules) == [
        ("fault", "partition moon sun", [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "wan-gw"}},
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "wan-moon"}},
            {"drop": None}]),
        ("fault", "partition moon sun", [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "wan-moon"}},
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "wan-gw"}},
            {"drop": None}]),
    ]
    with pytest.raises(ValueError, match="meet at NAT router 'gw'"):
        partition_rules(plan, "sun", "gw")
    with pytest.raises(KeyError):
        partition_rules(plan, "sun", "pluto")


def test_drop_esp_rules_match_non_zero_first_words_on_the_nat_t_port():
    plan = plan_lab(load_topology(SEED))
    rules = drop_esp_rules(plan, "moon", "mars")
    assert len(rules) == 4
    for _, comment, expr in _exprs(rules):
        assert comment == "drop-esp mars moon"
        assert {"match": {"op": "!=", "left": {"payload": {"base": "th", "offset": 64, "len": 32}},
                          "right": 0}} in expr
        assert expr[2]["match"]["right"] == 12025
        assert expr[2]["match"]["left"]["payload"]["protocol"] == "udp"


def test_loss_rule():
    plan = plan_lab(load_topology(SEED))
    rule = loss_rule(plan, "wan", 7)["rule"]
    assert rule["comment"] == "loss wan"
    assert rule["expr"][0]["match"]["right"] == {"set": ["wan-earth", "wan-gw", "wan-mars",
                                                         "wan-moon"]}
    assert rule["expr"][1] == {"match": {"op": "<", "left": {
        "numgen": {"mode": "random", "mod": 100, "offset": 0}}, "right": 7}}
    assert len(loss_rule(plan, "wan", 100)["rule"]["expr"]) == 2  # no numgen: always
    with pytest.raises(ValueError, match="NAT inside link"):
        loss_rule(plan, "gw:sun", 5)


def test_plan_is_frozen():
    plan = plan_lab(load_topology(SEED))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.lab = "other"
    hash(plan.nodes[0])
