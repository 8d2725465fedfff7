"""The metrics listener (aronet/adapters/exporter.py) in real namespaces: it serves
/metrics in the namespace it was started in and nowhere else, on the one address it
binds, and closes unanswered a connection from a source it refuses (the agent
refuses the mesh's overlay). Two namespaces joined by a veth pair; the host's own
namespace is not touched."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import IPRoute

from aronet.core.names import netns_path

pytestmark = pytest.mark.root

SERVER = textwrap.dedent("""
    import sys
    from prometheus_client import CollectorRegistry, Gauge
    from aronet.adapters.exporter import Listener
    r = CollectorRegistry()
    Gauge("aronet_peers_configured", "test", registry=r).set(3)
    refused = {"192.0.2.3"}
    outside = Listener("192.0.2.1", 9474, r, refuse=refused.__contains__)
    loopback = Listener("127.0.0.1", 9475, r)
    outside.start(); loopback.start()
    print("ready", flush=True)
    sys.stdin.read()
    outside.stop(); loopback.stop()
""")

CLIENT = textwrap.dedent("""
    import http.client, sys
    host, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
    c = http.client.HTTPConnection(host, port, timeout=10,
                                   source_address=(source, 0) if source else None)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        print(r.status); sys.stdout.write(r.read().decode())
    except (ConnectionError, http.client.HTTPException) as e:
        print("failed"); print(type(e).__name__)
""")


def _in(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net={netns_path(ns)}", "--", *argv]


@pytest.fixture
def pair(make_netns):
    """(agent namespace with 192.0.2.1, client namespace with 192.0.2.2 and .3)."""
    a, b = make_netns("mla"), make_netns("mlb")
    with IPRoute(netns=a, flags=0) as ipa:
        ipa.link("add", ifname="mv0", kind="veth", peer={"ifname": "mv1", "net_ns_fd": netns_path(b)})
        idx = ipa.link_lookup(ifname="mv0")[0]
        ipa.addr("add", index=idx, address="192.0.2.1", prefixlen=24)
        ipa.link("set", index=idx, state="up")
    with IPRoute(netns=b, flags=0) as ipb:
        idx = ipb.link_lookup(ifname="mv1")[0]
        for addr in ("192.0.2.2", "192.0.2.3"):
            ipb.addr("add", index=idx, address=addr, prefixlen=24)
        ipb.link("set", index=idx, state="up")
    return a, b


@pytest.fixture
def server(pair):
    a, _b = pair
    proc = subprocess.Popen(_in(a, sys.executable, "-c", SERVER), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        yield pair
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(ns: str, host: str, port: int, source: str = "") -> list[str]:
    r = subprocess.run(_in(ns, sys.executable, "-c", CLIENT, host, str(port), source),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_a_scrape_from_outside_the_overlay_is_answered(server):
    _a, b = server
    lines = get(b, "192.0.2.1", 9474, "192.0.2.2")
    assert lines[0] == "200"
    fams = {f.name: f for f in text_string_to_metric_families("\n".join(lines[1:]) + "\n")}
    assert fams["aronet_peers_configured"].samples[0].value == 3


def test_a_refused_source_gets_no_scrape(server):
    _a, b = server
    # accepted by the kernel, then closed by the listener before it reads the request
    assert get(b, "192.0.2.1", 9474, "192.0.2.3") in (["failed", "RemoteDisconnected"],
                                                    ["failed", "ConnectionResetError"])


def test_the_listener_is_in_its_own_namespace_only(server):
    a, b = server
    assert get(a, "127.0.0.1", 9475)[0] == "200"  # the agent's own loopback
    refused = ["failed", "ConnectionRefusedError"]
    assert get(b, "127.0.0.1", 9475) == refused  # another namespace's loopback: nothing there
    assert get(b, "192.0.2.1", 9475, "192.0.2.2") == refused  # bound to 127.0.0.1 only
