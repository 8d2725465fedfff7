"""registry.json: every organization's key and nodes, checked and built into a Registry."""

from __future__ import annotations

from .. import keys
from ..errors import InputError, json_path
from ..model import Node, Registry
from .files import read_json
from .overlap import node_owned, overlap_problems
from .schemas import schema_problems
from .values import Collector, endpoints_of, network_of, prefixes_of


def load_registry(path: str) -> Registry:
    return build_registry(read_json(path), path)


def build_registry(data, file: str) -> Registry:
    out = Collector(file)
    out.problems += schema_problems("registry", data, file)
    if not isinstance(data, list):
        raise InputError(out.problems)

    nodes: list[Node] = []
    paths: dict[tuple[str, str], tuple] = {}
    owned: list = []
    orgs: dict[str, int] = {}
    org_keys: dict[str, str] = {}
    for i, org in enumerate(data):
        if not isinstance(org, dict):
            continue
        name = org.get("organization")
        if isinstance(name, str):
            if name in orgs:
                out.add([i, "organization"], f"organization {name!r} is already listed at "
                        f"{json_path([orgs[name]])}; list each organization once, with one key")
            orgs.setdefault(name, i)
        pub = org.get("public_key")
        if isinstance(pub, str):
            try:
                keys.parse_public(pub)
            except keys.KeyProblem as e:
                out.add([i, "public_key"], str(e))
                pub = None
            else:
                if isinstance(name, str):
                    org_keys.setdefault(name, pub)
        seen: dict[str, int] = {}
        for j, raw in enumerate(org.get("nodes") if isinstance(org.get("nodes"), list) else []):
            if not isinstance(raw, dict):
                continue
            p = [i, "nodes", j]
            cn = raw.get("common_name")
            if isinstance(cn, str):
                if cn in seen:
                    out.add([*p, "common_name"], f"node name {cn!r} is already used in "
                            f"organization {name!r} at {json_path([i, 'nodes', seen[cn]])}")
                    continue
                seen[cn] = j
            remarks = raw.get("remarks") if isinstance(raw.get("remarks"), dict) else {}
            network = network_of(remarks.get("network"), [*p, "remarks", "network"], out)
            prefixes = prefixes_of(remarks.get("prefixs", []), [*p, "remarks", "prefixs"], out)
            endpoints = endpoints_of(raw.get("endpoints"), [*p, "endpoints"], out)
            if not (isinstance(name, str) and isinstance(cn, str) and network and pub):
                continue
            node = Node(name, cn, pub, network, prefixes, endpoints)
            nodes.append(node)
            paths[node.key] = tuple(p)
            owned += node_owned(node, file, [*p, "remarks", "network"], [*p, "remarks", "prefixs"])
    out.problems += overlap_problems(owned)
    if out.problems:
        raise InputError(out.problems)
    return Registry(file=file, nodes=tuple(sorted(nodes, key=lambda n: n.key)), org_keys=org_keys,
                    paths=paths)
