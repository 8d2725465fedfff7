"""The kernel features aronet's data plane stands on, proven in the VM.

Configuration goes through pyroute2, as aronet itself does; `ip` is used to
observe (an independent reader of the kernel state) and for XFRM states and
policies, for which pyroute2 has no API.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import IFF_MULTICAST

VRF_TABLE = 128
IF_ID = 0x2A
AEAD = "rfc4106(gcm(aes))"
AEAD_KEY = "0x" + "0123456789abcdef" * 2 + "01020304"  # 256-bit key + 32-bit salt
AEAD_ICV_BITS = "128"


def ip(ns: str, *args: str) -> str:
    proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"ip {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


def ip_json(ns: str, *args: str):
    return json.loads(ip(ns, "-j", "-d", *args))


def as_int(value) -> int:
    # iproute2 prints some ids as hex strings ("0x2a")
    return value if isinstance(value, int) else int(value, 0)


def xfrm_states(ns: str) -> list[dict]:
    """`ip -j xfrm state`, parsed.

    iproute2 6.1 accepts -j for xfrm but still prints text, so fall back to
    reading the text form: one block per state, starting with "src ... dst ...".
    """
    out = ip(ns, "-j", "xfrm", "state")
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        pass
    states = []
    for block in re.split(r"^(?=src )", out, flags=re.M):
        if not block.strip():
            continue
        state = {}
        for key, pattern in {
            "src": r"^src (\S+)",
            "dst": r"dst (\S+)",
            "proto": r"proto (\S+)",
            "spi": r"spi (0x[0-9a-f]+)",
            "mode": r"mode (\S+)",
            "aead": r"aead (\S+)",
            "if_id": r"if_id (0x[0-9a-f]+|\d+)",
        }.items():
            m = re.search(pattern, block, flags=re.M)
            if m:
                state[key] = m.group(1)
        states.append(state)
    return states


def add_vrf(ipr: IPRoute, name: str = "vrf-t") -> int:
    ipr.link("add", ifname=name, kind="vrf", vrf_table=VRF_TABLE)
    (index,) = ipr.link_lookup(ifname=name)
    ipr.link("set", index=index, state="up")
    return index


def add_xfrm(ipr: IPRoute, name: str, *, link: int = 0, mtu: int = 1400, master: int = 0) -> int:
    # XFRM interfaces are created without MULTICAST, and BIRD's babel ignores
    # such interfaces, so aronet always sets it.
    ipr.link("add", ifname=name, kind="xfrm", xfrm_if_id=IF_ID, xfrm_link=link)
    (index,) = ipr.link_lookup(ifname=name)
    ipr.link("set", index=index, flags=IFF_MULTICAST, mask=IFF_MULTICAST, mtu=mtu)
    if master:
        ipr.link("set", index=index, master=master)
    ipr.link("set", index=index, state="up")
    return index


def test_vrf_with_table(netns):
    ns = netns("vrf")
    with IPRoute(netns=ns) as ipr:
        vrf = add_vrf(ipr)
        # an enslaved device's routes must land in the VRF's table
        ipr.link("add", ifname="d0", kind="dummy")
        (d0,) = ipr.link_lookup(ifname="d0")
        ipr.link("set", index=d0, master=vrf, state="up")
        ipr.addr("add", index=d0, address="198.51.100.1", prefixlen=24)

    (link,) = ip_json(ns, "link", "show", "dev", "vrf-t")
    assert link["linkinfo"]["info_kind"] == "vrf"
    assert link["linkinfo"]["info_data"]["table"] == VRF_TABLE
    assert "UP" in link["flags"]
    routes = ip_json(ns, "route", "show", "table", str(VRF_TABLE))
    assert any(r.get("dst") == "198.51.100.0/24" and r.get("dev") == "d0" for r in routes), routes
    main = ip_json(ns, "route", "show", "table", "main")
    assert not any(r.get("dev") == "d0" for r in main), main


def test_xfrm_interface_static_if_id_in_vrf(netns):
    ns = netns("xfrmi")
    with IPRoute(netns=ns) as ipr:
        vrf = add_vrf(ipr)
        add_xfrm(ipr, "xfrm-t", master=vrf)
        # if_id is the interface's identity: a second one with it is refused
        with pytest.raises(NetlinkError):
            ipr.link("add", ifname="xfrm-dup", kind="xfrm", xfrm_if_id=IF_ID)

    (link,) = ip_json(ns, "link", "show", "dev", "xfrm-t")
    assert link["linkinfo"]["info_kind"] == "xfrm"
    assert as_int(link["linkinfo"]["info_data"]["if_id"]) == IF_ID
    assert "MULTICAST" in link["flags"]
    assert "UP" in link["flags"]
    assert link["mtu"] == 1400
    assert link["master"] == "vrf-t"


def test_esp_aes_gcm_state(netns):
    ns = netns("esp")
    sa = ["src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x1000"]
    # Adding the state needs esp4 and the kernel's GCM implementation.
    ip(ns, "xfrm", "state", "add", *sa, "reqid", "7", "mode", "tunnel",
       "aead", AEAD, AEAD_KEY, AEAD_ICV_BITS, "if_id", str(IF_ID))  # fmt: skip

    (state,) = xfrm_states(ns)
    assert state["proto"] == "esp"
    assert as_int(state["spi"]) == 0x1000
    assert state["aead"] == AEAD
    assert as_int(state["if_id"]) == IF_ID

    ip(ns, "xfrm", "state", "delete", *sa)
    assert xfrm_states(ns) == []


def test_esp_round_trip_through_xfrm_interfaces(netns):
    """Two namespaces, one veth underlay, ESP tunnel between XFRM interfaces."""
    a, b = netns("espa"), netns("espb")
    ul = {a: "192.0.2.1", b: "192.0.2.2"}
    inner = {a: "10.0.0.1", b: "10.0.0.2"}
    spi = {a: "0x100", b: "0x200"}  # SPI of the SA *towards* that side

    with IPRoute(netns=a) as ipr:
        ipr.link("add", ifname="ul-a", kind="veth", peer="ul-b")
        ipr.link("set", index=ipr.link_lookup(ifname="ul-b")[0], net_ns_fd=b)

    for ns, peer, dev in ((a, b, "ul-a"), (b, a, "ul-b")):
        with IPRoute(netns=ns) as ipr:
            (u,) = ipr.link_lookup(ifname=dev)
            ipr.addr("add", index=u, address=ul[ns], prefixlen=24)
            ipr.link("set", index=u, state="up")
            x = add_xfrm(ipr, "xfrm0", link=u)
            ipr.addr("add", index=x, address=inner[ns], prefixlen=32)
            ipr.route("add", dst=f"{inner[peer]}/32", oif=x)
        for src, dst in ((ns, peer), (peer, ns)):
            ip(ns, "xfrm", "state", "add", "src", ul[src], "dst", ul[dst], "proto", "esp",
               "spi", spi[dst], "reqid", "1", "mode", "tunnel",
               "aead", AEAD, AEAD_KEY, AEAD_ICV_BITS, "if_id", str(IF_ID))  # fmt: skip
        for direction, src, dst in (("out", ns, peer), ("in", peer, ns)):
            ip(ns, "xfrm", "policy", "add", "src", "0.0.0.0/0", "dst", "0.0.0.0/0",
               "dir", direction, "if_id", str(IF_ID),
               "tmpl", "src", ul[src], "dst", ul[dst], "proto", "esp", "reqid", "1",
               "mode", "tunnel")  # fmt: skip

    ping = subprocess.run(
        ["ip", "netns", "exec", a, "ping", "-c", "1", "-W", "5", inner[b]],
        capture_output=True,
        text=True,
    )
    assert ping.returncode == 0, f"no ESP round trip:\n{ping.stdout}{ping.stderr}"

    # The packet must have come out of b's XFRM interface, i.e. been decrypted
    # by an SA with the interface's if_id, not leaked around the tunnel.
    (link_b,) = ip_json(b, "-s", "link", "show", "dev", "xfrm0")
    assert link_b["stats64"]["rx"]["packets"] >= 1, link_b["stats64"]
    (link_a,) = ip_json(a, "-s", "link", "show", "dev", "xfrm0")
    assert link_a["stats64"]["rx"]["packets"] >= 1, link_a["stats64"]
