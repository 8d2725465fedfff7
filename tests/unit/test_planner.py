"""The planner: properties over random registries, and the design rules one by one."""

from __future__ import annotations

import ast
import dataclasses
import os
import shutil
import subprocess
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aronet import keys
from aronet.core import bird, names, planner
from aronet.core.diff import diff
from aronet.core.state import (
    Address,
    Connection,
    Route,
    RoutingConfig,
    XfrmInterface,
)
from aronet.load import build_config, build_registry

KEYS = [keys.generate() for _ in range(3)]
PUB = [keys.public_pem(k) for k in KEYS]
PEM = [keys.private_pem(k).decode() for k in KEYS]

# An endpoint kind: public IPv4, public IPv6, IPv4 behind NAT, a hostname.
EP_KINDS = ["ip4", "ip6", "nat4", "host4"]


def _endpoints(i: int, kinds: list[str]) -> list[dict]:
    eps = []
    for j, kind in enumerate(kinds):
        if kind == "ip4":
            ep = {"address": f"10.{i // 256}.{i % 256}.{j + 1}"}
        elif kind == "ip6":
            ep = {"address": f"2001:db8::{i:x}:{j + 1}"}
        elif kind == "nat4":
            ep = {"address": None, "address_family": "ip4"}
        else:
            ep = {"address": f"n{i}-{j}.example.net", "address_family": "ip4"}
        eps.append({**ep, "port": 12025})
    return eps


def world(specs: list[tuple[int, list[str]]]):
    """specs: (organization index, endpoint kinds) per node -> (registry doc, config
    docs). Node i owns fd00:i::/64 and 10.200.i.0/24."""
    orgs: dict[int, dict] = {}
    configs = []
    for i, (org, kinds) in enumerate(specs):
        net, pfx = f"fd00:{i:x}::1/64", f"100.{64 + i // 256}.{i % 256}.0/24"
        eps = _endpoints(i, kinds)
        o = orgs.setdefault(org, {"public_key": PUB[org], "organization": f"org{org}", "nodes": []})
        o["nodes"].append({"common_name": f"n{i}", "endpoints": eps,
                           "remarks": {"network": net, "prefixs": [pfx]}})
        configs.append({"private_key": PEM[org], "organization": f"org{org}", "common_name": f"n{i}",
                        "daemon": {"network": net, "prefixs": [pfx], "mode": ["vrf", "netns"][i % 2]},
                        "endpoints": eps})
    return list(orgs.values()), configs


def plans(specs):
    reg_doc, cfg_docs = world(specs)
    reg = build_registry(reg_doc, "registry.json")
    return reg, [(build_config(c, f"n{i}.json"), None) for i, c in enumerate(cfg_docs)]


