"""Read and check config.json and registry.json; build the model.

Every check runs and every problem is collected before anything is reported, each
with the file, the JSON path and the reason (aronet.errors.Problem). Checks come in
three passes: JSON syntax (line and column), the JSON Schemas shipped in
aronet/schemas, then the semantic rules below, which look only at values whose
type the schema accepted. Nothing here touches the system except reading files.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Iterable
from functools import cache
from importlib import resources
from ipaddress import IPv6Interface

import jsonschema
import referencing

from . import keys
from .errors import InputError, Problem, json_path
from .model import DEFAULT_ROUTING, FAMILIES, Config, Endpoint, Node, Registry, Settings, reserved_range

HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)

# Friendlier words for schema rules a user is likely to break.
_PATTERN_HINTS = {
    "name": "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "ifname": "must be 1 to 10 letters, digits, '_' or '-', starting with a letter "
    "(names derived from it must fit Linux's 15 bytes)",
    "tunnel_prefix": "must be 1 to 7 letters, digits, '_' or '-', starting with a letter "
    "(8 hex digits of the if_id follow it, within Linux's 15 bytes)",
}


# ---------------------------------------------------------------- JSON and schema


def read_text(path: str) -> str:
    """A whole input file; an unreadable one is an InputError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise InputError(Problem(path, "$", f"cannot read: {e.strerror}")) from None
    except UnicodeDecodeError as e:
        raise InputError(Problem(path, "$", f"not UTF-8 text ({e.reason})")) from None


def read_json(path: str):
    return parse_json(read_text(path), path)


def parse_json(text: str, file: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(Problem(file, f"line {e.lineno}, column {e.colno}",
                                 f"invalid JSON: {e.msg}{_json_hint(e)}")) from None
    except ValueError:  # an integer literal longer than Python's int() accepts
        m = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1},}}", text)
        pos = m.start() if m else 0
        line, col = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        digits = len(m.group()) if m else 0
        message = f"invalid JSON: a number of {digits} digits is too long"
        raise InputError(Problem(file, f"line {line}, column {col}", message)) from None
    except RecursionError:
        raise InputError(Problem(file, "$", "invalid JSON: nested too deeply")) from None


def _json_hint(e: json.JSONDecodeError) -> str:
    rest = e.doc[e.pos :].lstrip()
    if rest.startswith(("#", "//")):
        return " (comments are not allowed in JSON)"
    before = e.doc[: e.pos].rstrip()
    if before.endswith(",") and rest[:1] in ("}", "]"):
        return " (a trailing comma is not allowed in JSON)"
    return ""


@cache
def _validators() -> dict[str, jsonschema.protocols.Validator]:
    schemas = {}
    for name in ("config", "registry"):
        text = resources.files("aronet").joinpath(f"schemas/{name}.schema.json").read_text()
        schemas[name] = json.loads(text)
    store = referencing.Registry().with_resources(
        (s["$id"], referencing.Resource.from_contents(s)) for s in schemas.values()
    )
    # JSON Schema counts 12025.0 as an integer and NaN as a number; the model does not.
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
        "integer": lambda _, x: isinstance(x, int) and not isinstance(x, bool),
        "number": lambda _, x: (isinstance(x, int) and not isinstance(x, bool))
        or (isinstance(x, float) and math.isfinite(x)),
    })
    validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)
    return {name: validator(schema, registry=store) for name, schema in schemas.items()}


def schema_problems(kind: str, data, file: str) -> list[Problem]:
    out = []
    for err in _validators()[kind].iter_errors(data):
        out.append(Problem(file, json_path(err.absolute_path), _schema_message(err)))
    return out


def _schema_message(err: jsonschema.ValidationError) -> str:
    where = list(err.absolute_path)
    last = where[-1] if where else None
    if err.validator == "pattern":
        key = "name" if last in ("organization", "common_name") else last
        if key in _PATTERN_HINTS:
            return f"{err.instance!r} {_PATTERN_HINTS[key]}"
    if err.validator == "not" and last == "route_table":
        return f"{err.instance} is reserved by Linux (253 default, 254 main, 255 local)"
    if err.validator == "enum":
        choices = ", ".join(json.dumps(c) for c in err.validator_value)
        return f"{json.dumps(err.instance)} is not one of {choices}"
    if (err.validator == "type" and isinstance(err.instance, bool)
            and err.validator_value == "integer"):
        return f"{err.instance!r} is not of type 'integer'"
    return err.message


# ---------------------------------------------------------------- value parsing

