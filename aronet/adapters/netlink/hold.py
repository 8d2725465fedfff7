"""Routes held across a routing daemon's restart.

babeld cannot change its filters at run time, so a registry change that touches them
restarts it, and babeld removes every route it installed when it exits: until the new
instance has heard its neighbours again (seconds), traffic between nodes that the
change does not concern would have no route. So before such a restart the agent
copies babeld's installed routes in the overlay table (protocol RTPROT_BABEL) as held
routes: the same destination, next hop and device, protocol RTPROT_HOLD and metric
HOLD_METRIC, higher than any babeld installs. babeld deletes only routes of its own
protocol, so the copies stay while it is down and carry the traffic; once the new
babeld has installed its route for a destination again, its lower metric wins, and
release() removes the copy.

Held routes are never part of the desired state (observe() reads protocol
RTPROT_ARONET only), so a drift check neither sees nor undoes them. Each has the
device of a tunnel, so the kernel removes it together with its tunnel; remove_all()
(and the agent's start after a crash) removes what is left.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterator

from pyroute2 import IPRoute

from ...core import names
from . import rtnl

RTN_UNICAST = 1
HOLD_METRIC = 0xFFFF_0000  # babeld installs with metric 0 (the kernel's 1024 for IPv6)


def _dst(msg) -> str:
    return f"{msg.get_attr('RTA_DST') or '::'}/{msg['dst_len']}"


def _routes(ipr: IPRoute, table: int, proto: int) -> Iterator:
    for msg in ipr.route("dump", family=socket.AF_INET6, table=table, proto=proto):
        # checked again: kernels without dump filtering send every route
        if msg["proto"] == proto and (msg.get_attr("RTA_TABLE") or msg["table"]) == table:
            yield msg


def hold(ipr: IPRoute, table: int, keep: Callable[[str], bool]) -> int:
    """Copy babeld's unicast routes in table whose destination keep() accepts as held
    routes (the destinations the new babeld may import again). Returns how many."""
    count = 0
    for msg in list(_routes(ipr, table, names.RTPROT_BABEL)):
        oif, gateway = msg.get_attr("RTA_OIF"), msg.get_attr("RTA_GATEWAY")
        if msg["type"] != RTN_UNICAST or not oif or not keep(_dst(msg)):
            continue
        spec = dict(dst=_dst(msg), family=socket.AF_INET6, table=table, oif=oif,
                    proto=names.RTPROT_HOLD, priority=HOLD_METRIC)
        if gateway:
            spec["gateway"] = gateway
        with rtnl.unless(errno.EEXIST):  # held already (a restart during a restart)
            ipr.route("add", **spec)
        count += 1
    return count


def release(ipr: IPRoute, table: int, every: bool = False) -> int:
    """Remove the held routes whose destination babeld has a route for again (all of
    them with every). Returns how many held routes remain."""
    learned = {_dst(m) for m in _routes(ipr, table, names.RTPROT_BABEL)}
    left = 0
    for msg in list(_routes(ipr, table, names.RTPROT_HOLD)):
        if every or _dst(msg) in learned:
            with rtnl.unless(*rtnl.GONE):
                ipr.route("del", dst=_dst(msg), family=socket.AF_INET6, table=table,
                          proto=names.RTPROT_HOLD, priority=HOLD_METRIC,
                          oif=msg.get_attr("RTA_OIF"))
        else:
            left += 1
    return left
