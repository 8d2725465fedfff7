"""Metrics and events on a real mesh, in the microVM (README, Observability): a
triangle a, b, c on one LAN (netns mode, babeld, fast babel timers, DPD every 2 s),
node a with a metrics listener on its underlay address.

- a real HTTP GET of /metrics on a: every connection up, the tunnel byte counters
  rising while a ping runs through the tunnel;
- drop-esp a b: babel's neighbour goes (the CHILD_SA stays: IKE and DPD pass) and the
  event stream shows the neighbour loss before the route change; partition a b:
  aronet_peer_up of a's connection to b drops to 0 once DPD gives up;
- the listener answers from the underlay, and not from inside the overlay: a peer
  that routes the listener's address into its tunnel is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from ipaddress import ip_interface

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aronet.core.names import netns_path
from lab import run as labrun
from lab import telemetry, underlay
from lab.checks import wait_converged

NAME = "metrics"
PORT = 9474
TOPOLOGY = f"""\
name: {NAME}
options:
  mode: netns
  babel: {{hello_interval: 0.2, update_interval: 1}}
  ike: {{dpd_delay: 2}}
nodes:
  a: {{organization: mt}}
  b: {{organization: mt}}
  c: {{organization: mt}}
lans:
  wan: {{members: [a, b, c], ipv6: false}}
"""
GET = textwrap.dedent("""
    import http.client, sys
    host, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
    c = http.client.HTTPConnection(host, port, timeout=10,
                                   source_address=(source, 0) if source else None)
    try:
        c.request("GET", "/metrics"); print(c.getresponse().status)
    except (OSError, http.client.HTTPException) as e:
        print("failed", type(e).__name__)
""")


def underlay_address(lab, node: str) -> str:
    return str(lab.plan.node(node).interfaces[0].ipv4.ip)


@pytest.fixture(scope="module")
def triangle(tmp_path_factory, keep_lab_logs):
    path = tmp_path_factory.mktemp("metrics") / "triangle.yaml"
    path.write_text(TOPOLOGY)
    lab = labrun.open_lab(str(path))
    report = None
    try:
        report = labrun.up(lab, 240, say=lambda *_: None)
        assert report.ok, report.as_text()
        telemetry.enable_metrics(lab, "a", f"{underlay_address(lab, 'a')}:{PORT}")
        report = wait_converged(labrun.node_views(lab), 180)
        assert report.ok, report.as_text()
        yield lab
    finally:
        if report is None or not report.ok:
            keep_lab_logs(lab, "test_metrics_up")
        underlay.heal(lab.plan)
        assert labrun.down(lab, say=lambda *_: None) == []


def series(lab, node: str = "a") -> dict[tuple[str, tuple], float]:
    text = telemetry.scrape(lab, node)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def conn_to(lab, src: str, dst: str) -> str:
    """The name of src's (only) tunnel to dst."""
    st = next(v for k, v in labrun.statuses(lab).items() if k.endswith(f"/{src}"))
    (tunnel,) = next(p for p in st.peers if p.peer.endswith(f"/{dst}")).tunnels
    return tunnel.name


def poll(check, timeout: float = 60.0):
    """check() -> None when the state is right, else what still differs."""
    deadline = time.monotonic() + timeout
    while (problem := check()) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {problem}")
        time.sleep(0.5)


def test_a_real_get_of_metrics_shows_the_mesh(triangle):
    got = series(triangle)
    ups = {dict(labels)["conn"]: v for (name, labels), v in got.items() if name == "aronet_peer_up"}
    assert len(ups) == 2 and set(ups.values()) == {1.0}, ups
    assert got[("aronet_peers", (("state", "up"),))] == 2
    assert got[("aronet_daemon_up", (("daemon", "charon"),))] == 1
    assert got[("aronet_daemon_up", (("daemon", "babeld"),))] == 1
    build = next(dict(labels) for (name, labels) in got if name == "aronet_build_info")
    assert build["strongswan_version"] and build["routing_daemon"] == "babeld"


