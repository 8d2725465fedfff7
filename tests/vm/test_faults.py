"""aronet-lab's fault commands, driven through the CLI against a running lab in the
microVM: each fault breaks the mesh the way it should, and its opposite brings the
mesh back, as `check` shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from lab import run as labrun
from lab.checks import ping_matrix, run_checks, wait_converged

NAME = "faults"


@pytest.fixture(scope="module")
def lab(running_lab):
    with running_lab("seed.yaml", NAME, "netns") as lab:
        yield lab


def cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "lab.cli", *args, "--name", NAME],
                       capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def poll(check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while (problem := check()) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {problem}")
        time.sleep(0.5)


def whole_again(lab) -> None:
    report = wait_converged(labrun.node_views(lab), 180)
    assert report.ok, report.as_text()
    r = cli("check", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout


def test_kill_and_start_a_node(lab):
    assert cli("kill", "sun").returncode == 0
    report = run_checks(labrun.node_views(lab))
    assert not report.ok and report.broken_at == "ike"  # sun's agent answers no more
    assert cli("start", "sun").returncode == 0
    whole_again(lab)


def _route_to(lab, src: str, dst: str) -> tuple[str | None, str]:
    """(peer whose tunnel carries src's babel route to dst's network, that network)."""
    st = next(v for k, v in labrun.statuses(lab).items() if k.endswith(f"/{src}")).to_json()
    net = str(_net(lab.plan.node(dst).network))
    by_iface = {t["name"]: p["peer"] for p in st["peers"] for t in p["tunnels"]}
    for p in st["peers"]:
        for r in p["routes"]:
            if r["prefix"] == net:
                return by_iface.get(r["interface"]), net
    return None, net


@pytest.mark.deep  # test_failover.py proves the reroute on the triangle; --deep runs it
def test_partition_fails_over_through_a_third_node_and_heals(lab):
    assert _route_to(lab, "moon", "mars")[0] == "example2/mars"
    assert cli("partition", "moon", "mars").returncode == 0

    def via_third():
        peer, _ = _route_to(lab, "moon", "mars")
        return None if peer in ("example/earth", "example2/sun") else f"moon -> mars via {peer}"
    poll(via_third, timeout=120)
    views = {v.name: v for v in labrun.node_views(lab)}
    problems, _ = ping_matrix([views["example/moon"], views["example2/mars"]])
    assert problems == []  # traffic flows through the third node
    assert cli("heal").returncode == 0
    poll(lambda: None if _route_to(lab, "moon", "mars")[0] == "example2/mars" else "not direct yet",
         timeout=120)
    whole_again(lab)


def test_link_down_isolates_a_node_and_up_restores_it(lab):
    assert cli("link", "down", "mars", "wan").returncode == 0

    def mars_unreachable():
        st = labrun.statuses(lab)["example/moon"].to_json()
        routes = {r["prefix"] for p in st["peers"] for r in p["routes"]}
        mars_net = str(_net(lab.plan.node("mars").network))
        return None if mars_net not in routes else "moon still routes to mars"
    poll(mars_unreachable, timeout=120)
    assert cli("link", "up", "mars", "wan").returncode == 0
    whole_again(lab)


def test_reload_removing_a_node_on_one_peer(lab, tmp_path):
    with open(os.path.join(lab.directory, "registry.json")) as f:
        registry = json.load(f)
    for org in registry:
        org["nodes"] = [n for n in org["nodes"] if n["common_name"] != "earth"]
    path = tmp_path / "no-earth.json"
    path.write_text(json.dumps(registry))
    r = cli("reload", "moon", str(path))
    assert r.returncode == 0, r.stderr

    def earth_gone_from_moon():
        st = labrun.statuses(lab)["example/moon"].to_json()
        if any(p["peer"] == "example/earth" for p in st["peers"]):
            return "moon still has a tunnel to earth"
        return None
    poll(earth_gone_from_moon)
    assert cli("reload", "moon", os.path.join(lab.directory, "registry.json")).returncode == 0
    whole_again(lab)


def test_a_bad_reload_is_refused_with_its_path(lab, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"organization": "x"}]')
    r = cli("reload", "moon", str(path))
    assert r.returncode == 2
    assert f"{path}: $[0]: 'public_key' is a required property" in r.stderr


def _net(text: str):
    from ipaddress import ip_interface

    return ip_interface(text).network
