"""Golden tests: input files -> expected plan text.

A mismatch shows a unified diff. To regenerate the expected files after an intended
change, run:

    ARONET_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden.py

and review `git diff tests/unit/golden/expected` before committing.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from aronet.core import planner, show
from aronet.core.diff import diff, render
from aronet.load import load_both

HERE = Path(__file__).parent / "golden"
INPUT, EXPECTED = HERE / "input", HERE / "expected"

CASES = {
    "moon-vrf": "moon",  # VRF mode, public IPv4
    "sun-netns-nat": "sun",  # netns mode (seed spelling use_netns), behind NAT: address null
    "earth-dual-stack": "earth",  # IPv4 and IPv6 endpoints, an IPv6 prefix
    "mars-hostname": "mars",  # a hostname endpoint with explicit family
}


def check_golden(name: str, text: str) -> None:
    path = EXPECTED / f"{name}.txt"
    if os.environ.get("ARONET_REGEN_GOLDEN"):
        path.write_text(text)
        return
    want = path.read_text() if path.exists() else ""
    if text != want:
        delta = "".join(difflib.unified_diff(
            want.splitlines(True), text.splitlines(True), f"expected/{name}.txt", "actual"))
        pytest.fail(f"golden mismatch for {name} (regenerate: ARONET_REGEN_GOLDEN=1)\n{delta}",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _inputs_are_private():
    """git keeps no mode 0600, and aronet refuses a config holding its key inline
    that others can read: give the checked-out inputs the mode a real one has."""
    for path in INPUT.glob("*.json"):
        path.chmod(0o600)


def plan_text(node: str, registry: str = "registry.json") -> str:
    config, reg = load_both(str(INPUT / f"{node}.json"), str(INPUT / registry))
    return show.as_text(config, planner.desired(config, reg))


@pytest.mark.parametrize("case", sorted(CASES))
def test_node_plan(case):
    check_golden(case, plan_text(CASES[case]))


def test_reload_adds_one_node_and_removes_another():
    """moon's plan when the registry gains venus and loses mars: only their objects
    (and the tables that list every prefix) change."""
    config, old = load_both(str(INPUT / "moon.json"), str(INPUT / "registry.json"))
    _, new = load_both(str(INPUT / "moon.json"), str(INPUT / "registry-reload.json"))
    plan = diff(planner.desired(config, new).state, planner.desired(config, old).state)
    check_golden("moon-reload", render(plan))
