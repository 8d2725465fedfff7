"""The lab's side of the metrics and events (lab/telemetry.py, lab/failover_events.py)
without a lab: what each node saw during a failover run, the OpenMetrics result, the
merged stream's lines, and the recorder against real control sockets."""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from aronet.daemon import control
from aronet.daemon.events import EventBus
from lab import failover_events, telemetry
from lab.cli import parser

T0 = 1_900_000_000.0


def ev(kind: str, ts: float, **fields) -> dict:
    return {"event": kind, "ts": ts, **fields}


def result() -> dict:
    return {"a": "a", "b": "b", "fault": "drop-esp", "prefix": "fd02::/64", "runs": [
        {"outage_ms": 800.0, "return_ms": 2000, "fault_at": T0, "heal_at": T0 + 10},
        {"outage_ms": 600.0, "return_ms": 1000, "fault_at": T0 + 100, "heal_at": T0 + 110},
    ]}


EVENTS = [
    ("a", ev("neighbor-cost", T0 - 1, cost=300, old_cost=96)),  # before the fault: not counted
    ("a", ev("neighbor-down", T0 + 0.75, ifname="ar-ab")),
    ("a", ev("route-changed", T0 + 0.5, prefix="fd03::/64")),  # not b's prefix: not a's answer
    ("a", ev("route-changed", T0 + 0.9, prefix="fd02::/64")),
    ("b", ev("neighbor-cost", T0 + 0.7, cost=65534, old_cost=96)),
    ("b", ev("route-removed", T0 + 1.0, prefix="fd01::/64")),
    ("c", ev("neighbor-cost", T0 + 0.3, cost=90, old_cost=96)),  # cheaper: not a loss
    ("a", ev("neighbor-down", T0 + 100.5)),
    ("a", ev("route-changed", T0 + 100.7, prefix="fd02::/64")),
    ("a", ev("route-changed", T0 + 111, prefix="fd02::/64")),  # after the heal
]


def test_what_each_node_saw_in_each_run():
    r = failover_events.annotate(result(), EVENTS, ["a", "b", "c"])
    first, second = (run["seen"] for run in r["runs"])
    assert first["a"] == {"neighbor_lost_ms": 750.0, "route_changed_ms": 900.0}
    assert first["b"] == {"neighbor_lost_ms": 700.0, "route_changed_ms": 1000.0}
    assert first["c"] == {"neighbor_lost_ms": None, "route_changed_ms": None}
    assert second["a"] == {"neighbor_lost_ms": 500.0, "route_changed_ms": 700.0}
    text = failover_events.as_text(r)
    assert "run 1 seen (ms after the fault): a: neighbour lost 750 ms, route changed 900 ms" in text
    assert "c:" not in text


def test_the_result_as_openmetrics():
    r = failover_events.annotate(result(), EVENTS, ["a", "b", "c"])
    text = failover_events.openmetrics(r)
    assert text.endswith("# EOF\n")
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert got[("aronet_lab_failover_seconds", (("fault", "drop-esp"),))] == pytest.approx(0.7)
    assert got[("aronet_lab_converge_seconds", (("stage", "neighbor_lost"),))] == pytest.approx(0.625)
    assert got[("aronet_lab_converge_seconds", (("stage", "route_changed"),))] == pytest.approx(0.8)
    assert got[("aronet_lab_converge_seconds", (("stage", "traffic_resumed"),))] == pytest.approx(0.7)
    assert got[("aronet_lab_converge_seconds", (("stage", "direct_again"),))] == pytest.approx(1.5)


def test_runs_without_events_leave_stages_out():
    r = result()
    text = failover_events.openmetrics(r)
    assert "neighbor_lost" not in text and 'stage="direct_again"' in text


def test_a_merged_line_names_the_lab_node_first():
    line = telemetry.line("moon", {"time": "t", "event": "link-up"})
    assert list(json.loads(line)) == ["lab_node", "time", "event"] and " " not in line


def test_the_commands_are_there():
    p = parser()
    assert p.parse_args(["metrics", "moon"]).node == "moon"
    args = p.parse_args(["events", "moon", "sun", "--count", "3"])
    assert args.nodes == ["moon", "sun"] and args.count == 3
    m = p.parse_args(["measure", "failover", "a", "b", "--openmetrics", "f.om", "--no-events"])
    assert m.openmetrics == "f.om" and m.no_events


def test_the_recorder_reads_every_nodes_stream(tmp_path):
    buses = {n: EventBus(f"o/{n}", clock=lambda: T0) for n in ("a", "b")}
    sockets = {n: str(tmp_path / f"{n}.sock") for n in buses}
    lab = SimpleNamespace(control_socket=sockets.__getitem__,
                          plan=SimpleNamespace(nodes=[SimpleNamespace(name=n) for n in buses]))
    out = {}

    async def main():
        loop = asyncio.get_running_loop()
        servers = []
        for n, bus in buses.items():
            bus.bind(loop)

            async def handler(_req):
                return {"ok": True}
            servers.append(await control.serve(sockets[n], handler, {"events": bus.stream}))

        def body():
            with telemetry.Recorder(lab, poll=0.5) as rec:
                assert rec.errors == {}
                assert all(b.poll == 0.5 for b in buses.values())
                buses["a"].publish({"event": "link-down", "ifname": "ar-1"})
                buses["b"].publish({"event": "neighbor-down", "ifname": "ar-2"})
                ok = rec.wait_for(lambda evs: len([e for _, e in evs if e["event"] != "subscribed"]) == 2,
                                  10)
                out["events"] = [(n, e["event"]) for n, e in rec.events if e["event"] != "subscribed"]
            return ok
        out["ok"] = await asyncio.to_thread(body)
        for s in servers:
            s.close()
    asyncio.run(main())
    assert out["ok"]
    assert sorted(out["events"]) == [("a", "link-down"), ("b", "neighbor-down")]


def test_the_recorder_says_which_node_it_could_not_reach(tmp_path):
    lab = SimpleNamespace(control_socket=lambda n: str(tmp_path / "none.sock"),
                          plan=SimpleNamespace(nodes=[SimpleNamespace(name="a")]))
    done = threading.Event()
    with telemetry.Recorder(lab) as rec:
        done.set()
    assert "no agent is running" in rec.errors["a"]
