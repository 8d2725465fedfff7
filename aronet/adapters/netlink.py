"""The netlink adapter: the part of the agent that changes the kernel.

observe() reads aronet's own kernel objects into the planner's dataclasses
(aronet.core.state), apply(plan) carries out a diff's actions, remove_all() takes
everything away again, and preflight() names the kernel features that the configured
mode needs but this kernel lacks. set_link() and link_states() let the agent follow
CHILD_SAs with their tunnel interfaces' up/down state. xfrm_states(),
xfrm_policies() and seg6local_counters() read what pyroute2 cannot.

Invariants:
- Only aronet's objects are seen or touched: the namespace and the devices named
  Settings.ifname, XFRM interfaces whose names start with Settings.tunnel_prefix, the
  addresses on those devices, routes with protocol RTPROT_ARONET (211), and the
  sysctls the caller asks about.
- In sync means equal. observe() returns the same dataclasses with the same field
  values as the planner, so diff(desired, observe()) is empty.
- apply() is idempotent. "Already there" on add (EEXIST) and "already gone" on remove
  (ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL, or a namespace that no longer exists) count
  as success. Any other failure stops apply() at that action with one ApplyError
  naming the system, the action and the cause, because later actions depend on it.
- Every device aronet creates has IPv6 addr_gen_mode "none", so each address on it is
  one that aronet put there; observe() never has to guess which link-local addresses
  the kernel made.
- Only pyroute2 changes the kernel. `ip` runs only to read what pyroute2 cannot
  (XFRM states and policies, seg6local counters) and for the ESP probe, which adds a
  state in a namespace that is thrown away.
- A resource's ns "" is the agent's namespace: this process's own, or `base_ns` when
  given (the lab runs one agent per node namespace). Any other ns is a name under
  /run/netns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import secrets
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from ipaddress import ip_address, ip_interface, ip_network

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import IFF_MULTICAST, IFF_UP

from ..core import names
from ..core.diff import Action, Plan, diff
from ..core.state import (
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
from ..errors import ApplyError
from ..model import Settings
from . import sysctl

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
GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


class Netlink:
    """observe / apply / remove_all / preflight for one agent (see the module doc)."""

    def __init__(self, settings: Settings, base_ns: str = ""):
        self.settings = settings
        self.base_ns = base_ns
        self.netns_mode = settings.mode == "netns"
        self.router_ns = settings.ifname if self.netns_mode else ""
        # (ns, name) -> (the Sysctl as written, the value before aronet's first write)
        self._originals: dict[tuple[str, str], tuple[Sysctl, str]] = {}
        # what apply changed ("add route", "remove xfrm", ...) and how often the whole
        # state was read back ("observe")
        self.calls: Counter[str] = Counter()

    # ------------------------------------------------------------------ observe

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
            links = _Links(agent)
            router_links = None
            if self.netns_mode and self._exists(self.router_ns):
                res.append(Namespace(self.router_ns))
                router_links = _Links(socks(self.router_ns))
            managed: dict[str, set[int]] = {"": set()}

            # Both kinds are looked for in either mode, so that what the other mode left
            # behind (the ifname is the same) is removed by the diff.
            host = links.named(s.ifname)
            if host is not None and _kind(host) == "vrf":
                res.append(Vrf("", s.ifname, _info(host, "IFLA_VRF_TABLE")))
                managed[""].add(host["index"])
            if host is not None and _kind(host) == "veth":
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
                    if _kind(link) == "xfrm" and link.get_attr("IFLA_IFNAME").startswith(
                            s.tunnel_prefix):
                        res.append(self._observe_xfrm(ns, link, ls))
                        managed[ns].add(link["index"])

            for ns, ls in spaces:
                res += self._observe_addresses(ns, socks(ns), ls, managed[ns])
                res += self._observe_routes(ns, socks(ns), ls)

        res += self._observe_sysctls(sysctl_names)
        return State(frozenset(res))

    def _observe_veth(self, host, router_links: _Links | None) -> Veth:
        name = host.get_attr("IFLA_IFNAME")
        mtu = host.get_attr("IFLA_MTU")
        # Both ends name each other's ifindex in IFLA_LINK; requiring both rules out an
        # unrelated device that happens to have the peer's index in the namespace.
        peer_index = host.get_attr("IFLA_LINK")
        if router_links is not None:
            for link in router_links.all():
                if (link["index"] == peer_index and _kind(link) == "veth"
                        and link.get_attr("IFLA_LINK") == host["index"]):
                    return Veth("", name, link.get_attr("IFLA_IFNAME"), self.router_ns, mtu)
        return Veth("", name, "", "", mtu)  # peer elsewhere: the diff replaces the pair

    def _observe_xfrm(self, ns: str, link, links: _Links) -> XfrmInterface:
        master = link.get_attr("IFLA_MASTER")
        return XfrmInterface(
            ns, link.get_attr("IFLA_IFNAME"), _info(link, "IFLA_XFRM_IF_ID"),
            link.get_attr("IFLA_MTU"), master=links.name(master) if master else None,
            multicast=bool(link["flags"] & IFF_MULTICAST))

    def _observe_addresses(self, ns: str, ipr: IPRoute, links: _Links,
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

    def _observe_routes(self, ns: str, ipr: IPRoute, links: _Links) -> list[Route]:
        out = []
        for table in sorted({MAIN_TABLE, self.settings.route_table}):
            # With strict checking the kernel filters the dump by table and protocol,
            # so a router carrying a full Internet table is not copied every check.
            for msg in ipr.route("dump", table=table, proto=names.RTPROT_ARONET):
                # Checked again: kernels without dump filtering (before 4.20) send all.
                if (msg["proto"] == names.RTPROT_ARONET
                        and (msg.get_attr("RTA_TABLE") or msg["table"]) == table):
                    out.append(_route_from_msg(ns, table, msg, links))
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

    # ------------------------------------------------------------------ apply

    def apply(self, plan: Plan) -> None:
        """Carry out the plan's actions in order. NftTable, Connection and RoutingConfig
        belong to other adapters and are skipped."""
        handlers: dict[type, Callable[[_Sockets, Action], None]] = {
            Namespace: self._apply_namespace,
            Sysctl: self._apply_sysctl,
            Vrf: self._apply_vrf,
            Veth: self._apply_veth,
            XfrmInterface: self._apply_xfrm,
            Address: self._apply_address,
            Route: self._apply_route,
        }
        with _Sockets(self.base_ns) as socks:
            for action in plan:
                handler = handlers.get(type(action.resource))
                if handler is None:
                    continue
                log.debug("netlink: %s", action)
                self.calls[f"{action.op} {action.resource.kind}"] += 1
                with _failing_as("netlink", str(action)):
                    handler(socks, action)

    def _apply_namespace(self, socks: _Sockets, a: Action) -> None:
        name = a.resource.name
        if a.op == "remove":
            socks.forget(name)
            with contextlib.suppress(FileNotFoundError):
                pr_netns.remove(name)
            return
        if not self._exists(name):
            with _unless(errno.EEXIST):
                pr_netns.create(name)
        ipr = socks(name)
        ipr.link("set", index=_index(ipr, "lo", name), state="up")

    def _apply_sysctl(self, socks: _Sockets, a: Action) -> None:
        s = a.resource
        real = self._real(s.ns)
        try:
            if a.op == "remove":
                self._restore_sysctl(s, real)
                return
            before = sysctl.read(real, s.name)
            if before is None:
                raise FileNotFoundError(errno.ENOENT, "no such sysctl", sysctl.path(s.name))
            if s.restorable:
                self._originals.setdefault(s.key, (s, before))
            if before != sysctl.normalize(s.value):
                sysctl.write(real, s.name, s.value)
        except OSError as e:
            raise ApplyError("sysctl", s.name, sysctl.why(e, s.name, real, s.value)) from e

    def _restore_sysctl(self, s: Sysctl, real: str) -> None:
        if not s.restorable:
            log.info("sysctl %s stays %s: the kernel cannot set it back", s.name, s.value)
            return
        remembered = self._originals.pop(s.key, None)
        if remembered is None:
            log.info("sysctl %s (%s): no value from before aronet to restore", s.name, s.where)
            return
        if real and not self._exists(real):
            return  # its namespace went, and the value with it
        sysctl.write(real, s.name, remembered[1])

    def _apply_vrf(self, socks: _Sockets, a: Action) -> None:
        if a.op in ("remove", "change"):
            # A VRF's table cannot change after creation: replace the device.
            old = a.old
            if (ipr := socks.maybe(old.ns)) is not None:
                _delete_link(ipr, old.name, "vrf")
            if a.op == "remove":
                return
        r = a.new
        ipr = socks(r.ns)
        with _unless(errno.EEXIST):
            ipr.link("add", ifname=r.name, kind="vrf", vrf_table=r.table)
        index = _require_kind(ipr, r.name, "vrf", _where(r.ns))
        _no_addr_gen(ipr, index)
        ipr.link("set", index=index, state="up")

    def _apply_veth(self, socks: _Sockets, a: Action) -> None:
        if a.op == "change" and dataclasses.replace(a.old, mtu=a.new.mtu) == a.new:
            r = a.new
            for ns, name in ((r.ns, r.name), (r.peer_ns, r.peer)):
                ipr = socks(ns)
                ipr.link("set", index=_index(ipr, name, ns), mtu=r.mtu)
            return
        if a.op in ("remove", "change"):
            old = a.old
            if (ipr := socks.maybe(old.ns)) is not None:
                _delete_link(ipr, old.name, "veth")  # takes the peer with it
            if a.op == "remove":
                return
        r = a.new
        ipr = socks(r.ns)
        peer: dict = {"ifname": r.peer}
        if self._real(r.peer_ns) != self._real(r.ns):
            peer["net_ns_fd"] = self._real(r.peer_ns) or "/proc/self/ns/net"
        with _unless(errno.EEXIST):
            ipr.link("add", ifname=r.name, kind="veth", peer=peer)
        # The peer is created directly in its namespace, so its IPv6 settings stick
        # (moving a device resets them). Both ends stay down until configured, so no
        # link-local address is ever generated.
        ends = []
        for ns, name in ((r.ns, r.name), (r.peer_ns, r.peer)):
            end = socks(ns)
            ends.append((end, _require_kind(end, name, "veth", _where(ns))))
        for end, index in ends:
            end.link("set", index=index, mtu=r.mtu)
            _no_addr_gen(end, index)
        for end, index in ends:
            end.link("set", index=index, state="up")

    def _apply_xfrm(self, socks: _Sockets, a: Action) -> None:
        if a.op == "remove" or (a.op == "change" and a.old.if_id != a.new.if_id):
            old = a.old
            if (ipr := socks.maybe(old.ns)) is not None:
                _delete_link(ipr, old.name, "xfrm")
            if a.op == "remove":
                return
        r = a.new
        home, target = socks(""), socks(r.ns)
        if _link(target, r.name) is None:
            self._create_xfrm(home, r)
        index = _require_kind(target, r.name, "xfrm", _where(r.ns))
        flags = IFF_MULTICAST if r.multicast else 0
        target.link("set", index=index, mtu=r.mtu, flags=flags, mask=IFF_MULTICAST)
        _no_addr_gen(target, index)  # after the move: moving resets it
        master = _index(target, r.master, r.ns) if r.master else 0
        target.link("set", index=index, master=master)
        # Its administrative state is not set here: a new device is down, and the agent
        # brings a tunnel up while its CHILD_SA is installed (set_link).

    def _create_xfrm(self, home: IPRoute, r: XfrmInterface) -> None:
        """Create r in the agent's namespace, where charon installs the SAs with the
        same if_id (the interface keeps using the namespace it was created in), then
        move it to r.ns. A leftover of an earlier half-done attempt is reused."""
        existing = _link(home, r.name)
        if existing is not None and _kind(existing) != "xfrm":
            raise _Refused(f"EEXIST: a device named {r.name} already exists in "
                           f"{_where('')} and is a {_kind(existing) or 'plain device'}, "
                           "not an xfrm interface")
        if existing is not None and _info(existing, "IFLA_XFRM_IF_ID") != r.if_id:
            _delete_link(home, r.name, "xfrm")  # aronet's, from an older registry
            existing = None
        if existing is None:
            # No IFLA_XFRM_LINK: the kernel then uses it as the output interface of
            # the outer packets (flowi_oif), which must stay free for the route
            # lookup. Kernels since 4.19.89 / 5.5 accept its absence.
            try:
                home.link("add", ifname=r.name, kind="xfrm", xfrm_if_id=r.if_id, mtu=r.mtu)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
                if _link(home, r.name) is None:
                    raise _Refused(f"EEXIST: another XFRM interface already has if_id "
                                   f"{r.if_id:#010x}") from e
        if self._real(r.ns) != self._real(""):
            home.link("set", index=_index(home, r.name, ""), net_ns_fd=self._real(r.ns))

    def _apply_address(self, socks: _Sockets, a: Action) -> None:
        if a.op in ("remove", "change"):
            old = a.old
            ipr = socks.maybe(old.ns)
            index = _link_index(ipr, old.dev) if ipr is not None else None
            if index is not None:
                iface = ip_interface(old.address)
                with _unless(*GONE):
                    ipr.addr("del", index=index, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen)
            if a.op == "remove":
                return
        r = a.new
        ipr = socks(r.ns)
        iface = ip_interface(r.address)
        with _unless(errno.EEXIST):
            ipr.addr("add", index=_index(ipr, r.dev, r.ns), address=str(iface.ip),
                     prefixlen=iface.network.prefixlen, flags=IFA_F_NODAD if r.nodad else 0)

    def _apply_route(self, socks: _Sockets, a: Action) -> None:
        if a.op == "remove":
            r = a.old
            if (ipr := socks.maybe(r.ns)) is None:
                return
            # proto and type narrow the match: never delete someone else's route
            # to the same destination.
            with _unless(*GONE):
                ipr.route("del", **_route_key(r))
            return
        r = a.new
        ipr = socks(r.ns)
        spec = _route_key(r)
        if r.dev:
            spec["oif"] = _index(ipr, r.dev, r.ns)
        if r.gateway:
            gw = ip_address(r.gateway)
            if gw.version == ip_network(r.dst).version:
                spec["gateway"] = str(gw)
            else:  # RTA_VIA: an IPv4 route via an IPv6 next hop
                family = socket.AF_INET6 if gw.version == 6 else socket.AF_INET
                spec["via"] = {"family": family, "addr": str(gw)}
        if r.encap:
            spec["encap"] = _encap_request(r.encap)
        if r.mtu:
            spec["metrics"] = {"mtu": r.mtu}
        if a.op == "change":
            ipr.route("replace", **spec)
        else:
            with _unless(errno.EEXIST):
                ipr.route("add", **spec)

    # ------------------------------------------------------------------ remove_all

    def remove_all(self) -> None:
        """Remove everything aronet owns here (per observe()) in dependency-safe order,
        and set back the restorable sysctls this object changed."""
        changed = [s for s, _ in self._originals.values()]
        plan = diff(State(), self.observe(changed))
        # A namespace takes what is in it along (interfaces, their addresses and routes,
        # its sysctls): removing each first only costs time, minutes for a thousand
        # tunnels under TCG, longer than a stop may take.
        doomed = {a.resource.name for a in plan if isinstance(a.resource, Namespace)}
        self.apply(tuple(a for a in plan if isinstance(a.resource, Namespace)
                         or getattr(a.resource, "ns", None) not in doomed))

    # ------------------------------------------------------------------ tunnel state

    def set_link(self, ns: str, name: str, up: bool, addresses: Iterable[Address] = ()) -> None:
        """Set a device's administrative state (the agent follows CHILD_SA up/down
        with the tunnel interface's). Not part of the desired state: observe() does
        not report it, so a diff never undoes it. Linux flushes a device's link-local
        addresses when it goes down (keep_addr_on_down keeps only global ones), so
        bringing it up adds `addresses` back at once: babel needs its next hop."""
        state = "up" if up else "down"
        with self._session(f"link {name} {state}") as socks:
            ipr = socks(ns)
            ipr.link("set", index=_index(ipr, name, ns), state=state)
        if up:
            self.apply(diff(State(frozenset(addresses)), State()))

    def link_states(self, ns: str) -> dict[str, bool]:
        """{device: administratively up} for every device in ns ({} if ns is gone)."""
        with self._session("link states") as socks:
            ipr = socks.maybe(ns)
            if ipr is None:
                return {}
            return {link.get_attr("IFLA_IFNAME"): bool(link["flags"] & IFF_UP)
                    for link in ipr.get_links()}

    # ------------------------------------------------------------------ preflight

    def preflight(self) -> list[str]:
        """One message per kernel feature the configured mode needs and this kernel
        lacks (empty: all there). Probes run in a temporary namespace that is removed
        afterwards, so they leave nothing behind."""
        mode = self.settings.mode
        probe = f"aronet-probe-{secrets.token_hex(4)}"
        problems = []
        with _failing_as("netlink", "preflight"):
            pr_netns.create(probe)
            try:
                with IPRoute(netns=probe, flags=0, ext_ack=True) as ipr:
                    lo = _index(ipr, "lo", probe)
                    ipr.link("set", index=lo, state="up")
                    problems += _probe_seg6(ipr, lo, mode)
                    if mode == "netns":
                        problems += _probe_veth(ipr)
                    if mode == "vrf":
                        problems += _probe_link(
                            ipr, "VRF", dict(kind="vrf", vrf_table=4242),
                            "needed by mode vrf; use mode netns or load the vrf module")
                    problems += _probe_link(
                        ipr, "XFRM interfaces", dict(kind="xfrm", xfrm_if_id=42),
                        f"needed by mode {mode}; load the xfrm_interface module "
                        "(CONFIG_XFRM_INTERFACE)")
                problems += _probe_esp(probe, mode)
                problems += _probe_lwtunnel_hooks()
            finally:
                with contextlib.suppress(OSError):
                    pr_netns.remove(probe)
        return problems

    # ------------------------------------------------------------------ helpers

    def _real(self, ns: str) -> str:
        """The namespace name behind a resource's ns ("" = this process's own)."""
        return ns or self.base_ns

    @staticmethod
    def _exists(name: str) -> bool:
        return not name or name in pr_netns.listnetns()

    @contextlib.contextmanager
    def _session(self, what: str) -> Iterator[_Sockets]:
        with _Sockets(self.base_ns) as socks, _failing_as("netlink", what):
            yield socks


# ---------------------------------------------------------------------- sockets


class _Sockets:
    """One rtnetlink socket per namespace, opened on first use and closed at the end
    of one observe() or apply(). Called with a resource's ns."""

    def __init__(self, base_ns: str):
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
                raise _Refused(f"ENOENT: network namespace {real} does not exist") from e
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for real in list(self.open):
            self.forget(real)


