"""End to end, in the microVM: whole meshes from the bundled topologies, with the
real agent on every node, checked along the chain and torn down.

Each test keeps its lab's agent logs under $ARONET_VM_OUT/<test>/ when it fails."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from lab import run as labrun
from lab.checks import ping_matrix, run_checks


@pytest.mark.stacks("debian12", "debian13")
@pytest.mark.parametrize("mode", ["netns", "vrf"])
def test_seed_scenario_converges_and_passes_every_check(lab_up, mode):
    _lab, report = lab_up("seed.yaml", f"seed{mode[0]}", mode)
    assert report.ok, report.as_text()
    assert [s.step for s in report.steps] == ["ike", "child", "interface", "babel", "routes",
                                              "ping", "srv6", "sync"]


@pytest.mark.stacks("debian12", "debian13")
def test_node_behind_nat_is_reachable_from_every_other_node(lab_up):
    lab, report = lab_up("seed.yaml", "seedt")
    assert report.ok, report.as_text()
    views = labrun.node_views(lab)
    sun = next(v for v in views if v.name.endswith("/sun"))
    assert lab.plan.node("sun").nat is not None
    others = [v for v in views if v is not sun]
    problems, _detail = ping_matrix([*others, sun])
    assert problems == []
    # every other node pinged sun in both families, through the tunnels sun initiated
    to_sun = [(v.name, fam) for v in others for fam in (4, 6) if fam in v.sources]
    assert len(to_sun) == 2 * len(others)


def test_ring_reaches_every_node_over_several_hops(lab_up):
    lab, report = lab_up("ring.yaml", "ringt")
    assert report.ok, report.as_text()
    views = {v.name: v for v in labrun.node_views(lab)}
    status = labrun.statuses(lab)
    n1 = status["ring/n1"].to_json()
    n3_net = ip_interface(lab.plan.node("n3").network).network
    tunnels_to = {t["name"]: p["peer"] for p in n1["peers"] for t in p["tunnels"]}
    routes = [r for p in n1["peers"] for r in p["routes"]]
    (to_n3,) = [r for r in routes if r["prefix"] == str(n3_net)]
    # n1 and n3 are blocked on the underlay: the route goes through a neighbour's tunnel
    assert tunnels_to[to_n3["interface"]] in ("ring/n2", "ring/n5")
    assert to_n3["metric"] > min(r["metric"] for r in routes)
    # the direct tunnel never came up, yet n3 answers
    direct = [t for p in n1["peers"] if p["peer"] == "ring/n3" for t in p["tunnels"]]
    assert all(t["child"] != "INSTALLED" for t in direct)
    assert run_checks(list(views.values())).ok