node_spec = st.tuples(st.integers(0, 2), st.lists(st.sampled_from(EP_KINDS), min_size=1, max_size=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(node_spec, min_size=2, max_size=8))
def test_properties_of_random_meshes(specs):
    reg, cfgs = plans(specs)
    for cfg, _ in cfgs:
        d = planner.desired(cfg, reg)
        assert diff(d.state, d.state) == ()
        xfrm = d.state.of(XfrmInterface)
        assert len({x.if_id for x in xfrm}) == len(xfrm), "if_ids collide"
        assert len({x.name for x in xfrm}) == len(xfrm), "names collide"
        assert all(0 < x.if_id < 2**32 and len(x.name.encode()) <= 15 for x in xfrm)
        conns = d.state.of(Connection)
        assert {c.name for c in conns} == {x.name for x in xfrm}
        assert all(c.if_id == x.if_id for c, x in zip(conns, xfrm, strict=True))
        expected = sum(
            1 for peer in reg.nodes if peer.key != cfg.node.key
            for le in cfg.node.endpoints for re_ in peer.endpoints
            if le.family == re_.family and (le.address, re_.address) != (None, None)
        )
        assert len(conns) == expected
        for c in conns:
            assert c.remote_addrs != "%any" or c.initiate is False
        route_keys = [r.key for r in d.state.of(Route)]
        assert len(route_keys) == len(set(route_keys))


@settings(max_examples=30, deadline=None)
@given(st.lists(node_spec, min_size=2, max_size=6))
def test_exactly_one_side_initiates(specs):
    reg, cfgs = plans(specs)
    by_node = {cfg.node.key: planner.desired(cfg, reg) for cfg, _ in cfgs}
    sides: dict[tuple, list[bool]] = {}
    for key, d in by_node.items():
        for c in d.state.of(Connection):
            me_sn, peer_sn = c.local_id.rsplit("=", 1)[1], c.remote_id.rsplit("=", 1)[1]
            peer = tuple(c.peer.split("/"))
            pair = (*tuple(sorted([(key, me_sn), (peer, peer_sn)])), c.family)
            sides.setdefault(pair, []).append(c.initiate)
    for pair, flags in sides.items():
        assert sorted(flags) == [False, True], pair


def test_nat_node_initiates_and_public_peers_only_respond_to_it():
    reg, cfgs = plans([(0, ["ip4"]), (1, ["nat4"]), (0, ["ip4"])])
    nat = planner.desired(cfgs[1][0], reg)
    assert all(c.initiate for c in nat.state.of(Connection))
    for i in (0, 2):
        d = planner.desired(cfgs[i][0], reg)
        to_nat = [c for c in d.state.of(Connection) if c.peer == "org1/n1"]
        assert [(c.remote_addrs, c.initiate) for c in to_nat] == [("%any", False)]


def test_both_null_pairs_are_skipped():
    reg, cfgs = plans([(0, ["nat4"]), (1, ["nat4"])])
    assert planner.desired(cfgs[0][0], reg).state.of(Connection) == []


def test_if_ids_are_stable_when_other_peers_change():
    reg_a, cfgs = plans([(0, ["ip4"]), (1, ["ip4", "ip6"]), (2, ["nat4"])])
    reg_b, _ = plans([(0, ["ip4"]), (1, ["ip4", "ip6"]), (2, ["nat4"]), (1, ["ip4"]), (0, ["ip6"])])
    ids = lambda reg: {(c.peer, c.remote_id): c.if_id  # noqa: E731
                       for c in planner.desired(cfgs[0][0], reg).state.of(Connection)}
    a, b = ids(reg_a), ids(reg_b)
    assert a and all(b[k] == v for k, v in a.items())


def test_if_id_collisions_are_resolved_deterministically(monkeypatch):
    # Force every first candidate to collide: allocation must still give unique ids.
    real = names.if_id_candidate
    monkeypatch.setattr(names, "if_id_candidate",
                        lambda node, key, attempt: 7 if attempt == 0 else real(node, key, attempt))
    keys_ = [("o", f"n{i}", "ip4", 0, 0) for i in range(5)]
    ids = names.allocate_if_ids(("o", "me"), keys_)
    assert len(set(ids.values())) == 5
    assert ids == names.allocate_if_ids(("o", "me"), list(reversed(keys_)))


def test_identities_and_ike_settings():
    reg, cfgs = plans([(0, ["ip4"]), (1, ["ip4"])])
    (c,) = planner.desired(cfgs[0][0], reg).state.of(Connection)
    assert c.local_id == "O=org0, CN=n0, serialNumber=0"
    assert c.remote_id == "O=org1, CN=n1, serialNumber=0"
    assert "x25519" in c.ike_proposal and "gcm" in c.ike_proposal and "gcm" in c.esp_proposal
    assert c.remote_pubkey == PUB[1]


def test_srv6_sids_and_ipv4_routes_via_owner_dx4():
    reg, cfgs = plans([(0, ["ip4"]), (1, ["ip4"])])
    d = planner.desired(cfgs[0][0], reg)
    assert d.sids == {"End": "fd00::ffff:0:0:a", "End.DX4": "fd00::ffff:0:0:b"}
    assert IPv6Address(d.sids["End.DX4"]) in cfgs[0][0].node.sid_range
    encap = [r for r in d.state.of(Route) if r.encap and r.encap[0] == "seg6"]
    assert [(r.dst, r.encap, r.table) for r in encap] == [
        ("100.64.1.0/24", ("seg6", "encap", "fd00:1::ffff:0:0:b"), 128)]


def test_vrf_mode_host_routes_leak_into_the_vrf():
    reg, cfgs = plans([(0, ["ip4"]), (1, ["ip4"])])
    d = planner.desired(cfgs[0][0], reg)  # node 0 is in VRF mode
    host = {r.dst: r for r in d.state.of(Route) if r.ns == "" and r.table == 254}
    assert set(host) == {"fd00:1::/64", "100.64.1.0/24"}
    assert all(r.dev == "aronet" and r.gateway is None for r in host.values())


def test_netns_mode_isolation():
    reg, cfgs = plans([(0, ["ip4"]), (1, ["ip4"])])
    d = planner.desired(cfgs[1][0], reg)  # node 1 is in netns mode
    assert d.router_ns == "aronet"
    assert all(x.ns == "aronet" and x.master is None for x in d.state.of(XfrmInterface))
    defaults = {r.dst: r.gateway for r in d.state.of(Route) if r.ns == "aronet" and r.dst.endswith("/0")}
    assert defaults == {"0.0.0.0/0": "fe80::1", "::/0": "fe80::1"}
    addrs = {(a.ns, a.dev, a.address) for a in d.state.of(Address)}
    assert ("", "aronet", "fe80::1/64") in addrs and ("aronet", "aronet-host", "fe80::2/64") in addrs
    assert ("aronet", "lo", "fd00:1::1/128") in addrs


def test_babel_imports_only_prefixes_other_nodes_own():
    reg, cfgs = plans([(0, ["ip4"]), (1, ["ip4"]), (2, ["ip6"])])
    d = planner.desired(cfgs[0][0], reg)
    text = d.state.of(RoutingConfig)[0].text
    assert "define ARONET_OWNED = [ fd00:1::/64, fd00:2::/64 ];" in text
    assert "route fd00::/64 unreachable;" in text
    assert "0.0.0.0/0" not in text and "::/0" not in text
    assert "kernel table 128;" in text


def test_bird_renders_newer_options_only_for_newer_versions():
    reg, cfgs = plans([(0, ["ip4"]), (1, ["ip4"])])
    old = planner.desired(cfgs[0][0], reg, bird_version=(2, 0, 12)).state.of(RoutingConfig)[0].text
    new = planner.desired(cfgs[0][0], reg, bird_version=(2, 15, 1)).state.of(RoutingConfig)[0].text
    assert "type wired;" in old and "type tunnel" not in old
    assert "type tunnel;" in new
    assert bird.parse_version("BIRD version 2.0.12") == (2, 0, 12)
    # IPv4 with IPv6 next hops (2.14): this node's IPv4 prefixes announced, none imported
    assert "extended next hop" not in old and "ipv4" not in old
    tunnel_only = planner.desired(cfgs[0][0], reg, bird_version=(2, 13)).state.of(RoutingConfig)[0].text
    assert "type tunnel;" in tunnel_only and "extended next hop" not in tunnel_only
    assert "extended next hop yes;" in new
    assert "protocol static aronet_own4 {\n  ipv4;\n  route 100.64.0.0/24 unreachable;\n}" in new
    assert "  ipv4 {\n    import none;\n    export where source = RTS_STATIC;\n  };" in new


def test_a_config_for_bird_2_17_parses_with_the_debian_13_roots_bird(tmp_path):
    """BIRD 2.17 itself checks what aronet renders for it, in the Debian 13 root
    (lab/vm/roots.py; `bird -p` in a chroot: it parses and exits)."""
    from lab.vm import roots

    root = roots.STACKS["debian13"].root
    if os.geteuid() != 0 or not roots.ready(roots.STACKS["debian13"]):
        pytest.skip("needs root and the Debian 13 root (ci/build-root debian13; make test builds it)")
    version = bird.parse_version(subprocess.run(["chroot", str(root), "bird", "--version"],
                                                capture_output=True, text=True).stderr)
    assert version >= (2, 14)
    reg, cfgs = plans([(0, ["ip4"]), (1, ["ip4"]), (2, ["nat4"])])
    for cfg, _ in cfgs[:2]:
        cfg = dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, routing="bird"))
        text = planner.desired(cfg, reg, bird_version=version).state.of(RoutingConfig)[0].text
        assert "extended next hop yes;" in text
        conf = root / "tmp" / f"aronet-test-{os.getpid()}.conf"
        conf.write_text(text)
        try:
            r = subprocess.run(["chroot", str(root), "bird", "-p", "-c", f"/tmp/{conf.name}"],
                               capture_output=True, text=True)
        finally:
            conf.unlink()
        assert r.returncode == 0, r.stderr


