"""The lab's files: one Ed25519 key per organization, each node's config.json and
the lab's registry.json, made by aronet.core.registry (the generator `aronet
registry build` uses: the lab has no second one). write_lab_files is the lab's
only file I/O; lab_configs and lab_registry are pure."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from aronet import keys
from aronet.core.registry import registry_document
from aronet.load import build_config, build_registry, load_config
from aronet.model import Config

from .model import LabPlan


def lab_configs(plan: LabPlan, org_keys: Mapping[str, bytes | str]) -> list[Config]:
    """Each node's Config as the agent would load it, with its organization's key
    inline (org_keys: organization -> private PEM). Pure."""
    configs = []
    for n in plan.nodes:
        doc = copy.deepcopy(n.config)
        pem = org_keys[n.organization]
        doc["private_key"] = pem.decode() if isinstance(pem, bytes) else pem
        configs.append(build_config(doc, f"{plan.lab}/{n.name}/config.json"))
    return configs


def lab_registry(plan: LabPlan, org_keys: Mapping[str, bytes | str]) -> list[dict]:
    """registry.json for the lab, from aronet.core.registry.registry_document."""
    return registry_document(lab_configs(plan, org_keys))


@dataclass(frozen=True)
class LabFiles:
    directory: str
    registry: str
    configs: dict[str, str] = field(hash=False)  # node -> config.json
    keys: dict[str, str] = field(hash=False)  # organization -> key file


def write_lab_files(plan: LabPlan, directory: str | os.PathLike) -> LabFiles:
    """<dir>/keys/<org>.pem (new Ed25519 keys, mode 0600), <dir>/<node>/config.json
    and <dir>/registry.json. The configs are read back with aronet.load, as the
    agent will read them, and the registry is built from them and checked."""
    directory = str(directory)
    key_dir = os.path.join(directory, "keys")
    os.makedirs(key_dir, mode=0o700, exist_ok=True)
    key_files = {}
    for org in plan.organizations:
        key_files[org] = os.path.join(key_dir, f"{org}.pem")
        keys.write_private(key_files[org], keys.generate(), force=True)
    config_files = {}
    for n in plan.nodes:
        path = os.path.join(directory, n.name, "config.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_json(path, n.config)
        config_files[n.name] = path
    registry_path = os.path.join(directory, "registry.json")
    document = registry_document([load_config(config_files[n.name]) for n in plan.nodes])
    build_registry(document, registry_path)  # the lab never writes a registry aronet refuses
    _write_json(registry_path, document)
    return LabFiles(directory, registry_path, config_files, key_files)


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
