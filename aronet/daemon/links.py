"""Charon's events and the tunnel links that follow them.

Each tunnel's XFRM interface is up exactly while its connection has an installed
CHILD_SA, so babel withdraws its routes at once when a tunnel goes. An ike-updown or
child-updown event only says that something changed: events come from charon's
threads in any order (a replaced IKE_SA's "down" can follow its successor's "up"),
and two link changes in two threads can land in either order. So one worker at a
time asks charon what is installed now and sets the links that differ.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..adapters.netlink import Netlink
from ..adapters.vici import Vici
from ..core.planner import Desired
from ..core.state import Address, XfrmInterface
from ..errors import AronetError

log = logging.getLogger("aronet")


def link_changes(interfaces: list[XfrmInterface], installed: set[str],
                 links: dict[str, bool]) -> list[tuple[XfrmInterface, bool]]:
    """The tunnel interfaces whose administrative state (links: name -> up) differs
    from whether their connection (of the same name) has an installed CHILD_SA, with
    the state each must take. An interface the kernel does not have is left to the
    kernel sync."""
    return [(x, x.name in installed) for x in sorted(interfaces, key=lambda x: x.name)
            if x.name in links and links[x.name] != (x.name in installed)]


class LinkFollower:
    """Runs on the agent's event loop; the matching itself runs in a thread."""

    def __init__(self, netlink: Netlink, vici: Vici, router_ns: str,
                 desired: Callable[[], Desired | None], charon_ready: Callable[[], bool],
                 on_charon: Callable[[str, dict], None] = lambda _label, _msg: None,
                 on_link: Callable[[str, bool], None] = lambda _name, _up: None):
        """on_charon(label, msg): every event, as it came; on_link(name, up): every
        link set (from the worker's thread): for the event stream (telemetry.py)."""
        self.netlink, self.vici, self.router_ns = netlink, vici, router_ns
        self.desired, self.charon_ready = desired, charon_ready
        self.on_charon, self.on_link = on_charon, on_link
        self.pending: set[str] = set()  # interfaces to match to charon's CHILD_SAs
        self.wakeup = asyncio.Event()

    def follow(self, names: set[str]) -> None:
        """On the event loop: have the worker match these tunnel interfaces to charon."""
        if names and self.charon_ready():
            self.pending |= names
            self.wakeup.set()

    def follow_all(self) -> None:
        """A lost or late event, repaired: every tunnel is matched again."""
        d = self.desired()
        self.follow({x.name for x in d.state.of(XfrmInterface)} if d else set())

    def on_event(self, label: str, msg: dict) -> None:
        """An ike-updown or child-updown event from charon (on the event loop)."""
        up = msg.get("up") == "yes"
        self.on_charon(label, msg)
        for name, sa in msg.items():
            if name == "up" or not isinstance(sa, dict):
                continue
            if label == "ike-updown":
                log.info("IKE_SA %s %s (%s)", name, "up" if up else "down", sa.get("remote-host"))
                continue
            xfrm = self.interface(name)
            if xfrm is None:
                log.warning("child-updown for unknown connection %s: ignored", name)
                continue
            for child in (sa.get("child-sas") or {}).values():
                if_id = child.get("if-id-in")
                if if_id and int(if_id, 16) != xfrm.if_id:
                    log.warning("CHILD_SA of %s has if_id %s, expected %#x", name, if_id, xfrm.if_id)
            log.info("CHILD_SA %s %s", name, "up" if up else "down")
            self.follow({xfrm.name})

    def interface(self, name: str) -> XfrmInterface | None:
        d = self.desired()
        if d is None:
            return None
        return next((x for x in d.state.of(XfrmInterface) if x.name == name), None)

    async def worker(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            names, self.pending = self.pending, set()
            try:
                await asyncio.to_thread(self.match, names, self.desired())
            except AronetError as e:
                log.error("%s", e)
            except Exception:  # a bug here must not stop the links from following charon
                log.exception("matching tunnel links to charon failed; the next re-check "
                              "tries again")

    def match(self, names: set[str], d: Desired | None) -> None:
        """(blocking) Each named tunnel interface up exactly when its connection has an
        installed CHILD_SA; only the links in the wrong state are touched."""
        if d is None:
            return
        changes = link_changes([x for x in d.state.of(XfrmInterface) if x.name in names],
                               self.vici.installed(), self.netlink.link_states(self.router_ns))
        for xfrm, up in changes:
            log.info("interface %s %s (%s)", xfrm.name, "up" if up else "down",
                     "CHILD_SA installed" if up else "no CHILD_SA installed")
            addresses = [a for a in d.state.of(Address) if (a.ns, a.dev) == (xfrm.ns, xfrm.name)]
            self.netlink.set_link(xfrm.ns, xfrm.name, up, addresses)
            self.on_link(xfrm.name, up)
