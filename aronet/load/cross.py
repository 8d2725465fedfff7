"""Both files together: the rules that need a config and the registry at once, among
them this node's local policy: which ranges it accepts other nodes' networks and
prefixes from (daemon.accept_prefixes)."""

from __future__ import annotations

from .. import keys
from ..errors import InputError, Problem, json_path
from ..model import Config, Registry
from .config import load_config
from .overlap import node_owned
from .ranges import outside_policy
from .registry import endpoint_holders, load_registry
from .values import Collector


def cross_problems(config: Config, registry: Registry) -> list[Problem]:
    """Rules that need both files: this node's organization key matches the
    registry's; if the registry lists this node, it lists the same network and
    prefixes; this node's networks overlap no other node's; every other node's lie
    in this node's accept_prefixes; no network holds an endpoint address of the
    other side; and no name differs
    from a registry name only in case. The registry's problems name the registry."""
    out = Collector(config.file)
    theirs = Collector(registry.file)
    node = config.node
    reg_key = registry.org_keys.get(node.organization)
    if reg_key is not None and not keys.same_public(reg_key, node.public_key):
        out.add(["private_key"], f"its public key does not match the key {registry.file} lists for "
                f"organization {node.organization!r}")
    listed = registry.get(node.key)
    if listed is not None:
        if listed.network != node.network:
            out.add(["daemon", "network"], f"{node.network} differs from {listed.network}, which "
                    f"{registry.file} lists for {node.name}")
        if sorted(map(str, listed.prefixes)) != sorted(map(str, node.prefixes)):
            out.add(["daemon", "prefixs"], f"{[str(p) for p in node.prefixes]} differs from "
                    f"{[str(p) for p in listed.prefixes]}, which {registry.file} lists for "
                    f"{node.name}")
    # Compare each of this node's few networks with every other node's, both ways: a
    # sweep reports only the later of two overlapping networks, which may be the
    # registry's, and that problem belongs to this file.
    mine = node_owned(node, config.file, ["daemon", "network"], ["daemon", "prefixs"])
    others_owned, others_endpoints = [], []
    for other in registry.nodes:
        if other.key != node.key:
            at = registry.paths.get(other.key, ())
            for net, owner, _, path in node_owned(other, registry.file,
                                                   [*at, "remarks", "network"],
                                                   [*at, "remarks", "prefixs"]):
                others_owned.append((net, owner, registry.file, path))
                for own, _, _, own_path in mine:
                    if own.version == net.version and own.overlaps(net):
                        out.add(own_path, f"{own} overlaps {net} of node {owner} "
                                f"({registry.file} {json_path(path)})")
                if outside_policy(net, config.settings.accept_prefixes):
                    theirs.add(path, f"{net} of node {owner} is outside the ranges "
                               f"{config.file} accepts from the registry (daemon.accept_prefixes)")
            others_endpoints += [(other.name, ep, registry.file, [*at, "endpoints"])
                                 for ep in other.endpoints]
            if _folded(other.key) == _folded(node.key):
                out.add(["common_name"], f"{node.name} differs only in case from node "
                        f"{other.name} ({registry.file} {json_path(at)}); strongSwan compares "
                        "identities ignoring case")
    own_endpoints = [(node.name, ep, config.file, ["endpoints"]) for ep in node.endpoints]
    endpoint_holders(others_owned, own_endpoints, theirs)
    endpoint_holders(mine, others_endpoints, out)
    return out.problems + theirs.problems


def load_both(config_path: str, registry_path: str) -> tuple[Config, Registry]:
    """Load and check both files; report the problems of both at once."""
    problems: list[Problem] = []
    config = registry = None
    try:
        config = load_config(config_path)
    except InputError as e:
        problems += e.problems
    try:
        registry = load_registry(registry_path)
    except InputError as e:
        problems += e.problems
    if config is not None and registry is not None:
        problems += cross_problems(config, registry)
    if problems:
        raise InputError(problems)
    return config, registry


def _folded(key: tuple[str, str]) -> tuple[str, str]:
    return key[0].casefold(), key[1].casefold()
