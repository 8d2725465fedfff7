"""config.json: one node's identity, networks, endpoints and settings, checked and
built into a Config."""

from __future__ import annotations

import ipaddress
import json
import os

from .. import keys
from ..errors import InputError, Problem
from ..model import DEFAULT_ACCEPT, DEFAULT_ROUTING, Config, Node, Settings
from .files import CONFIG_LIMIT, read_json
from .metrics import metrics_settings
from .policy import registry_policy
from .schemas import schema_problems
from .values import (
    Collector,
    endpoints_of,
    network_of,
    one_line,
    parse_interface,
    parse_range,
    prefixes_of,
)


def load_config(path: str) -> Config:
    data = read_json(path, CONFIG_LIMIT)
    try:  # a key inline in a file others can read is refused, as a key file is
        keys.check_inline_config(path, data)
    except keys.KeyProblem as e:
        raise InputError(Problem(path, "$.private_key", one_line(str(e)))) from None
    return build_config(data, path, base_dir=os.path.dirname(os.path.abspath(path)))


def build_config(data, file: str, base_dir: str = ".") -> Config:
    out = Collector(file)
    out.problems += schema_problems("config", data, file)
    if not isinstance(data, dict):
        raise InputError(out.problems)
    daemon = data.get("daemon") if isinstance(data.get("daemon"), dict) else {}

    network = network_of(daemon.get("network"), ["daemon", "network"], out)
    prefixes = prefixes_of(daemon.get("prefixs", []), ["daemon", "prefixs"], out)
    endpoints = endpoints_of(data.get("endpoints", []), ["endpoints"], out)
    # extra_ip is checked against the node's networks only when all of them parsed;
    # otherwise "not inside" would just echo the problem already reported there.
    raw_prefixes = daemon.get("prefixs", [])
    owned_known = (network is not None and isinstance(raw_prefixes, list)
                   and len(prefixes) == len(raw_prefixes))

    mode = daemon.get("mode")
    use_netns = daemon.get("use_netns")
    if isinstance(use_netns, bool):
        implied = "netns" if use_netns else "vrf"
        if mode in ("vrf", "netns") and mode != implied:
            out.add(["daemon", "mode"], f"{mode!r} contradicts use_netns={json.dumps(use_netns)}; "
                    "drop use_netns (the old spelling) or make them agree")
        mode = mode or implied
    mode = mode if mode in ("vrf", "netns") else "vrf"
    if daemon.get("routing") == "babeld" and mode == "vrf":
        out.add(["daemon", "routing"], '"babeld" needs daemon.mode "netns": babeld 1.12 hears no '
                "babel packet on interfaces inside a VRF (checked on Linux 6.1); use \"bird\" in "
                "VRF mode")

    babel = daemon.get("babel") if isinstance(daemon.get("babel"), dict) else {}
    routing = daemon.get("routing", DEFAULT_ROUTING[mode])
    if babel.get("prefix_origin") is True and routing != "babeld":
        out.add(["daemon", "babel", "prefix_origin"], f"needs daemon.routing \"babeld\" (here "
                f"{routing!r}): BIRD 2.0.12 and 2.17 have no filter attribute for the router id "
                "that originated a route")

    extra = []
    raw_extra = daemon.get("extra_ip")
    for i, text in enumerate(raw_extra if isinstance(raw_extra, list) else []):
        if not isinstance(text, str):
            continue
        iface, err = parse_interface(text)
        if err:
            out.add(["daemon", "extra_ip", i], err)
            continue
        owned = [p for p in prefixes if p.version == iface.version]
        if network is not None and iface.version == 6:
            owned.append(network.network)
        if owned_known and not any(iface.ip in p for p in owned):
            out.add(["daemon", "extra_ip", i], f"{iface.ip} is not inside daemon.network or any of "
                    "daemon.prefixs, so no other node would route it here")
            continue
        if iface.network.prefixlen == iface.max_prefixlen and "/" not in text:
            iface = ipaddress.ip_interface(f"{iface.ip}/{iface.max_prefixlen}")
        extra.append(iface)

    key_pem = public = None
    if isinstance(data.get("private_key"), str) and data["private_key"]:
        try:
            key_pem = keys.read_private(data["private_key"], base_dir)
            public = keys.public_pem(keys.parse_private(key_pem))
        except keys.KeyProblem as e:
            out.add(["private_key"], str(e))

    accept = _accept_prefixes(daemon.get("accept_prefixes"), out)
    policy = registry_policy(data.get("registry"), out, base_dir)
    owned = (*prefixes, *(i.network for i in extra), *((network.network,) if network else ()))
    metrics = metrics_settings(data.get("metrics"), out, base_dir, owned)

    ike = daemon.get("ike") if isinstance(daemon.get("ike"), dict) else {}
    if out.problems:
        raise InputError(out.problems)

    defaults = Settings()
    settings = Settings(
        mode=mode,
        routing=routing,
        ifname=daemon.get("ifname", defaults.ifname),
        tunnel_prefix=daemon.get("tunnel_prefix", defaults.tunnel_prefix),
        route_table=daemon.get("route_table", defaults.route_table),
        mtu=daemon.get("mtu", defaults.mtu),
        babel_hello=float(babel.get("hello_interval", defaults.babel_hello)),
        babel_update=float(babel.get("update_interval", defaults.babel_update)),
        prefix_origin=babel.get("prefix_origin", defaults.prefix_origin),
        dpd_delay=ike.get("dpd_delay", defaults.dpd_delay),
        extra_ip=tuple(extra),
        accept_prefixes=DEFAULT_ACCEPT if accept is None else accept,
    )
    node = Node(
        organization=data["organization"],
        common_name=data["common_name"],
        public_key=public,
        network=network,
        prefixes=prefixes,
        endpoints=endpoints,
    )
    return Config(file=file, node=node, settings=settings, private_key_pem=key_pem, registry=policy,
                  metrics=metrics)


def _accept_prefixes(raw, out: Collector) -> tuple | None:
    """daemon.accept_prefixes: any IP prefixes (None: left out, the default)."""
    if not isinstance(raw, list):
        return None
    result = []
    for i, text in enumerate(raw):
        if isinstance(text, str):
            net, err = parse_range(text)
            if err:
                out.add(["daemon", "accept_prefixes", i], err)
            else:
                result.append(net)
    return tuple(result)
