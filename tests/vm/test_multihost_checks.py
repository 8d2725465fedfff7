"""The checks of a multi-host run through the transport it uses (lab/multihost.py):
CommandTransport, one shell command line behind a prefix, with `aronet status --json`
on the node for steps 1 to 5. Here the prefix is `nsenter --net=<node's namespace>
-- sh -c` where Vagrant has `ssh`, against the seed lab in the microVM: every step
passes, the report is the one `aronet-lab check --json` prints, and a broken mesh is
reported at the step where it breaks."""

from __future__ import annotations

import json
import subprocess
import sys

from lab import run as labrun
from lab.checks import STEPS, CommandTransport, aronet_command, run_checks

NAME = "mhseed"


def _transport() -> CommandTransport:
    return CommandTransport(lambda n: ["nsenter", f"--net=/run/netns/{n.ns}", "--", "sh", "-c"],
                            aronet=tuple(aronet_command()))


def _nft(ns: str, batch: str) -> None:
    r = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "--", "nft", "-f", "-"], input=batch,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_command_transport_checks_the_seed_and_finds_where_it_breaks(lab_up):
    lab, up = lab_up("seed.yaml", NAME)
    assert up.ok, up.as_text()
    views = labrun.node_views(lab)
    transport = _transport()

    report = run_checks(views, transport)
    assert report.ok, report.as_text()
    doc = report.as_json()
    assert [(s["step"], s["ok"]) for s in doc["steps"]] == [(s, True) for s in STEPS]
    cli = subprocess.run([sys.executable, "-m", "lab.cli", "check", "--json", "--name", NAME],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    local = json.loads(cli.stdout)
    assert local.keys() == doc.keys()
    assert [{k: v for k, v in s.items() if k != "detail"} for s in local["steps"]] == \
        [{k: v for k, v in s.items() if k != "detail"} for s in doc["steps"]]

    # mars answers no echo request: the tunnels, babel and routes hold, the pings fail
    mars = next(v for v in views if v.name == "example2/mars")
    _nft(mars.router_ns, "table inet mhbreak {\n chain input {\n"
         "  type filter hook input priority -10\n"
         "  icmp type echo-request drop\n  icmpv6 type echo-request drop\n }\n}\n")
    try:
        report = run_checks(views, transport)
    finally:
        _nft(mars.router_ns, "delete table inet mhbreak\n")
    assert report.broken_at == "ping", report.as_text()
    assert [s.step for s in report.steps] == list(STEPS[:6])
    assert report.steps[5].problems
    assert all(" -> example2/mars IPv" in p for p in report.steps[5].problems), report.as_text()
    assert report.as_json()["broken_at"] == "ping"

    # mars's agent stopped: `aronet status` on mars fails, so the chain breaks at step 1
    labrun.stop_agents(lab, ["mars"])
    report = run_checks(views, transport)
    assert report.broken_at == "ike", report.as_text()
    assert [s.step for s in report.steps] == ["ike"]
    assert any(p.startswith("example2/mars: agent does not answer: `aronet status` failed")
               and "no agent is running" in p for p in report.steps[0].problems), report.as_text()
