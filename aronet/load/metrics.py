"""config.json's `metrics` block, checked and built into a model.MetricsSettings.

The listener must stay out of the overlay (README, Observability): it binds one IP
address of the agent's own namespace, so a wildcard (0.0.0.0, ::) is refused, and
so is any address the node owns in the overlay (its network, prefixes and extra_ip:
those live on the VRF or in the router namespace) and a link-local address (it
would need a zone). The textfile is a path (relative to the config file) ending in
.prom, the only files node_exporter's textfile collector reads.
"""

from __future__ import annotations

import ipaddress
import os

from ..model import METRICS_INTERVAL, MetricsSettings, Prefix
from .values import Collector


def metrics_settings(raw, out: Collector, base_dir: str, owned: tuple[Prefix, ...] = ()) -> \
        MetricsSettings | None:
    """owned: the node's network, prefixes and extra_ip, as far as they parsed."""
    if not isinstance(raw, dict):  # absent, or the schema reported it
        return None
    if "listen" not in raw and "textfile" not in raw:
        out.add(["metrics"], "needs \"listen\" (ADDRESS:PORT to serve /metrics on), \"textfile\" "
                "(a .prom file for node_exporter) or both")
    listen = None
    if isinstance(raw.get("listen"), str):
        listen = _listen(raw["listen"], out, owned)
    textfile = raw.get("textfile")
    if isinstance(textfile, str):
        textfile = os.path.abspath(os.path.join(base_dir, textfile))
        if not textfile.endswith(".prom"):
            out.add(["metrics", "textfile"], f"{raw['textfile']!r} does not end in .prom: "
                    "node_exporter's textfile collector reads only *.prom files")
    return MetricsSettings(listen=listen, textfile=textfile if isinstance(textfile, str) else None,
                           detail=raw.get("detail", "peer"),
                           interval=float(raw.get("interval", METRICS_INTERVAL)))


def parse_listen(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | str:
    """"127.0.0.1:9474" or "[::1]:9474" -> (address, port); a message when it is neither."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{text!r} is not ADDRESS:PORT (like 127.0.0.1:9474 or [::1]:9474) with a port 1-65535"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return f"{text!r}: write an IPv6 address in brackets, like [::1]:9474"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return f"{host!r} is not an IP address: the listener binds one address (a name could " \
               "resolve to several, or change)"
    return addr, int(port)


def _listen(text: str, out: Collector, owned: tuple[Prefix, ...]) -> tuple[str, int] | None:
    at = ["metrics", "listen"]
    parsed = parse_listen(text)
    if isinstance(parsed, str):
        out.add(at, parsed)
        return None
    addr, port = parsed
    if addr.is_unspecified:
        out.add(at, f"{addr} is a wildcard: it would answer on every address, the overlay's too "
                "(VRF mode lets host sockets answer through the VRF); give one address, like "
                "127.0.0.1")
    elif addr.is_link_local or addr.is_multicast:
        out.add(at, f"{addr} is a {'link-local' if addr.is_link_local else 'multicast'} address; "
                "give a loopback or host address")
    elif any(addr.version == p.version and addr in p for p in owned):
        out.add(at, f"{addr} is one of this node's overlay addresses: the listener must not be "
                "reachable from inside the overlay; give a loopback or underlay address")
    else:
        return str(addr), port
    return None