ORIGIN_FILTER = """router id 10.0.0.1;
protocol device {}
filter f { if babel_router_id = 1 then accept; reject; }
protocol babel { ipv6 { import filter f; export none; }; }
"""


def _bird_parses(argv: list[str], conf: Path, shown: str) -> subprocess.CompletedProcess:
    conf.write_text(ORIGIN_FILTER)
    try:
        return subprocess.run([*argv, "bird", "-p", "-c", shown], capture_output=True, text=True)
    finally:
        conf.unlink()


def test_bird_has_no_originator_attribute_for_prefix_origin(tmp_path):
    """daemon.babel.prefix_origin is refused with BIRD because BIRD's filters cannot see
    the babel router id that originated a route. The day a BIRD here can, this fails:
    then give BIRD nodes prefix_origin too (aronet.load.config, aronet.core.bird)."""
    from lab.vm import roots

    checked = []
    if shutil.which("bird"):
        conf = tmp_path / "origin.conf"
        checked.append(("host", _bird_parses([], conf, str(conf))))
    root = roots.STACKS["debian13"].root
    if os.geteuid() == 0 and roots.ready(roots.STACKS["debian13"]):
        conf = root / "tmp" / f"aronet-origin-{os.getpid()}.conf"
        checked.append(("debian13", _bird_parses(["chroot", str(root)], conf, f"/tmp/{conf.name}")))
    if not checked:
        pytest.skip("no BIRD here (ci/install-deps) and no Debian 13 root")
    for where, r in checked:
        assert r.returncode != 0 and "syntax error" in r.stderr, (where, r.stderr)


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 is not installed (ci/install-deps)")
@pytest.mark.parametrize("mode_node", [0, 1])
def test_rendered_bird_config_parses(tmp_path, mode_node):
    """BIRD itself checks the syntax (bird -p parses and exits)."""
    reg, cfgs = plans([(0, ["ip4"]), (1, ["ip4"]), (2, ["nat4"])])
    cfg = cfgs[mode_node][0]
    cfg = dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, routing="bird"))
    text = planner.desired(cfg, reg).state.of(RoutingConfig)[0].text
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    r = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_one_changed_node_of_a_thousand_touches_only_its_objects():
    specs = [(i % 3, ["ip4"]) for i in range(1000)]
    reg_doc, cfg_docs = world(specs)
    cfg = build_config(cfg_docs[0], "c")
    before = planner.desired(cfg, build_registry(reg_doc, "r"))
    reg_doc[1]["nodes"][10]["remarks"]["prefixs"].append("172.31.0.0/24")  # node n31
    after = planner.desired(cfg, build_registry(reg_doc, "r"))
    plan = diff(after.state, before.state)
    touched = {getattr(a.resource, "peer", "") for a in plan if a.resource.kind == "route"}
    assert touched == {"org1/n31"}
    assert sorted(a.resource.kind for a in plan) == ["nft", "route", "route"]


CORE = Path(__file__).resolve().parents[2] / "aronet"
FORBIDDEN = {"pyroute2", "vici", "nftables", "subprocess", "socket", "os", "time", "random",
             "asyncio", "shutil"}


@pytest.mark.parametrize("path", [*sorted(p.name for p in (CORE / "core").glob("*.py")), "../model.py"])
def test_core_is_pure(path):
    """The core imports no system library and reads no clock or environment."""
    tree = ast.parse((CORE / "core" / path).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, imported & FORBIDDEN
