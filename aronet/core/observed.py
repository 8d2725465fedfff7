"""One observation of a running node: what charon, the routing daemon and the kernel
hold at one moment, as the agent's watcher reads them (aronet/daemon/telemetry.py);
and a Snapshot, what one scrape of the metrics shows.

Pure data. The metrics (core.metrics) are made from a Snapshot, the events
(core.events) from the difference between two observations; nothing here reads
anything, and nothing here needs prometheus_client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .state import Connection, Route

INFINITE_COST = 0xFFFF  # babel's infinity: the neighbour is unreachable


@dataclass(frozen=True)
class Counters:
    """An interface's traffic (IFLA_STATS64): it survives rekeys, unlike an SA's."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0


@dataclass(frozen=True)
class Observation:
    at: float  # when it was taken (the agent's wall clock, seconds since the epoch)
    sas: Mapping[str, dict] = field(default_factory=dict)  # VICI list-sas, by connection
    neighbors: tuple[dict, ...] = ()  # the routing daemon's: address, interface, metric, ...
    routes: tuple[dict, ...] = ()  # babel's selected routes: prefix, via, interface, metric
    links: Mapping[str, bool] = field(default_factory=dict)  # device -> administratively up
    counters: Mapping[str, Counters] = field(default_factory=dict)  # tunnel interface -> traffic
    errors: Mapping[str, str] = field(default_factory=dict)  # source that failed -> why

    def neighbor_by_interface(self) -> dict[str, dict]:
        return {n["interface"]: n for n in self.neighbors if n.get("interface")}

    def route_by_prefix(self) -> dict[str, dict]:
        return {r["prefix"]: r for r in self.routes if r.get("prefix")}


def reachable(neighbor: dict | None) -> bool:
    """A babel neighbour that is there with a finite cost."""
    if neighbor is None:
        return False
    cost = neighbor.get("metric")
    return cost is not None and cost < INFINITE_COST


@dataclass(frozen=True)
class Snapshot:
    """What one scrape shows. The daemon fills it from memory only (never observing)."""

    now: float
    observation: Observation | None = None  # the latest, at most one interval old
    connections: tuple[Connection, ...] = ()  # the desired state's
    planned_routes: tuple[Route, ...] = ()  # the desired state's (aronet's protocol 211)
    peers_configured: int = 0
    build: Mapping[str, str] = field(default_factory=dict)  # version, strongswan_version, ...
    daemons: Mapping[str, tuple[bool, int]] = field(default_factory=dict)  # name -> (up, restarts)
    updown: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (conn, event) -> count
    registry_serial: int | None = None
    registry_expires_at: float | None = None