# Each parser returns (value, None) or (None, message).


def _ip_interface(text: str):
    """ipaddress.ip_interface without IPv6 zone ids ("fe80::1%eth0"): an overlay
    network, a prefix or an endpoint is never scoped to one of this host's links."""
    if "%" in text:
        raise ValueError(text)
    return ipaddress.ip_interface(text)


def parse_network(text: str):
    try:
        iface = _ip_interface(text)
    except ValueError:
        return None, f"{text!r} is not an IPv6 network (like fd66::1/64)"
    if iface.version != 6:
        return None, f"{text!r} is IPv{iface.version}; the overlay network must be IPv6"
    if "/" not in text:
        return None, f"{text!r} has no prefix length; write it like fd66::1/64"
    if iface.network.prefixlen > 64:
        return None, (f"{text!r} has prefix length /{iface.network.prefixlen}; "
                      "it must be /64 or shorter")
    node_addr = iface.ip if iface.ip != iface.network.network_address else None
    if node_addr is not None and node_addr in reserved_range(iface.network):
        return None, (
            f"the node address {node_addr} lies in the reserved range "
            f"{reserved_range(iface.network)} (used for SRv6 SIDs)"
        )
    return iface, None


def parse_prefix(text: str):
    try:
        return _ip_interface(text).network, None
    except ValueError:
        return None, f"{text!r} is not an IP prefix (like 192.168.128.0/24 or 2001:db8::/48)"


def _parse_interface(text: str):
    try:
        return _ip_interface(text), None
    except ValueError:
        return None, f"{text!r} is not an IP address (like 192.168.128.1 or 192.168.128.1/24)"


class _Collector:
    """Problems for one file, with the path prefix of the place being checked."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def add(self, path: Iterable, message: str) -> None:
        self.problems.append(Problem(self.file, json_path(path), message))


def _endpoints(raw, path: list, out: _Collector) -> tuple[Endpoint, ...]:
    """Endpoints of one node. Rules: the family matches the address; a hostname or
    null address names its family; one port on all endpoints (one charon, one NAT-T
    port); serial numbers unique per family (strongSwan takes two SAs with the same
    identities for duplicates). serial_number defaults to the endpoint's index."""
    if not isinstance(raw, list):
        return ()
    result = []
    ports: dict[int, int] = {}
    serials: dict[tuple[str, int], int] = {}
    for i, ep in enumerate(raw):
        if not isinstance(ep, dict):
            continue
        p = [*path, i]
        family = _endpoint_family(ep, p, out)
        port = ep.get("port")
        if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
            if ports and port not in ports:
                first = next(iter(ports))
                out.add([*p, "port"], f"port {port} differs from port {first} of endpoint "
                        f"[{ports[first]}]; a node uses one port on all its endpoints")
            ports.setdefault(port, i)
        else:
            port = None
        sn = ep.get("serial_number", i)
        if not isinstance(sn, int) or isinstance(sn, bool) or sn < 0:
            continue
        if family is None:
            continue
        if (family, sn) in serials:
            out.add([*p, "serial_number"], f"serial_number {sn} is already used by {family} "
                    f"endpoint [{serials[family, sn]}]; give each endpoint of a family its own")
        serials.setdefault((family, sn), i)
        if port is not None:
            result.append(Endpoint(family=family, serial_number=sn, address=ep["address"],
                                   port=port))
    return tuple(result)


def _endpoint_family(ep: dict, p: list, out: _Collector) -> str | None:
    """The endpoint's address family, or None (and a problem, unless the schema
    already reported one)."""
    address, fam = ep.get("address"), ep.get("address_family")
    if fam not in (None, *FAMILIES):
        return None
    if isinstance(address, str):
        try:
            if "%" in address:  # a zone id ("fe80::1%eth0") means nothing to other nodes
                raise ValueError(address)
            ip = ipaddress.ip_address(address)
        except ValueError:
            if not HOSTNAME.match(address):
                out.add([*p, "address"], f"{address!r} is neither an IP address nor a hostname")
                return None
            if fam is None:
                out.add([*p, "address_family"],
                        f"hostname {address!r} needs an explicit address_family "
                        '("ip4" or "ip6")')
            return fam
        family = f"ip{ip.version}"
        if fam is not None and fam != family:
            out.add([*p, "address_family"],
                    f"{fam!r} does not match the address {address} (which is {family})")
            return None
        return family
    if address is None and "address" in ep:
        if fam is None:
            out.add([*p, "address_family"],
                    'a null address needs an explicit address_family ("ip4" or "ip6")')
        return fam
    return None


