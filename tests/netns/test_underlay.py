"""lab/underlay.py on the host kernel: the seed example's underlay built for real
under a lab name of its own, pinged across, faults injected and healed, and removed
without a trace. Checks poll with a deadline instead of sleeping.

Every lab made here is destroyed by its fixture, whether the test passed or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from aronet.errors import ApplyError
from lab import underlay
from lab.topology import load_topology, parse_topology, plan_lab

pytestmark = pytest.mark.root

SEED = Path(__file__).resolve().parents[2] / "lab" / "examples" / "seed.yaml"
NAT_T = 12025


def lab_name() -> str:
    return f"t{secrets.token_hex(4)}"  # no "-": the lab's namespaces are "<lab>-..."


def wait_for(check: Callable[[], str | None], timeout: float = 5.0, step: float = 0.05) -> None:
    """Poll check() until it returns None; fail with its last message at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        message = check()
        if message is None:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s: {message}")
        time.sleep(step)


def ping(ns: str, address: str, wait: float = 0.5) -> bool:
    """One echo request; a dropped one costs `wait` seconds."""
    r = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", f"-W{wait}", "-q", address],
                       capture_output=True, text=True)
    return r.returncode == 0


def reaches(ns: str, address: str) -> Callable[[], str | None]:
    return lambda: None if ping(ns, address) else f"{ns} cannot ping {address}"


def udp_socket(ns: str, family: int = socket.AF_INET) -> socket.socket:
    """A UDP socket that lives in the namespace ns (it stays there once made)."""
    sock = pr_netns.create_socket(ns, family, socket.SOCK_DGRAM, flags=0)
    sock.settimeout(0.05)
    return sock


def drain(sock: socket.socket, want: Callable[[list], bool], timeout: float = 3.0) -> list:
    """Everything the socket receives, until want(received) or the deadline."""
    got: list = []
    deadline = time.monotonic() + timeout
    while not want(got) and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            got.append(sock.recvfrom(2048))
    return got


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def plan():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    p = plan_lab(load_topology(SEED, name=lab_name()))
    try:
        underlay.build(p)
        yield p
    finally:
        underlay.destroy(p)
    assert underlay.leftovers(p) == []


@pytest.fixture
def healed(plan):
    """The test injects faults; they are healed afterwards, whatever happens."""
    yield plan
    underlay.heal(plan)
    underlay.set_loss(plan, "wan", 0)
    underlay.set_link(plan, "moon", "wan", True)
    underlay.set_link(plan, "sun", "gw", True)


def v4(plan, node: str) -> str:
    return str(plan.node(node).interfaces[0].ipv4.ip)


def v6(plan, node: str) -> str:
    return str(plan.node(node).interfaces[0].ipv6.ip)


# ---------------------------------------------------------------- the underlay


def test_public_nodes_reach_each_other(plan, host_untouched):
    public = ["moon", "earth", "mars"]
    for a in public:
        for b in public:
            if a != b:
                wait_for(reaches(plan.node(a).ns, v4(plan, b)))
                wait_for(reaches(plan.node(a).ns, v6(plan, b)))


def test_the_nat_router_forwards_and_masquerades(plan):
    sun, gw = plan.node("sun"), plan.router("gw")
    wait_for(reaches(sun.ns, v4(plan, "moon")))
    wait_for(reaches(sun.ns, v6(plan, "moon")))
    for family, address, outside in ((socket.AF_INET, v4(plan, "moon"), gw.outside.ipv4),
                                     (socket.AF_INET6, v6(plan, "moon"), gw.outside.ipv6)):
        with udp_socket(plan.node("moon").ns, family) as listener, \
                udp_socket(sun.ns, family) as sender:
            listener.bind((address, NAT_T))
            sender.sendto(b"\0\0\0\0hello", (address, NAT_T))
            got = drain(listener, lambda g: bool(g))
            assert [data for data, _ in got] == [b"\0\0\0\0hello"]
            assert got[0][1][0] == str(outside.ip)  # moon sees the router, never sun
            assert str(outside.ip) != str(sun.interfaces[0].ipv4.ip)


def test_nothing_outside_reaches_the_node_behind_nat(plan):
    """moon has no route to sun's inside subnet; even a host route toward the router
    is refused by the router's "no unsolicited inbound" rule."""
    moon, sun, gw = plan.node("moon"), plan.node("sun"), plan.router("gw")
    inside = str(sun.interfaces[0].ipv4.ip)
    with IPRoute(netns=moon.ns, flags=0) as ipr:
        ipr.route("add", dst=f"{inside}/32", gateway=str(gw.outside.ipv4.ip))
        try:
            assert not ping(moon.ns, inside)
        finally:
            ipr.route("del", dst=f"{inside}/32", gateway=str(gw.outside.ipv4.ip))