# ---------------------------------------------------------------------- links


class _Links:
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


def _kind(link) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _info(link, attr: str):
    info = link.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    return data.get_attr(attr) if data is not None else None


def _where(ns: str) -> str:
    return f"netns {ns}" if ns else "the agent's namespace"


def _link(ipr: IPRoute, name: str):
    index = _link_index(ipr, name)
    return ipr.get_links(index)[0] if index is not None else None


def _link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _index(ipr: IPRoute, name: str, ns: str) -> int:
    index = _link_index(ipr, name)
    if index is None:
        raise _Refused(f"ENODEV: no device named {name} in {_where(ns)}")
    return index


def _require_kind(ipr: IPRoute, name: str, kind: str, where: str) -> int:
    """The index of `name`, which must be a `kind` device: an add that met EEXIST
    only counts as success when the existing device is the same kind of thing."""
    link = _link(ipr, name)
    if link is None:
        raise _Refused(f"ENODEV: {name} did not appear in {where}")
    if _kind(link) != kind:
        raise _Refused(f"EEXIST: a device named {name} already exists in {where} and is "
                       f"a {_kind(link) or 'plain device'}, not a {kind}")
    return link["index"]


def _delete_link(ipr: IPRoute, name: str, kind: str | None) -> None:
    link = _link(ipr, name)
    if link is None:
        return
    if kind and _kind(link) != kind:
        log.warning("left %s alone: it is a %s, not aronet's %s", name, _kind(link), kind)
        return
    with _unless(*GONE):
        ipr.link("del", index=link["index"])