def test_the_tunnel_byte_counters_rise_while_a_ping_runs(triangle):
    lab = triangle

    def sent() -> float:  # over every tunnel of a's: babel may route a -> b through c
        return sum(v for (name, _labels), v in series(lab).items()
                   if name == "aronet_tunnel_tx_bytes_total")
    before = sent()
    b = lab.plan.node("b")
    ping = subprocess.Popen(["nsenter", f"--net={netns_path(lab.plan.node('a').agent_ns)}", "--", "ping",
                             "-n", "-q", "-c", "200", "-i", "0.05", "-s", "1000", b.overlay_address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: None if sent() >= before + 50 * 1000 else
             f"a's tunnels sent {sent() - before:.0f} bytes so far", timeout=60)
    finally:
        ping.kill()
        ping.wait()


def test_drop_esp_shows_the_neighbour_loss_then_the_route_change(triangle):
    lab = triangle
    ab, b_net = conn_to(lab, "a", "b"), str(ip_interface(lab.plan.node("b").network).network)
    reach = ("aronet_babel_neighbor_reachable", (("ifname", ab),))
    assert series(lab)[reach] == 1

    def seen(events):
        kinds = [(e["event"], e.get("ifname"), e.get("prefix")) for n, e in events if n == "a"]
        lost = [i for i, k in enumerate(kinds) if k[:2] == ("neighbor-down", ab)]
        moved = [i for i, k in enumerate(kinds) if k[0] in ("route-changed", "route-removed")
                 and k[2] == b_net]
        return lost and moved

    with telemetry.Recorder(lab, ["a"], poll=0.25) as rec:
        underlay.drop_esp(lab.plan, "a", "b")
        try:
            assert rec.wait_for(seen, 60), json.dumps([e for _, e in rec.events], indent=1)
            kinds = [(e["event"], e.get("ifname"), e.get("prefix")) for _, e in rec.events]
            first_lost = next(i for i, k in enumerate(kinds) if k[:2] == ("neighbor-down", ab))
            first_moved = next(i for i, k in enumerate(kinds)
                               if k[0] in ("route-changed", "route-removed") and k[2] == b_net)
            assert first_lost < first_moved, kinds
            got = series(lab)
            assert got[reach] == 0
            assert got[("aronet_peer_up", (("conn", ab),))] == 1  # IKE and DPD still pass
        finally:
            underlay.heal(lab.plan)
    report = wait_converged(labrun.node_views(lab), 180)
    assert report.ok, report.as_text()


def test_peer_up_drops_when_the_tunnel_is_cut(triangle):
    lab = triangle
    ab = conn_to(lab, "a", "b")
    key = ("aronet_peer_up", (("conn", ab),))
    underlay.partition(lab.plan, "a", "b")
    try:
        poll(lambda: None if series(lab).get(key) == 0 else f"aronet_peer_up{{conn={ab}}} is still 1",
             timeout=90)
    finally:
        underlay.heal(lab.plan)
    poll(lambda: None if series(lab).get(key) == 1 else "not up again", timeout=180)
    report = wait_converged(labrun.node_views(lab), 180)
    assert report.ok, report.as_text()


def _get(ns: str, host: str, source: str = "") -> str:
    r = subprocess.run(["nsenter", f"--net={netns_path(ns)}", "--", sys.executable, "-c", GET, host,
                        str(PORT), source], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_the_listener_answers_the_underlay_but_not_the_overlay(triangle):
    lab = triangle
    a, b = lab.plan.node("a"), lab.plan.node("b")
    a_addr = underlay_address(lab, "a")
    assert _get(lab.plan.node("c").ns, a_addr) == "200"  # a host on the underlay
    # inside the overlay: nothing listens on a's overlay address
    assert _get(b.agent_ns, a.overlay_address).startswith("failed")
    # a peer that routes a's listener address into its tunnel, from its overlay address
    ba = conn_to(lab, "b", "a")
    b_src = next(str(ip_interface(x).ip) for x in b.extra_ip if ip_interface(x).version == 4)
    subprocess.run(["nsenter", f"--net={netns_path(b.agent_ns)}", "--", "ip", "route", "add",
                    f"{a_addr}/32", "dev", ba], check=True)
    try:
        assert _get(b.agent_ns, a_addr, b_src) != "200"
    finally:
        subprocess.run(["nsenter", f"--net={netns_path(b.agent_ns)}", "--", "ip", "route", "del",
                        f"{a_addr}/32", "dev", ba], check=False)
    # In netns mode that packet dies in a's router namespace, which has no route to
    # the host side's underlay address; the listener's own refusal of overlay sources
    # is proven on the host kernel (tests/netns/test_metrics_listener.py).


def test_aronet_events_prints_ndjson(triangle):
    lab = triangle
    r = subprocess.run([sys.executable, "-m", "aronet.cli", "events", "-s", lab.control_socket("a"),
                        "--subscribed", "--count", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert json.loads(line)["event"] == "subscribed"


def test_aronet_lab_metrics_and_events(triangle):
    r = subprocess.run([sys.executable, "-m", "lab.cli", "metrics", "a", "--name", NAME],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "aronet_peer_up" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "lab.cli", "events", "--name", NAME, "--timeout", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert all(json.loads(line)["lab_node"] in ("a", "b", "c") for line in r.stdout.splitlines())
