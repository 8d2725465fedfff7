"""The underlay scripts a multi-host run installs in its VMs (lab/multihost.py), run for
real in namespaces standing in for the VMs of the seed: moon, the NAT router gw and sun
behind it, each NIC given its IPv4 address as Vagrant would. sun reaches moon over
IPv4 and IPv6 only through gw's masquerade, and nothing from outside gets in."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lab import multihost
from lab.topology import load_topology

SEED = Path(__file__).resolve().parents[2] / "lab" / "examples" / "seed.yaml"


def _in(ns: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "--", *argv], input=stdin,
                          capture_output=True, text=True, timeout=60)


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture
def seed_vms(make_netns, tmp_path):
    """moon, gw and sun as namespaces, cabled and addressed as Vagrant would."""
    rendered = multihost.render(load_topology(SEED), tmp_path / "seed")
    machines = {m["name"]: m for m in json.loads((rendered.directory / "machines.json").read_text())
                ["machines"]}
    ns = {vm: make_netns(f"mh{vm}") for vm in ("moon", "gw", "sun")}
    for a, b, seg in (("moon", "gw", "wan"), ("sun", "gw", "gw:sun")):
        _ok(subprocess.run(["ip", "link", "add", "tmpa", "netns", ns[a], "type", "veth", "peer",
                            "name", "tmpb", "netns", ns[b]], capture_output=True, text=True))
        for vm, tmp in ((a, "tmpa"), (b, "tmpb")):
            k = next(i for i, nic in enumerate(machines[vm]["nics"]) if nic["segment"] == seg)
            nic = machines[vm]["nics"][k]
            dev = f"nic{k + 1}"
            _ok(_in(ns[vm], "ip", "link", "set", tmp, "name", dev))
            _ok(_in(ns[vm], "ip", "addr", "add", f"{nic['ipv4']}/{nic['netmask']}", "dev", dev))
            _ok(_in(ns[vm], "ip", "link", "set", dev, "up"))
    return rendered, machines, ns


def test_underlay_scripts_route_sun_through_gw_masquerade(seed_vms):
    rendered, machines, ns = seed_vms
    for vm in ("moon", "gw", "sun"):
        _ok(_in(ns[vm], "sh", str(rendered.machine_dir(vm) / "underlay.sh")))
    moon_v4, moon_v6 = machines["moon"]["nics"][0]["ipv4"], machines["moon"]["nics"][0]["ipv6"]
    # moon has no route to sun's segment: a reply can only go to gw's outside address
    assert "via" not in _ok(_in(ns["moon"], "ip", "route")) + _ok(_in(ns["moon"], "ip", "-6", "route"))
    _ok(_in(ns["sun"], "ping", "-4", "-c", "1", "-W", "5", moon_v4))
    _ok(_in(ns["sun"], "ping", "-6", "-c", "1", "-W", "5", moon_v6.split("/")[0]))
    rules = _ok(_in(ns["gw"], "nft", "list", "table", "inet", "aronet_lab"))
    assert 'oifname "nic1" masquerade' in rules
    # as at home: nothing from outside starts a connection inside, even with a route
    sun_v4 = machines["sun"]["nics"][0]["ipv4"]
    gw_out = machines["gw"]["nics"][0]["ipv4"]
    _ok(_in(ns["moon"], "ip", "route", "add", f"{sun_v4}/32", "via", gw_out))
    assert _in(ns["moon"], "ping", "-4", "-c", "1", "-W", "2", sun_v4).returncode != 0
    # the scripts are idempotent (they run at every boot)
    for vm in ("moon", "gw", "sun"):
        _ok(_in(ns[vm], "sh", str(rendered.machine_dir(vm) / "underlay.sh")))