def test_router_sysctls_and_nft(plan):
    gw = plan.router("gw")
    r = subprocess.run(["ip", "netns", "exec", gw.ns, "sysctl", "-n", "net.ipv4.ip_forward",
                        "net.ipv6.conf.all.forwarding"], capture_output=True, text=True)
    assert r.stdout.split() == ["1", "1"]
    r = subprocess.run(["ip", "netns", "exec", gw.ns, "nft", "-j", "list", "table", "inet",
                        "aronet_lab"], capture_output=True, text=True, check=True)
    comments = {o["rule"].get("comment") for o in json.loads(r.stdout)["nftables"] if "rule" in o}
    assert comments == {"masquerade", "no unsolicited inbound"}


# ---------------------------------------------------------------- faults


def test_partition_blocks_and_heal_restores(healed):
    plan = healed
    moon, earth = plan.node("moon"), plan.node("earth")
    wait_for(reaches(moon.ns, v4(plan, "earth")))
    underlay.partition(plan, "moon", "earth")
    underlay.partition(plan, "moon", "earth")  # idempotent
    assert not ping(moon.ns, v4(plan, "earth"))
    assert not ping(earth.ns, v6(plan, "moon"))
    assert ping(moon.ns, v4(plan, "mars"))  # others are untouched
    underlay.heal(plan)
    wait_for(reaches(moon.ns, v4(plan, "earth")))
    wait_for(reaches(earth.ns, v6(plan, "moon")))


def test_partition_of_a_node_behind_nat(healed):
    plan = healed
    sun = plan.node("sun")
    wait_for(reaches(sun.ns, v4(plan, "mars")))
    underlay.partition(plan, "sun", "mars")
    assert not ping(sun.ns, v4(plan, "mars"))
    assert ping(sun.ns, v4(plan, "moon"))
    underlay.heal(plan)
    wait_for(reaches(sun.ns, v4(plan, "mars")))


def test_drop_esp_drops_only_esp_in_udp(healed):
    """ESP-in-UDP has a non-zero first word (the SPI); IKE on the NAT-T port starts
    with the 4 zero bytes of the non-ESP marker. After drop_esp only IKE passes."""
    plan = healed
    mars = v4(plan, "mars")
    with udp_socket(plan.node("mars").ns) as listener, udp_socket(plan.node("moon").ns) as sender:
        listener.bind((mars, NAT_T))

        def exchange(tag: bytes) -> list[bytes]:
            sender.sendto(b"\x01\x02\x03\x04esp-" + tag, (mars, NAT_T))
            sender.sendto(b"\0\0\0\0ike-" + tag, (mars, NAT_T))  # sent last: arrives last
            got = drain(listener, lambda g: any(d.startswith(b"\0\0\0\0") for d, _ in g))
            return sorted(d for d, _ in got)

        assert exchange(b"before") == [b"\0\0\0\0ike-before", b"\x01\x02\x03\x04esp-before"]
        underlay.drop_esp(plan, "moon", "mars")
        underlay.drop_esp(plan, "moon", "mars")  # idempotent
        assert exchange(b"during") == [b"\0\0\0\0ike-during"]
        # the other direction, from mars's NAT-T port, is dropped too
        with udp_socket(plan.node("moon").ns) as moon_listener:
            moon_listener.bind((v4(plan, "moon"), 0))
            target = moon_listener.getsockname()
            listener.sendto(b"\x05\x06\x07\x08esp", target)
            listener.sendto(b"\0\0\0\0ike", target)
            got = drain(moon_listener, lambda g: any(d.startswith(b"\0\0\0\0") for d, _ in g))
            assert [d for d, _ in got] == [b"\0\0\0\0ike"]
        # a one-byte NAT-T keepalive is too short to be taken for ESP
        sender.sendto(b"\xff", (mars, NAT_T))
        assert [d for d, _ in drain(listener, bool)] == [b"\xff"]
        underlay.heal(plan)
        assert exchange(b"after") == [b"\0\0\0\0ike-after", b"\x01\x02\x03\x04esp-after"]