def _prefixes(raw, path: list, out: _Collector) -> tuple:
    result = []
    if isinstance(raw, list):
        for i, text in enumerate(raw):
            if isinstance(text, str):
                net, err = parse_prefix(text)
                if err:
                    out.add([*path, i], err)
                else:
                    result.append(net)
    return tuple(result)


def _network(raw, path: list, out: _Collector) -> IPv6Interface | None:
    if not isinstance(raw, str):
        return None
    net, err = parse_network(raw)
    if err:
        out.add(path, err)
    return net


# ---------------------------------------------------------------- overlaps


def overlap_problems(owned: list[tuple[object, str, str, list]]) -> list[Problem]:
    """owned: (network, owner, file, path). Reports every network that overlaps one
    owned by another node. Sort-and-sweep, so thousands of nodes stay fast."""
    problems = []
    for version in (4, 6):
        items = sorted(
            (o for o in owned if o[0].version == version),
            key=lambda o: (o[0].network_address, -o[0].prefixlen),
        )
        cover = None  # the item whose range reaches furthest so far
        for item in items:
            net, owner = item[0], item[1]
            if cover is not None and net.network_address <= cover[0].broadcast_address:
                if cover[1] != owner:
                    problems.append(Problem(
                        item[2], json_path(item[3]),
                        f"{net} overlaps {cover[0]} of node {cover[1]} "
                        f"({cover[2]} {json_path(cover[3])})",
                    ))
                if net.broadcast_address <= cover[0].broadcast_address:
                    continue
            cover = item
    return problems


def _node_owned(node: Node, file: str, net_path: list, pfx_path: list) -> list:
    owned = [(node.network.network, node.name, file, net_path)]
    owned += [(p, node.name, file, [*pfx_path, i]) for i, p in enumerate(node.prefixes)]
    return owned


# ---------------------------------------------------------------- config


def load_config(path: str) -> Config:
    data = read_json(path)
    return build_config(data, path, base_dir=os.path.dirname(os.path.abspath(path)))


def build_config(data, file: str, base_dir: str = ".") -> Config:
    out = _Collector(file)
    out.problems += schema_problems("config", data, file)
    if not isinstance(data, dict):
        raise InputError(out.problems)
    daemon = data.get("daemon") if isinstance(data.get("daemon"), dict) else {}

    network = _network(daemon.get("network"), ["daemon", "network"], out)
    prefixes = _prefixes(daemon.get("prefixs", []), ["daemon", "prefixs"], out)
    endpoints = _endpoints(data.get("endpoints", []), ["endpoints"], out)
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

    extra = []
    raw_extra = daemon.get("extra_ip")
    for i, text in enumerate(raw_extra if isinstance(raw_extra, list) else []):
        if not isinstance(text, str):
            continue
        iface, err = _parse_interface(text)
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

    babel = daemon.get("babel") if isinstance(daemon.get("babel"), dict) else {}
    ike = daemon.get("ike") if isinstance(daemon.get("ike"), dict) else {}
    if out.problems:
        raise InputError(out.problems)

    defaults = Settings()
    settings = Settings(
        mode=mode,
        routing=daemon.get("routing", DEFAULT_ROUTING[mode]),
        ifname=daemon.get("ifname", defaults.ifname),
        tunnel_prefix=daemon.get("tunnel_prefix", defaults.tunnel_prefix),
        route_table=daemon.get("route_table", defaults.route_table),
        mtu=daemon.get("mtu", defaults.mtu),
        babel_hello=float(babel.get("hello_interval", defaults.babel_hello)),
        babel_update=float(babel.get("update_interval", defaults.babel_update)),
        dpd_delay=ike.get("dpd_delay", defaults.dpd_delay),
        extra_ip=tuple(extra),
    )
    node = Node(
        organization=data["organization"],
        common_name=data["common_name"],
        public_key=public,
        network=network,
        prefixes=prefixes,
        endpoints=endpoints,
    )
    return Config(file=file, node=node, settings=settings, private_key_pem=key_pem)


# ---------------------------------------------------------------- registry


def load_registry(path: str) -> Registry:
    return build_registry(read_json(path), path)


