"""What each node saw during `measure failover`, from the agents' event streams
(lab/telemetry.py Recorder), next to the ping gap; and a run's result as OpenMetrics.

For each run (its fault_at and heal_at, from lab/measure.py) and each node, from
the fault until the heal: when its agent first saw a babel neighbour go
(neighbor-down, or a neighbour's cost rise) and when it first saw a route change
(route-changed or route-removed; for node A, its route to B's prefix), in ms after
the fault began to be applied. The events carry the agents' clocks, the fault the
lab's: in the lab they are one machine's clock. Their resolution is the agents'
watcher period (the recorder asks for POLL), so these are upper bounds, each late
by up to one period.

Pure, except for rendering with prometheus_client (a library).
"""

from __future__ import annotations

import statistics

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics.exposition import generate_latest

POLL = 0.25  # s: how often the agents observe babel while `measure failover` records


def _first(events: list[tuple[str, dict]], node: str, since: float, until: float, match) -> float | None:
    times = [e["ts"] for n, e in events if n == node and since <= e.get("ts", 0) <= until and match(e)]
    return min(times) if times else None


def _neighbor_lost(e: dict) -> bool:
    return e["event"] == "neighbor-down" or (
        e["event"] == "neighbor-cost" and (e.get("cost") or 0) > (e.get("old_cost") or 0))


def annotate(result: dict, events: list[tuple[str, dict]], nodes: list[str]) -> dict:
    """result (lab.measure.failover's) with, in each run, "seen": {node:
    {"neighbor_lost_ms", "route_changed_ms"}} (None: not seen before the heal)."""
    a, prefix = result["a"], result.get("prefix")
    for run in result["runs"]:
        fault_at, heal_at = run.get("fault_at"), run.get("heal_at")
        if fault_at is None or heal_at is None:
            continue
        seen = {}
        for node in nodes:
            lost = _first(events, node, fault_at, heal_at, _neighbor_lost)
            route = _first(events, node, fault_at, heal_at, lambda e, node=node: (
                e["event"] in ("route-changed", "route-removed")
                and (node != a or e.get("prefix") == prefix)))
            seen[node] = {"neighbor_lost_ms": _ms(lost, fault_at), "route_changed_ms": _ms(route, fault_at)}
        run["seen"] = seen
    return result


def _ms(t: float | None, since: float) -> float | None:
    return None if t is None else round((t - since) * 1000, 1)


def as_text(result: dict) -> str:
    """The lines printed under the failover table: per run, what each node saw."""
    lines = []
    for i, run in enumerate(result["runs"], 1):
        seen = run.get("seen")
        if not seen:
            continue
        parts = [f"{node}: neighbour lost {_num(s['neighbor_lost_ms'])}, route changed "
                 f"{_num(s['route_changed_ms'])}" for node, s in seen.items()
                 if s["neighbor_lost_ms"] is not None or s["route_changed_ms"] is not None]
        lines.append(f"run {i} seen (ms after the fault): " + ("; ".join(parts) or "nothing"))
    return "\n".join(lines) + ("\n" if lines else "")


def _num(v) -> str:
    return "-" if v is None else f"{v:g} ms"


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def openmetrics(result: dict) -> str:
    """aronet_lab_failover_seconds{fault} (the median outage) and
    aronet_lab_converge_seconds{stage} (medians over the runs, from the fault: A saw
    the neighbour go, A's route changed, traffic flowed again; from the heal: back on
    the direct tunnel), in the OpenMetrics text format."""
    r = CollectorRegistry(auto_describe=True)
    failover = Gauge("aronet_lab_failover_seconds", "Median outage (longest gap between ping "
                     "replies) of the runs", ["fault"], registry=r)
    converge = Gauge("aronet_lab_converge_seconds", "Median time of each stage of the failover",
                     ["stage"], registry=r)
    runs, a = result["runs"], result["a"]
    outage = _median(x.get("outage_ms") for x in runs)
    if outage is not None:
        failover.labels(result["fault"]).set(outage / 1000)
    stages = {
        "neighbor_lost": _median((x.get("seen") or {}).get(a, {}).get("neighbor_lost_ms") for x in runs),
        "route_changed": _median((x.get("seen") or {}).get(a, {}).get("route_changed_ms") for x in runs),
        "traffic_resumed": outage,
        "direct_again": _median(x.get("return_ms") for x in runs),
    }
    for stage, ms in stages.items():
        if ms is not None:
            converge.labels(stage).set(ms / 1000)
    return generate_latest(r).decode()
