"""The tunnel interfaces' traffic counters (IFLA_STATS64), for the agent's metrics.

An XFRM interface's counters belong to the interface, not to an SA, so they keep
counting across rekeys (a new CHILD_SA every hour or so) and only start again when
the interface is re-created. Read-only: one link dump of one namespace.
"""

from __future__ import annotations

from ...core.observed import Counters
from .rtnl import Sockets, failing_as, kind


def tunnel_counters(ns: str, prefix: str, base_ns: str = "") -> dict[str, Counters]:
    """{interface: Counters} for the XFRM interfaces named prefix... in ns ("" the
    agent's own namespace, or base_ns); {} when the namespace is gone."""
    with Sockets(base_ns) as socks, failing_as("netlink", "tunnel counters"):
        ipr = socks.maybe(ns)
        if ipr is None:
            return {}
        out = {}
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if kind(link) != "xfrm" or not name.startswith(prefix):
                continue
            st = link.get_attr("IFLA_STATS64")
            out[name] = Counters() if st is None else Counters(
                rx_bytes=st["rx_bytes"], tx_bytes=st["tx_bytes"],
                rx_packets=st["rx_packets"], tx_packets=st["tx_packets"])
        return out
