"""`aronet check --local` against a real (empty) namespace: it observes, lists every
difference, exits 1, and changes nothing. The in-sync case and a deliberate drift on
a running node are in tests/vm/test_agent.py."""

from __future__ import annotations

import json
import subprocess

import pytest
from builders import build_world

from aronet.core.names import netns_path
from lab.checks import aronet_command

pytestmark = pytest.mark.root


def _snapshot(ns: str) -> tuple[str, str, list[str]]:
    links = subprocess.run(["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "-n", ns, "-j", "route", "show", "table", "all"],
                            capture_output=True, text=True).stdout
    tables = subprocess.run(["nsenter", f"--net={netns_path(ns)}", "--", "nft", "list", "tables"],
                            capture_output=True, text=True).stdout.splitlines()
    return links, routes, tables


@pytest.mark.parametrize("node", ["moon", "sun"])  # VRF mode, netns mode
def test_check_on_a_bare_namespace_lists_what_is_missing_and_changes_nothing(node, make_netns, tmp_path):
    world = build_world(tmp_path)
    ns = make_netns("check")
    before = _snapshot(ns)
    run, state = tmp_path / "run", tmp_path / "state"
    r = subprocess.run(["nsenter", f"--net={netns_path(ns)}", "--", *aronet_command(), "check", "--local",
                        "--json", "-c", str(world.config_path(node)), "-r", str(world.registry_path),
                        "--runtime-dir", str(run), "--state-dir", str(state)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["in_sync"] is False and doc["node"].endswith(f"/{node}")
    lines = doc["differences"]
    assert any(line.startswith("netlink + route ") for line in lines), lines
    assert any(line.startswith("nft + nft table inet aronet") for line in lines), lines
    assert any(line.startswith("vici: cannot observe charon") for line in lines), lines
    assert any(line.startswith("routing: ") for line in lines), lines
    assert _snapshot(ns) == before
    assert not run.exists() and not state.exists()


def test_check_without_a_registry_says_where_it_looked(tmp_path):
    world = build_world(tmp_path)
    r = subprocess.run([*aronet_command(), "check", "--local", "-c", str(world.config_path("moon")),
                        "--state-dir", str(tmp_path / "nothing")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "no registry: give -r, or start the agent once" in r.stderr
    assert str(tmp_path / "nothing" / "registry.json") in r.stderr
    assert "Traceback" not in r.stderr


def test_check_asks_the_agent_and_says_when_none_answers(tmp_path):
    r = subprocess.run([*aronet_command(), "check", "-s", str(tmp_path / "control.sock")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert f"no agent is running (no control socket at {tmp_path / 'control.sock'})" in r.stderr

