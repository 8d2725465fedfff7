"""The Grafana dashboard in the repository (examples/grafana/aronet.json) asks only
for series aronet exports: every metric name in every query (and in the template
variables) is one that a full scrape of an agent shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from test_metrics import T0, agent_with, known_state, scrape

from aronet.core.metrics import families, sample_names
from aronet.core.observed import Snapshot

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "aronet.json"
NAME = re.compile(r"\baronet_[a-z0-9_]+\b")


def exported(world, tmp_path) -> set[str]:
    """Every series name of a full scrape (peer detail, a signed registry in force)."""
    agent = agent_with(world, tmp_path, {"listen": "127.0.0.1:9474"})
    _conns, obs = known_state(agent)
    agent.telemetry.reconciled(0.2, {"netlink": {"add route": 1}})  # actions appear once there are some
    text = scrape(agent, obs)
    names = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    signed = Snapshot(now=T0, registry_serial=7, registry_expires_at=T0 + 86400)
    return names | sample_names(families(signed))


def queries(doc) -> list[str]:
    out = []
    for panel in doc["panels"]:
        out += [t["expr"] for t in panel.get("targets", ())]
    for var in doc.get("templating", {}).get("list", ()):
        q = var.get("query")
        if isinstance(q, dict):
            out.append(q.get("query", ""))
        elif var.get("type") == "query":
            out.append(q or "")
    return out


def test_every_query_names_only_metrics_aronet_exports(world, tmp_path):
    doc = json.loads(DASHBOARD.read_text())
    have = exported(world, tmp_path)
    asked = {name for q in queries(doc) for name in NAME.findall(q)}
    assert asked, "the dashboard asks for no aronet metric"
    assert asked - have == set()


def test_the_dashboard_shows_most_of_what_is_exported(world, tmp_path):
    """A metric added to aronet should find its way onto the dashboard (or be left
    out on purpose here)."""
    doc = json.loads(DASHBOARD.read_text())
    asked = {name for q in queries(doc) for name in NAME.findall(q)}
    base = {re.sub(r"_(bucket|count|sum|created)$", "", n) for n in exported(world, tmp_path)}
    not_shown = {n for n in base if n not in asked and n + "_bucket" not in asked}
    assert not_shown <= {"aronet_reconcile_duration_seconds", "aronet_reconcile", "aronet_plan_actions",
                         "aronet_registry_load_errors", "aronet_scrape_errors", "aronet_daemon_restarts",
                         "aronet_peer_updown_events", "aronet_tunnel_rx_bytes", "aronet_tunnel_tx_bytes",
                         "aronet_tunnel_rx_packets", "aronet_tunnel_tx_packets"}, not_shown


def test_the_checker_catches_a_misspelt_metric(world, tmp_path):
    have = exported(world, tmp_path)
    typo = "aronet_tunnel_rx_byte_total"
    assert set(NAME.findall(f"rate({typo}[5m])")) - have == {typo}


def test_the_dashboard_is_grafana_json():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        assert p["datasource"]["type"] == "prometheus" and p["targets"]
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
