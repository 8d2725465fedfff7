"""The reading half of the netlink adapter: aronet's kernel objects as they are, as
the planner's dataclasses (aronet.core.state).

Observer holds what one agent's adapter knows (its settings, the namespace it runs
for, the sysctl values from before aronet, its call counts) and reads; Netlink
(netlink.apply) adds the changes. In sync means equal: observe() returns the same
dataclasses with the same field values as the planner, so diff(desired, observe())
is empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from ipaddress import ip_interface

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifinfmsg import IFF_MULTICAST, IFF_UP

from ...core import names
from ...core.state import (
    Address,
    Namespace,
    Resource,
    Route,
    State,
    Sysctl,
    Veth,
    Vrf,
    XfrmInterface,
)
from ...errors import ApplyError
from ...model import Settings
from .. import sysctl
from .originals import Originals
from .rtnl import (
    IFA_F_NODAD,
    MAIN_TABLE,
    Links,
    Sockets,
    exists,
    failing_as,
    info,
    kind,
    route_from_msg,
)


class Observer:
    """One agent's view of the kernel: observe() and link_states() (see the module doc)."""

    def __init__(self, settings: Settings, base_ns: str = ""):
        self.settings = settings
        self.base_ns = base_ns
        self.netns_mode = settings.mode == "netns"
        self.router_ns = settings.ifname if self.netns_mode else ""
        # the sysctl values from before aronet's first write (in memory until
        # keep_originals() names a file)
        self._originals = Originals()
        # what apply changed ("add route", "remove xfrm", ...) and how often the whole
        # state was read back ("observe")
        self.calls: Counter[str] = Counter()

    def observe(self, sysctl_names: Iterable[Sysctl | tuple[str, str]] = ()) -> State:
        """aronet's objects as they are. sysctl_names: the desired Sysctl objects (or
        (ns, name) pairs); each comes back with its current value, or is left out when
        its namespace or the sysctl itself does not exist (the diff then adds it, and
        apply says why it cannot)."""
        res: list[Resource] = []
        self.calls["observe"] += 1
        with self._session("observe") as socks:
            s = self.settings
            agent = socks("")
            links = Links(agent)
            router_links = None
            if self.netns_mode and self._exists(self.router_ns):
                res.append(Namespace(self.router_ns))
                router_links = Links(socks(self.router_ns))
            managed: dict[str, set[int]] = {"": set()}

            # Both kinds are looked for in either mode, so that what the other mode left
            # behind (the ifname is the same) is removed by the diff.
            host = links.named(s.ifname)
            if host is not None and kind(host) == "vrf":
                res.append(Vrf("", s.ifname, info(host, "IFLA_VRF_TABLE")))
                managed[""].add(host["index"])
            if host is not None and kind(host) == "veth":
                res.append(self._observe_veth(host, router_links))
                managed[""].add(host["index"])

            if router_links is not None:
                managed[self.router_ns] = set()
                _, ns_end = names.veth_names(s.ifname)
                for name in ("lo", ns_end):
                    if (link := router_links.named(name)) is not None:
                        managed[self.router_ns].add(link["index"])

            # Tunnels in the agent's namespace are stale leftovers in netns mode (a
            # move that failed half way); observing them lets the diff remove them.
            spaces = [("", links)] + ([(self.router_ns, router_links)] if router_links else [])
            for ns, ls in spaces:
                for link in ls.all():
                    if kind(link) == "xfrm" and link.get_attr("IFLA_IFNAME").startswith(
                            s.tunnel_prefix):
                        res.append(self._observe_xfrm(ns, link, ls))
                        managed[ns].add(link["index"])

            for ns, ls in spaces:
                res += self._observe_addresses(ns, socks(ns), ls, managed[ns])
                res += self._observe_routes(ns, socks(ns), ls)

        res += self._observe_sysctls(sysctl_names)
        return State(frozenset(res))

    def _observe_veth(self, host, router_links: Links | None) -> Veth:
        name = host.get_attr("IFLA_IFNAME")
        mtu = host.get_attr("IFLA_MTU")
        # Both ends name each other's ifindex in IFLA_LINK; requiring both rules out an
        # unrelated device that happens to have the peer's index in the namespace.
        peer_index = host.get_attr("IFLA_LINK")
        if router_links is not None:
            for link in router_links.all():
                if (link["index"] == peer_index and kind(link) == "veth"
                        and link.get_attr("IFLA_LINK") == host["index"]):
                    return Veth("", name, link.get_attr("IFLA_IFNAME"), self.router_ns, mtu)
        return Veth("", name, "", "", mtu)  # peer elsewhere: the diff replaces the pair

    def _observe_xfrm(self, ns: str, link, links: Links) -> XfrmInterface:
        master = link.get_attr("IFLA_MASTER")
        return XfrmInterface(
            ns, link.get_attr("IFLA_IFNAME"), info(link, "IFLA_XFRM_IF_ID"),
            link.get_attr("IFLA_MTU"), master=links.name(master) if master else None,
            multicast=bool(link["flags"] & IFF_MULTICAST))

    def _observe_addresses(self, ns: str, ipr: IPRoute, links: Links,
                           indexes: set[int]) -> list[Address]:
        out = []
        for msg in ipr.get_addr():
            if msg["index"] not in indexes:
                continue
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            addr = ip_interface(f"{text}/{msg['prefixlen']}")
            if addr.ip.is_loopback:  # 127.0.0.1/8 and ::1 on lo are the kernel's
                continue
            flags = msg.get_attr("IFA_FLAGS")
            flags = msg["flags"] if flags is None else flags
            out.append(Address(ns, links.name(msg["index"]), str(addr),
                               nodad=bool(flags & IFA_F_NODAD)))
        return out

    def _observe_routes(self, ns: str, ipr: IPRoute, links: Links) -> list[Route]:
        out = []
        for table in sorted({MAIN_TABLE, self.settings.route_table}):
            # With strict checking the kernel filters the dump by table and protocol,
            # so a router carrying a full Internet table is not copied every check.
            for msg in ipr.route("dump", table=table, proto=names.RTPROT_ARONET):
                # Checked again: kernels without dump filtering (before 4.20) send all.
                if (msg["proto"] == names.RTPROT_ARONET
                        and (msg.get_attr("RTA_TABLE") or msg["table"]) == table):
                    out.append(route_from_msg(ns, table, msg, links))
        return out

    def _observe_sysctls(self, wanted) -> list[Sysctl]:
        out = []
        for s in wanted:
            if not isinstance(s, Sysctl):
                s = Sysctl(s[0], s[1], "")
            real = self._real(s.ns)
            if real and not self._exists(real):
                continue
            try:
                value = sysctl.read(real, s.name)
            except OSError as e:
                raise ApplyError("sysctl", s.name, sysctl.why(e, s.name, real)) from e
            if value is not None:
                out.append(dataclasses.replace(s, value=value))
        return out

    def tunnel_if_ids(self) -> set[int]:
        """The if_ids of the XFRM interfaces named Settings.tunnel_prefix... in the
        agent's namespace and the router namespace, as they are now."""
        out: set[int] = set()
        with self._session("tunnel if_ids") as socks:
            for ns in [""] + ([self.router_ns] if self.netns_mode else []):
                if (ipr := socks.maybe(ns)) is None:
                    continue
                out |= {info(link, "IFLA_XFRM_IF_ID") for link in ipr.get_links()
                        if kind(link) == "xfrm" and link.get_attr("IFLA_IFNAME").startswith(
                            self.settings.tunnel_prefix)}
        return out

    def link_states(self, ns: str) -> dict[str, bool]:
        """{device: administratively up} for every device in ns ({} if ns is gone)."""
        with self._session("link states") as socks:
            ipr = socks.maybe(ns)
            if ipr is None:
                return {}
            return {link.get_attr("IFLA_IFNAME"): bool(link["flags"] & IFF_UP)
                    for link in ipr.get_links()}

    # ------------------------------------------------------------------ helpers

    def _real(self, ns: str) -> str:
        """The namespace name behind a resource's ns ("" = this process's own)."""
        return ns or self.base_ns

    @staticmethod
    def _exists(name: str) -> bool:
        return exists(name)

    @contextlib.contextmanager
    def _session(self, what: str) -> Iterator[Sockets]:
        with Sockets(self.base_ns) as socks, failing_as("netlink", what):
            yield socks
