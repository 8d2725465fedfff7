"""The traffic gap a reload causes between two nodes it does not concern.

`reload_gap(lab, a, b, removed)`: ping every 10 ms from A to B over the overlay, in
each family both have (lab.measure's prober and its analysis), wait for a steady
stream, then give every agent but REMOVED's a registry without REMOVED (in parallel,
as a registry roll-out would), keep pinging for SETTLE_AFTER seconds after the last
agent answered, and report per family the longest gap between two replies that ends
after the reload began, the requests lost, and how long the loads took.

Removing REMOVED changes A's and B's routing daemon filters (no longer importing
REMOVED's prefixes), so babeld restarts on both; BIRD reconfigures in place. The
route between A and B does not change. A gap shows what the reload cost traffic it
does not concern; every gap includes one ping interval and, under TCG, the prober's
own stalls.

A measurement, not a check: nothing here decides what is small enough.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from itertools import pairwise

from aronet.client import request
from aronet.errors import AronetError

from .measure import INTERVAL, Pinger, analyse, ping_argv, request_rate
from .run import Lab, node_views

BASELINE = 2.0  # steady replies for this long before the reload
SETTLE_AFTER = 15.0  # keep pinging this long after the last load answered


def registry_without(registry: list[dict], organization: str, name: str) -> list[dict]:
    """The registry with the node organization/name taken out (its organization
    stays, with its other nodes, or with none)."""
    out, found = [], False
    for org in registry:
        nodes = [n for n in org["nodes"]
                 if not (org["organization"] == organization and n["common_name"] == name)]
        found |= len(nodes) != len(org["nodes"])
        out.append({**org, "nodes": nodes})
    if not found:
        raise AronetError(f"no node {organization}/{name} in the registry")
    return out


def _load_all(lab: Lab, nodes: list[str], registry: list[dict], timeout: float) -> dict[str, dict]:
    replies: dict[str, dict] = {}

    def one(node: str) -> None:
        started = time.time()
        try:
            r = request(lab.control_socket(node), {"cmd": "load", "file": "registry.json",
                                                   "registry": registry}, timeout=timeout)
            replies[node] = {"seconds": round(time.time() - started, 2), "changes": len(r["changes"])}
        except AronetError as e:
            replies[node] = {"error": str(e)}
    threads = [threading.Thread(target=one, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies


def reload_gap(lab: Lab, a: str, b: str, removed: str, timeout: float = 300,
               say: Callable[[str], None] | None = None) -> dict:
    """See the module's docstring. Raises AronetError for a bad request, when no
    steady traffic flows before the reload, or when an agent refuses the registry."""
    say = say or (lambda _line: None)
    plan = lab.plan
    if len({a, b, removed}) != 3:
        raise AronetError(f"{a}, {b} and {removed} must be three different nodes")
    nodes = {n.name: n for n in plan.nodes}
    for n in (a, b, removed):
        if n not in nodes:
            raise AronetError(f"no node {n!r} in lab {plan.lab} (nodes: {', '.join(nodes)})")
    with open(os.path.join(lab.directory, "registry.json")) as f:
        new = registry_without(json.load(f), nodes[removed].organization, removed)
    views = {v.name: v for v in node_views(lab)}
    va = views[f"{nodes[a].organization}/{a}"]
    vb = views[f"{nodes[b].organization}/{b}"]
    families = [f for f in (6, 4) if f in va.sources and f in vb.targets]
    pingers = {f: Pinger(ping_argv(f, va.sources[f], vb.targets[f]), va.router_ns) for f in families}
    result: dict = {"a": a, "b": b, "removed": removed, "interval_ms": INTERVAL * 1000}
    try:
        for p in pingers.values():
            p.start()
        started = time.time()
        for f, p in pingers.items():
            if not p.wait_flowing(started, BASELINE, started + timeout):
                raise AronetError(f"no steady IPv{f} replies from {vb.targets[f]} before the reload")
        at = time.time()
        loads = _load_all(lab, [n for n in nodes if n != removed], new, timeout)
        loaded = time.time()
        refused = {n: r["error"] for n, r in loads.items() if "error" in r}
        if refused:
            raise AronetError("the reload was refused: " + "; ".join(f"{n}: {e}" for n, e in refused.items()))
        deadline = loaded + SETTLE_AFTER
        while time.time() < deadline and all(p.running for p in pingers.values()):
            time.sleep(0.1)
    finally:
        for p in pingers.values():
            p.stop()
    result["loads"] = loads
    result["load_s"] = round(loaded - at, 2)
    for f, p in pingers.items():
        stats = analyse(p.replies, at, None, p.last_sent, deadline)
        rs = sorted(ts for ts, _seq in p.replies)
        gaps = [(t2 - t1, t1) for t1, t2 in pairwise(rs) if t2 > at]
        _gap, began = max(gaps, default=(0.0, at))
        result[f"ipv{f}"] = {"gap_ms": stats["outage_ms"], "lost": stats["lost"], "sent": stats["sent"],
                             "rate_pps": request_rate(p.replies),
                             "gap_began_s": round(began - at, 2)}  # after the loads began
        say(f"  IPv{f} {a} -> {b} while {removed} was removed: longest gap "
            f"{stats['outage_ms']} ms, lost {stats['lost']} of {stats['sent']}")
    return result
