"""The rtnetlink codec: pyroute2 sockets per namespace, link lookup, route and encap
encoding, and the one translation of NetlinkError (and OSError) into ApplyError.

Shared by the agent's netlink adapter and the lab's underlay (lab.underlay), so both
open namespaces, find devices and word kernel errors the same way:

- Sockets opens one socket per namespace on first use, never creates a missing
  namespace, and closes them all at the end (an open socket keeps a namespace alive).
- failing_as(system, obj) turns any library error into ApplyError(system, obj, cause);
  unless(*codes) lets the given errno codes pass as success; Refused is a failure the
  caller found itself.
- Route.encap <-> pyroute2 (encap_request, route_from_msg): segments travel in the SRH
  in reverse, so they are reversed both ways.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Iterator
from ipaddress import ip_address, ip_network

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from ...core import names
from ...core.state import Route
from ...errors import ApplyError
from .. import sysctl

log = logging.getLogger(__name__)

MAIN_TABLE = 254
IFA_F_NODAD = 0x02
IN6_ADDR_GEN_MODE_NONE = 1
LWTUNNEL_ENCAP_SEG6 = 5
LWTUNNEL_ENCAP_SEG6_LOCAL = 7
ROUTE_TYPES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
SEG6LOCAL_ACTIONS = {1: "End", 2: "End.X", 3: "End.T", 5: "End.DX6", 6: "End.DX4",
                     7: "End.DT6", 8: "End.DT4", 16: "End.DT46"}
# The one parameter each seg6local action takes: Route.encap carries it third.
SEG6LOCAL_PARAM = {"End.X": "nh6", "End.DX6": "nh6", "End.DX4": "nh4", "End.T": "table",
                   "End.DT6": "table", "End.DT4": "vrf_table", "End.DT46": "vrf_table"}
# "already gone" on remove
GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


# ---------------------------------------------------------------------- errors


class Refused(Exception):
    """A failure found by the caller itself; failing_as names the action."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause


@contextlib.contextmanager
def unless(*codes: int) -> Iterator[None]:
    """Let a netlink error with one of these errno codes pass as success."""
    try:
        yield
    except NetlinkError as e:
        if e.code not in codes:
            raise


@contextlib.contextmanager
def failing_as(system: str, obj: str) -> Iterator[None]:
    """Turn any library error into one ApplyError(system, obj, cause)."""
    try:
        yield
    except ApplyError:
        raise
    except Refused as e:
        raise ApplyError(system, obj, e.cause) from e
    except NetlinkError as e:
        raise ApplyError(system, obj, cause(e.code, e.args)) from e
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise ApplyError(system, obj, cause(e.errno, (e.errno, e.strerror)) + where) from e


def cause(code: int | None, args: tuple) -> str:
    """"ENAME: message" for an errno code and an exception's args (errno, message)."""
    name = sysctl.errno_name(code)
    message = args[1] if len(args) > 1 and args[1] else os.strerror(code or 0)
    return f"{name}: {message}"


# ---------------------------------------------------------------------- sockets


def exists(name: str) -> bool:
    """Whether the named namespace is there ("" is this process's own: always)."""
    return not name or name in pr_netns.listnetns()


class Sockets:
    """One rtnetlink socket per namespace, opened on first use and closed at the end
    (of one observe() or apply(), or one lab step). Called with a resource's ns: ""
    is base_ns, or this process's own namespace when base_ns is "" too."""

    def __init__(self, base_ns: str = ""):
        self.base_ns = base_ns
        self.open: dict[str, IPRoute] = {}

    def __call__(self, ns: str) -> IPRoute:
        real = ns or self.base_ns
        if real not in self.open:
            # flags=0: pyroute2's default (O_CREAT, also NetNS's) would silently
            # create a missing namespace; here a missing one is an error.
            # ext_ack: the kernel's own words in errors ("Nexthop device is not up").
            options = dict(ext_ack=True, strict_check=True)
            try:
                self.open[real] = (IPRoute(netns=real, flags=0, **options) if real
                                   else IPRoute(**options))
            except FileNotFoundError as e:
                raise Refused(f"ENOENT: network namespace {real} does not exist") from e
        return self.open[real]

    def maybe(self, ns: str) -> IPRoute | None:
        """The socket, or None when the namespace is gone (so is what was in it)."""
        real = ns or self.base_ns
        if real and real not in self.open and real not in pr_netns.listnetns():
            return None
        return self(ns)

    def forget(self, real: str) -> None:
        ipr = self.open.pop(real, None)
        if ipr is not None:
            ipr.close()  # an open socket would keep a removed namespace alive

    def __enter__(self) -> Sockets:
        return self

    def __exit__(self, *exc) -> None:
        for real in list(self.open):
            self.forget(real)


# ---------------------------------------------------------------------- links


class Links:
    """A namespace's links, by index and by name."""

    def __init__(self, ipr: IPRoute):
        self.by_index = {link["index"]: link for link in ipr.get_links()}
        self.by_name = {link.get_attr("IFLA_IFNAME"): link for link in self.by_index.values()}

    def all(self):
        return self.by_index.values()

    def named(self, name: str):
        return self.by_name.get(name)

    def name(self, index: int) -> str | None:
        link = self.by_index.get(index)
        return link.get_attr("IFLA_IFNAME") if link is not None else None


