"""babeld as the routing daemon: `daemon.routing` in config and lab topologies, the
pure rendering (same guarantees as BIRD's config), what babeld can take at run time,
and the adapter's reading of `dump` in the BIRD adapter's fields."""

from __future__ import annotations

import pytest
from builders import make_config
from test_planner import plans

from aronet import keys, model
from aronet.adapters.babeld import parse_dump
from aronet.core import babeld, names, planner
from aronet.core.state import Route, RoutingConfig, XfrmInterface
from aronet.errors import InputError
from aronet.load import build_config
from lab.topology import parse_topology, plan_lab

SPECS = [(0, ["ip4"]), (0, ["ip4", "ip6"]), (1, ["ip4"])]


def with_routing(routing: str):
    """The planner test world with every node's daemon.routing set."""
    reg, cfgs = plans(SPECS)
    out = []
    for cfg, _ in cfgs:
        settings = type(cfg.settings)(**{**cfg.settings.__dict__, "routing": routing})
        out.append(type(cfg)(cfg.file, cfg.node, settings, cfg.private_key_pem))
    return reg, out


# ---------------------------------------------------------------- config and topology


def test_routing_defaults_to_the_one_constant_and_accepts_babeld():
    pem = keys.private_pem(keys.generate()).decode()
    vrf = build_config(make_config(private_key=pem), "c.json")
    assert vrf.settings.routing == model.DEFAULT_ROUTING["vrf"]
    netns = make_config(private_key=pem)
    netns["daemon"]["mode"] = "netns"
    assert build_config(netns, "c.json").settings.routing == model.DEFAULT_ROUTING["netns"]
    assert set(model.DEFAULT_ROUTING.values()) <= set(model.ROUTING_DAEMONS)
    cfg = build_config(make_config(private_key=pem, routing="babeld", mode="netns"), "c.json")
    assert cfg.settings.routing == "babeld"


TOPO = """\
name: t
options: {routing: babeld}
nodes:
  a: {organization: o}
  b: {organization: o, routing: bird}
  c: {organization: o}
lans:
  wan: {members: [a, b, c]}
"""


def test_topology_routing_per_node_and_in_options():
    plan = plan_lab(parse_topology(TOPO, "t.yaml"))
    assert {n.name: n.config["daemon"]["routing"] for n in plan.nodes} == {
        "a": "babeld", "b": "bird", "c": "babeld"}
    unset = plan_lab(parse_topology(TOPO.replace("options: {routing: babeld}\n", ""), "t.yaml"))
    daemons = {n.name: n.config["daemon"].get("routing") for n in unset.nodes}
    assert daemons == {"a": None, "b": "bird", "c": None}  # left out: aronet's default


@pytest.mark.parametrize("old,new,path", [
    ("options: {routing: babeld}", "options: {routing: frr}", "$.options.routing"),
    ("a: {organization: o}", "a: {organization: o, routing: frr}", "$.nodes.a.routing"),
])
def test_topology_routing_must_be_bird_or_babeld(old, new, path):
    with pytest.raises(InputError) as e:
        parse_topology(TOPO.replace(old, new), "t.yaml")
    assert [str(p) for p in e.value.problems] == [
        f't.yaml: {path}: "frr" is not one of "bird", "babeld"']


# ---------------------------------------------------------------- rendering


def test_babeld_config_from_the_same_desired_state():
    reg, cfgs = with_routing("babeld")
    for cfg in cfgs:  # (built directly: both modes, though the loader refuses babeld with VRF)
        d = planner.desired(cfg, reg)
        (conf,) = d.state.of(RoutingConfig)
        assert conf.daemon == "babeld" and conf.file_name == "babeld.conf"
        lines = conf.text.splitlines()
        tunnels = sorted(x.name for x in d.state.of(XfrmInterface))
        s = cfg.settings
        assert [ln.split()[1] for ln in lines if ln.startswith("interface ")] == tunnels
        hello, update = f"{s.babel_hello:g}", f"{s.babel_update:g}"
        assert all(f"type tunnel hello-interval {hello} update-interval {update}" in ln
                   for ln in lines if ln.startswith("interface "))
        # imports exactly what other nodes own, in order, then nothing else
        allowed = [ln.split()[2] for ln in lines if ln.startswith("in ip ")]
        assert sorted(allowed) == sorted({p for p, _ in d.babel_routes})
        assert lines.index("in deny") > max(i for i, ln in enumerate(lines) if ln.startswith("in ip"))
        assert str(cfg.node.network.network) not in allowed
        # announces its own network from aronet's unreachable route, nothing else
        own = str(cfg.node.network.network)
        assert f"redistribute ip {own} eq {cfg.node.network.network.prefixlen} proto 211 allow" in lines
        assert lines[-2:] == ["redistribute local deny", "redistribute deny"]
        assert Route(d.router_ns, d.overlay_table, own, type="unreachable") in d.state.resources
        assert f"export-table {d.overlay_table}" in lines and f"import-table {d.overlay_table}" in lines
        assert f"router-id {names.babel_router_id(cfg.node.key)}" in lines
        assert "skip-kernel-setup true" in lines


