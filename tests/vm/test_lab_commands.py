"""aronet-lab's tools on a running lab in the microVM: inspect, save, impair (netem,
asymmetric delay seen by ping), generate + defaults/groups brought up, and a short
seeded chaos run that asserts only the invariants. Each lab always goes down."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab import chaos, generate, impair
from lab import run as labrun
from lab.checks import wait_converged

NAME = "tools"


@pytest.fixture(scope="module")
def lab(running_lab):
    with running_lab("seed.yaml", NAME, "netns") as lab:
        yield lab


def cli(*args: str, name: str = NAME) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "lab.cli", *args, "--name", name],
                       capture_output=True, text=True, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def rtt_ms(lab, src: str, dst: str) -> float:
    """The median round trip of a few pings over the underlay LAN, src to dst."""
    a, b = (next(i for i in lab.plan.node(x).interfaces if i.segment == "wan") for x in (src, dst))
    r = subprocess.run(["ip", "netns", "exec", a.ns, "ping", "-c", "5", "-i", "0.2", "-q", str(b.ipv4.ip)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return float(re.search(r"= [\d.]+/([\d.]+)/", r.stdout).group(1))


def test_inspect_in_every_format(lab):
    table = cli("inspect")
    assert table.returncode == 0 and "moon" in table.stdout and "up" in table.stdout
    doc = json.loads(cli("inspect", "--format", "json", "--interfaces").stdout)
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert set(nodes) == {"moon", "earth", "sun", "mars"}
    assert all(n["running"] and n["tunnels"] and all(t["up"] for t in n["tunnels"]) for n in nodes.values())
    assert nodes["moon"]["routing"] == "babeld" and nodes["moon"]["interfaces"][nodes["moon"]["namespace"]]
    rows = cli("inspect", "--format", "csv").stdout.splitlines()
    assert rows[0].startswith("node,") and len(rows) == 5


def test_save_collects_every_node(lab, tmp_path):
    r = cli("save", str(tmp_path))
    assert r.returncode == 0, r.stderr
    where = Path(os.path.realpath(tmp_path / "latest"))
    assert where.parent == tmp_path and where.name.startswith("save-")
    manifest = json.loads((where / "manifest.json").read_text())
    for node in ("moon", "earth", "sun", "mars"):
        for f in ("config.json", "status.json", "info.json", "agent.log", "sas.json", "babeld.conf",
                  "babeld-dump.txt"):
            assert f"{node}/{f}" in manifest["files"], manifest["missing"]
    # the agent writes its copy of the registry only when it loads one
    assert all(k.endswith("/agent-registry.json") for k in manifest["missing"]), manifest["missing"]
    assert json.loads((where / "moon" / "sas.json").read_text())
    status = json.loads((where / "moon" / "status.json").read_text())
    assert status["node"] == "example/moon" and status["peers"]  # the status names org/cn
    ns = lab.plan.node("moon").ns
    assert json.loads((where / "moon" / f"ip-{ns}-links.json").read_text())


def test_impair_delays_one_way_and_inspect_shows_it(lab):
    base = rtt_ms(lab, "moon", "mars")
    try:
        r = cli("impair", "wan", "--to", "mars", "--delay", "100")
        assert r.returncode == 0 and "netem" in r.stdout, r.stdout + r.stderr
        assert rtt_ms(lab, "moon", "mars") >= base + 90  # toward mars only: once per round trip
        assert rtt_ms(lab, "moon", "earth") < base + 50
        doc = json.loads(cli("inspect", "--format", "json").stdout)
        assert {"segment": "wan", "toward": "mars", "impairment": "delay 100 ms",
                "delay_ms": 100.0} in doc["impairments"]
    finally:
        assert cli("impair", "wan", "--clear").returncode == 0
    assert rtt_ms(lab, "moon", "mars") < base + 50
    bad = cli("impair", "nowhere", "--delay", "5")
    assert bad.returncode == 2 and "is not a LAN or link" in bad.stderr


def test_a_generated_ring_with_groups_comes_up(tmp_path, lab_up):
    doc = generate.checked("ring", 4, nat=1, name="gring")
    doc["groups"] = {"fast": {"babel": {"hello_interval": 0.2}, "routing": "bird"}}
    doc["nodes"]["n1"]["group"] = "fast"
    path = tmp_path / "ring.yaml"
    path.write_text(generate.as_yaml(doc))
    lab, report = lab_up(str(path), "gring")
    assert report.ok, report.as_text()
    n1 = lab.plan.node("n1").config["daemon"]
    assert n1["routing"] == "bird" and n1["babel"]["hello_interval"] == 0.2


@pytest.mark.deep  # three minutes of faults: a soak, not a proof of one thing; --deep runs it
def test_a_short_seeded_chaos_run_keeps_the_invariants(lab):
    schedule = chaos.make_schedule(lab.plan, minutes=3, seed=24, hold=5)
    result = chaos.soak(lab, schedule, bound=chaos.DEFAULTS["bound"],
                        rss_limit_mb=chaos.DEFAULTS["rss_limit_mb"], say=print)
    assert result["violations"] == [], chaos.as_text(result)
    assert result["summary"]["events"] >= 1
    # the soak removed what it did: the mesh is whole, nothing is impaired
    assert impair.in_force(lab) == impair.declared(lab.plan)
    report = wait_converged(labrun.node_views(lab), 120)
    assert report.ok, report.as_text()
