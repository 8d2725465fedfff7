"""The agent's events (`aronet events`): one JSON object per state change.

Pure: each function turns what the agent saw into event objects; the agent stamps
them (stamp(): its node and clock) and hands them to every subscriber
(aronet/daemon/events.py). Every event has "event" (its kind, below), "node",
"time" (ISO 8601, UTC, milliseconds) and "ts" (the same, seconds since the epoch).

  ike-up, ike-down          conn, remote          charon's ike-updown
  child-up, child-down      conn                  charon's child-updown
  link-up, link-down        ifname, reason        a tunnel interface the agent set
  neighbor-up               ifname, address, cost a babel neighbour appeared, or became reachable
  neighbor-down             ifname, address       gone, or its cost became infinite
  neighbor-cost             ifname, address, cost, old_cost
  route-added               prefix, via, ifname, metric     babel's selected route
  route-removed             prefix, via, ifname
  route-changed             prefix, via, ifname, metric, old_via, old_ifname
  reload                    result (accepted | refused), file, serial, changes, problems
  daemon-restart            daemon, status (its exit status), restarts
  subscribed                poll (s): the first line of every stream
  lost                      count: events this subscriber missed (it read too slowly)

The babel kinds come from comparing two observations (observed_changes), so they
are seen at the resolution of the agent's watcher, not at the instant they happen.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from .observed import Observation, reachable

KINDS = ("ike-up", "ike-down", "child-up", "child-down", "link-up", "link-down",
         "neighbor-up", "neighbor-down", "neighbor-cost", "route-added", "route-removed",
         "route-changed", "reload", "daemon-restart", "subscribed", "lost")


def stamp(event: dict, node: str, now: float) -> dict:
    """The event as it is sent: its node and time first."""
    iso = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"time": iso, "ts": round(now, 3), "node": node, **event}


def charon_events(label: str, msg: Mapping) -> list[dict]:
    """An ike-updown or child-updown message (VICI, decoded) as events."""
    up = msg.get("up") == "yes"
    out = []
    for name, sa in msg.items():
        if name == "up" or not isinstance(sa, Mapping):
            continue
        if label == "ike-updown":
            out.append({"event": "ike-up" if up else "ike-down", "conn": name,
                        "remote": sa.get("remote-host")})
        elif label == "child-updown":
            out.append({"event": "child-up" if up else "child-down", "conn": name})
    return out


def link_event(ifname: str, up: bool) -> dict:
    return {"event": "link-up" if up else "link-down", "ifname": ifname,
            "reason": "CHILD_SA installed" if up else "no CHILD_SA installed"}


def reload_event(file: str, accepted: bool, *, serial: int | None = None, changes: int = 0,
                 problems: tuple[str, ...] = ()) -> dict:
    return {"event": "reload", "result": "accepted" if accepted else "refused", "file": file,
            "serial": serial, "changes": changes, "problems": list(problems)}


def restart_event(daemon: str, status: int | None, restarts: int) -> dict:
    return {"event": "daemon-restart", "daemon": daemon, "status": status, "restarts": restarts}


def observed_changes(before: Observation | None, after: Observation) -> list[dict]:
    """What changed in babel between two observations: neighbours (by tunnel
    interface) and selected routes (by prefix). Nothing is reported for the first
    observation (before None): it is the baseline. A source that failed in either
    observation (after.errors["routing"]) reports nothing rather than everything gone."""
    if before is None or "routing" in before.errors or "routing" in after.errors:
        return []
    out = []
    old_n, new_n = before.neighbor_by_interface(), after.neighbor_by_interface()
    for ifname in sorted(old_n.keys() | new_n.keys()):
        a, b = old_n.get(ifname), new_n.get(ifname)
        address = (b or a).get("address")
        if reachable(a) and not reachable(b):
            out.append({"event": "neighbor-down", "ifname": ifname, "address": address})
        elif reachable(b) and not reachable(a):
            out.append({"event": "neighbor-up", "ifname": ifname, "address": address,
                        "cost": b.get("metric")})
        elif reachable(a) and a.get("metric") != b.get("metric"):
            out.append({"event": "neighbor-cost", "ifname": ifname, "address": address,
                        "cost": b.get("metric"), "old_cost": a.get("metric")})
    old_r, new_r = before.route_by_prefix(), after.route_by_prefix()
    for prefix in sorted(old_r.keys() | new_r.keys()):
        a, b = old_r.get(prefix), new_r.get(prefix)
        if b is None:
            out.append({"event": "route-removed", "prefix": prefix, "via": a.get("via"),
                        "ifname": a.get("interface")})
        elif a is None:
            out.append({"event": "route-added", "prefix": prefix, "via": b.get("via"),
                        "ifname": b.get("interface"), "metric": b.get("metric")})
        elif (a.get("via"), a.get("interface")) != (b.get("via"), b.get("interface")):
            out.append({"event": "route-changed", "prefix": prefix, "via": b.get("via"),
                        "ifname": b.get("interface"), "metric": b.get("metric"),
                        "old_via": a.get("via"), "old_ifname": a.get("interface")})
    return out
