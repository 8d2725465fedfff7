"""Build registry.json from node configs: the one generator, used by
`aronet registry build` and by the lab. The registry carries what other nodes need
to know about a node: its organization's public key, its endpoints, its network and
prefixes."""

from __future__ import annotations

from ..errors import InputError, Problem
from ..model import Config, Endpoint


def endpoint_doc(ep: Endpoint) -> dict:
    doc = {"address": ep.address, "port": ep.port, "serial_number": ep.serial_number}
    if not ep.is_ip:
        doc["address_family"] = ep.family
    return doc


def registry_document(configs: list[Config]) -> list[dict]:
    """Nodes are grouped by organization; all nodes of an organization must share
    its key (the registry holds one key per organization)."""
    orgs: dict[str, dict] = {}
    first: dict[str, Config] = {}
    problems = []
    for cfg in sorted(configs, key=lambda c: c.node.key):
        node = cfg.node
        org = orgs.setdefault(
            node.organization,
            {"public_key": node.public_key, "organization": node.organization, "nodes": []},
        )
        first.setdefault(node.organization, cfg)
        if node.public_key != org["public_key"]:
            problems.append(Problem(cfg.file, "$.private_key", (
                f"organization {node.organization!r} already has another key (from "
                f"{first[node.organization].file}); a registry holds one key per organization")))
        if any(n["common_name"] == node.common_name for n in org["nodes"]):
            problems.append(Problem(cfg.file, "$.common_name", f"{node.name} is given twice"))
        org["nodes"].append({
            "common_name": node.common_name,
            "endpoints": [endpoint_doc(ep) for ep in node.endpoints],
            "remarks": {
                "network": str(node.network),
                "prefixs": [str(p) for p in node.prefixes],
            },
        })
    if problems:
        raise InputError(problems)
    return list(orgs.values())
