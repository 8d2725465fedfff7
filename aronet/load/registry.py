"""registry.json: every organization's key and nodes, checked and built into a Registry.

Besides each value, the rules between nodes: names unique (also ignoring case:
strongSwan compares identities case-insensitively), each key one organization's,
each endpoint one node's, no two nodes' networks overlapping, and no network or
prefix holding a node's endpoint address (peers would route their IKE and ESP
packets to it into the overlay).
"""

from __future__ import annotations

import ipaddress

from cryptography.hazmat.primitives import serialization

from .. import keys
from ..errors import InputError, json_path
from ..model import Endpoint, Node, Registry
from .files import REGISTRY_LIMIT, read_json
from .overlap import node_owned, overlap_problems
from .ranges import AddressIndex
from .schemas import schema_problems
from .values import Collector, endpoints_of, network_of, prefixes_of


def load_registry(path: str) -> Registry:
    return build_registry(read_json(path, REGISTRY_LIMIT), path)


def endpoint_key(ep: Endpoint) -> tuple[str, int] | None:
    """What two nodes may not share: the address (an IP in its one spelling, a
    hostname in lowercase without the final dot) and the port; None: no address."""
    if ep.address is None:
        return None
    try:
        address = str(ipaddress.ip_address(ep.address))
    except ValueError:
        address = ep.address.lower().rstrip(".")
    return address, ep.port


def endpoint_holders(owned: list, endpoints, out: Collector) -> None:
    """Every owned (network, owner, file, path) that holds one of endpoints: (node
    name, endpoint, its file, its path) is a problem at the network's path."""
    index = AddressIndex((net, (net, owner, path)) for net, owner, _, path in owned)
    for name, ep, ep_file, ep_path in endpoints:
        if ep.address is None:
            continue
        for net, owner, path in index.holding(ep.address):
            out.add(path, f"{net} of node {owner} holds {ep.address}, the endpoint of node "
                    f"{name} ({ep_file} {json_path(ep_path)}); peers would route their IKE and "
                    "ESP packets for it into the overlay")


def _raw_public(pem: str) -> bytes:
    return keys.parse_public(pem).public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)


def build_registry(data, file: str) -> Registry:
    out = Collector(file)
    out.problems += schema_problems("registry", data, file)
    if not isinstance(data, list):
        raise InputError(out.problems)

    nodes: list[Node] = []
    paths: dict[tuple[str, str], tuple] = {}
    owned: list = []
    orgs: dict[str, int] = {}
    folded_orgs: dict[str, tuple[str, int]] = {}
    org_keys: dict[str, str] = {}
    key_owner: dict[bytes, int] = {}
    endpoint_owner: dict[tuple[str, int], tuple[str, list]] = {}
    endpoints_at: list = []  # (node name, endpoint, file, path)
    for i, org in enumerate(data):
        if not isinstance(org, dict):
            continue
        name = org.get("organization")
        if isinstance(name, str):
            if name in orgs:
                out.add([i, "organization"], f"organization {name!r} is already listed at "
                        f"{json_path([orgs[name]])}; list each organization once, with one key")
            elif name.casefold() in folded_orgs:
                other, at = folded_orgs[name.casefold()]
                out.add([i, "organization"], f"organization {name!r} differs only in case from "
                        f"{other!r} at {json_path([at])}; strongSwan compares identities "
                        "ignoring case")
            orgs.setdefault(name, i)
            folded_orgs.setdefault(name.casefold(), (name, i))
        pub = org.get("public_key")
        if isinstance(pub, str):
            try:
                raw_key = _raw_public(pub)
            except keys.KeyProblem as e:
                out.add([i, "public_key"], str(e))
                pub = None
            else:
                owner = orgs.get(name, i) if isinstance(name, str) else i  # a bad name: reported
                if raw_key in key_owner and key_owner[raw_key] != owner:
                    out.add([i, "public_key"], f"the same key as {json_path([key_owner[raw_key]])}"
                            "; each organization has a key of its own")
                key_owner.setdefault(raw_key, i)
                if isinstance(name, str):
                    org_keys.setdefault(name, pub)
        seen: dict[str, int] = {}
        folded: dict[str, tuple[str, int]] = {}
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
                if cn.casefold() in folded:
                    other, at = folded[cn.casefold()]
                    out.add([*p, "common_name"], f"node name {cn!r} differs only in case from "
                            f"{other!r} at {json_path([i, 'nodes', at])}; strongSwan compares "
                            "identities ignoring case")
                    continue
                seen[cn] = j
                folded[cn.casefold()] = (cn, j)
            remarks = raw.get("remarks") if isinstance(raw.get("remarks"), dict) else {}
            network = network_of(remarks.get("network"), [*p, "remarks", "network"], out)
            prefixes = prefixes_of(remarks.get("prefixs", []), [*p, "remarks", "prefixs"], out)
            endpoints = endpoints_of(raw.get("endpoints"), [*p, "endpoints"], out)
            who = f"{name}/{cn}"
            raw_eps = raw.get("endpoints")
            exact = isinstance(raw_eps, list) and len(endpoints) == len(raw_eps)  # else: problems
            for k, ep in enumerate(endpoints):
                ep_path = [*p, "endpoints", k] if exact else [*p, "endpoints"]
                key = endpoint_key(ep)
                if key is None:
                    continue
                if key in endpoint_owner and endpoint_owner[key][0] != who:
                    first, first_path = endpoint_owner[key]
                    out.add(ep_path, f"{ep.address} port {ep.port} is already the endpoint of node "
                            f"{first} ({json_path(first_path)}); each endpoint is one node's")
                endpoint_owner.setdefault(key, (who, ep_path))
                endpoints_at.append((who, ep, file, ep_path))
            if not (isinstance(name, str) and isinstance(cn, str) and network and pub):
                continue
            node = Node(name, cn, pub, network, prefixes, endpoints)
            nodes.append(node)
            paths[node.key] = tuple(p)
            owned += node_owned(node, file, [*p, "remarks", "network"], [*p, "remarks", "prefixs"])
    out.problems += overlap_problems(owned)
    endpoint_holders(owned, endpoints_at, out)
    if out.problems:
        raise InputError(out.problems)
    return Registry(file=file, nodes=tuple(sorted(nodes, key=lambda n: n.key)), org_keys=org_keys,
                    paths=paths)
