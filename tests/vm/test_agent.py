"""The agent daemon for real, in the microVM: status, registry reloads, a killed
agent coming back, and a stop that leaves nothing. One lab (the seed scenario in
netns mode) serves the whole module; the tests run in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from ipaddress import ip_interface

import pytest

from aronet.adapters.netlink import xfrm_policies, xfrm_states
from aronet.client import request
from aronet.daemon import agent
from aronet.errors import InputError
from lab import run as labrun
from lab.checks import aronet_command, run_in_ns, wait_converged


@pytest.fixture(scope="module")
def lab(running_lab):
    with running_lab("seed.yaml", "agent", "netns") as lab:
        yield lab


def registry_doc(lab) -> list:
    with open(os.path.join(lab.directory, "registry.json")) as f:
        return json.load(f)


def poll(check, timeout: float = 60.0, every: float = 0.5):
    """check() returns None when satisfied, else what still differs."""
    deadline = time.monotonic() + timeout
    while (problem := check()) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {problem}")
        time.sleep(every)


def aronet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*aronet_command(), *args], capture_output=True, text=True, timeout=120)


def test_status_json_shows_every_peer(lab):
    r = aronet("status", "--json", "-s", lab.control_socket("moon"))
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["node"] == "example/moon"
    assert {p["peer"] for p in status["peers"]} == {"example/earth", "example2/sun", "example2/mars"}
    for p in status["peers"]:
        for t in p["tunnels"]:
            assert (t["ike"], t["child"], t["interface_up"]) == ("ESTABLISHED", "INSTALLED", True)
            assert t["babel_neighbor"].startswith("fe80::") and t["babel_metric"] > 0
        assert p["routes"], p
    info = json.loads(aronet("daemon", "info", "-s", lab.control_socket("moon")).stdout)
    assert info["children"]["charon"]["pid"] and info["children"][info["routing"]]["pid"]


def test_a_tunnel_interface_downed_behind_the_agents_back_comes_back_up(lab):
    """The links follow charon's installed CHILD_SAs at every re-check, not only on
    events: an interface left down (a lost or reordered event, or a person) while its
    CHILD_SA is installed is brought up again, with its link-local address."""
    sock, ns = lab.control_socket("moon"), lab.plan.node("moon").agent_ns
    tunnel = request(sock, {"cmd": "status"}, timeout=30)["status"]["peers"][0]["tunnels"][0]
    assert tunnel["child"] == "INSTALLED" and tunnel["interface_up"]
    name = tunnel["name"]
    subprocess.run(["ip", "-n", ns, "link", "set", name, "down"], check=True)

    def back_up():
        st = request(sock, {"cmd": "status"}, timeout=30)["status"]
        t = next(t for p in st["peers"] for t in p["tunnels"] if t["name"] == name)
        if not t["interface_up"]:
            return f"{name} still down"
        addrs = subprocess.run(["ip", "-n", ns, "-j", "addr", "show", "dev", name],
                               capture_output=True, text=True).stdout
        return None if "fe80::" in addrs else f"{name} up without its link-local address"
    poll(back_up, timeout=3 * agent.RECHECK_INTERVAL + 30)
    report = wait_converged(labrun.node_views(lab), 120)
    assert report.ok, report.as_text()


def _check_here(lab, node: str) -> subprocess.CompletedProcess:
    """`aronet check --local` where the node's agent runs, on the agent's own files."""
    return run_in_ns(lab.plan.node(node).ns, [
        *aronet_command(), "check", "--local", "-c", lab.config_file(node),
        "-r", os.path.join(lab.directory, "registry.json"),  # the one the lab started it with
        "--runtime-dir", lab.runtime_dir(node)], timeout=180)


def test_aronet_check_finds_a_route_deleted_by_hand(lab):
    """`aronet check` exits 0 on a node in sync, asked of the agent and observed from
    outside it (--local). With the agent paused (SIGSTOP: no re-check may repair the
    route first), a route deleted by hand is a difference --local names, exit 1; once
    the agent goes on, it repairs the route and the node is in sync again."""
    r = aronet("check", "-s", lab.control_socket("moon"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("example/moon: in sync")
    r = _check_here(lab, "moon")
    assert r.returncode == 0, r.stdout + r.stderr
    ns = lab.plan.node("moon").agent_ns
    routes = json.loads(subprocess.run(["ip", "-4", "-j", "-n", ns, "route", "show", "proto", "211"],
                                       capture_output=True, text=True, check=True).stdout)
    dst = next(r["dst"] for r in routes if r.get("encap") == "seg6")
    pid = labrun.agent_pids(lab)["moon"]
    os.kill(pid, signal.SIGSTOP)
    try:
        subprocess.run(["ip", "-4", "-n", ns, "route", "del", dst, "proto", "211"], check=True)
        r = _check_here(lab, "moon")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"netlink + route {dst}" in r.stdout, r.stdout
    assert "not in sync (1 difference)" in r.stdout, r.stdout
    poll(lambda: None if aronet("check", "-s", lab.control_socket("moon")).returncode == 0
         else f"{dst} not repaired", timeout=3 * agent.RECHECK_INTERVAL + 60, every=2)


def test_the_agent_collects_what_its_rechecks_leave(lab):
    """The agent froze its start-up objects and runs a full collection after every
    re-check; `aronet daemon memory` says so, and releases on request (tracing, which
    would slow this shared lab's agent from then on, is left to the unit tests)."""
    sock = lab.control_socket("moon")

    def collections():
        r = aronet("daemon", "memory", "-s", sock)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["usage"]

    first = collections()
    assert first["gc"]["frozen"] > 10000  # the imports, out of the collector's sight
    assert first["rss_kb"]["VmRSS"] > 0 and first["threads"] >= 2
    poll(lambda: None if collections()["gc"]["agent_collections"]["runs"] >
         first["gc"]["agent_collections"]["runs"] else "no collection after a re-check yet",
         timeout=3 * agent.RECHECK_INTERVAL + 30)
    r = json.loads(aronet("daemon", "memory", "-s", sock, "--release").stdout)
    assert r["release"]["after_kb"]["VmRSS"] > 0 and not r["usage"]["tracing"]


def test_invalid_load_is_refused_and_changes_nothing(lab, tmp_path):
    before = request(lab.control_socket("earth"), {"cmd": "status"})["status"]
    bad = registry_doc(lab)
    bad[0]["nodes"][0]["remarks"]["network"] = "fd66::1/80"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    r = aronet("load", "-r", str(path), "-s", lab.control_socket("earth"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "$[0].nodes[0].remarks.network" in r.stderr
    with pytest.raises(InputError):  # the agent itself refuses too, not only the CLI
        request(lab.control_socket("earth"), {"cmd": "load", "file": "bad.json", "registry": bad})
    after = request(lab.control_socket("earth"), {"cmd": "status"})["status"]
    assert [t["name"] for p in after["peers"] for t in p["tunnels"]] == \
        [t["name"] for p in before["peers"] for t in p["tunnels"]]


def test_reload_adds_one_node_and_removes_another(lab, tmp_path):
    registry = registry_doc(lab)
    example2 = next(o for o in registry if o["organization"] == "example2")
    mars = next(n for n in example2["nodes"] if n["common_name"] == "mars")
    example2["nodes"].remove(mars)
    example2["nodes"].append({"common_name": "venus",
                              "endpoints": [{"address": "192.0.2.99", "port": 12025}],
                              "remarks": {"network": "fd6a::1/64", "prefixs": ["192.168.132.0/24"]}})
    path = tmp_path / "reload.json"
    path.write_text(json.dumps(registry))
    for node in ("moon", "earth", "sun"):
        r = aronet("load", "-r", str(path), "-s", lab.control_socket(node))
        assert r.returncode == 0, r.stderr
    mars_net = str(ip_interface(lab.plan.node("mars").network).network)

    def mars_gone():
        for node in ("moon", "earth", "sun"):
            st = request(lab.control_socket(node), {"cmd": "status"})["status"]
            peers = {p["peer"]: p for p in st["peers"]}
            if "example2/mars" in peers:
                return f"{node} still has mars"
            if "example2/venus" not in peers:
                return f"{node} has no tunnel to venus"
            n = lab.plan.node(node)
            routes = subprocess.run(["ip", "-n", n.agent_ns if n.mode == "netns" else n.ns, "-6",
                                     "route"], capture_output=True, text=True).stdout
            if mars_net in routes:
                return f"{node} still routes mars' network"
        return None
    poll(mars_gone)
    # mars' own SAs toward the others are gone too (the peers terminated them)
    def mars_sas_gone():
        st = request(lab.control_socket("mars"), {"cmd": "status"})["status"]
        up = [t for p in st["peers"] for t in p["tunnels"] if t["child"] == "INSTALLED"]
        return f"mars still has {len(up)} CHILD_SAs" if up else None
    poll(mars_sas_gone, timeout=90)
    # back to the full mesh for the tests after this one
    for node in ("moon", "earth", "sun"):
        assert aronet("load", "-r", os.path.join(lab.directory, "registry.json"), "-s",
                      lab.control_socket(node)).returncode == 0
    report = wait_converged(labrun.node_views(lab), 180)
    assert report.ok, report.as_text()


def test_kill_9_then_restart_recovers_the_mesh(lab):
    labrun.stop_agents(lab, ["moon"], sig=signal.SIGKILL)
    # the children die with the agent (parent-death signal), so charon removes its SAs
    def children_gone():
        from aronet.adapters.proc import tagged_processes
        left = tagged_processes(f"ARONET_INSTANCE={lab.runtime_dir('moon')}")
        return f"children still running: {left}" if left else None
    poll(children_gone, timeout=30)
    labrun.restart_agent(lab, "moon")
    report = wait_converged(labrun.node_views(lab), 180)
    assert report.ok, report.as_text()


def test_sigterm_leaves_nothing_behind(lab):
    node = lab.plan.node("earth")
    labrun.stop_agents(lab, ["earth"])
    assert xfrm_states(node.ns) == [] and xfrm_policies(node.ns) == []
    links = json.loads(subprocess.run(["ip", "-n", node.ns, "-j", "link"], capture_output=True,
                                      text=True).stdout)
    assert [link["ifname"] for link in links if link["ifname"].startswith(("ar", "aronet"))] == []
    assert node.agent_ns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                               text=True).stdout
    tables = subprocess.run(["nsenter", f"--net=/run/netns/{node.ns}", "nft", "list", "tables"],
                            capture_output=True, text=True).stdout
    assert "aronet" not in tables
    from aronet.adapters.proc import tagged_processes
    assert tagged_processes(f"ARONET_INSTANCE={lab.runtime_dir('earth')}") == []
    assert not os.path.exists(lab.runtime_dir("earth"))
