"""Overlapping networks: no two nodes may own overlapping networks or prefixes."""

from __future__ import annotations

from ..errors import Problem, json_path
from ..model import Node


def overlap_problems(owned: list[tuple[object, str, str, list]]) -> list[Problem]:
    """owned: (network, owner, file, path). Reports every network that overlaps one
    owned by another node. Sort-and-sweep, so thousands of nodes stay fast."""
    problems = []
    for version in (4, 6):
        items = sorted(
            (o for o in owned if o[0].version == version),
            key=lambda o: (o[0].network_address, -o[0].prefixlen),
        )
        cover = None  # the item whose range reaches furthest so far
        for item in items:
            net, owner = item[0], item[1]
            if cover is not None and net.network_address <= cover[0].broadcast_address:
                if cover[1] != owner:
                    problems.append(Problem(
                        item[2], json_path(item[3]),
                        f"{net} overlaps {cover[0]} of node {cover[1]} "
                        f"({cover[2]} {json_path(cover[3])})",
                    ))
                if net.broadcast_address <= cover[0].broadcast_address:
                    continue
            cover = item
    return problems


def node_owned(node: Node, file: str, net_path: list, pfx_path: list) -> list:
    owned = [(node.network.network, node.name, file, net_path)]
    owned += [(p, node.name, file, [*pfx_path, i]) for i, p in enumerate(node.prefixes)]
    return owned
