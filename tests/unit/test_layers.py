"""The architecture holds: the import contracts (pyproject.toml, also run by `make
lint`), modules of a readable size, and a lab that uses only aronet's public names.
The core's purity has its own test (test_planner.test_core_is_pure)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
MAX_LINES = 500
SOURCES = sorted([*(TOP / "aronet").rglob("*.py"), *(TOP / "lab").rglob("*.py")])


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed in this environment")
    r = subprocess.run([str(lint), "--no-cache"], cwd=TOP, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(TOP)))
def test_no_module_is_over_about_500_lines(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(TOP)}: {lines} lines; split it along its jobs"


def _private_uses(tree: ast.Module) -> list[str]:
    """Names starting with one underscore that the module takes from aronet: imported
    from it, or read as an attribute of a module imported from it."""
    aronet_aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "aronet":
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{node.module}.{a.name}")
                aronet_aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            aronet_aliases |= {(a.asname or a.name).split(".")[0] for a in node.names
                               if a.name.split(".")[0] == "aronet"}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in aronet_aliases):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", [p for p in SOURCES if p.is_relative_to(TOP / "lab")],
                         ids=lambda p: str(p.relative_to(TOP)))
def test_the_lab_uses_only_public_names_of_aronet(path):
    assert _private_uses(ast.parse(path.read_text())) == []


def test_the_private_name_finder_finds_them():
    tree = ast.parse("from aronet.adapters import netlink as nl\nfrom aronet.x import _y\nnl._probe_esp()\n")
    assert sorted(_private_uses(tree)) == ["aronet.x._y", "nl._probe_esp"]


def test_no_path_of_a_named_network_namespace_is_built_by_hand():
    """/run/netns is written once (aronet.core.names.NETNS_DIR, netns_path)."""
    builders = [p for p in SOURCES if "/run/netns/" in p.read_text() and p.name != "names.py"]
    assert builders == [], [str(p.relative_to(TOP)) for p in builders]


def test_lint_imports_runs_in_ci():
    make = (TOP / "Makefile").read_text()
    ci = (TOP / ".ci" / "run").read_text()
    assert "lint-imports" in make and "make lint" in ci


def test_test_modules_have_unique_basenames():
    """pytest imports test modules by basename (no packages under tests/): two tiers'
    test_x.py would stop the whole run at collection."""
    tests = Path(__file__).resolve().parents[1]
    names = [p.name for p in tests.glob("*/test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
