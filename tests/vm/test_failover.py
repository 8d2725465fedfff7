"""Failover measurement (lab/measure.py), in the microVM: a triangle of three nodes
on one LAN with fast babel timers; the direct path a-b fails, traffic from a to b
goes through c, and comes back to the direct tunnel after the heal.

The numbers are measurements, not requirements: the tests check that they were
measured and that the paths are right, never how fast. Each result is kept as JSON
(and a table) under $ARONET_VM_OUT/failover/, and the agents' logs on failure."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lab import run as labrun
from lab.measure import as_table, failover
from lab.topology import TABLE

NAME = "failover"
TOPOLOGY = f"""\
name: {NAME}
options:
  mode: netns
  babel: {{hello_interval: 0.2, update_interval: 1}}
nodes:
  a: {{organization: fo}}
  b: {{organization: fo}}
  c: {{organization: fo}}
lans:
  wan: {{members: [a, b, c], ipv6: false}}
"""


@pytest.fixture(scope="module")
def triangle(tmp_path_factory, keep_lab_logs):
    """The lab, up once for the module; always down, with nothing left."""
    path = tmp_path_factory.mktemp("failover") / "triangle.yaml"
    path.write_text(TOPOLOGY)
    lab = labrun.open_lab(str(path))
    report = None
    try:
        report = labrun.up(lab, 240, say=lambda *_: None)
        yield lab, report
    finally:
        if report is None or not report.ok:
            keep_lab_logs(lab, "test_failover_up")
        assert labrun.down(lab, say=lambda *_: None) == []


@pytest.fixture
def lab(triangle, request, keep_lab_logs):
    lab, report = triangle
    assert report.ok, report.as_text()
    yield lab
    if not hasattr(request.node, "rep_call") or request.node.rep_call.failed:
        keep_lab_logs(lab, request.node.name)


def keep(result: dict, name: str) -> None:
    print(as_table(result))
    out = os.environ.get("ARONET_VM_OUT")
    if out:
        os.makedirs(os.path.join(out, "failover"), exist_ok=True)
        with open(os.path.join(out, "failover", f"{name}.json"), "w") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(out, "failover", f"{name}.txt"), "w") as f:
            f.write(as_table(result))


def no_fault_left(lab) -> None:
    r = subprocess.run(["nsenter", f"--net=/run/netns/{lab.plan.switch_ns}", "--", "nft", "-j", "list",
                        "chain", "bridge", TABLE, "fault"], capture_output=True, text=True, check=True)
    assert not [o for o in json.loads(r.stdout)["nftables"] if "rule" in o]


def check_result(result: dict, fault: str, runs: int) -> None:
    assert (result["a"], result["b"], result["fault"]) == ("a", "b", fault)
    assert result["family"] == 4  # both nodes have an IPv4 extra_ip: it rides SRv6
    assert len(result["runs"]) == runs
    for run in result["runs"]:
        assert run["path_before"]["direct"] is True
        assert run["path_before"]["node"] == "b"
        # while a-b is broken, a reaches b through its tunnel to c
        assert run["path_after"] is not None, run
        assert run["path_after"]["direct"] is False
        assert run["path_after"]["node"] == "c"
        assert run["resumed"] is True, run
        assert isinstance(run["outage_ms"], float) and run["outage_ms"] > 0
        assert isinstance(run["lost"], int) and run["lost"] >= 0
        # the heal brings the route back to the direct tunnel
        assert isinstance(run["return_ms"], int) and run["return_ms"] >= 0
    outages = [r["outage_ms"] for r in result["runs"]]
    assert result["max_outage_ms"] == max(outages)
    assert min(outages) <= result["median_outage_ms"] <= max(outages)


@pytest.mark.stacks("debian12", "debian13")
def test_drop_esp_reroutes_through_the_third_node_and_heals(lab):
    result = failover(lab, "a", "b", "drop-esp", runs=2, timeout=60)
    keep(result, "drop-esp")
    check_result(result, "drop-esp", 2)
    no_fault_left(lab)


@pytest.mark.deep  # drop-esp above proves the reroute, test_faults.py a partition; --deep runs it
def test_partition_fails_over_through_the_third_node_and_heals(lab):
    result = failover(lab, "a", "b", "partition", runs=1, timeout=60)
    keep(result, "partition")
    check_result(result, "partition", 1)
    no_fault_left(lab)