def kind(link) -> str | None:
    """The link's IFLA_INFO_KIND ("veth", "vrf", "xfrm", ...), None for a plain device."""
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def info(link, attr: str):
    """One attribute of the link's IFLA_INFO_DATA (None when absent)."""
    linkinfo = link.get_attr("IFLA_LINKINFO")
    data = linkinfo.get_attr("IFLA_INFO_DATA") if linkinfo is not None else None
    return data.get_attr(attr) if data is not None else None


def where(ns: str) -> str:
    return f"netns {ns}" if ns else "the agent's namespace"


def link(ipr: IPRoute, name: str):
    """The device named `name`, or None."""
    found = link_index(ipr, name)
    return ipr.get_links(found)[0] if found is not None else None


def link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def index(ipr: IPRoute, name: str, ns: str) -> int:
    """The index of the device named `name`; Refused (ENODEV) when there is none."""
    found = link_index(ipr, name)
    if found is None:
        raise Refused(f"ENODEV: no device named {name} in {where(ns)}")
    return found


def require_kind(ipr: IPRoute, name: str, want: str, place: str) -> int:
    """The index of `name`, which must be a `want` device: an add that met EEXIST
    only counts as success when the existing device is the same kind of thing."""
    found = link(ipr, name)
    if found is None:
        raise Refused(f"ENODEV: {name} did not appear in {place}")
    if kind(found) != want:
        raise Refused(f"EEXIST: a device named {name} already exists in {place} and is "
                      f"a {kind(found) or 'plain device'}, not a {want}")
    return found["index"]


def delete_link(ipr: IPRoute, name: str, want: str | None) -> None:
    """Delete the device named `name` if it is there and (when `want` is given) of
    that kind; someone else's device of another kind is left alone."""
    found = link(ipr, name)
    if found is None:
        return
    if want and kind(found) != want:
        log.warning("left %s alone: it is a %s, not aronet's %s", name, kind(found), want)
        return
    with unless(*GONE):
        ipr.link("del", index=found["index"])


def no_addr_gen(ipr: IPRoute, index: int) -> None:
    """IPv6 addr_gen_mode none: no automatic link-local address on this device."""
    ipr.link("set", index=index, af_spec={"attrs": [["AF_INET6", {"attrs": [
        ["IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE]]}]]})


# ---------------------------------------------------------------------- routes


def route_key(r: Route) -> dict:
    """What identifies aronet's route r to the kernel (for del, and the start of add)."""
    net = ip_network(r.dst)
    return {"dst": str(net), "family": socket.AF_INET6 if net.version == 6 else socket.AF_INET,
            "table": r.table, "proto": names.RTPROT_ARONET, "type": r.type}


def encap_request(encap: tuple) -> dict:
    """Route.encap -> pyroute2's encap dict. Segments travel in the SRH in reverse
    (the last one first) and pyroute2 passes them as given, so reverse here."""
    what = encap[0]
    if what == "seg6":
        _, mode, *segs = encap
        return {"type": "seg6", "mode": mode, "segs": list(reversed(segs))}
    if what == "seg6local":
        _, action, *params = encap
        req = {"type": "seg6local", "action": action}
        if params:
            param = SEG6LOCAL_PARAM[action]
            req[param] = int(params[0]) if param in ("table", "vrf_table") else params[0]
        return req
    raise ValueError(f"unknown encap {encap!r}")


def route_from_msg(ns: str, table: int, msg, links: Links) -> Route:
    family = msg["family"]
    dst = msg.get_attr("RTA_DST") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    rtype = ROUTE_TYPES.get(msg["type"], str(msg["type"]))
    via = msg.get_attr("RTA_VIA")
    gateway = msg.get_attr("RTA_GATEWAY") or (via["addr"] if via else None)
    oif = msg.get_attr("RTA_OIF")
    metrics = msg.get_attr("RTA_METRICS")
    mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
    return Route(
        ns, table, str(ip_network(f"{dst}/{msg['dst_len']}", strict=False)),
        # The kernel puts IPv6 unreachable routes on lo; the planner names no device.
        dev=links.name(oif) if oif and rtype == "unicast" else None,
        gateway=str(ip_address(gateway)) if gateway else None,
        encap=encap_from_msg(msg), type=rtype, mtu=mtu or None)


def encap_from_msg(msg) -> tuple:
    what = msg.get_attr("RTA_ENCAP_TYPE")
    encap = msg.get_attr("RTA_ENCAP")
    if what == LWTUNNEL_ENCAP_SEG6:
        srh = encap.get_attr("SEG6_IPTUNNEL_SRH")
        return ("seg6", srh["mode"], *reversed(srh["segs"]))
    if what == LWTUNNEL_ENCAP_SEG6_LOCAL:
        code = encap.get_attr("SEG6_LOCAL_ACTION")
        action = SEG6LOCAL_ACTIONS.get(code, str(code))
        param = SEG6LOCAL_PARAM.get(action)
        attr = {"nh4": "SEG6_LOCAL_NH4", "nh6": "SEG6_LOCAL_NH6", "table": "SEG6_LOCAL_TABLE",
                "vrf_table": "SEG6_LOCAL_VRFTABLE"}.get(param)
        value = encap.get_attr(attr) if attr else None
        return ("seg6local", action) + ((value,) if value is not None else ())
    return ()
