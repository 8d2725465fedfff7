"""The changing half of the netlink adapter: Netlink, which carries out a plan's
actions, removes everything aronet owns, and follows tunnels' up/down state.

Netlink extends the Observer (netlink.observe) with apply(plan), remove_all(),
set_link(), preflight() (netlink.probes), and what a crash leaves: keep_originals()
and remember_sysctl() (sysctl values persisted for remove_all to set back) and
remove_sas() (a killed charon's XFRM states and policies). apply() is idempotent: "already there"
on add (EEXIST) and "already gone" on remove (rtnl.GONE, or a namespace that no longer
exists) count as success; any other failure stops apply() at that action with one
ApplyError naming the system, the action and the cause, because later actions depend
on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from ipaddress import ip_address, ip_interface, ip_network

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import IFF_MULTICAST

from ...core.diff import Action, Plan, diff
from ...core.state import (
    Address,
    Namespace,
    Route,
    State,
    Sysctl,
    Veth,
    Vrf,
    XfrmInterface,
)
from ...errors import ApplyError
from .. import sysctl
from . import hold, iproute2, originals, probes, rtnl
from .observe import Observer
from .rtnl import MAIN_TABLE

log = logging.getLogger(__name__)


class Netlink(Observer):
    """observe / apply / remove_all / preflight for one agent (see the package doc)."""

    def apply(self, plan: Plan) -> None:
        """Carry out the plan's actions in order. NftTable, Connection and RoutingConfig
        belong to other adapters and are skipped."""
        handlers: dict[type, Callable[[rtnl.Sockets, Action], None]] = {
            Namespace: self._apply_namespace,
            Sysctl: self._apply_sysctl,
            Vrf: self._apply_vrf,
            Veth: self._apply_veth,
            XfrmInterface: self._apply_xfrm,
            Address: self._apply_address,
            Route: self._apply_route,
        }
        with rtnl.Sockets(self.base_ns) as socks:
            for action in plan:
                handler = handlers.get(type(action.resource))
                if handler is None:
                    continue
                log.debug("netlink: %s", action)
                self.calls[f"{action.op} {action.resource.kind}"] += 1
                with rtnl.failing_as("netlink", str(action)):
                    handler(socks, action)

    def _apply_namespace(self, socks: rtnl.Sockets, a: Action) -> None:
        name = a.resource.name
        if a.op == "remove":
            socks.forget(name)
            with contextlib.suppress(FileNotFoundError):
                pr_netns.remove(name)
            self._originals.forget_namespace(name)  # its sysctls went with it
            return
        if not self._exists(name):
            with rtnl.unless(errno.EEXIST):
                pr_netns.create(name)
        ipr = socks(name)
        ipr.link("set", index=rtnl.index(ipr, "lo", name), state="up")

    def _apply_sysctl(self, socks: rtnl.Sockets, a: Action) -> None:
        s = a.resource
        real = self._real(s.ns)
        try:
            if a.op == "remove":
                self._restore_sysctl(s, real)
                return
            before = sysctl.read(real, s.name)
            if before is None:
                raise FileNotFoundError(errno.ENOENT, "no such sysctl", sysctl.path(s.name))
            if s.restorable:  # recorded (and saved) before the first write
                self._originals.record(s, before)
            if before != sysctl.normalize(s.value):
                sysctl.write(real, s.name, s.value)
        except OSError as e:
            raise ApplyError("sysctl", s.name, sysctl.why(e, s.name, real, s.value)) from e

    def _restore_sysctl(self, s: Sysctl, real: str) -> None:
        if not s.restorable:
            log.info("sysctl %s stays %s: the kernel cannot set it back", s.name, s.value)
            return
        original = self._originals.original(s.key)
        if original is None:
            log.info("sysctl %s (%s): no value from before aronet to restore", s.name, s.where)
            return
        if not real or self._exists(real):  # else its namespace went, and the value with it
            sysctl.write(real, s.name, original)
        self._originals.forget(s.key)  # only once set back: a failed write is kept

    def _apply_vrf(self, socks: rtnl.Sockets, a: Action) -> None:
        if a.op in ("remove", "change"):
            # A VRF's table cannot change after creation: replace the device.
            old = a.old
            if (ipr := socks.maybe(old.ns)) is not None:
                rtnl.delete_link(ipr, old.name, "vrf")
            if a.op == "remove":
                return
        r = a.new
        ipr = socks(r.ns)
        with rtnl.unless(errno.EEXIST):
            ipr.link("add", ifname=r.name, kind="vrf", vrf_table=r.table)
        index = rtnl.require_kind(ipr, r.name, "vrf", rtnl.where(r.ns))
        rtnl.no_addr_gen(ipr, index)
        ipr.link("set", index=index, state="up")

    def _apply_veth(self, socks: rtnl.Sockets, a: Action) -> None:
        if a.op == "change" and dataclasses.replace(a.old, mtu=a.new.mtu) == a.new:
            r = a.new
            for ns, name in ((r.ns, r.name), (r.peer_ns, r.peer)):
                ipr = socks(ns)
                ipr.link("set", index=rtnl.index(ipr, name, ns), mtu=r.mtu)
            return
        if a.op in ("remove", "change"):
            old = a.old
            if (ipr := socks.maybe(old.ns)) is not None:
                rtnl.delete_link(ipr, old.name, "veth")  # takes the peer with it
            if a.op == "remove":
                return
        r = a.new
        ipr = socks(r.ns)
        peer: dict = {"ifname": r.peer}
        if self._real(r.peer_ns) != self._real(r.ns):
            peer["net_ns_fd"] = self._real(r.peer_ns) or "/proc/self/ns/net"
        with rtnl.unless(errno.EEXIST):
            ipr.link("add", ifname=r.name, kind="veth", peer=peer)
        # The peer is created directly in its namespace, so its IPv6 settings stick
        # (moving a device resets them). Both ends stay down until configured, so no
        # link-local address is ever generated.
        ends = []
        for ns, name in ((r.ns, r.name), (r.peer_ns, r.peer)):
            end = socks(ns)
            ends.append((end, rtnl.require_kind(end, name, "veth", rtnl.where(ns))))
        for end, index in ends:
            end.link("set", index=index, mtu=r.mtu)
            rtnl.no_addr_gen(end, index)
        for end, index in ends:
            end.link("set", index=index, state="up")

    def _apply_xfrm(self, socks: rtnl.Sockets, a: Action) -> None:
        if a.op == "remove" or (a.op == "change" and a.old.if_id != a.new.if_id):
            old = a.old
            if (ipr := socks.maybe(old.ns)) is not None:
                rtnl.delete_link(ipr, old.name, "xfrm")
            if a.op == "remove":
                return
        r = a.new
        home, target = socks(""), socks(r.ns)
        if rtnl.link(target, r.name) is None:
            self._create_xfrm(home, r)
        index = rtnl.require_kind(target, r.name, "xfrm", rtnl.where(r.ns))
        flags = IFF_MULTICAST if r.multicast else 0
        target.link("set", index=index, mtu=r.mtu, flags=flags, mask=IFF_MULTICAST)
        rtnl.no_addr_gen(target, index)  # after the move: moving resets it
        master = rtnl.index(target, r.master, r.ns) if r.master else 0
        target.link("set", index=index, master=master)
        # Its administrative state is not set here: a new device is down, and the agent
        # brings a tunnel up while its CHILD_SA is installed (set_link).

    def _create_xfrm(self, home: IPRoute, r: XfrmInterface) -> None:
        """Create r in the agent's namespace, where charon installs the SAs with the
        same if_id (the interface keeps using the namespace it was created in), then
        move it to r.ns. A leftover of an earlier half-done attempt is reused."""
        existing = rtnl.link(home, r.name)
        if existing is not None and rtnl.kind(existing) != "xfrm":
            raise rtnl.Refused(f"EEXIST: a device named {r.name} already exists in "
                               f"{rtnl.where('')} and is a "
                               f"{rtnl.kind(existing) or 'plain device'}, not an xfrm interface")
        if existing is not None and rtnl.info(existing, "IFLA_XFRM_IF_ID") != r.if_id:
            rtnl.delete_link(home, r.name, "xfrm")  # aronet's, from an older registry
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
                if rtnl.link(home, r.name) is None:
                    raise rtnl.Refused(f"EEXIST: another XFRM interface already has if_id "
                                       f"{r.if_id:#010x}") from e
        if self._real(r.ns) != self._real(""):
            home.link("set", index=rtnl.index(home, r.name, ""), net_ns_fd=self._real(r.ns))

    def _apply_address(self, socks: rtnl.Sockets, a: Action) -> None:
        if a.op in ("remove", "change"):
            old = a.old
            ipr = socks.maybe(old.ns)
            index = rtnl.link_index(ipr, old.dev) if ipr is not None else None
            if index is not None:
                iface = ip_interface(old.address)
                with rtnl.unless(*rtnl.GONE):
                    ipr.addr("del", index=index, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen)
            if a.op == "remove":
                return
        r = a.new
        ipr = socks(r.ns)
        iface = ip_interface(r.address)
        with rtnl.unless(errno.EEXIST):
            ipr.addr("add", index=rtnl.index(ipr, r.dev, r.ns), address=str(iface.ip),
                     prefixlen=iface.network.prefixlen, flags=rtnl.IFA_F_NODAD if r.nodad else 0)

    def _apply_route(self, socks: rtnl.Sockets, a: Action) -> None:
        if a.op == "remove":
            r = a.old
            if (ipr := socks.maybe(r.ns)) is None:
                return
            # proto and type narrow the match: never delete someone else's route
            # to the same destination.
            with rtnl.unless(*rtnl.GONE):
                ipr.route("del", **rtnl.route_key(r))
            return
        r = a.new
        ipr = socks(r.ns)
        spec = rtnl.route_key(r)
        if r.dev:
            spec["oif"] = rtnl.index(ipr, r.dev, r.ns)
        if r.gateway:
            gw = ip_address(r.gateway)
            if gw.version == ip_network(r.dst).version:
                spec["gateway"] = str(gw)
            else:  # RTA_VIA: an IPv4 route via an IPv6 next hop
                family = socket.AF_INET6 if gw.version == 6 else socket.AF_INET
                spec["via"] = {"family": family, "addr": str(gw)}
        if r.encap:
            spec["encap"] = rtnl.encap_request(r.encap)
        if r.mtu:
            spec["metrics"] = {"mtu": r.mtu}
        if a.op == "change":
            ipr.route("replace", **spec)
        else:
            with rtnl.unless(errno.EEXIST):
                ipr.route("add", **spec)

    # ------------------------------------------------------------------ remove_all

    def remove_all(self) -> None:
        """Remove everything aronet owns here (per observe()) in dependency-safe order,
        and set back the restorable sysctls this object (or, see keep_originals(), an
        earlier run) changed."""
        for ns in self._originals.namespaces():
            if not self._exists(self._real(ns)):
                self._originals.forget_namespace(ns)  # gone, and its values with it
        plan = diff(State(), self.observe(self._originals.sysctls()))
        # A namespace takes what is in it along (interfaces, their addresses and routes,
        # its sysctls): removing each first only costs time, minutes for a thousand
        # tunnels under TCG, longer than a stop may take.
        doomed = {a.resource.name for a in plan if isinstance(a.resource, Namespace)}
        if self.router_ns not in doomed:  # held routes (netlink.hold) die with their namespace
            self.release_held(self.router_ns, self.overlay_table, every=True)
        self.apply(tuple(a for a in plan if isinstance(a.resource, Namespace)
                         or getattr(a.resource, "ns", None) not in doomed))

    # ------------------------------------------------------------------ held routes

    def hold_routes(self, ns: str, table: int, keep: Callable[[str], bool]) -> int:
        """Before babeld restarts: copy its routes in the overlay table (the router
        namespace's main table in netns mode, the VRF's otherwise) whose destination
        keep() accepts as held routes (netlink.hold). Returns how many."""
        with self._session("hold babeld's routes") as socks:
            if (ipr := socks.maybe(ns)) is None:
                return 0
            self.calls["hold routes"] += 1
            return hold.hold(ipr, table, keep)

    def release_held(self, ns: str, table: int, every: bool = False) -> int:
        """Remove the held routes babeld has re-learned (every: all); how many are left."""
        with self._session("release held routes") as socks:
            if (ipr := socks.maybe(ns)) is None:
                return 0
            self.calls["release held"] += 1
            return hold.release(ipr, table, every)

    @property
    def overlay_table(self) -> int:
        """Where the routing daemon installs its routes (as the planner says)."""
        return MAIN_TABLE if self.netns_mode else self.settings.route_table

    # ------------------------------------------------------------------ crash state

    def keep_originals(self, path: str) -> None:
        """Persist the sysctl values from before aronet in path (see netlink.originals),
        and take in those an earlier run of this instance recorded there, so that
        remove_all() sets them back even after that run was killed."""
        self._originals.keep_in(path, originals.identity(self.base_ns))

    def remember_sysctl(self, ns: str, name: str) -> None:
        """Record the current value of a sysctl that something aronet starts will
        change (charon sets net.core.xfrm_acq_expires), unless a value from before
        aronet is recorded already; remove_all() sets it back."""
        real = self._real(ns)
        try:
            value = sysctl.read(real, name)
        except OSError as e:
            raise ApplyError("sysctl", name, sysctl.why(e, name, real)) from e
        if value is not None:
            self._originals.record(Sysctl(ns, name, value, "host" if not ns else "netns"),
                                   value)

    def remove_sas(self, if_ids: Iterable[int] = ()) -> tuple[int, int]:
        """Delete the XFRM states and policies in the agent's namespace (where charon
        installs them) that carry one of if_ids or the if_id of one of this agent's
        tunnel interfaces there now: what a charon that was killed left behind. Those
        of any other if_id stay (another agent's, or anyone else's). Returns how many
        states and policies went. For when no charon of this agent runs, or one that
        has not loaded its connections yet."""
        owned = set(if_ids) | self.tunnel_if_ids()
        owned.discard(0)
        self.calls["remove sas"] += 1
        return iproute2.delete_xfrm(self._real(""), owned)

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
            ipr.link("set", index=rtnl.index(ipr, name, ns), state=state)
        if up:
            self.apply(diff(State(frozenset(addresses)), State()))

    def preflight(self) -> list[str]:
        """One message per kernel feature the configured mode needs and this kernel
        lacks (empty: all there); see netlink.probes."""
        return probes.preflight(self.settings.mode)
