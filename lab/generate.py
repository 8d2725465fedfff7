"""aronet-lab generate: a topology from a template, as the YAML a user would write.

  full-mesh N   every node on one dual-stack LAN "wan": each reaches every other
  ring N        the same LAN, but the switch blocks every pair that is not a ring
                neighbour (n1-n2-...-nN-n1), so babel routes over several hops
  star N        the same LAN; the first node is the hub and the switch blocks every
                pair of leaves, so leaves reach each other only through the hub

Nodes are named a, b, c up to three, else n1..nN (the benchmarks' meshes are these),
and take the organizations in turn. With nat=K, K nodes sit each behind a NAT router
of its own (gw1..gwK, on the LAN): the last K nodes of a full mesh or star (never
the hub), every second node of a ring (never two neighbours, which could not reach
each other). Everything else is left to the loader's automatic assignment.

generate() is pure; checked() also runs the result through the lab's own loader
(lab.topology.parse_topology), so what is written is a topology `up` takes.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from itertools import combinations

import yaml

from aronet.errors import InputError, Problem

from .topology import parse_topology

TEMPLATES = ("full-mesh", "ring", "star")
SHORT = {"full-mesh": "mesh", "ring": "ring", "star": "star"}
MAX_NODES = 200  # automatic addressing has room for about 250 segments and node prefixes
ORGANIZATIONS = ("org1", "org2")
WHERE = "aronet-lab generate"


def node_names(n: int) -> list[str]:
    return list("abc"[:n]) if n <= 3 else [f"n{i + 1}" for i in range(n)]


def natted(template: str, n: int, k: int) -> list[int]:
    """The indexes of the nodes behind NAT."""
    if template == "ring":
        return [2 * j + 1 for j in range(k)]
    return list(range(n - k, n))


def _problems(template: str, n: int, k: int, organizations: Sequence[str]) -> list[str]:
    out = []
    if template not in TEMPLATES:
        out.append(f"{template!r} is not a template: {', '.join(TEMPLATES)}")
    if not 1 <= n <= MAX_NODES:
        out.append(f"N is {n}; give 1 to {MAX_NODES} nodes")
    most = {"ring": n // 2, "star": n - 1}.get(template, n - 1)
    if k < 0 or k > max(most, 0):
        why = {"ring": "a ring puts no two neighbours behind NAT: at most N/2",
               "star": "the hub and at least one node stay public: at most N-1"}.get(
            template, "at least one node stays public: at most N-1")
        out.append(f"--nat {k}: {why} ({max(most, 0)} for N={n})")
    if not organizations:
        out.append("no organizations")
    return out


def generate(template: str, n: int, *, name: str | None = None, nat: int = 0, mode: str | None = None,
             routing: str | None = None, organizations: Sequence[str] | None = None,
             hello: float | None = None, update: float | None = None, vrf: int = 0) -> dict:
    """The topology document. mode/routing: every node's (options); vrf: the first
    vrf nodes in mode vrf. Bad arguments raise InputError."""
    orgs = list(organizations or ORGANIZATIONS)
    problems = _problems(template, n, nat, orgs)
    if problems:
        raise InputError([Problem(WHERE, "arguments", p) for p in problems])
    names = node_names(n)
    options: dict = {}
    if mode:
        options["mode"] = mode
    if routing:
        options["routing"] = routing
    babel = {k: v for k, v in (("hello_interval", hello), ("update_interval", update)) if v}
    if babel:
        options["babel"] = babel
    nodes = {nm: {"organization": orgs[i % len(orgs)], **({"mode": "vrf"} if i < vrf else {})}
             for i, nm in enumerate(names)}
    behind = {names[i]: f"gw{j + 1}" for j, i in enumerate(natted(template, n, nat))}
    members = [behind.get(nm, nm) for nm in names]
    doc: dict = {"name": name or f"{SHORT.get(template, 'lab')}{n}", "nodes": nodes}
    if behind:
        doc["nat"] = {gw: {"inside": [nm]} for nm, gw in behind.items()}
    doc["lans"] = {"wan": {"members": members}}
    blocked = [list(p) for p in _blocked(template, names)]
    if blocked:
        doc["blocked"] = blocked
    if options:
        doc["options"] = options
    return doc


def _blocked(template: str, names: list[str]) -> list[tuple[str, str]]:
    n = len(names)
    if template == "ring" and n > 3:
        return [(names[i], names[j]) for i, j in combinations(range(n), 2)
                if (j - i) % n not in (1, n - 1)]
    if template == "star":
        return list(combinations(names[1:], 2))
    return []


def as_yaml(doc: dict) -> str:
    return (f"# aronet-lab generate: {len(doc['nodes'])} nodes, lab {doc['name']}\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100))


def checked(template: str, n: int, **kwargs) -> dict:
    """generate(), then the lab's own loader on the YAML it becomes (InputError when
    it refuses it, with the loader's paths)."""
    doc = generate(template, n, **kwargs)
    parse_topology(as_yaml(doc), f"<{template} {n}>")
    return doc


def write(text: str, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def count(text: str) -> int:
    """argparse type of N."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= n <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"give 1 to {MAX_NODES} nodes, not {n}")
    return n