def _no_addr_gen(ipr: IPRoute, index: int) -> None:
    """IPv6 addr_gen_mode none: no automatic link-local address on this device."""
    ipr.link("set", index=index, af_spec={"attrs": [["AF_INET6", {"attrs": [
        ["IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE]]}]]})


# ---------------------------------------------------------------------- routes


def _route_key(r: Route) -> dict:
    net = ip_network(r.dst)
    return {"dst": str(net), "family": socket.AF_INET6 if net.version == 6 else socket.AF_INET,
            "table": r.table, "proto": names.RTPROT_ARONET, "type": r.type}


def _encap_request(encap: tuple) -> dict:
    """Route.encap -> pyroute2's encap dict. Segments travel in the SRH in reverse
    (the last one first) and pyroute2 passes them as given, so reverse here."""
    kind = encap[0]
    if kind == "seg6":
        _, mode, *segs = encap
        return {"type": "seg6", "mode": mode, "segs": list(reversed(segs))}
    if kind == "seg6local":
        _, action, *params = encap
        req = {"type": "seg6local", "action": action}
        if params:
            param = SEG6LOCAL_PARAM[action]
            req[param] = int(params[0]) if param in ("table", "vrf_table") else params[0]
        return req
    raise ValueError(f"unknown encap {encap!r}")


def _route_from_msg(ns: str, table: int, msg, links: _Links) -> Route:
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
        encap=_encap_from_msg(msg), type=rtype, mtu=mtu or None)


def _encap_from_msg(msg) -> tuple:
    kind = msg.get_attr("RTA_ENCAP_TYPE")
    encap = msg.get_attr("RTA_ENCAP")
    if kind == LWTUNNEL_ENCAP_SEG6:
        srh = encap.get_attr("SEG6_IPTUNNEL_SRH")
        return ("seg6", srh["mode"], *reversed(srh["segs"]))
    if kind == LWTUNNEL_ENCAP_SEG6_LOCAL:
        code = encap.get_attr("SEG6_LOCAL_ACTION")
        action = SEG6LOCAL_ACTIONS.get(code, str(code))
        param = SEG6LOCAL_PARAM.get(action)
        attr = {"nh4": "SEG6_LOCAL_NH4", "nh6": "SEG6_LOCAL_NH6", "table": "SEG6_LOCAL_TABLE",
                "vrf_table": "SEG6_LOCAL_VRFTABLE"}.get(param)
        value = encap.get_attr(attr) if attr else None
        return ("seg6local", action) + ((value,) if value is not None else ())
    return ()


# ---------------------------------------------------------------------- errors


class _Refused(Exception):
    """A failure found by the adapter itself; _failing_as names the action."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause


@contextlib.contextmanager
def _unless(*codes: int) -> Iterator[None]:
    """Let a netlink error with one of these errno codes pass as success."""
    try:
        yield
    except NetlinkError as e:
        if e.code not in codes:
            raise


@contextlib.contextmanager
def _failing_as(system: str, obj: str) -> Iterator[None]:
    """Turn any library error into one ApplyError(system, obj, cause)."""
    try:
        yield
    except ApplyError:
        raise
    except _Refused as e:
        raise ApplyError(system, obj, e.cause) from e
    except NetlinkError as e:
        raise ApplyError(system, obj, _cause(e.code, e.args)) from e
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise ApplyError(system, obj, _cause(e.errno, (e.errno, e.strerror)) + where) from e


def _cause(code: int | None, args: tuple) -> str:
    name = sysctl.errno_name(code)
    message = args[1] if len(args) > 1 and args[1] else os.strerror(code or 0)
    return f"{name}: {message}"


# ---------------------------------------------------------------------- preflight


def _probe_seg6(ipr: IPRoute, lo: int, mode: str) -> list[str]:
    tries = [
        ("seg6 encap", dict(dst="192.0.2.0/24", oif=lo, encap=_encap_request(
            ("seg6", "encap", "2001:db8::4")))),
        ("seg6local End", dict(dst="2001:db8::1/128", oif=lo,
                               encap=_encap_request(("seg6local", "End")))),
        ("seg6local End.DX4", dict(dst="2001:db8::4/128", oif=lo, encap=_encap_request(
            ("seg6local", "End.DX4", "0.0.0.0")))),
    ]
    failed = []
    for what, spec in tries:
        try:
            ipr.route("add", **spec)
        except NetlinkError as e:
            failed.append(f"{what}: {_cause(e.code, e.args)}")
    if not failed:
        return []
    return [f"SRv6: not supported by this kernel ({'; '.join(failed)}); needed by mode "
            f"{mode}; needs CONFIG_IPV6_SEG6_LWTUNNEL"]


def _probe_veth(ipr: IPRoute) -> list[str]:
    try:
        ipr.link("add", ifname="probe0", kind="veth", peer={"ifname": "probe1"})
        index = _index(ipr, "probe0", "probe")
        ipr.link("set", index=index, state="up")
    except NetlinkError as e:
        return [f"veth: not supported by this kernel ({_cause(e.code, e.args)}); needed "
                "by mode netns; load the veth module or use mode vrf"]
    try:
        ipr.route("add", dst="198.51.100.0/24", oif=index,
                  via={"family": socket.AF_INET6, "addr": "fe80::2"})
    except NetlinkError as e:
        return [f"IPv4 routes via IPv6 next hops: not supported by this kernel "
                f"({_cause(e.code, e.args)}); needed by mode netns; needs Linux 5.2 or later"]
    return []


def _probe_link(ipr: IPRoute, feature: str, spec: dict, hint: str) -> list[str]:
    try:
        ipr.link("add", ifname="probe-link", **spec)
    except NetlinkError as e:
        return [f"{feature}: not supported by this kernel ({_cause(e.code, e.args)}); {hint}"]
    ipr.link("del", index=_index(ipr, "probe-link", "probe"))
    return []


def _probe_lwtunnel_hooks() -> list[str]:
    """net.netfilter.nf_hooks_lwtunnel only exists once nf_conntrack is loaded; ask
    for the module (as nftables would on first use) before declaring it missing."""
    name = "net.netfilter.nf_hooks_lwtunnel"
    if not os.path.exists(sysctl.path(name)):
        subprocess.run(["modprobe", "-q", "nf_conntrack"], capture_output=True, check=False)
    if os.path.exists(sysctl.path(name)):
        return []
    return [f"{name}: missing (load the nf_conntrack module); needed so nftables sees "
            "packets that SRv6 decapsulates"]


def _probe_esp(probe: str, mode: str) -> list[str]:
    """ESP with AES-GCM, as charon will install it, for both outer families."""
    key = "0x" + "00" * 36  # 256-bit key + 32-bit salt
    failed = []
    for family, src, dst in (("IPv4", "192.0.2.1", "192.0.2.2"),
                             ("IPv6", "2001:db8::1", "2001:db8::2")):
        try:
            _ip(probe, "xfrm", "state", "add", "src", src, "dst", dst, "proto", "esp",
                "spi", "0x100", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", key, "128",
                "if_id", "42")
        except ApplyError as e:
            failed.append(f"{family}: {e.cause}")
    if not failed:
        return []
    return [f"ESP: the kernel cannot install an ESP state with AES-GCM ({'; '.join(failed)}); "
            f"needed by mode {mode}; load xfrm_user, esp4, esp6 and the aes and gcm crypto "
            "modules"]


# ---------------------------------------------------------------------- ip readers


def _ip(netns: str, *args: str) -> str:
    """`ip [-n netns] args`; its stdout. Failure is an ApplyError("ip", ...)."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ApplyError("ip", " ".join(args), str(e)) from e
    if proc.returncode != 0:
        raise ApplyError("ip", " ".join(args),
                         proc.stderr.strip() or f"exit status {proc.returncode}")
    return proc.stdout


def xfrm_states(netns: str = "") -> list[dict]:
    """The XFRM states (SAs) in netns ("" = this process's namespace), from `ip -s
    xfrm state`. iproute2 has no JSON for xfrm (6.1 accepts -j and prints text), so the
    text is parsed: src, dst, proto, spi, reqid, mode, if_id, aead/enc/auth (algorithm
    names; keys are left out), encap {type, sport, dport}, bytes and packets, and
    "text", the block as printed."""
    return [_parse_state(b) for b in _blocks(_ip(netns, "-s", "xfrm", "state"))]


def xfrm_policies(netns: str = "") -> list[dict]:
    """The XFRM policies in netns, from `ip xfrm policy`: src, dst, dir (in, out, fwd;
    socket policies have "socket": True), priority, ptype, action, if_id, tmpl (a list
    of {src, dst, proto, spi, reqid, mode}), and "text"."""
    return [_parse_policy(b) for b in _blocks(_ip(netns, "xfrm", "policy"))]


def seg6local_counters(netns: str, table: int) -> dict[str, dict]:
    """{SID: {"action", "packets", "bytes", "errors"}} for the seg6local routes in
    `table` that have counters, from `ip -j -s -6 route show table T`. The kernel keeps
    counters only for routes created with them; pyroute2 0.9.7 cannot ask for them
    (no SEG6_LOCAL_COUNTERS), so routes made by this adapter have none."""
    out = {}
    for route in json.loads(_ip(netns, "-j", "-s", "-6", "route", "show", "table",
                                str(table)) or "[]"):
        if route.get("encap") == "seg6local" and "stats64" in route:
            stats = route["stats64"]
            out[str(ip_network(route["dst"]))] = {
                "action": route.get("action"), "packets": stats.get("packets", 0),
                "bytes": stats.get("bytes", 0), "errors": stats.get("errors", 0)}
    return out


def _blocks(text: str) -> list[str]:
    """One block per object: a line at column 0 and its indented continuation."""
    return [b for b in re.split(r"^(?=\S)", text, flags=re.M) if b.strip()]


def _num(text: str) -> int:
    return int(text.split("(")[0], 0)  # -s prints "0x00001000(4096)"


def _first(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text, flags=re.M)
    return m.group(1) if m else None


def _parse_state(block: str) -> dict:
    head = block.splitlines()[0].split()
    state: dict = {"src": _after(head, "src"), "dst": _after(head, "dst"), "text": block}
    for key, pattern in (("proto", r"\bproto (\S+)"), ("mode", r"\bmode (\S+)")):
        if (v := _first(pattern, block)) is not None:
            state[key] = v
    for key, pattern in (("spi", r"\bspi (0x[0-9a-f]+)"), ("reqid", r"\breqid (\d+)"),
                         ("if_id", r"\bif_id (0x[0-9a-f]+|\d+)")):
        if (v := _first(pattern, block)) is not None:
            state[key] = _num(v)
    for key in ("aead", "enc", "auth", "auth-trunc"):
        if (v := _first(rf"^\s+{re.escape(key)} (\S+)", block)) is not None:
            state[key] = v
    m = re.search(r"\bencap type (\S+) sport (\d+) dport (\d+)", block)
    if m:
        state["encap"] = {"type": m.group(1), "sport": int(m.group(2)), "dport": int(m.group(3))}
    m = re.search(r"\b(\d+)\(bytes\), (\d+)\(packets\)", block)
    if m:
        state["bytes"], state["packets"] = int(m.group(1)), int(m.group(2))
    return state


def _parse_policy(block: str) -> dict:
    own, *tmpls = re.split(r"\btmpl\b", block)
    head = own.splitlines()[0].split()
    policy: dict = {"src": _after(head, "src"), "dst": _after(head, "dst"), "text": block}
    if (v := _first(r"\bdir (\S+)", own)) is not None:
        policy["dir"] = v
    elif (v := _first(r"\bsocket (\S+)", own)) is not None:
        policy["dir"], policy["socket"] = v, True
    for key in ("ptype", "action"):
        if (v := _first(rf"\b{key} (\S+)", own)) is not None:
            policy[key] = v
    if (v := _first(r"\bpriority (\d+)", own)) is not None:
        policy["priority"] = int(v)
    if (v := _first(r"\bif_id (0x[0-9a-f]+|\d+)", block)) is not None:
        policy["if_id"] = _num(v)
    policy["tmpl"] = []
    for t in tmpls:
        t = t.split("if_id")[0]
        words = t.split()
        tmpl = {k: _after(words, k) for k in ("src", "dst", "proto", "mode")}
        for k in ("spi", "reqid"):
            if _after(words, k) is not None:
                tmpl[k] = _num(_after(words, k))
        policy["tmpl"].append({k: v for k, v in tmpl.items() if v is not None})
    return policy


def _after(words: list[str], key: str) -> str | None:
    try:
        return words[words.index(key) + 1]
    except (ValueError, IndexError):
        return None
