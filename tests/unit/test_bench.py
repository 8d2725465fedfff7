"""The pure parts of `aronet-lab bench` and its planner row (which runs here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import yaml
from builders import processes_left

from aronet import keys
from aronet.core import planner
from aronet.core.diff import diff
from aronet.core.state import Address, State, XfrmInterface
from aronet.load import build_registry
from lab import vm
from lab.bench import bringup, common, footprint, labs, mtu, suite, table
from lab.bench.planner import bench_planner
from lab.cli import parser
from lab.topology import parse_topology, plan_lab


def _registry(n: int) -> list[dict]:
    key = keys.generate()
    return [{"public_key": keys.public_pem(key), "organization": "bench",
             "nodes": common.synthetic_nodes(n)}]


def test_synthetic_registry_is_valid_and_nothing_overlaps():
    # 600 nodes cross the /24 and /64 boundaries of the numbering more than once
    reg = build_registry(_registry(600), "registry.json")
    assert len(reg.nodes) == 600
    with pytest.raises(ValueError, match="at most"):
        common.synthetic_nodes(2, first=common.MAX_SYNTHETIC - 1)


@pytest.mark.parametrize("change", ["prefix", "endpoint"])
def test_with_change_touches_one_node_only(change):
    doc = _registry(10)
    original = json.loads(json.dumps(doc))
    new = common.with_change(doc, "bench", "n00004", change)
    assert doc == original  # the original is left alone
    changed = [a for a, b in zip(doc[0]["nodes"], new[0]["nodes"], strict=True) if a != b]
    assert [n["common_name"] for n in changed] == ["n00004"]
    build_registry(new, "registry.json")  # still valid: the new prefix overlaps nothing


def test_with_change_refuses_unknown_nodes_and_changes():
    doc = _registry(2)
    with pytest.raises(KeyError):
        common.with_change(doc, "bench", "nobody", "prefix")
    with pytest.raises(ValueError):
        common.with_change(doc, "bench", "n00001", "colour")


def test_classify_separates_the_changed_peer_from_shared_objects():
    r = bench_planner([50], say=lambda _l: None)["sizes"][0]
    assert r["actions"] == len(r["touched"]["own"]) + len(r["touched"]["shared"])
    assert r["touched"]["other"] == []
    assert r["touched"]["shared"] == ["change nft"]
    assert len(r["touched"]["own"]) == 2  # the new prefix's route in the VRF and on the host
    assert all("11." in line and "route" in line for line in r["touched"]["own"])


def test_classify_counts_another_peers_tunnel_address_as_other(seed_pair):
    config, registry, other = seed_pair
    d = planner.desired(config, registry)
    tunnel = next(x for x in d.state.of(XfrmInterface) if x.peer == other)
    extra = Address(tunnel.ns, tunnel.name, "fe80::99/64", nodad=True)
    actions = diff(State(d.state.resources | {extra}), d.state)
    assert common.classify(actions, "example/nobody", d.state)["other"] == [str(actions[0])]
    assert common.classify(actions, other, d.state)["own"] == [str(actions[0])]


@pytest.fixture
def seed_pair(world):
    from aronet.load import load_both

    config, registry = load_both(str(world.config_path("moon")), str(world.registry_path))
    other = next(n.name for n in registry.nodes if n.name != config.node.name)
    return config, registry, other


@pytest.mark.parametrize("n", [3, 4, 12])
def test_mesh_topologies_are_valid_labs(n):
    doc = common.mesh_topology(n, name=f"mesh{n}", hello=0.2, vrf_share=0.5)
    plan = plan_lab(parse_topology(yaml.safe_dump(doc), "mesh.yaml"))
    assert len(plan.nodes) == n
    assert sum(1 for x in plan.nodes if x.mode == "vrf") == round(n * 0.5)
    assert {x.organization for x in plan.nodes} == ({"bench", "bench2"})
    assert all(x.config["daemon"]["babel"]["hello_interval"] == 0.2 for x in plan.nodes)


def test_largest_ok_bisects():
    assert mtu.largest_ok(0, 9000, lambda s: s <= 1352) == 1352
    assert mtu.largest_ok(0, 9000, lambda s: True) == 9000
    assert mtu.largest_ok(10, 9000, lambda s: False) is None


def test_proc_status_and_stats():
    text = "Name:\tcharon\nVmRSS:\t   3120 kB\nRssAnon:\t  1000 kB\nRssFile:\t 2120 kB\n"
    assert footprint.proc_status_kb(text) == {"VmRSS": 3120, "RssAnon": 1000, "RssFile": 2120}
    assert common.stats([3, None, 1, 2]) == {"n": 3, "median": 2, "min": 1, "max": 3}
    assert common.stats([None])["median"] is None


def test_memory_samples_and_their_growth_per_part():
    usage = {"rss_kb": {"VmRSS": 50000, "RssAnon": 30000}, "malloc_kb": None,
             "gc": {"agent_collections": {"runs": 3, "ms": 12}},
             "python_blocks": 200000, "threads": 7, "fds": 20, "tracing": False}
    first = footprint.memory_sample(usage)
    assert first["rss"] == 50000 and first["threads"] == 7 and first["collection_ms"] == 12
    assert first["malloc_in_use"] is None and first["traced"] is None  # not there: not measured
    later = [{**first, "rss": first["rss"] + d} for d in (0, 100, 400, 1000)]
    split = footprint.memory_growth({"n1": [first, *later], "n2": [first, first]})
    assert split["rss"]["whole"]["max"] == 1000 and split["rss"]["whole"]["min"] == 0
    assert split["rss"]["second_half"]["n"] == 1  # n2 has two samples: no second half
    assert split["rss"]["second_half"]["max"] == 1000 - 100
    assert "malloc_in_use" not in split

    timed = [{**first, "collections": 10 * i, "collection_ms": 50 * i} for i in range(3)]
    assert footprint.collection_cost({"n1": timed, "n2": [first]}) == {
        "runs": common.stats([20]), "mean_ms": common.stats([5.0])}


def test_traced_agents_are_spread_over_the_mesh():
    nodes = [f"n{i}" for i in range(1, 13)]
    assert footprint.spread(nodes, 4) == ["n1", "n4", "n7", "n10"]  # VRF and netns halves
    assert footprint.spread(nodes, 0) == [] and footprint.spread(nodes[:2], 5) == ["n1", "n2"]


def test_the_table_shows_every_row():
    result = {"date": "today", "machine": {"summary": "2 cores"}, "rows": {
        "planner": {"sizes": [{"nodes": 100, "load_s": 0.01, "plan_s": 0.005, "replan_s": 0.004,
                               "actions": 3}]},
        "failover": {"babeld": {"hello": 0.2, "update": 1.0,
                                "drop-esp": {"stats": common.stats([800, 900])},
                                "partition": {"stats": common.stats([700])}},
                     "bird": {"error": "did not converge"}},
        "control": {"babeld": {"tunnel_pps": 5.0, "tunnel_bps": 400.0, "underlay_pps": 5.1,
                               "underlay_bps": 760.0}},
        "mtu": {"babeld": {"6": {"largest_packet": 1400, "advertised_mtu": 1400, "mss": 1328,
                                 "clamp": 1340},
                           "4": {"largest_packet": 1336, "advertised_mtu": 1336, "mss": 1284,
                                 "clamp": 1296},
                           "fragments_created": 0, "fragments_reassembled": 0}},
        "reload-gap": {"babeld": {"load_s": 3.2, "ipv6": {"gap_ms": 40.0, "lost": 2, "sent": 900},
                                  "ipv4": {"gap_ms": 30.0, "lost": 1, "sent": 900}}},
        "bringup": [{"nodes": 4, "vm_to_converged_s": 40.0, "guest_boot_s": 12.0, "lab_s": 25.0,
                     "tunnels": 6, "steps_passed_s": {"ike": 9.5, "ping": 24.0}},
                    {"nodes": 8, "error": "no result"}],
        "footprint": {"nodes": 12, "rss_mb": {"agent": common.stats([50.0])},
                      "growth": {"duration_s": 1800, "samples": 31, "median_kb": 0, "max_kb": 64},
                      "growth_split": {"malloc_free": {"whole": common.stats([2048]),
                                                       "second_half": common.stats([512])}},
                      "released_kb": common.stats([3000]),
                      "collections": {"mean_ms": common.stats([4.2])},
                      "traced": {"sites": {"n1": [{"kb": 900.0, "blocks": 9, "where": [
                          "/usr/lib/python3/dist-packages/pyroute2/x.py:10",
                          "/src/aronet/adapters/netlink.py:120"]}]}}},
    }}
    text = table.as_table(result)
    for needle in ("planner", "median 850", "bird): did not converge", "400 B/s", "1336",
                   "8 nodes: no result", "growth median 0 kB", "12 nodes", "ike 9.5, ping 24.0",
                   "malloc_free 2048 / 512", "ipv6: longest gap 40 ms, lost 2 of 900",
                   "malloc_trim at the end: median 3000 kB",
                   "malloc_trim after each re-check: 4.2 ms median",
                   "900.0  /usr/lib/python3/dist-packages/pyroute2/x.py:10  "
                   "<- /src/aronet/adapters/netlink.py:120"):
        assert needle in text


def test_bring_up_until_routes_converged_is_cut_from_the_checks_timeline():
    row = {"vm_to_converged_s": 50.0, "lab_s": 30.0,
           "steps_passed_s": {"ike": 20.0, "routes": 26.0, "ping": 29.0}}
    assert bringup.routes_converged(row) == {"vm_to_routes_s": 46.0}
    assert bringup.routes_converged({"vm_to_converged_s": 50.0, "lab_s": 30.0}) == {}
    assert bringup.routes_converged({"error": "no result"}) == {}
    text = table.as_table({"rows": {"bringup": [{"nodes": 4, **row, **bringup.routes_converged(row),
                                                 "guest_boot_s": 12.0, "tunnels": 12}]}})
    assert "4 nodes: 46.0 / 50.0 (guest boot 12.0, lab 30.0; 12 tunnels)" in text


def test_bench_arguments():
    args = parser().parse_args(["bench", "--rows", "planner", "mtu", "--sizes", "4,8",
                                "--routing", "bird", "--routing", "babeld"])
    assert args.rows == ["planner", "mtu"] and args.sizes == [4, 8]
    assert args.routing == ["bird", "babeld"]
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "--sizes", "4,x"])
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "--rows", "speed"])


def test_ctrl_c_during_a_vm_group_stops_the_vm(monkeypatch, tmp_path):
    # The VM runs in a worker thread; Ctrl-C reaches the main thread, which must make
    # the worker kill the VM's process group rather than leave a qemu running.
    pid_file = tmp_path / "pid"
    monkeypatch.setattr(vm.boot, "vng_args", lambda *a, **k: [
        "sh", "-c", f"sleep 600 & echo $! > {pid_file}; wait"])
    monkeypatch.setattr(vm.boot, "find_kernel", lambda: "/nonexistent/vmlinuz")
    monkeypatch.setattr(vm.boot, "python_paths", list)

    def interrupt():
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        suite._vm_group(["bringup-4"], str(tmp_path), 60, lambda _line: None)
    assert not processes_left([int(pid_file.read_text())]), "the VM's process group outlived Ctrl-C"


def test_an_unconverged_mesh_is_described_with_counts_and_step_times():
    from types import SimpleNamespace

    from lab.checks import Report, StepResult
    problems = [f"bench/n1 -> bench2/n{i} IPv6: no reply" for i in range(8, 12)]
    report = Report([StepResult("ike", True), StepResult("ping", False, problems,
                                                          {"pairs": 264, "failed": 4})],
                    seconds=612.0, passed_at={"ike": 262.5})
    text = labs.not_converged(SimpleNamespace(plan=SimpleNamespace(lab="mesh12")), report)
    assert text.startswith("lab mesh12 did not converge in 612 s: broken at ping (4 of 264 pairs): ")
    assert "n8" in text and "n10" in text and "n11" not in text  # the first three only
    assert "steps passed at {'ike': 262.5} s" in text
    assert report.as_json()["passed_at"] == {"ike": 262.5}


def test_a_failed_ping_pair_is_diagnosed_from_both_ends(monkeypatch):
    from types import SimpleNamespace

    from lab import run as labrun
    from lab.checks import NodeView, Report, StepResult
    vrf = NodeView("o/a", "lab-a", "lab-a", "/s", None, sources={6: "aronet"}, targets={6: "fd00:1::1"})
    netns = NodeView("o/b", "lab-b", "aronet-b", "/s", None, sources={6: "fd00:2::1"},
                     targets={6: "fd00:2::1"})
    monkeypatch.setattr(labrun, "node_views", lambda lab: [vrf, netns])
    ran = []

    def ns_run(ns, argv):
        ran.append((ns, argv))
        return subprocess.CompletedProcess(argv, 0, f"{ns}: {' '.join(argv)}\n", "")
    monkeypatch.setattr(bringup, "ns_run", ns_run)
    report = Report([StepResult("ping", False, ["o/a -> o/b IPv6: no reply"],
                                {"pairs": 2, "failed": 1, "failed_pairs": [["o/a", "o/b", 6]]})])
    [row] = bringup._diagnose_pings(SimpleNamespace(), report, lambda _line: None)
    assert ran[0] == ("lab-a", ["ip", "-6", "route", "get", "fd00:2::1", "vrf", "aronet"])
    assert ran[1] == ("aronet-b", ["ip", "-6", "route", "get", "fd00:1::1"])  # netns: no VRF
    assert ran[2] == ("lab-a", ["ping", "-6", "-c", "3", "-W", "2", "-I", "aronet", "fd00:2::1"])
    assert row["route_there"].startswith("lab-a: ip -6 route get")
    assert row["route_back"].startswith("aronet-b: ip -6 route get")


def test_a_registry_without_a_node_keeps_its_organization_and_the_others():
    from aronet.errors import AronetError
    from lab.reload_gap import registry_without

    reg = [{"organization": "o1", "public_key": "k1", "nodes": [{"common_name": "a"}, {"common_name": "b"}]},
           {"organization": "o2", "public_key": "k2", "nodes": [{"common_name": "a"}]}]
    assert registry_without(reg, "o1", "a") == [
        {"organization": "o1", "public_key": "k1", "nodes": [{"common_name": "b"}]}, reg[1]]
    assert registry_without(reg, "o2", "a")[1]["nodes"] == []
    with pytest.raises(AronetError, match="no node o2/b"):
        registry_without(reg, "o2", "b")