def build_registry(data, file: str) -> Registry:
    out = _Collector(file)
    out.problems += schema_problems("registry", data, file)
    if not isinstance(data, list):
        raise InputError(out.problems)

    nodes: list[Node] = []
    paths: dict[tuple[str, str], tuple] = {}
    owned: list = []
    orgs: dict[str, int] = {}
    org_keys: dict[str, str] = {}
    for i, org in enumerate(data):
        if not isinstance(org, dict):
            continue
        name = org.get("organization")
        if isinstance(name, str):
            if name in orgs:
                out.add([i, "organization"], f"organization {name!r} is already listed at "
                        f"{json_path([orgs[name]])}; list each organization once, with one key")
            orgs.setdefault(name, i)
        pub = org.get("public_key")
        if isinstance(pub, str):
            try:
                keys.parse_public(pub)
            except keys.KeyProblem as e:
                out.add([i, "public_key"], str(e))
                pub = None
            else:
                if isinstance(name, str):
                    org_keys.setdefault(name, pub)
        seen: dict[str, int] = {}
        for j, raw in enumerate(org.get("nodes") if isinstance(org.get("nodes"), list) else []):
            if not isinstance(raw, dict):
                continue
            p = [i, "nodes", j]
            cn = raw.get("common_name")
            if isinstance(cn, str):
                if cn in seen:
                    out.add([*p, "common_name"], f"node name {cn!r} is already used in "
                            f"organization {name!r} at {json_path([i, 'nodes', seen[cn]])}")
                    continue
                seen[cn] = j
            remarks = raw.get("remarks") if isinstance(raw.get("remarks"), dict) else {}
            network = _network(remarks.get("network"), [*p, "remarks", "network"], out)
            prefixes = _prefixes(remarks.get("prefixs", []), [*p, "remarks", "prefixs"], out)
            endpoints = _endpoints(raw.get("endpoints"), [*p, "endpoints"], out)
            if not (isinstance(name, str) and isinstance(cn, str) and network and pub):
                continue
            node = Node(name, cn, pub, network, prefixes, endpoints)
            nodes.append(node)
            paths[node.key] = tuple(p)
            owned += _node_owned(node, file, [*p, "remarks", "network"], [*p, "remarks", "prefixs"])
    out.problems += overlap_problems(owned)
    if out.problems:
        raise InputError(out.problems)
    return Registry(file=file, nodes=tuple(sorted(nodes, key=lambda n: n.key)), org_keys=org_keys,
                    paths=paths)


# ---------------------------------------------------------------- both together


def cross_problems(config: Config, registry: Registry) -> list[Problem]:
    """Rules that need both files: this node's organization key matches the
    registry's; if the registry lists this node, it lists the same network and
    prefixes; and this node's networks overlap no other node's."""
    out = _Collector(config.file)
    node = config.node
    reg_key = registry.org_keys.get(node.organization)
    if reg_key is not None and not keys.same_public(reg_key, node.public_key):
        out.add(["private_key"], f"its public key does not match the key {registry.file} lists for "
                f"organization {node.organization!r}")
    listed = registry.get(node.key)
    if listed is not None:
        if listed.network != node.network:
            out.add(["daemon", "network"], f"{node.network} differs from {listed.network}, which "
                    f"{registry.file} lists for {node.name}")
        if sorted(map(str, listed.prefixes)) != sorted(map(str, node.prefixes)):
            out.add(["daemon", "prefixs"], f"{[str(p) for p in node.prefixes]} differs from "
                    f"{[str(p) for p in listed.prefixes]}, which {registry.file} lists for "
                    f"{node.name}")
    # Compare each of this node's few networks with every other node's, both ways: a
    # sweep reports only the later of two overlapping networks, which may be the
    # registry's, and that problem belongs to this file.
    mine = _node_owned(node, config.file, ["daemon", "network"], ["daemon", "prefixs"])
    for other in registry.nodes:
        if other.key != node.key:
            at = registry.paths.get(other.key, ())
            for net, owner, _, path in _node_owned(other, registry.file,
                                                   [*at, "remarks", "network"],
                                                   [*at, "remarks", "prefixs"]):
                for own, _, _, own_path in mine:
                    if own.version == net.version and own.overlaps(net):
                        out.add(own_path, f"{own} overlaps {net} of node {owner} "
                                f"({registry.file} {json_path(path)})")
    return out.problems


def load_both(config_path: str, registry_path: str) -> tuple[Config, Registry]:
    """Load and check both files; report the problems of both at once."""
    problems: list[Problem] = []
    config = registry = None
    try:
        config = load_config(config_path)
    except InputError as e:
        problems += e.problems
    try:
        registry = load_registry(registry_path)
    except InputError as e:
        problems += e.problems
    if config is not None and registry is not None:
        problems += cross_problems(config, registry)
    if problems:
        raise InputError(problems)
    return config, registry
