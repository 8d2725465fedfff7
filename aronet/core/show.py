"""Text and JSON views of a desired state, for `aronet plan` and the golden tests."""

from __future__ import annotations

import dataclasses
import json

from ..model import Config
from .diff import diff
from .planner import Desired
from .state import NftTable, RoutingConfig, State


def as_text(config: Config, d: Desired, *, with_files: bool = True) -> str:
    node, s = config.node, config.settings
    out = [
        f"# node {node.name} ({s.mode} mode)",
        f"#   network {node.network}  address {node.address}",
        f"#   router {'netns ' + d.router_ns if d.router_ns else 'host namespace'}, "
        f"overlay table {d.overlay_table}",
        f"#   SIDs: End {d.sids['End']}, End.DX4 {d.sids['End.DX4']}",
        f"#   babel should learn {len(d.babel_routes)} prefixes from "
        f"{len({o for _, o in d.babel_routes})} nodes",
        *[f"# note: {n}" for n in d.notes],
        "",
    ]
    out += [str(a) for a in diff(d.state, State())]
    if with_files:
        for b in d.state.of(RoutingConfig):
            out += ["", f"# {b.file_name} ({b.where})", b.text.rstrip("\n")]
        for t in d.state.of(NftTable):
            out += ["", f"# nft table {t.family} {t.name} ({t.where}), libnftables JSON"]
            out += [json.dumps(c, sort_keys=True) for c in json.loads(t.ruleset)]
    return "\n".join(out) + "\n"


def as_json(config: Config, d: Desired) -> dict:
    resources = []
    for r in sorted(d.state.resources, key=lambda r: (r.order, r.kind, r.key)):
        doc = {"kind": r.kind, **dataclasses.asdict(r)}
        if isinstance(r, NftTable):
            doc["ruleset"] = json.loads(r.ruleset)
        resources.append(doc)
    return {
        "node": config.node.name,
        "mode": config.settings.mode,
        "router_ns": d.router_ns,
        "overlay_table": d.overlay_table,
        "sids": d.sids,
        "babel_routes": [{"prefix": p, "owner": o} for p, o in d.babel_routes],
        "notes": list(d.notes),
        "resources": resources,
    }
