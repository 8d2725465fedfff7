"""Defaults and groups: the values a node inherits.

A node's own value wins over its group's (`group: NAME`, one of `groups:`), which
wins over `defaults:`, which wins over `options:` (the older spelling of a few of
the same defaults), then the lab's own defaults. `babel` and `ike` merge key by key
(a group may set hello_interval and leave update_interval to the defaults);
`endpoints` is taken whole. A value set both in `defaults:` and in `options:` is a
problem: it would be unclear which one is meant.

inherit() returns each node's spec with the inherited values filled in, and where
each inherited value is written, so a rule that finds it wrong for one node points at
the group or the defaults (their paths in the file), not at the node.
"""

from __future__ import annotations

from aronet.errors import json_path
from aronet.load import Collector
from aronet.model import DEFAULT_ROUTING

from .rules import as_dict, as_str

INHERITED = ("mode", "routing", "port", "babel", "ike", "endpoints")
MERGED = ("babel", "ike")  # merged key by key
IN_OPTIONS = ("mode", "routing", "port", "babel", "ike")  # options: spells these too

Origins = dict[str, dict[str, list]]  # node -> inherited key -> the path it comes from


def inherit(doc: dict, check: Collector) -> tuple[dict[str, dict], Origins]:
    defaults = as_dict(doc.get("defaults"))
    groups = {k: as_dict(v) for k, v in as_dict(doc.get("groups")).items() if isinstance(k, str)}
    _clashes(as_dict(doc.get("options")), defaults, check)
    nodes: dict[str, dict] = {}
    origins: Origins = {}
    for name, raw in as_dict(doc.get("nodes")).items():
        if not isinstance(name, str):
            continue
        spec = dict(as_dict(raw))
        layers: list[tuple[list, dict]] = []
        group = as_str(spec.get("group"))
        if group is not None:
            if group in groups:
                layers.append((["groups", group], groups[group]))
            else:
                known = ", ".join(groups) or "none are defined"
                check.add(["nodes", name, "group"], f"{group!r} is not a group (groups: {known})")
        layers.append((["defaults"], defaults))
        origins[name] = {}
        for key in INHERITED:
            if key in MERGED:
                if key in spec and not isinstance(spec[key], dict):
                    continue  # the schema says what is wrong with it
                merged: dict = {}
                for _base, layer in reversed(layers):  # the defaults, then the group
                    merged.update(as_dict(layer.get(key)))
                merged.update(as_dict(spec.get(key)))
                if merged:
                    spec[key] = merged
            elif key not in spec:
                for base, layer in layers:  # the group, then the defaults
                    if key in layer:
                        spec[key] = layer[key]
                        origins[name][key] = [*base, key]
                        break
        nodes[name] = spec
    return nodes, origins


def _clashes(options: dict, defaults: dict, check: Collector) -> None:
    for key in IN_OPTIONS:
        if key not in defaults or key not in options:
            continue
        if key in MERGED:
            both = sorted(set(as_dict(options[key])) & set(as_dict(defaults[key])))
            for sub in both:
                check.add(["defaults", key, sub], f"also set in {json_path(['options', key, sub])}; "
                          "set it in one place (nodes inherit defaults:)")
        else:
            check.add(["defaults", key], f"also set in {json_path(['options', key])}; set it in one "
                      "place (nodes inherit defaults:)")


def vrf_babeld(nodes: dict[str, dict], origins: Origins, options: dict, check: Collector) -> None:
    """babeld runs in netns mode only (aronet's loader refuses it with VRF): say so
    here, with where the node's mode and routing come from."""
    for name, spec in nodes.items():
        mode = spec.get("mode", options.get("mode"))
        routing = spec.get("routing", options.get("routing"))
        if mode == "vrf" and routing == "babeld":
            where = {k: json_path(origins.get(name, {}).get(k) or (["nodes", name, k] if k in spec
                                                                    else ["options", k]))
                     for k in ("mode", "routing")}
            check.add(["nodes", name], f"mode vrf (from {where['mode']}) with routing babeld (from "
                      f"{where['routing']}): babeld runs in netns mode only")


def prefix_origin_babeld(nodes: dict[str, dict], origins: Origins, options: dict,
                         check: Collector) -> None:
    """babel.prefix_origin needs babeld (BIRD cannot filter on a route's originator),
    as aronet's loader says too: said here at the node, with where the value comes from."""
    default = as_dict(options.get("babel")).get("prefix_origin") is True
    for name, spec in nodes.items():
        if as_dict(spec.get("babel")).get("prefix_origin", default) is not True:
            continue
        mode = spec.get("mode", options.get("mode", "netns"))
        routing = spec.get("routing", options.get("routing")) or DEFAULT_ROUTING.get(mode, "bird")
        if routing != "babeld":
            where = origins.get(name, {}).get("babel") or (
                ["nodes", name, "babel"] if "babel" in spec else ["options", "babel"])
            check.add(["nodes", name], f"babel.prefix_origin (from {json_path(where)}) needs routing "
                      f"babeld, and this node runs {routing}: BIRD cannot filter on the router id "
                      "that originated a route")