def test_set_link_down_and_up(healed):
    plan = healed
    moon, sun = plan.node("moon"), plan.node("sun")
    underlay.set_link(plan, "moon", "wan", False)
    assert not ping(moon.ns, v4(plan, "earth"))
    underlay.set_link(plan, "moon", "wan", True)
    wait_for(reaches(moon.ns, v4(plan, "earth")))
    underlay.set_link(plan, "sun", "gw", False)  # the NAT inside link
    assert not ping(sun.ns, v4(plan, "earth"))
    underlay.set_link(plan, "gw", "sun", True)
    wait_for(reaches(sun.ns, v4(plan, "earth")))
    with pytest.raises(ApplyError, match="no link joins 'moon' and 'mars'"):
        underlay.set_link(plan, "moon", "mars", False)


def test_set_loss(healed):
    plan = healed
    moon = plan.node("moon")
    underlay.set_loss(plan, "wan", 100)
    underlay.set_loss(plan, "wan", 100)  # idempotent: one rule
    r = subprocess.run(["ip", "netns", "exec", plan.switch_ns, "nft", "-j", "list", "chain",
                        "bridge", "aronet_lab", "loss"], capture_output=True, text=True, check=True)
    assert len([o for o in json.loads(r.stdout)["nftables"] if "rule" in o]) == 1
    assert not ping(moon.ns, v4(plan, "earth"))
    underlay.set_loss(plan, "wan", 0)
    wait_for(reaches(moon.ns, v4(plan, "earth")))
    with pytest.raises(ApplyError, match="not a percentage"):
        underlay.set_loss(plan, "wan", 101)


# ---------------------------------------------------------------- the other examples


@pytest.fixture
def example():
    """build(name) -> the plan of lab/examples/<name>.yaml, built under a fresh name."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    made = []

    def build(name: str):
        p = plan_lab(load_topology(SEED.with_name(f"{name}.yaml"), name=lab_name()))
        made.append(p)
        underlay.build(p)
        return p

    yield build
    for p in made:
        underlay.destroy(p)
        assert underlay.leftovers(p) == []


def test_ring_blocks_all_but_neighbours(example):
    plan = example("ring")
    n1 = plan.node("n1").ns
    wait_for(reaches(n1, v4(plan, "n2")))
    wait_for(reaches(n1, v4(plan, "n5")))
    assert not ping(n1, v4(plan, "n3"))
    assert not ping(n1, v4(plan, "n4"))


def test_dualstack_link_and_nat66(example):
    plan = example("dualstack")
    a1, c2 = plan.node("a1"), plan.node("c2")
    b1_on_ab = next(i for i in plan.node("b1").interfaces if i.segment == "ab")
    wait_for(reaches(a1.ns, str(b1_on_ab.ipv4.ip)), timeout=10)  # the link loses 2 %
    wait_for(reaches(a1.ns, str(b1_on_ab.ipv6.ip)), timeout=10)
    wait_for(reaches(c2.ns, v6(plan, "b2")))
    wait_for(reaches(c2.ns, v4(plan, "b2")))


# ---------------------------------------------------------------- build and destroy


def test_build_refuses_an_existing_lab_and_leaves_it_alone(plan):
    with pytest.raises(ApplyError, match="already exists"):
        underlay.build(plan)
    assert set(plan.namespaces) <= set(pr_netns.listnetns())
    wait_for(reaches(plan.node("moon").ns, v4(plan, "mars")))


def test_destroy_leaves_nothing():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    p = plan_lab(load_topology(SEED, name=lab_name()))
    try:
        underlay.build(p)
        assert len(underlay.leftovers(p)) == len(p.namespaces)
    finally:
        underlay.destroy(p)
    assert underlay.leftovers(p) == []
    assert not [line for line in netns_list().splitlines() if line.startswith(f"{p.lab}-")]
    underlay.destroy(p)  # again: nothing to do, no error


def test_a_failed_build_leaves_nothing():
    """netem is missing on the host kernel (delay and rate need the VM): the build
    fails with a message that says so, and removes what it made."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    text = ("name: x\nnodes: {a: {organization: o}, b: {organization: o}}\n"
            "links: [{between: [a, b], delay: 5, rate: 0bit}]\n")
    p = plan_lab(parse_topology(text, "t.yaml", name=lab_name()))
    try:
        underlay.build(p)
    except ApplyError as e:
        assert "netem" in str(e)
        assert underlay.leftovers(p) == []  # build cleaned up before raising
    else:  # a kernel with netem took even that rate
        out = subprocess.run(["ip", "netns", "exec", p.switch_ns, "tc", "qdisc", "show"],
                             capture_output=True, text=True).stdout
        assert "netem" in out
    finally:
        underlay.destroy(p)
    assert underlay.leftovers(p) == []
