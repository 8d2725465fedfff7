"""aronet-lab impair on the host kernel, which has no netem: loss goes into the
switch's nft table per port (one direction with --to), delay is refused before
anything changes, and clear puts back nothing. The lab here is an underlay only (no
agents). Every lab made here is destroyed by its fixture."""

from __future__ import annotations

import json
import os
import secrets
import subprocess

import pytest

from aronet.errors import ApplyError
from lab import impair, underlay
from lab.run import Lab
from lab.topology import TABLE, parse_topology, plan_lab

pytestmark = pytest.mark.root

TOPOLOGY = """\
name: x
nodes: {a: {organization: o}, b: {organization: o}, c: {organization: o}}
lans: {wan: {members: [a, b, c], ipv6: false, loss: 30}}
links: [{between: [a, b], name: ab, ipv6: false}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    topo = parse_topology(TOPOLOGY, "t.yaml", name=f"t{secrets.token_hex(4)}")
    plan = plan_lab(topo)
    underlay.build(plan)
    try:
        if underlay.netem_available(plan) is None:
            pytest.skip("this kernel has netem: the fallback is not what runs here")
        yield Lab(plan, str(tmp_path_factory.mktemp("lab")), "t.yaml", topo)
    finally:
        underlay.destroy(plan)
    assert underlay.leftovers(plan) == []


def loss_rules(lab) -> dict[str, str]:
    out = subprocess.run(["ip", "netns", "exec", lab.plan.switch_ns, "nft", "-j", "list", "chain",
                          "bridge", TABLE, "loss"], capture_output=True, text=True, check=True).stdout
    return {o["rule"]["comment"]: json.dumps(o["rule"]["expr"]) for o in json.loads(out)["nftables"]
            if "rule" in o}


def ping(lab, src: str, dst: str, segment: str, count: int = 1) -> bool:
    a = next(i for i in lab.plan.node(src).interfaces if i.segment == segment)
    b = next(i for i in lab.plan.node(dst).interfaces if i.segment == segment)
    r = subprocess.run(["ip", "netns", "exec", a.ns, "ping", "-c", str(count), "-W1", "-q", str(b.ipv4.ip)],
                       capture_output=True, text=True)
    return r.returncode == 0


def test_loss_toward_one_member_drops_only_that_way(lab):
    assert ping(lab, "a", "b", "ab")
    how = impair.apply(lab, impair.target(lab.plan, "a", "b", to="b"), impair.Impairment(loss=100))
    assert how.startswith("nftables loss")
    assert list(loss_rules(lab)) == ["loss wan", "loss ab to b"]
    assert not ping(lab, "a", "b", "ab")  # the request never reaches b
    assert impair.in_force(lab)["ab"] == {"b": impair.Impairment(loss=100)}
    assert impair.clear(lab, impair.target(lab.plan, "ab")) is True
    assert list(loss_rules(lab)) == ["loss wan"] and ping(lab, "a", "b", "ab")
    assert impair.clear(lab, impair.target(lab.plan, "ab")) is False  # nothing was there


def test_the_topologys_loss_is_replaced_per_port_and_restored(lab):
    declared = impair.declared(lab.plan)
    assert declared["wan"] == dict.fromkeys(("a", "b", "c"), impair.Impairment(loss=30))
    impair.apply(lab, impair.target(lab.plan, "wan", to="c"), impair.Impairment(loss=5))
    assert sorted(loss_rules(lab)) == ["loss wan to a", "loss wan to b", "loss wan to c"]
    rules = loss_rules(lab)
    assert '"right": 5' in rules["loss wan to c"] and '"right": 30' in rules["loss wan to a"]
    impair.restore(lab, "wan", declared)
    assert sorted(loss_rules(lab)) == ["loss wan to a", "loss wan to b", "loss wan to c"]
    assert impair.in_force(lab)["wan"] == declared["wan"]


def test_delay_without_netem_changes_nothing(lab):
    before = loss_rules(lab), impair.in_force(lab)
    with pytest.raises(ApplyError, match="no netem"):
        impair.apply(lab, impair.target(lab.plan, "ab"), impair.Impairment(delay_ms=20, loss=5))
    assert (loss_rules(lab), impair.in_force(lab)) == before
