"""Builders of valid aronet input documents, for unit tests (and the planner's).

Every function returns plain JSON-able data (dicts and lists) that passes
aronet.load's checks as built; tests mutate copies to make them invalid. Keys are
real Ed25519 keys made with aronet.keys; key files are written with mode 0600.

    world = build_world(tmp_path)          # the 4-node, 2-organization example
    world.config_path("sun")               # tmp_path/sun/config.json
    world.registry_path                    # tmp_path/registry.json
    make_config(private_key=pem, common_name="x", network="fd70::1/64")
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from aronet import keys

DEFAULT_PORT = 12025


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyPair:
    private_pem: str  # PKCS#8 PEM text, usable inline as config "private_key"
    public_pem: str  # SubjectPublicKeyInfo PEM text, as a registry's "public_key"


def key_pair() -> KeyPair:
    key = keys.generate()
    return KeyPair(keys.private_pem(key).decode(), keys.public_pem(key))


def write_key(path: str | os.PathLike, pair: KeyPair | None = None, mode: int = 0o600) -> KeyPair:
    """Write pair's private key to path with the given mode (0600 by default)."""
    pair = pair or key_pair()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pair.private_pem)
    os.chmod(path, mode)
    return pair


# ---------------------------------------------------------------- documents


def endpoint(address: str | None, port: int = DEFAULT_PORT, **extra) -> dict:
    """{"address": ..., "port": ...} plus address_family / serial_number if given."""
    return {"address": address, "port": port, **extra}


def make_config(
    *,
    private_key: str,
    organization: str = "example",
    common_name: str = "moon",
    network: str = "fd66::1/64",
    prefixes: list[str] | tuple[str, ...] = ("192.168.128.0/24",),
    endpoints: list[dict] | None = None,
    **daemon,
) -> dict:
    """A valid config.json document. private_key is a path or inline PEM; extra
    keyword arguments go into "daemon" (mode, use_netns, extra_ip, ifname, ...)."""
    return {
        "private_key": private_key,
        "organization": organization,
        "common_name": common_name,
        "daemon": {"network": network, "prefixs": list(prefixes), **daemon},
        "endpoints": copy.deepcopy(endpoints) if endpoints is not None
        else [endpoint("198.51.100.1")],
    }


def make_node(
    common_name: str,
    network: str,
    prefixes: list[str] | tuple[str, ...] = (),
    endpoints: list[dict] | None = None,
    **remarks,
) -> dict:
    """One registry node (an item of an organization's "nodes")."""
    return {
        "common_name": common_name,
        "endpoints": copy.deepcopy(endpoints) if endpoints is not None else [],
        "remarks": {"network": network, "prefixs": list(prefixes), **remarks},
    }


def make_org(public_key: str, organization: str, nodes: list[dict]) -> dict:
    return {"public_key": public_key, "organization": organization, "nodes": copy.deepcopy(nodes)}


def make_registry(*orgs: dict) -> list[dict]:
    """A registry.json document: a list of organizations (see make_org)."""
    return copy.deepcopy(list(orgs))


def node_from_config(config: dict) -> dict:
    """The registry entry that `aronet registry build` makes from a config document."""
    eps = []
    for i, ep in enumerate(config["endpoints"]):
        doc = {"address": ep["address"], "port": ep["port"],
               "serial_number": ep.get("serial_number", i)}
        if "address_family" in ep:
            doc["address_family"] = ep["address_family"]
        eps.append(doc)
    daemon = config["daemon"]
    return make_node(config["common_name"], daemon["network"], daemon.get("prefixs", []), eps)


def write_json(path: str | os.PathLike, doc) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    path.chmod(0o600)  # a config may hold a key inline: aronet refuses one others can read
    return path


# ---------------------------------------------------------------- the example world

