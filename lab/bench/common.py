"""What the bench rows share: the row registry and its defaults, the statistics of a
figure, and the synthetic registries and meshes the rows are measured on."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable

from aronet.core.state import Address, XfrmInterface

from ..generate import generate

ROWS = ("planner", "reload", "failover", "mtu", "control", "reload-gap", "bringup", "footprint")
# the rows measured in one VM boot (or one --here run) together
VM_GROUPS = {"triangle": ("failover", "mtu", "control", "reload-gap"), "reload": ("reload",),
             "bringup": ("bringup", "footprint")}
DEFAULTS = {"runs": 10, "sizes": (4, 8, 12), "planner_sizes": (100, 1000, 5000),
            "reload_nodes": 1000, "duration": 1800.0, "sample": 60.0, "window": 30.0}
Say = Callable[[str], None]
MAX_SYNTHETIC = 1 << 14


def stats(values: list[float]) -> dict:
    """median / min / max / n of the values that are there (None: not measured)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(vals), "median": round(statistics.median(vals), 3),
            "min": round(min(vals), 3), "max": round(max(vals), 3)}


def synthetic_nodes(n: int, *, first: int = 0, port: int = 12025) -> list[dict]:
    """n registry nodes named n00000.., each with one IPv4 endpoint in 100.64.0.0/16,
    a /64 network and one IPv4 /24 in 10.64.0.0/10 (none overlap, up to 16,384)."""
    if first < 0 or first + n > MAX_SYNTHETIC:
        raise ValueError(f"at most {MAX_SYNTHETIC} synthetic nodes")
    return [{"common_name": f"n{i:05d}",
             "endpoints": [{"address": f"100.64.{i >> 8}.{i & 255}", "port": port, "serial_number": 0}],
             "remarks": {"network": f"fdbe:{i >> 8:x}:{i & 255:x}::1/64",
                         "prefixs": [f"10.{64 + (i >> 8)}.{i & 255}.0/24"]}}
            for i in range(first, first + n)]


def with_change(registry: list[dict], org: str, cn: str, change: str) -> list[dict]:
    """A copy of the registry document in which node org/cn changed: "prefix" adds
    a /24 (its first IPv4 prefix moved from 10/8 to 11/8); "endpoint" moves its first
    endpoint's address (second octet + 32)."""
    if change not in ("prefix", "endpoint"):
        raise ValueError(f"unknown change {change!r}")
    doc = json.loads(json.dumps(registry))
    for o in doc:
        for node in o["nodes"] if o["organization"] == org else ():
            if node["common_name"] != cn:
                continue
            if change == "prefix":
                a, b, c, d = node["remarks"]["prefixs"][0].split(".")
                node["remarks"]["prefixs"].append(f"{int(a) + 1}.{b}.{c}.{d}")
            else:
                ep = node["endpoints"][0]
                a, b, c, d = ep["address"].split(".")
                ep["address"] = f"{a}.{int(b) + 32}.{c}.{d}"
            return doc
    raise KeyError(f"{org}/{cn} is not in the registry")


def classify(actions, peer: str, state) -> dict[str, list[str]]:
    """Split the objects a plan changes into the changed peer's own, shared ones (the
    nft table, the routing daemon's config: no peer of their own) and any other
    peer's. state: the desired state, to tell whose tunnel an address is on."""
    tunnel_peer = {x.name: x.peer for x in state.of(XfrmInterface)}
    out: dict[str, list[str]] = {"own": [], "shared": [], "other": []}
    for a in actions:
        r = a.resource
        owner = getattr(r, "peer", "") or (tunnel_peer.get(r.dev, "") if isinstance(r, Address) else "")
        if owner == peer:
            out["own"].append(str(a))
        elif owner:
            out["other"].append(str(a))
        else:
            out["shared"].append(f"{a.op} {r.kind}")
    return out


def mesh_topology(n: int, *, name: str, routing: str | None = None, hello: float | None = None,
                  update: float | None = None, vrf_share: float = 0.0) -> dict:
    """A full mesh of n public nodes on one dual-stack LAN, in two organizations;
    the first round(n * vrf_share) nodes run in VRF mode (`aronet-lab generate
    full-mesh`: nodes a, b, c up to three, else n1..nN)."""
    return generate("full-mesh", n, name=name, routing=routing, hello=hello, update=update,
                    organizations=("bench", "bench2"), vrf=round(n * vrf_share))
