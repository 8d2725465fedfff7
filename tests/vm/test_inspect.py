"""Inspecting a lab in the microVM: doctor on the guest kernel, and the graph of a
running seed lab rendered with Graphviz. One lab comes up, and always goes down."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from lab import doctor, graph
from lab import run as labrun


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          check=True).stdout




def test_doctor_finds_every_feature_on_the_guest_kernel():
    before = netns_list()
    features = doctor.probe()
    assert netns_list() == before
    assert [f.name for f in features if not f.present] == [], doctor.report(features)
    assert {f.name for f in features} >= {"VRF", "XFRM interfaces", "ESP", "seg6", "nftables",
                                          "netem"}
    assert doctor.can_run_here(features)
    assert doctor.report(features).rstrip().endswith(
        "aronet-lab up can run here: every feature is present")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_of_a_running_seed_lab(lab_up, tmp_path):
    lab, report = lab_up("seed.yaml", "seedg")
    assert report.ok, report.as_text()
    statuses = labrun.statuses(lab)
    dot = graph.to_dot(lab.plan, statuses)
    # every tunnel established (the checks passed): none down, each with a metric
    section = dot.split("// overlay tunnels")[1].split("// routes through a third node")[0]
    tunnels = [line for line in section.splitlines() if line.startswith('  "node:')]
    assert len(tunnels) == len(graph.planned_tunnels(lab.plan)) == 7
    assert all(f'color="{graph.UP}"' in line and "metric" in line for line in tunnels), dot
    path = tmp_path / "seed.svg"
    graph.render(dot, str(path))
    assert path.is_file()
    svg = path.read_text()
    for n in lab.plan.nodes:
        assert f">{n.name}</text>" in svg
    if os.environ.get("ARONET_VM_OUT"):  # for a human to look at, next to the logs
        out = os.path.join(os.environ["ARONET_VM_OUT"], "test_inspect")
        os.makedirs(out, exist_ok=True)
        shutil.copy(path, os.path.join(out, "seed.svg"))
        graph.render(dot, os.path.join(out, "seed.dot"))
