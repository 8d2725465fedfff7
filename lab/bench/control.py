"""The control row (VM, on the triangle: triangle.py).

Control traffic per tunnel while idle (the LAN is dual-stack: two tunnels per peer):
packets and bytes node a sent on its tunnel interfaces (babel, inside) and on its
underlay interface (ESP with babel inside, IKE/DPD), over a window, divided by its
number of tunnels.
"""

from __future__ import annotations

import json
import time

from aronet.core.state import Connection

from .common import Say
from .labs import ns_run, views


def _link_stats(ns: str) -> dict[str, dict]:
    r = ns_run(ns, ["ip", "-j", "-s", "link", "show"])
    return {x["ifname"]: x.get("stats64", {}) for x in json.loads(r.stdout or "[]")}


def bench_control(lab, window: float, say: Say) -> dict:
    """Idle control traffic of node a per tunnel (one per peer and address family):
    its tunnel interfaces (inner, babel) and its underlay interfaces (on the wire:
    ESP with babel inside, IKE and DPD), over `window` seconds."""
    a = lab.plan.node("a")
    tunnels = [c.name for c in views(lab)["a"].desired.state.of(Connection)]
    underlay = [i.name for i in a.interfaces]
    t0 = time.monotonic()
    s0, u0 = _link_stats(a.agent_ns), _link_stats(a.ns)
    time.sleep(window)  # a measurement window, not a wait for a condition
    s1, u1 = _link_stats(a.agent_ns), _link_stats(a.ns)
    dt = time.monotonic() - t0

    def per_tunnel(before, after, names, field):
        total = sum(after[n]["tx"][field] - before[n]["tx"][field] for n in names if n in after)
        return total / dt / max(1, len(tunnels))

    out = {"window_s": round(dt, 1), "tunnels": len(tunnels),
           "tunnel_pps": round(per_tunnel(s0, s1, tunnels, "packets"), 2),
           "tunnel_bps": round(per_tunnel(s0, s1, tunnels, "bytes"), 1),
           "underlay_pps": round(per_tunnel(u0, u1, underlay, "packets"), 2),
           "underlay_bps": round(per_tunnel(u0, u1, underlay, "bytes"), 1)}
    say(f"  control traffic per tunnel: {out['tunnel_pps']} pkt/s {out['tunnel_bps']} B/s inside, "
        f"{out['underlay_pps']} pkt/s {out['underlay_bps']} B/s on the underlay")
    return out