def test_bird_nodes_keep_their_config_and_get_no_unreachable_route():
    reg, cfgs = with_routing("bird")
    for cfg in cfgs:
        d = planner.desired(cfg, reg)
        (conf,) = d.state.of(RoutingConfig)
        assert conf.daemon == "bird" and "protocol babel aronet_babel" in conf.text
        assert not [r for r in d.state.of(Route) if r.type == "unreachable"]


def test_babel_router_ids_are_eui64_unique_and_stable():
    ids = {names.babel_router_id(("o", f"n{i}")) for i in range(500)}
    assert len(ids) == 500
    rid = names.babel_router_id(("o", "n1"))
    assert rid == names.babel_router_id(("o", "n1")) and len(rid.split(":")) == 8
    assert int(rid.split(":")[0], 16) & 0x03 == 0x02  # locally administered unicast


@pytest.mark.parametrize("ms,text", [(1000, "1"), (200, "0.2"), (4000, "4"), (1250, "1.25"), (10, "0.01")])
def test_intervals_in_seconds(ms, text):
    line = babeld.interface_line("ar-1", babeld.BabeldSettings((), ms, ms, 254))
    assert line == f"interface ar-1 type tunnel hello-interval {text} update-interval {text}"


def _conf(tunnels, others=("fd71::/64",)):
    return babeld.render(node_name="o/n", router_id="02:00:00:00:00:00:00:01", own=["fd70::/64"],
                         others=list(others), babel=babeld.BabeldSettings(tuple(tunnels), 1000, 4000, 254))


def test_only_interface_changes_are_applied_at_run_time():
    old = _conf(["ar-1", "ar-2"])
    assert babeld.live_changes(old, old) == []
    assert babeld.live_changes(old, _conf(["ar-1", "ar-3"])) == [
        "flush interface ar-2",
        "interface ar-3 type tunnel hello-interval 1 update-interval 4"]
    assert babeld.live_changes(old, _conf(["ar-1", "ar-2"], others=["fd71::/64", "fd72::/64"])) is None
    assert babeld.runnable(old) and not babeld.runnable(_conf([]))


# ---------------------------------------------------------------- dump

DUMP = """\
add interface ar-0000000a up true ipv6 fe80::1
add interface ar-0000000b up true ipv6 fe80::1
add neighbour 55d1c0e2a440 address fe80::6c56:bfff:fe1a:4838 if ar-0000000a reach fff0 ureach 0000 rxcost 96 txcost 96 rtt 0.158 rttcost 0 cost 96
add neighbour 55d1c0e2a4b0 address fe80::2 if ar-0000000b reach 0000 ureach 0000 rxcost 65535 txcost 65535 cost 65535
add xroute fd70::/64-::/0 prefix fd70::/64 from ::/0 metric 0
add route 55d1c0e2a660 prefix fd71::/64 from ::/0 installed yes id 02:00:00:00:00:00:00:02 metric 96 refmetric 0 via fe80::6c56:bfff:fe1a:4838 if ar-0000000a
add route 55d1c0e2a770 prefix fd72::/64 from ::/0 installed yes id 02:00:00:00:00:00:00:03 metric 192 refmetric 96 via fe80::6c56:bfff:fe1a:4838 if ar-0000000a
add route 55d1c0e2a880 prefix fd72::/64 from ::/0 installed no id 02:00:00:00:00:00:00:03 metric 65535 refmetric 96 via fe80::2 if ar-0000000b
add route 55d1c0e2a990 prefix fd73::/64 from 2001:db8::/32 installed yes id 02:00:00:00:00:00:00:04 metric 96 refmetric 0 via fe80::2 if ar-0000000b
""".splitlines()  # noqa: E501 (babeld writes one line per object)


def test_dump_gives_the_bird_adapters_fields():
    neighbours, routes = parse_dump(DUMP)
    assert neighbours == [
        {"address": "fe80::6c56:bfff:fe1a:4838", "interface": "ar-0000000a", "metric": 96,
         "routes": 2, "rxcost": 96, "txcost": 96, "rtt": 0.158, "hellos": "12", "expires": None},
        {"address": "fe80::2", "interface": "ar-0000000b", "metric": 65535, "routes": 0,
         "rxcost": 65535, "txcost": 65535, "rtt": None, "hellos": "0", "expires": None},
    ]
    # only installed routes; a source-specific one (aronet never makes them) is left out
    assert routes == [
        {"prefix": "fd71::/64", "via": "fe80::6c56:bfff:fe1a:4838", "interface": "ar-0000000a",
         "metric": 96},
        {"prefix": "fd72::/64", "via": "fe80::6c56:bfff:fe1a:4838", "interface": "ar-0000000a",
         "metric": 192},
    ]
    assert parse_dump(["BABEL 1.0", "garbage", "add"]) == ([], [])


