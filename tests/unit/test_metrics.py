"""The metrics (aronet/core/metrics.py, aronet/daemon/metrics.py) and the metrics
block of config.json: the exposition parses with prometheus_client's own parser and
shows exactly the series of a known state; detail "summary" has no per-peer series;
a scrape observes nothing; the listener serves /metrics and refuses the overlay.
No system is touched: the agent is built but never run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from builders import make_config
from prometheus_client.parser import text_string_to_metric_families

from aronet.adapters.exporter import Listener
from aronet.core.metrics import plan_actions, refusal_reason
from aronet.core.observed import Counters, Observation
from aronet.core.state import Connection
from aronet.daemon.agent import Agent
from aronet.errors import InputError, Problem
from aronet.load import build_config, build_registry
from aronet.paths import Paths

T0 = 1_900_000_000.0


def series(text: str) -> dict[tuple[str, tuple], float]:
    """{(name, sorted labels): value} of an exposition, parsed by prometheus_client."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def agent_with(world, tmp_path, metrics: dict | None, name: str = "moon") -> Agent:
    doc = world.config(name)
    if metrics is not None:
        doc["metrics"] = metrics
    config = build_config(doc, str(world.config_path(name)), base_dir=str(world.config_path(name).parent))
    registry = build_registry(world.registry_doc(), "registry.json")
    agent = Agent(config, Paths.for_instance("t", str(tmp_path / "run"), str(tmp_path / "state")),
                  registry)
    agent.rt.desired = agent.plan_desired(registry)
    agent.rt.registry = registry
    return agent


def known_state(agent: Agent) -> tuple[list[Connection], Observation]:
    """moon's connections: the first has an installed CHILD_SA, its link up, its babel
    neighbour reachable, and a route to its peer's network; the rest have nothing."""
    conns = sorted(agent.rt.desired.state.of(Connection), key=lambda c: c.name)
    first = conns[0]
    sa = {"state": "ESTABLISHED", "established": "100", "remote-host": "192.0.2.99",
          "child-sas": {"x-1": {"state": "INSTALLED"}}}
    obs = Observation(
        at=T0 - 2, sas={first.name: sa},
        neighbors=({"address": "fe80::2", "interface": first.name, "metric": 96, "rxcost": 96,
                    "txcost": 96, "rtt": 1.5},),
        routes=({"prefix": "fd67::/64", "via": "fe80::2", "interface": first.name, "metric": 96},),
        links={first.name: True},
        counters={c.name: Counters(1000 * i, 2000 * i, 10 * i, 20 * i) for i, c in enumerate(conns, 1)})
    return conns, obs


def scrape(agent: Agent, obs: Observation) -> str:
    agent.telemetry.latest = obs
    agent.telemetry.clock = lambda: T0
    return agent.telemetry.metrics.text()


def test_the_series_for_a_known_state(world, tmp_path):
    agent = agent_with(world, tmp_path, {"listen": "127.0.0.1:9474"})
    conns, obs = known_state(agent)
    agent.telemetry.updown[(conns[0].name, "child-up")] = 2
    got = series(scrape(agent, obs))
    first, rest = conns[0].name, [c.name for c in conns[1:]]
    peers = {c.peer for c in conns}
    assert got[("aronet_peers_configured", ())] == 3 == len(peers)
    assert got[("aronet_peers", (("state", "up"),))] + got[("aronet_peers", (("state", "partial"),))] == 1
    assert got[("aronet_peers", (("state", "down"),))] == len(peers) - 1
    assert got[("aronet_peer_up", (("conn", first),))] == 1
    assert all(got[("aronet_peer_up", (("conn", n),))] == 0 for n in rest)
    assert got[("aronet_peer_established_seconds", (("conn", first),))] == 102  # + the observation's age
    assert ("aronet_peer_established_seconds", (("conn", rest[0]),)) not in got
    assert got[("aronet_peer_updown_events_total", (("conn", first), ("event", "child-up")))] == 2
    info = [dict(labels) for (name, labels) in got if name == "aronet_peer_info"]
    assert len(info) == len(conns)
    mine = next(i for i in info if i["conn"] == first)
    assert mine["ifname"] == first and mine["remote_addr"] == "192.0.2.99"
    assert f"{mine['peer_org']}/{mine['peer_cn']}" == conns[0].peer and mine["af"] == conns[0].family
    for i, c in enumerate(conns, 1):
        assert got[("aronet_tunnel_rx_bytes_total", (("ifname", c.name),))] == 1000 * i
        assert got[("aronet_tunnel_tx_packets_total", (("ifname", c.name),))] == 20 * i
    assert got[("aronet_babel_neighbor_cost", (("ifname", first),))] == 96
    assert got[("aronet_babel_neighbor_rxcost", (("ifname", first),))] == 96
    assert got[("aronet_babel_neighbor_rtt_seconds", (("ifname", first),))] == pytest.approx(0.0015)
    assert got[("aronet_routes", (("family", "ipv6"), ("kind", "babel")))] == 1
    assert got[("aronet_routes", (("family", "ipv4"), ("kind", "seg6")))] > 0
    assert got[("aronet_observation_timestamp_seconds", ())] == T0 - 2
    build = next(dict(labels) for (name, labels) in got if name == "aronet_build_info")
    assert build["routing_daemon"] == agent.config.settings.routing and build["version"]
    assert got[("aronet_daemon_up", (("daemon", "charon"),))] == 0  # not started here
    assert got[("aronet_reconcile_total", (("result", "ok"),))] == 0


