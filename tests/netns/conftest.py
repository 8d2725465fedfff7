"""Fixtures for the netns tier: root, real namespaces, the host kernel.

Nothing here changes the host's own namespace. Each test's "agent" runs in a fresh
namespace of its own (Netlink(settings, base_ns=...)), and every name a test uses is
unique to it: namespaces "aronet-test-<tag>-<hex>", and Settings.ifname "art<hex>",
which also names the netns-mode router namespace. Every namespace a test makes, or
the adapter makes for it, is removed afterwards, whether the test passed or not.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from aronet.adapters.netlink import Netlink
from aronet.model import Settings

# tests/unit/builders.py makes valid config and registry documents.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

TEST_PREFIX = "aronet-test-"


def remove_netns(name: str) -> None:
    if name in pr_netns.listnetns():
        with contextlib.suppress(OSError):
            pr_netns.remove(name)


HOST_SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
                "net/ipv6/conf/all/seg6_enabled", "net/netfilter/nf_hooks_lwtunnel")


def _host_snapshot() -> tuple[set[str], dict[str, str]]:
    with IPRoute() as ipr:
        links = {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    values = {}
    for name in HOST_SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = Path("/proc/sys", name).read_text()
    return links, values


@pytest.fixture(scope="module")
def host_untouched():
    """Checks that a module's tests left the host namespace as they found it: no new
    device with a test's names, and the sysctls aronet sets unchanged."""
    links, values = _host_snapshot()
    yield
    links_after, values_after = _host_snapshot()
    new = sorted(n for n in links_after - links if n.startswith("art"))
    assert not new, f"tests left devices in the host namespace: {new}"
    assert values_after == values, "tests changed the host's sysctls"


@pytest.fixture
def make_netns():
    """Factory: make_netns(tag) -> the name of a fresh namespace with lo up."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    created: list[str] = []

    def make(tag: str = "ns") -> str:
        name = f"{TEST_PREFIX}{tag}-{secrets.token_hex(4)}"
        created.append(name)  # before creating: a half-made one is removed too
        pr_netns.create(name)
        with IPRoute(netns=name, flags=0) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    yield make
    for name in reversed(created):
        remove_netns(name)


@pytest.fixture
def base_ns(make_netns) -> str:
    """The namespace the test's agent runs in (its "host")."""
    return make_netns("agent")


@pytest.fixture
def settings() -> Settings:
    """netns-mode Settings whose names are unique to this test. ifname is at most 10
    characters, as the schema requires (its veth peer adds "-host")."""
    tag = secrets.token_hex(3)
    s = Settings(mode="netns", ifname=f"art{tag}", tunnel_prefix="art-")
    yield s
    remove_netns(s.ifname)  # the router namespace, if the adapter made it


@pytest.fixture
def netlink(settings, base_ns) -> Netlink:
    return Netlink(settings, base_ns=base_ns)


@pytest.fixture(scope="session")
def host_seg6() -> bool:
    """Whether this host kernel routes SRv6 (seg6 encap, seg6local End and End.DX4):
    most machines of this project's kind do, some are built without
    CONFIG_IPV6_SEG6_LWTUNNEL. The agent's own preflight probe answers."""
    from aronet.adapters.netlink import probes

    return not any(p.startswith("SRv6") for p in probes.preflight("netns"))


@pytest.fixture
def seg6(host_seg6):
    """For tests of SRv6 routes on the host kernel: skipped where it has none (the
    VM tier proves SRv6 forwarding on a stock Debian kernel either way)."""
    if not host_seg6:
        pytest.skip("this host kernel has no SRv6 (CONFIG_IPV6_SEG6_LWTUNNEL); the VM tier covers it")