def test_the_imported_prefixes_are_read_back_from_the_config():
    text = babeld.render(node_name="o/n", router_id="02:00:00:00:00:00:00:01", own=["fd00:1::/64"],
                         others=["fd00:2::/64", "fd00:3::/48"],
                         babel=babeld.BabeldSettings(("ar-x",), 1000, 4000, 128))
    assert babeld.imported(text) == {"fd00:2::/64", "fd00:3::/48"}


# ---------------------------------------------------------------- prefix origin


def test_birds_babel_router_id_is_its_router_id_in_the_low_half():
    key = ("o", "n1")
    rid = names.router_id(key)
    assert names.bird_babel_router_id(key) == "00:00:00:00:" + ":".join(
        f"{int(b):02x}" for b in rid.split("."))
    assert names.babel_router_ids(key) == (names.babel_router_id(key), names.bird_babel_router_id(key))


def with_prefix_origin():
    reg, cfgs = with_routing("babeld")
    return reg, [type(c)(c.file, c.node, type(c.settings)(**{**c.settings.__dict__, "prefix_origin": True}),
                         c.private_key_pem) for c in cfgs]


def test_prefix_origin_imports_each_prefix_only_from_its_owners_router_ids():
    reg, cfgs = with_prefix_origin()
    owners = {str(p): n.key for n in reg.nodes
              for p in (n.network.network, *n.ipv6_prefixes)}
    for cfg in cfgs:
        d = planner.desired(cfg, reg)
        (conf,) = d.state.of(RoutingConfig)
        lines = [ln.split() for ln in conf.text.splitlines() if ln.startswith("in ip ")]
        assert lines and all(w[5] == "id" and w[-1] == "allow" for w in lines)
        got = {}
        for w in lines:
            got.setdefault(w[2], set()).add(w[6])
        assert got == {p: set(names.babel_router_ids(owners[p])) for p, _ in d.babel_routes}
        # what the hold keeps over a restart is still read back
        assert babeld.imported(conf.text) == {p for p, _ in d.babel_routes}
    # off (the default): no id filter, so nodes of other implementations are still heard
    reg, cfgs = with_routing("babeld")
    (conf,) = planner.desired(cfgs[0], reg).state.of(RoutingConfig)
    assert " id " not in conf.text


def test_prefix_origin_needs_babeld():
    pem = keys.private_pem(keys.generate()).decode()
    ok = build_config(make_config(private_key=pem, routing="babeld", mode="netns",
                                  babel={"prefix_origin": True}), "c.json")
    assert ok.settings.prefix_origin is True
    assert build_config(make_config(private_key=pem), "c.json").settings.prefix_origin is False
    with pytest.raises(InputError) as e:
        build_config(make_config(private_key=pem, babel={"prefix_origin": True}), "c.json")
    assert "$.daemon.babel.prefix_origin" in str(e.value) and "BIRD" in str(e.value)


def test_topology_prefix_origin_reaches_the_babeld_nodes_and_is_refused_for_bird():
    topo = TOPO.replace("  b: {organization: o, routing: bird}\n", "  b: {organization: o}\n").replace(
        "options: {routing: babeld}", "options: {routing: babeld, babel: {prefix_origin: true}}")
    plan = plan_lab(parse_topology(topo, "t.yaml"))
    assert {n.name: n.config["daemon"]["babel"].get("prefix_origin") for n in plan.nodes} == {
        "a": True, "b": True, "c": True}
    with pytest.raises(InputError) as e:
        parse_topology(TOPO.replace("options: {routing: babeld}",
                                    "options: {routing: babeld, babel: {prefix_origin: true}}"), "t.yaml")
    assert [str(p) for p in e.value.problems] == [
        "t.yaml: $.nodes.b: babel.prefix_origin (from $.options.babel) needs routing babeld, and "
        "this node runs bird: BIRD cannot filter on the router id that originated a route"]
    # per node: only that node
    one = plan_lab(parse_topology(TOPO.replace("a: {organization: o}",
                                               "a: {organization: o, babel: {prefix_origin: true}}"),
                                  "t.yaml"))
    assert [n.name for n in one.nodes if n.config["daemon"]["babel"].get("prefix_origin")] == ["a"]
