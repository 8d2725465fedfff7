"""Preflight: which kernel features a mode needs and this kernel lacks.

Each probe tries a feature for real, as the agent uses it, in a namespace the caller
throws away afterwards, and returns one message per missing feature (empty: there).
preflight(mode) runs the ones the mode needs in a temporary namespace of its own;
`aronet-lab doctor` (lab.doctor) runs each on its own, so the two agree.

  probe_seg6             seg6 encap, seg6local End and End.DX4 routes
  probe_veth             a veth pair, and an IPv4 route via an IPv6 next hop (netns mode)
  probe_link             a device of a given kind (vrf, xfrm, bridge)
  probe_esp              an ESP state with AES-GCM, IPv4 and IPv6 outer (as charon installs it)
  probe_lwtunnel_hooks   the LWTUNNEL_SYSCTL exists (it appears with nf_conntrack)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import ApplyError
from .. import sysctl
from . import iproute2
from .rtnl import cause, encap_request, failing_as, index

LWTUNNEL_SYSCTL = "net.netfilter.nf_hooks_lwtunnel"


def preflight(mode: str) -> list[str]:
    """One message per kernel feature `mode` needs and this kernel lacks (empty: all
    there). The probes run in a temporary namespace that is removed afterwards, so
    they leave nothing behind."""
    probe = f"aronet-probe-{secrets.token_hex(4)}"
    problems = []
    with failing_as("netlink", "preflight"):
        pr_netns.create(probe)
        try:
            with IPRoute(netns=probe, flags=0, ext_ack=True) as ipr:
                lo = index(ipr, "lo", probe)
                ipr.link("set", index=lo, state="up")
                problems += probe_seg6(ipr, lo, mode)
                if mode == "netns":
                    problems += probe_veth(ipr)
                if mode == "vrf":
                    problems += probe_link(
                        ipr, "VRF", dict(kind="vrf", vrf_table=4242),
                        "needed by mode vrf; use mode netns or load the vrf module")
                problems += probe_link(
                    ipr, "XFRM interfaces", dict(kind="xfrm", xfrm_if_id=42),
                    f"needed by mode {mode}; load the xfrm_interface module "
                    "(CONFIG_XFRM_INTERFACE)")
            problems += probe_esp(probe, mode)
            problems += probe_lwtunnel_hooks()
        finally:
            with contextlib.suppress(OSError):
                pr_netns.remove(probe)
    return problems


def probe_seg6(ipr: IPRoute, lo: int, mode: str) -> list[str]:
    """SRv6 routes on lo (index `lo`, up) of the probe namespace."""
    tries = [
        ("seg6 encap", dict(dst="192.0.2.0/24", oif=lo, encap=encap_request(
            ("seg6", "encap", "2001:db8::4")))),
        ("seg6local End", dict(dst="2001:db8::1/128", oif=lo,
                               encap=encap_request(("seg6local", "End")))),
        ("seg6local End.DX4", dict(dst="2001:db8::4/128", oif=lo, encap=encap_request(
            ("seg6local", "End.DX4", "0.0.0.0")))),
    ]
    failed = []
    for what, spec in tries:
        try:
            ipr.route("add", **spec)
        except NetlinkError as e:
            failed.append(f"{what}: {cause(e.code, e.args)}")
    if not failed:
        return []
    return [f"SRv6: not supported by this kernel ({'; '.join(failed)}); needed by mode "
            f"{mode}; needs CONFIG_IPV6_SEG6_LWTUNNEL"]


def probe_veth(ipr: IPRoute) -> list[str]:
    """A veth pair probe0/probe1 (left in the probe namespace, up), and an IPv4 route
    via an IPv6 next hop on it."""
    try:
        ipr.link("add", ifname="probe0", kind="veth", peer={"ifname": "probe1"})
        found = index(ipr, "probe0", "probe")
        ipr.link("set", index=found, state="up")
    except NetlinkError as e:
        return [f"veth: not supported by this kernel ({cause(e.code, e.args)}); needed "
                "by mode netns; load the veth module or use mode vrf"]
    try:
        ipr.route("add", dst="198.51.100.0/24", oif=found,
                  via={"family": socket.AF_INET6, "addr": "fe80::2"})
    except NetlinkError as e:
        return [f"IPv4 routes via IPv6 next hops: not supported by this kernel "
                f"({cause(e.code, e.args)}); needed by mode netns; needs Linux 5.2 or later"]
    return []


def probe_link(ipr: IPRoute, feature: str, spec: dict, hint: str) -> list[str]:
    """A device made from `spec` (kind=... and its data), deleted again."""
    try:
        ipr.link("add", ifname="probe-link", **spec)
    except NetlinkError as e:
        return [f"{feature}: not supported by this kernel ({cause(e.code, e.args)}); {hint}"]
    ipr.link("del", index=index(ipr, "probe-link", "probe"))
    return []


def probe_lwtunnel_hooks() -> list[str]:
    """net.netfilter.nf_hooks_lwtunnel only exists once nf_conntrack is loaded; ask
    for the module (as nftables would on first use) before declaring it missing."""
    name = LWTUNNEL_SYSCTL
    if not os.path.exists(sysctl.path(name)):
        subprocess.run(["modprobe", "-q", "nf_conntrack"], capture_output=True, check=False)
    if os.path.exists(sysctl.path(name)):
        return []
    return [f"{name}: missing (load the nf_conntrack module); needed so nftables sees "
            "packets that SRv6 decapsulates"]


def probe_esp(probe: str, mode: str) -> list[str]:
    """ESP with AES-GCM, as charon will install it, for both outer families, in the
    namespace named `probe`."""
    key = "0x" + "00" * 36  # 256-bit key + 32-bit salt
    failed = []
    for family, src, dst in (("IPv4", "192.0.2.1", "192.0.2.2"),
                             ("IPv6", "2001:db8::1", "2001:db8::2")):
        try:
            iproute2.run(probe, "xfrm", "state", "add", "src", src, "dst", dst, "proto", "esp",
                         "spi", "0x100", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", key,
                         "128", "if_id", "42")
        except ApplyError as e:
            failed.append(f"{family}: {e.cause}")
    if not failed:
        return []
    return [f"ESP: the kernel cannot install an ESP state with AES-GCM ({'; '.join(failed)}); "
            f"needed by mode {mode}; load xfrm_user, esp4, esp6 and the aes and gcm crypto "
            "modules"]