# Two organizations, four nodes, like examples/seed: moon and earth (org
# "example"), sun and mars (org "example2"). sun is behind NAT (address null with
# an address_family); mars has a hostname endpoint and an explicit serial_number.
NODES: dict[str, dict] = {
    "moon": {
        "organization": "example",
        "network": "fd66::1/64",
        "prefixes": ["192.168.128.0/24"],
        "endpoints": [endpoint("198.51.100.1")],
        "daemon": {"mode": "vrf", "extra_ip": ["192.168.128.1"]},
    },
    "earth": {
        "organization": "example",
        "network": "fd67::1/64",
        "prefixes": ["192.168.129.0/24"],
        "endpoints": [endpoint("203.0.113.3"), endpoint("2001:db8::3")],
        "daemon": {"mode": "vrf"},
    },
    "sun": {
        "organization": "example2",
        "network": "fd68::1/64",
        "prefixes": ["192.168.130.0/24"],
        "endpoints": [endpoint(None, address_family="ip4")],
        "daemon": {"mode": "netns"},
    },
    "mars": {
        "organization": "example2",
        "network": "fd69::1/64",
        "prefixes": ["192.168.131.0/24", "2001:db8:131::/48"],
        "endpoints": [endpoint("mars.example.net", address_family="ip4"),
                      endpoint("2001:db8::4", serial_number=1)],
        "daemon": {"mode": "netns", "extra_ip": ["192.168.131.1"]},
    },
}
ORGANIZATIONS = ("example", "example2")


@dataclass
class World:
    """Files of the example, written under root:

    root/keys/<org>.pem (0600), root/<node>/config.json (private_key
    "../keys/<org>.pem"), root/registry.json (all four nodes)."""

    root: Path
    keys: dict[str, KeyPair]  # organization -> key pair
    configs: dict[str, dict]  # node common_name -> config document
    registry: list[dict]
    config_paths: dict[str, Path] = field(default_factory=dict)
    registry_path: Path | None = None

    def config_path(self, name: str) -> Path:
        return self.config_paths[name]

    def key_path(self, organization: str) -> Path:
        return self.root / "keys" / f"{organization}.pem"

    def config(self, name: str) -> dict:
        """A deep copy of a node's config document, to mutate."""
        return copy.deepcopy(self.configs[name])

    def registry_doc(self) -> list[dict]:
        """A deep copy of the registry document, to mutate."""
        return copy.deepcopy(self.registry)


def world_documents(pairs: dict[str, KeyPair], *, inline: bool = False) -> tuple[dict, list]:
    """The example's config documents and registry document for the given keys
    (organization -> KeyPair). With inline, configs carry the PEM itself instead of
    the relative path ../keys/<org>.pem."""
    configs = {}
    for name, spec in NODES.items():
        org = spec["organization"]
        configs[name] = make_config(
            private_key=pairs[org].private_pem if inline else f"../keys/{org}.pem",
            organization=org,
            common_name=name,
            network=spec["network"],
            prefixes=spec["prefixes"],
            endpoints=spec["endpoints"],
            **copy.deepcopy(spec["daemon"]),
        )
    registry = make_registry(*(
        make_org(pairs[org].public_pem, org,
                 [node_from_config(c) for c in configs.values() if c["organization"] == org])
        for org in ORGANIZATIONS
    ))
    return configs, registry


def build_world(root: str | os.PathLike, pairs: dict[str, KeyPair] | None = None) -> World:
    root = Path(root)
    pairs = pairs or {org: key_pair() for org in ORGANIZATIONS}
    for org, pair in pairs.items():
        write_key(root / "keys" / f"{org}.pem", pair)
    configs, registry = world_documents(pairs)
    world = World(root=root, keys=pairs, configs=configs, registry=registry)
    for name, doc in configs.items():
        world.config_paths[name] = write_json(root / name / "config.json", doc)
    world.registry_path = write_json(root / "registry.json", registry)
    return world


def processes_left(pids, timeout: float = 10.0) -> set[int]:
    """Those of pids still running after up to `timeout` seconds (a zombie counts as
    gone: an orphan waits there for init to reap it)."""
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    left = set(pids)
    deadline = time.monotonic() + timeout
    while True:
        left = {pid for pid in left if running(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