def test_summary_detail_has_no_per_peer_series(world, tmp_path):
    agent = agent_with(world, tmp_path, {"listen": "127.0.0.1:9474", "detail": "summary"})
    conns, obs = known_state(agent)
    got = series(scrape(agent, obs))
    labelled = {name for name, labels in got if any(k in ("conn", "ifname") for k, _ in labels)}
    assert labelled == set()
    assert got[("aronet_tunnel_rx_bytes_total", ())] == sum(1000 * i for i in range(1, len(conns) + 1))
    assert "aronet_peer_info" not in {name for name, _ in got}
    assert got[("aronet_peers", (("state", "down"),))] == 2


def test_a_scrape_observes_nothing(world, tmp_path):
    agent = agent_with(world, tmp_path, {"listen": "127.0.0.1:9474"})
    _conns, obs = known_state(agent)

    def fail(*_a, **_k):
        raise AssertionError("a scrape observed the system")
    agent.telemetry.observe = fail
    agent.node.vici.sas = agent.node.routing.babel_state = agent.node.netlink.link_states = fail
    assert "aronet_peer_up" in scrape(agent, obs)


def test_syncs_refusals_and_failed_sources_are_counted(world, tmp_path):
    agent = agent_with(world, tmp_path, {"listen": "127.0.0.1:9474"})
    _conns, obs = known_state(agent)
    t = agent.telemetry
    t.reconciled(0.3, {"netlink": {"add route": 2, "observe": 1}, "vici": {"load-conn": 1, "list-sas": 1},
                       "nft": {"transaction": 1, "list table": 1}})
    t.reconciled(1.0, None)
    t.reloaded("r.json", False, problems=(Problem("r.json.sig", "$.statement.serial", "3 is below 4"),))
    t.metrics.observed(dataclasses.replace(obs, errors={"vici": "lost charon", "routing": "not running"}))
    got = series(scrape(agent, obs))
    assert got[("aronet_reconcile_total", (("result", "ok"),))] == 1
    assert got[("aronet_reconcile_total", (("result", "failed"),))] == 1
    assert got[("aronet_reconcile_duration_seconds_count", ())] == 2
    assert got[("aronet_reconcile_duration_seconds_bucket", (("le", "0.5"),))] == 1
    assert got[("aronet_plan_actions_total", (("action", "add route"),))] == 2
    assert got[("aronet_plan_actions_total", (("action", "load conn"),))] == 1
    assert got[("aronet_plan_actions_total", (("action", "replace nft"),))] == 1
    assert got[("aronet_registry_load_errors_total", (("reason", "rollback"),))] == 1
    assert got[("aronet_scrape_errors_total", (("source", "vici"),))] == 1
    assert got[("aronet_scrape_errors_total", (("source", "routing"),))] == 0  # not running: no error


def test_plan_actions_leave_out_reads():
    ops = {"netlink": {"observe": 3, "remove xfrm": 1, "hold routes": 1}, "vici": {"list-conns": 1,
           "initiate": 2, "unload-conn": 1}, "nft": {"list table": 1}}
    assert plan_actions(ops) == {"remove xfrm": 1, "initiate conn": 2, "unload conn": 1}


@pytest.mark.parametrize(("problem", "reason"), [
    (Problem("r.json.sig", "$.statement.serial", "3 is below 4"), "rollback"),
    (Problem("r.json.sig", "$.statement.expires_at", "expired at ..."), "expired"),
    (Problem("r.json.sig", "$.statement.issued_at", "in the future"), "not_yet_valid"),
    (Problem("r.json.sig", "$.statement.mesh", "another mesh"), "mesh"),
    (Problem("r.json", "$", "its sha256 ab is not the statement's"), "digest"),
    (Problem("r.json.sig", "$.signatures", "0 valid signatures"), "signature"),
    (Problem("r.json", "$[0].nodes[1].remarks.network", "overlaps"), "invalid"),
])
def test_refusal_reasons(problem, reason):
    assert refusal_reason([problem]) == reason


def test_the_listener_serves_metrics_and_refuses_the_overlay(world, tmp_path):
    agent = agent_with(world, tmp_path, {"listen": "127.0.0.1:9474"})
    _conns, obs = known_state(agent)
    agent.telemetry.latest = obs
    registry = agent.telemetry.metrics.registry
    served = Listener("127.0.0.1", 0, registry)
    served.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=10) as r:
            assert r.status == 200
            assert ("aronet_peers_configured", ()) in series(r.read().decode())
    finally:
        served.stop()
    refusing = Listener("127.0.0.1", 0, registry, refuse=lambda addr: addr == "127.0.0.1")
    refusing.start()
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{refusing.port}/metrics", timeout=10)
    finally:
        refusing.stop()


