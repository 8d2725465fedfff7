"""The agent's Prometheus metrics, made from what it holds (README, Observability).

Pure: families(snapshot) turns a Snapshot (the latest observation, the desired
state, the agent's own counts) into prometheus_client metric families; nothing here
observes or reads a clock. prometheus_client is a library of data types here (its
*MetricFamily classes), not I/O: the daemon's collector (aronet/daemon/metrics.py)
calls this on every scrape, and the listener or textfile writer
(aronet/adapters/exporter.py) renders the result.

Names follow the exporters operators know: one `_info` series per peer connection
carries the identities (aronet_peer_info), and the numeric series carry only the
short join label, `conn` or `ifname` (the same string: every tunnel interface is
named after its connection). With detail "summary" the per-connection and
per-interface series are left out or summed, so a large mesh does not grow
quadratically in series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import ip_network

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from .observed import Counters, Observation, Snapshot, reachable
from .state import Route

PEER_STATES = ("up", "partial", "down")
UPDOWN_EVENTS = ("ike-up", "ike-down", "child-up", "child-down")
ROUTE_KINDS = ("babel", "overlay", "seg6", "sid", "unreachable")
# metric -> the neighbour field it shows, and the factor to its unit
_NEIGHBOR = {"cost": ("metric", 1), "rxcost": ("rxcost", 1), "txcost": ("txcost", 1),
             "rtt_seconds": ("rtt", 0.001)}


def families(s: Snapshot, per_peer: bool = True) -> list[Metric]:
    out: list[Metric] = [_build(s), *_daemons(s), *_peers(s, per_peer), _routes(s)]
    obs = s.observation
    if obs is not None:
        out += _tunnels(obs, per_peer)
        if per_peer:
            out += _neighbors(obs)
        out.append(_gauge("aronet_observation_timestamp_seconds",
                          "When the agent last observed charon, babel and the tunnels", obs.at))
    if s.registry_serial is not None:
        out.append(_gauge("aronet_registry_serial", "Serial of the signed registry in force",
                          s.registry_serial))
    if s.registry_expires_at is not None:
        out.append(_gauge("aronet_registry_expiry_timestamp_seconds",
                          "When the signed statement of the registry in force expires",
                          s.registry_expires_at))
    return out


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _build(s: Snapshot) -> InfoMetricFamily:
    keys = ("version", "strongswan_version", "routing_daemon", "routing_daemon_version")
    info = InfoMetricFamily("aronet_build", "aronet, charon and the routing daemon that run here")
    info.add_metric([], {k: s.build.get(k) or "" for k in keys})
    return info


def _daemons(s: Snapshot) -> list[Metric]:
    up = GaugeMetricFamily("aronet_daemon_up", "1 while the child daemon runs and answers",
                           labels=["daemon"])
    restarts = CounterMetricFamily("aronet_daemon_restarts", "Times the agent restarted the child "
                                   "daemon after it died", labels=["daemon"])
    for name in sorted(s.daemons):
        running, count = s.daemons[name]
        up.add_metric([name], 1 if running else 0)
        restarts.add_metric([name], count)
    return [up, restarts]


def tunnel_up(sa: Mapping | None) -> bool:
    """The connection has an installed CHILD_SA (VICI list-sas, decoded)."""
    return bool(sa) and any(c.get("state") == "INSTALLED" for c in (sa.get("child-sas") or {}).values())


def _peers(s: Snapshot, per_peer: bool) -> list[Metric]:
    sas = s.observation.sas if s.observation else {}
    links = s.observation.links if s.observation else {}
    by_peer: dict[str, list[bool]] = {}
    for c in s.connections:
        by_peer.setdefault(c.peer, []).append(tunnel_up(sas.get(c.name)) and links.get(c.name, False))
    states = {k: 0 for k in PEER_STATES}
    for ups in by_peer.values():
        states["up" if all(ups) else "partial" if any(ups) else "down"] += 1
    peers = GaugeMetricFamily("aronet_peers", "Peers by state: up (every tunnel carries traffic), "
                              "partial (some do), down (none)", labels=["state"])
    for state in PEER_STATES:
        peers.add_metric([state], states[state])
    out: list[Metric] = [peers, _gauge("aronet_peers_configured", "Peers in the registry in force "
                                       "(revoked ones left out)", s.peers_configured)]
    updown = CounterMetricFamily("aronet_peer_updown_events", "charon's ike-updown and child-updown "
                                 "events", labels=["conn", "event"] if per_peer else ["event"])
    if not per_peer:
        for event in UPDOWN_EVENTS:
            updown.add_metric([event], sum(n for (_c, e), n in s.updown.items() if e == event))
        return [*out, updown]
    info = InfoMetricFamily("aronet_peer", "Each connection to a peer: its identities",
                            labels=["conn", "ifname", "peer_org", "peer_cn", "af", "remote_addr"])
    up = GaugeMetricFamily("aronet_peer_up", "1 while the connection has an installed CHILD_SA",
                           labels=["conn"])
    established = GaugeMetricFamily("aronet_peer_established_seconds", "How long the connection's "
                                    "IKE_SA has been established", labels=["conn"])
    age = (s.now - s.observation.at) if s.observation else 0.0
    for c in sorted(s.connections, key=lambda c: c.name):
        sa = sas.get(c.name) or {}
        org, _, cn = c.peer.partition("/")
        info.add_metric([c.name, c.name, org, cn, c.family, sa.get("remote-host") or c.remote_addrs], {})
        up.add_metric([c.name], 1 if tunnel_up(sa) else 0)
        if sa.get("state") == "ESTABLISHED" and str(sa.get("established", "")).isdigit():
            established.add_metric([c.name], int(sa["established"]) + max(age, 0.0))
        for event in UPDOWN_EVENTS:
            updown.add_metric([c.name, event], s.updown.get((c.name, event), 0))
    return [*out, info, up, established, updown]


def route_kind(r: Route) -> str:
    if r.encap and r.encap[0] == "seg6":
        return "seg6"
    if r.encap and r.encap[0] == "seg6local":
        return "sid"
    return "unreachable" if r.type == "unreachable" else "overlay"


def _family(prefix: str) -> str:
    try:
        return f"ipv{ip_network(prefix, strict=False).version}"
    except ValueError:
        return "unknown"


def _routes(s: Snapshot) -> GaugeMetricFamily:
    counts: dict[tuple[str, str], int] = {(f, k): 0 for f in ("ipv4", "ipv6") for k in ROUTE_KINDS}
    for r in s.planned_routes:
        key = (_family(r.dst), route_kind(r))
        counts[key] = counts.get(key, 0) + 1
    for r in (s.observation.routes if s.observation else ()):
        key = (_family(r["prefix"]), "babel")
        counts[key] = counts.get(key, 0) + 1
    g = GaugeMetricFamily("aronet_routes", "Routes: babel's selected ones (kind babel) and those "
                          "aronet installs (overlay, seg6, sid, unreachable)", labels=["family", "kind"])
    for (family, kind), n in sorted(counts.items()):
        g.add_metric([family, kind], n)
    return g


def _tunnels(obs: Observation, per_peer: bool) -> list[Metric]:
    out = []
    for field_name in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"):
        direction, unit = field_name.split("_")
        c = CounterMetricFamily(f"aronet_tunnel_{field_name}", f"{unit.capitalize()} "
                                f"{'received on' if direction == 'rx' else 'sent into'} the tunnel "
                                "interfaces (their counters survive rekeys)",
                                labels=["ifname"] if per_peer else [])
        if per_peer:
            for ifname in sorted(obs.counters):
                c.add_metric([ifname], getattr(obs.counters[ifname], field_name))
        else:
            c.add_metric([], sum(getattr(x, field_name) for x in obs.counters.values()))
        out.append(c)
    return out


def _neighbors(obs: Observation) -> list[Metric]:
    out = []
    by_if = obs.neighbor_by_interface()
    for suffix, (key, factor) in _NEIGHBOR.items():
        g = GaugeMetricFamily(f"aronet_babel_neighbor_{suffix}", _NEIGHBOR_DOC[suffix], labels=["ifname"])
        for ifname in sorted(by_if):
            value = by_if[ifname].get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                g.add_metric([ifname], value * factor)
        if g.samples or suffix == "cost":
            out.append(g)
    reach = GaugeMetricFamily("aronet_babel_neighbor_reachable", "1 while the babel neighbour on the "
                              "interface has a finite cost", labels=["ifname"])
    for ifname in sorted(by_if):
        reach.add_metric([ifname], 1 if reachable(by_if[ifname]) else 0)
    return [*out, reach]


_NEIGHBOR_DOC = {
    "cost": "babel's cost of the neighbour on the interface (65535: unreachable)",
    "rxcost": "babel's receive cost of the neighbour (where the daemon reports it)",
    "txcost": "babel's transmit cost the neighbour announced (where the daemon reports it)",
    "rtt_seconds": "babel's smoothed round-trip time to the neighbour (where the daemon reports it)",
}


_VICI_ACTIONS = {"load-conn": "load conn", "unload-conn": "unload conn", "initiate": "initiate conn"}
REFUSAL_REASONS = ("invalid", "signature", "digest", "mesh", "rollback", "expired", "not_yet_valid")


def plan_actions(operations: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """What a sync changed, from its operation counts (Agent.resync): netlink's
    "add route", "remove xfrm", ...; charon's connections loaded, unloaded and
    initiated; nft transactions. Reads (observe, list-sas, ...) are not actions."""
    out: dict[str, int] = {}
    for key, n in operations.get("netlink", {}).items():
        if key.split(" ")[0] in ("add", "change", "remove") and n:
            out[key] = out.get(key, 0) + n
    for key, n in operations.get("vici", {}).items():
        if key in _VICI_ACTIONS and n:
            out[_VICI_ACTIONS[key]] = out.get(_VICI_ACTIONS[key], 0) + n
    if operations.get("nft", {}).get("transaction"):
        out["replace nft"] = operations["nft"]["transaction"]
    return out


def refusal_reason(problems: Iterable) -> str:
    """One of REFUSAL_REASONS for a refused registry, from its problems (errors.Problem:
    file, path, message): what aronet_registry_load_errors_total{reason} counts."""
    for p in problems:
        if p.path == "$.statement.serial":
            return "rollback"
        if p.path == "$.statement.expires_at":
            return "expired"
        if p.path == "$.statement.issued_at":
            return "not_yet_valid"
        if p.path == "$.statement.mesh":
            return "mesh"
        if p.message.startswith("its sha256"):
            return "digest"
        if p.file.endswith(".sig"):
            return "signature"
    return "invalid"


def sample_names(metrics: Iterable[Metric]) -> set[str]:
    """Every series name the families expose (counters with _total, info with _info)."""
    return {s.name for m in metrics for s in m.samples}


__all__ = ["Counters", "Snapshot", "families", "plan_actions", "refusal_reason", "route_kind",
           "sample_names", "tunnel_up"]
