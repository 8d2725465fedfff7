"""babeld as the routing daemon, end to end in the microVM: the seed scenario with
babeld on every node (netns mode), the seed with a mix of BIRD (VRF mode) and babeld
(netns mode) nodes, a killed babeld restarted by its agent, and failover with babeld.

The seed variants are the bundled seed.yaml with `routing` set, written to tmp_path."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from test_failover import TOPOLOGY as TRIANGLE
from test_failover import check_result, keep
from test_faults import poll

from aronet.client import request
from lab import run as labrun
from lab.checks import wait_converged
from lab.measure import failover

EXAMPLES = Path(__file__).resolve().parents[2] / "lab" / "examples"


def seed_with(tmp_path, routing: str | dict[str, str]) -> str:
    """seed.yaml with `options.routing` (a str) or a per-node `routing` (a dict)."""
    doc = yaml.safe_load((EXAMPLES / "seed.yaml").read_text())
    if isinstance(routing, str):
        doc.setdefault("options", {})["routing"] = routing
    else:
        for node, daemon in routing.items():
            doc["nodes"][node]["routing"] = daemon
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def info(lab, node: str) -> dict:
    return request(lab.control_socket(node), {"cmd": "info"}, timeout=20)["info"]


def routing_of(lab) -> dict[str, str]:
    return {n.name: info(lab, n.name)["routing"] for n in lab.plan.nodes}


def babel_kernel_routes(lab, node: str) -> str:
    """babeld's routes in the node's overlay table (proto babel: babeld has no option
    to choose the protocol)."""
    view = next(v for v in labrun.node_views(lab) if v.name.endswith(f"/{node}"))
    ns = view.router_ns or view.ns
    table = view.desired.overlay_table
    return subprocess.run(["ip", "-n", ns, "-6", "route", "show", "table", str(table), "proto", "babel"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.stacks("debian12", "debian13")
def test_seed_converges_with_babeld_on_every_node_and_a_killed_babeld_is_restarted(lab_up, tmp_path):
    # netns mode throughout: aronet refuses babeld in VRF mode (babeld 1.12 hears nothing there)
    lab, report = lab_up(seed_with(tmp_path, "babeld"), "seedb", "netns")
    assert report.ok, report.as_text()
    assert set(routing_of(lab).values()) == {"babeld"}
    for node in ("moon", "sun"):
        assert babel_kernel_routes(lab, node).count("\n") == 3  # the other three networks

    before = info(lab, "moon")["children"]["babeld"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted():
        now = info(lab, "moon")["children"]["babeld"]
        return (None if now["pid"] not in (None, before["pid"]) and now["restarts"] > before["restarts"]
                else f"{now}")
    poll(restarted)
    again = wait_converged(labrun.node_views(lab), 180)
    assert again.ok, again.as_text()


@pytest.mark.stacks("debian12", "debian13")
def test_seed_converges_with_a_mix_of_bird_and_babeld(lab_up, tmp_path):
    # the seed's modes: moon and earth (BIRD) in VRF mode, sun and mars (babeld) in netns mode
    mix = {"moon": "bird", "earth": "bird", "sun": "babeld", "mars": "babeld"}
    lab, report = lab_up(seed_with(tmp_path, mix), "seedm")
    assert report.ok, report.as_text()
    assert routing_of(lab) == mix
    assert babel_kernel_routes(lab, "mars").count("\n") == 3


@pytest.fixture
def babeld_triangle(tmp_path, keep_lab_logs):
    path = tmp_path / "triangle.yaml"
    path.write_text(TRIANGLE.replace("name: failover", "name: fobabeld").replace(
        "  mode: netns\n", "  mode: netns\n  routing: babeld\n"))
    lab = labrun.open_lab(str(path))
    report = None
    try:
        report = labrun.up(lab, 240, say=lambda *_: None)
        assert report.ok, report.as_text()
        yield lab
    finally:
        labrun.stop_agents(lab)
        keep_lab_logs(lab, "test_babeld_failover")
        assert labrun.down(lab, say=lambda *_: None) == []


@pytest.mark.deep  # test_failover.py proves it: babeld is the default in netns mode; --deep runs it
def test_failover_with_babeld(babeld_triangle):
    assert set(routing_of(babeld_triangle).values()) == {"babeld"}
    result = failover(babeld_triangle, "a", "b", "drop-esp", runs=1, timeout=60)
    keep(result, "drop-esp-babeld")
    check_result(result, "drop-esp", 1)