def test_the_overlay_is_every_registry_nodes_network_and_prefixes(world, tmp_path):
    m = agent_with(world, tmp_path, {"listen": "127.0.0.1:9474"}).telemetry.metrics
    assert m.inside_overlay("fd66::1") and m.inside_overlay("fd69::5")  # moon's own, mars's
    assert m.inside_overlay("192.168.131.7") and m.inside_overlay("::ffff:192.168.131.7")
    assert not m.inside_overlay("127.0.0.1") and not m.inside_overlay("198.51.100.1")


def test_the_metrics_command_says_when_they_are_off(world, tmp_path):
    import asyncio

    from aronet.errors import AronetError

    agent = agent_with(world, tmp_path, None)
    assert agent.telemetry.metrics is None
    with pytest.raises(AronetError, match="metrics are off"):
        asyncio.run(agent.handle({"cmd": "metrics"}))
    on = agent_with(world, tmp_path, {"textfile": "m.prom"})
    reply = asyncio.run(on.handle({"cmd": "metrics"}))
    assert ("aronet_peers_configured", ()) in series(reply["text"])


def test_the_textfile_is_written_after_an_observation(world, tmp_path):
    agent = agent_with(world, tmp_path, {"textfile": str(tmp_path / "aronet.prom")})
    _conns, obs = known_state(agent)
    agent.telemetry.latest = obs
    agent.telemetry.metrics.observed(obs)
    text = (tmp_path / "aronet.prom").read_text()
    assert series(text)[("aronet_peers_configured", ())] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_without_a_metrics_block_prometheus_client_is_never_imported():
    code = ("import sys, aronet.daemon.agent, aronet.cli; "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------------ the config block


def _config(pair_path: str, metrics) -> dict:
    doc = make_config(private_key=pair_path, extra_ip=["192.168.128.1"])
    doc["metrics"] = metrics
    return doc


@pytest.mark.parametrize(("metrics", "expect"), [
    ({"listen": "127.0.0.1:9474"}, (("127.0.0.1", 9474), None, "peer")),
    ({"listen": "[::1]:9100", "detail": "summary"}, (("::1", 9100), None, "summary")),
    ({"listen": "198.51.100.1:9474"}, (("198.51.100.1", 9474), None, "peer")),
])
def test_a_metrics_block_is_read(world, metrics, expect):
    doc = _config(str(world.key_path("example")), metrics)
    m = build_config(doc, "c.json", base_dir=str(world.root)).metrics
    assert (m.listen, m.textfile, m.detail) == expect


def test_a_relative_textfile_is_relative_to_the_config(world):
    doc = _config(str(world.key_path("example")), {"textfile": "tf/aronet.prom", "interval": 15})
    m = build_config(doc, "c.json", base_dir=str(world.root)).metrics
    assert m.textfile == str(world.root / "tf" / "aronet.prom") and m.interval == 15 and m.listen is None


def test_no_block_no_metrics(world):
    doc = make_config(private_key=str(world.key_path("example")))
    assert build_config(doc, "c.json", base_dir=str(world.root)).metrics is None


@pytest.mark.parametrize(("metrics", "words"), [
    ({"listen": "0.0.0.0:9474"}, "wildcard"),
    ({"listen": "[::]:9474"}, "wildcard"),
    ({"listen": "[fd66::1]:9474"}, "overlay"),
    ({"listen": "192.168.128.1:9474"}, "overlay"),
    ({"listen": "[fe80::1]:9474"}, "link-local"),
    ({"listen": "localhost:9474"}, "not an IP address"),
    ({"listen": "127.0.0.1"}, "ADDRESS:PORT"),
    ({"listen": "127.0.0.1:0"}, "ADDRESS:PORT"),
    ({"listen": "::1:9474"}, "brackets"),
    ({"textfile": "aronet.txt"}, ".prom"),
    ({"detail": "peer"}, "needs \"listen\""),
    ({"listen": "127.0.0.1:9474", "port": 1}, "$.metrics"),
    ({"listen": "127.0.0.1:9474", "detail": "all"}, "$.metrics.detail"),
])
def test_a_bad_metrics_block_is_refused_with_its_path(world, metrics, words):
    doc = _config(str(world.key_path("example")), metrics)
    with pytest.raises(InputError) as e:
        build_config(doc, "c.json", base_dir=str(world.root))
    text = "\n".join(str(p) for p in e.value.problems)
    assert words in text and "$.metrics" in text, text
    assert all(p.file == "c.json" for p in e.value.problems)


def test_the_schema_describes_the_block():
    from importlib import resources

    schema = json.loads(resources.files("aronet").joinpath("schemas/config.schema.json").read_text())
    assert set(schema["properties"]["metrics"]["properties"]) == {"listen", "textfile", "detail", "interval"}
