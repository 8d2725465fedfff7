"""Property tests: whatever is done to a valid config or registry document, aronet.load
either builds the model or raises InputError, never anything else; what it builds
keeps the model's promises; and the overlap check finds every overlap."""

from __future__ import annotations

import atexit
import contextlib
import copy
import ipaddress
import json
import shutil
import tempfile

from builders import build_world, key_pair, make_node, make_org, make_registry, world_documents
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aronet import keys
from aronet.errors import InputError, Problem
from aronet.load import build_config, build_registry, cross_problems, parse_json
from aronet.model import Config, Registry

# hypothesis and function-scoped fixtures do not mix: one world for the module.
_ROOT = tempfile.mkdtemp(prefix="aronet-properties-")
atexit.register(shutil.rmtree, _ROOT, True)
WORLD = build_world(_ROOT)
INLINE_CONFIGS, _ = world_documents(WORLD.keys, inline=True)

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- strategies

SURROGATE_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)

ADDRESS_LIKE = st.one_of(
    st.ip_addresses().map(str),
    st.builds(lambda a, n: f"{a}/{n}", st.ip_addresses(), st.integers(-1, 140)),
    st.builds(lambda a, z: f"{a}%{z}", st.ip_addresses(v=6), st.text(max_size=4)),
    st.builds(lambda a, s: f"{a}{s}", st.ip_addresses(),
              st.sampled_from(["/", "/64/64", " ", "\n", "/0x40", "/+8", "/٦٤", "::", ".1"])),
    st.sampled_from([
        "fd66::ffff:0:0:1/64", "fd66::/64", "::/0", "0.0.0.0/0", "fd66::1/65", "10.0.0.1/8",
        "::ffff:1.2.3.4/96", "1.2.3.4/255.255.0.0", "1.2.3.4/0.0.255.255", "999.1.1.1",
        "moon.example.net", "-bad-.host", "a" * 300, "", " ", "-----BEGIN", "\x00",
        "\ud800", "../keys/example.pem", "/dev/null", "/", ".", "fe80::1%eth0",
    ]),
)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 65535, 65536, 2**32, 2**63, 10**30, -(10**30), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 12025.0, 1e308, -0.0]),
    st.text(max_size=20),
    SURROGATE_TEXT,
    ADDRESS_LIKE,
)

JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
            ["address", "port", "network", "prefixs", "nodes", "common_name", "public_key",
             "address_family", "serial_number", "remarks", "daemon", "mode"])),
            children, max_size=4),
    ),
    max_leaves=12,
)

KEYS_TO_ADD = st.one_of(st.text(max_size=10), st.sampled_from([
    "prefixes", "use_netns", "mode", "extra_ip", "serial_number", "address_family", "babel",
    "ike", "mtu", "route_table", "ifname", "tunnel_prefix", "remarks", "nodes",
]))


# Fields the loader reads, present in the base documents or not: "set-field" puts a
# random value there (creating the parents), which reaches optional fields that a
# random path into the document never would.
CONFIG_FIELDS = [
    ("private_key",), ("organization",), ("common_name",), ("daemon",),
    ("daemon", "network"), ("daemon", "prefixs"), ("daemon", "prefixs", 0),
    ("daemon", "mode"), ("daemon", "use_netns"), ("daemon", "extra_ip"),
    ("daemon", "extra_ip", 0), ("daemon", "ifname"), ("daemon", "tunnel_prefix"),
    ("daemon", "route_table"), ("daemon", "mtu"), ("daemon", "babel"),
    ("daemon", "babel", "hello_interval"), ("daemon", "babel", "update_interval"),
    ("daemon", "ike"), ("daemon", "ike", "dpd_delay"), ("endpoints",),
    ("endpoints", 0), ("endpoints", 0, "address"), ("endpoints", 0, "port"),
    ("endpoints", 0, "address_family"), ("endpoints", 0, "serial_number"),
    ("endpoints", 1, "address"), ("endpoints", 1, "port"), ("endpoints", 1, "serial_number"),
]
REGISTRY_FIELDS = [
    (o, *rest) for o in (0, 1) for rest in [
        (), ("public_key",), ("organization",), ("nodes",), ("nodes", 0), ("nodes", 1),
        *(("nodes", n, *f) for n in (0, 1) for f in [
            ("common_name",), ("endpoints",), ("remarks",), ("remarks", "network"),
            ("remarks", "prefixs"), ("remarks", "prefixs", 0), ("endpoints", 0, "address"),
            ("endpoints", 0, "port"), ("endpoints", 0, "address_family"),
            ("endpoints", 0, "serial_number"), ("endpoints", 1, "port"),
        ]),
    ]
]

FIELD_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from([12025.0, 1.0, 0.5, float("nan"), float("inf"), 128.0, True, "ip4", "ip6",
                     "vrf", "netns", "\x00", "../keys", "../keys/example.pem"]),
)


def _set_field(doc, path, value) -> bool:
    """Set doc[path] = value, making missing dicts on the way; False if the
    document's shape does not allow it (a list index out of range, a scalar)."""
    target = doc
    for p in path[:-1]:
        if isinstance(target, dict) and isinstance(p, str):
            target = target.setdefault(p, {})
        elif isinstance(target, list) and isinstance(p, int) and p < len(target):
            target = target[p]
        else:
            return False
    last = path[-1]
    if isinstance(target, dict) and isinstance(last, str):
        target[last] = value
    elif isinstance(target, list) and isinstance(last, int) and last <= len(target):
        target[last:last + 1] = [value]
    else:
        return False
    return True


def _paths(doc, prefix=()):
    """Every path to a value inside doc (not the root)."""
    if isinstance(doc, dict):
        items = doc.items()
    elif isinstance(doc, list):
        items = enumerate(doc)
    else:
        return []
    out = []
    for k, v in items:
        out.append((*prefix, k))
        out += _paths(v, (*prefix, k))
    return out


def _containers(doc, prefix=()):
    out = [prefix] if isinstance(doc, dict | list) else []
    if isinstance(doc, dict):
        items = doc.items()
    elif isinstance(doc, list):
        items = enumerate(doc)
    else:
        items = ()
    for k, v in items:
        out += _containers(v, (*prefix, k))
    return out


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw, base, fields=()):
    """base with 1 to 4 random mutations."""
    doc = copy.deepcopy(base)
    ops = ["delete", "replace", "replace-text", "add", "swap-type"]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(ops + ["set-field"] * 3 if fields else ops))
        if op == "set-field":
            _set_field(doc, draw(st.sampled_from(fields)), draw(FIELD_VALUES))
            continue
        paths = _paths(doc)
        if op == "add":
            path = draw(st.sampled_from(_containers(doc)))
            target = _get(doc, path)
            if isinstance(target, dict):
                target[draw(KEYS_TO_ADD)] = draw(JSON_VALUES)
            else:
                target.insert(draw(st.integers(0, len(target))), draw(JSON_VALUES))
            continue
        if not paths:
            doc = draw(JSON_VALUES)
            continue
        path = draw(st.sampled_from(paths))
        parent, last = _get(doc, path[:-1]), path[-1]
        if op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(JSON_VALUES)
        elif op == "replace-text":
            parent[last] = draw(ADDRESS_LIKE | st.text(max_size=30) | SURROGATE_TEXT)
        else:  # the same value, wrapped or unwrapped
            value = parent[last]
            parent[last] = draw(st.sampled_from([
                [value], {"value": value}, json.dumps(value), None,
                value[0] if isinstance(value, list) and value else 0,
            ]))
    return doc


def _check_problems(err: InputError, *files: str) -> None:
    assert err.problems, "an InputError names at least one problem"
    for p in err.problems:
        assert isinstance(p, Problem)
        assert p.file in files
        assert p.path.startswith(("$", "line ")), p
        assert isinstance(p.message, str) and p.message
        str(p)  # renders


# ---------------------------------------------------------------- never a traceback


@SETTINGS
@given(data=st.data(), name=st.sampled_from(sorted(WORLD.configs)),
       inline=st.booleans())
def test_mutated_config_raises_only_input_error(data, name, inline):
    base = INLINE_CONFIGS[name] if inline else WORLD.configs[name]
    doc = data.draw(mutated(base, CONFIG_FIELDS))
    try:
        cfg = build_config(doc, "c.json", base_dir=str(WORLD.root / name))
    except InputError as e:
        _check_problems(e, "c.json")
        return
    _check_config_invariants(cfg)
    # nothing the document says is silently dropped
    assert len(cfg.node.endpoints) == len(doc["endpoints"])
    assert len(cfg.node.prefixes) == len(doc["daemon"].get("prefixs", []))
    assert len(cfg.settings.extra_ip) == len(doc["daemon"].get("extra_ip", []))


@SETTINGS
@given(data=st.data())
def test_mutated_registry_raises_only_input_error(data):
    doc = data.draw(mutated(WORLD.registry, REGISTRY_FIELDS))
    try:
        reg = build_registry(doc, "r.json")
    except InputError as e:
        _check_problems(e, "r.json")
        return
    _check_registry_invariants(reg)
    assert len(reg.nodes) == sum(len(org["nodes"]) for org in doc)
    for i, org in enumerate(doc):
        for j, raw in enumerate(org["nodes"]):
            node = reg.get((org["organization"], raw["common_name"]))
            assert reg.paths[node.key] == (i, "nodes", j)
            assert len(node.endpoints) == len(raw["endpoints"])
            assert len(node.prefixes) == len(raw["remarks"].get("prefixs", []))


@SETTINGS
@given(data=st.data(), name=st.sampled_from(sorted(WORLD.configs)))
def test_mutated_pair_cross_problems(data, name):
    """Mutate a config and the registry a little (addresses and prefixes mostly);
    when both build, cross_problems returns problems of the config file only."""
    cdoc = copy.deepcopy(INLINE_CONFIGS[name])
    rdoc = copy.deepcopy(WORLD.registry)
    text = ADDRESS_LIKE | st.sampled_from([
        "192.168.128.0/23", "192.168.0.0/16", "fd66::/16", "fd68::1/64", "2001:db8:131::/64",
        "192.168.131.0/24", "fd69::5/48", "0.0.0.0/0", "::/0",
    ])
    for _ in range(data.draw(st.integers(0, 3))):
        cdoc["daemon"]["prefixs"].append(data.draw(text))
    if data.draw(st.booleans()):
        cdoc["daemon"]["network"] = data.draw(text)
    for _ in range(data.draw(st.integers(0, 3))):
        org = rdoc[data.draw(st.integers(0, 1))]
        node = org["nodes"][data.draw(st.integers(0, 1))]
        if data.draw(st.booleans()):
            node["remarks"]["network"] = data.draw(text)
        else:
            node["remarks"]["prefixs"].append(data.draw(text))
    if data.draw(st.booleans()):
        cdoc = data.draw(mutated(cdoc, CONFIG_FIELDS))
    if data.draw(st.booleans()):
        rdoc = data.draw(mutated(rdoc, REGISTRY_FIELDS))
    try:
        cfg = build_config(cdoc, "c.json")
        reg = build_registry(rdoc, "r.json")
    except InputError as e:
        _check_problems(e, "c.json", "r.json")
        return
    problems = cross_problems(cfg, reg)
    for p in problems:
        # the registry is blamed only for what this node's policy refuses (issue 18)
        assert isinstance(p, Problem) and p.path.startswith("$")
        assert p.file == "c.json" or (p.file == "r.json" and (
            "accepts from the registry" in p.message or "holds" in p.message)), p
    # cross_problems blames the config for every overlap with another node
    mine = [cfg.node.network.network, *cfg.node.prefixes]
    overlapping = any(
        a.version == b.version and a.overlaps(b)
        for other in reg.nodes if other.key != cfg.node.key
        for b in (other.network.network, *other.prefixes) for a in mine
    )
    assert overlapping == any(" overlaps " in p.message for p in problems)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(
    st.text(max_size=60),
    st.builds(json.dumps, JSON_VALUES),
    st.builds(lambda v, junk, at: (lambda s: s[:at] + junk + s[at:])(json.dumps(v)),
              JSON_VALUES, st.sampled_from(["#", ",", "//", "NaN", "]", "}", "\ud800", "\x00"]),
              st.integers(0, 80)),
    st.builds(lambda n, sign: f'{{"port": {sign}{"9" * n}}}', st.integers(4290, 4400),
              st.sampled_from(["", "-"])),
    st.builds(lambda n, o: o * n, st.integers(900, 30_000), st.sampled_from(["[", '{"a":'])),
))
def test_parse_json_raises_only_input_error(text):
    try:
        parse_json(text, "f.json")
    except InputError as e:
        _check_problems(e, "f.json")


@settings(max_examples=100, deadline=None)
@given(value=SURROGATE_TEXT | ADDRESS_LIKE | st.binary(max_size=40).map(
    lambda b: "-----BEGIN PRIVATE KEY-----\n" + b.hex() + "\n-----END PRIVATE KEY-----\n"))
def test_private_key_values_raise_only_key_problem(value):
    with contextlib.suppress(keys.KeyProblem):
        keys.parse_private(keys.read_private(value, _ROOT))
    with contextlib.suppress(keys.KeyProblem):
        keys.parse_public(value)


# ---------------------------------------------------------------- what is built is sound


def _check_node(node) -> None:
    assert node.network.version == 6
    assert node.network.network.prefixlen <= 64
    assert node.address in node.network.network
    assert node.address not in node.sid_range or node.network.ip == node.network.network[0]
    assert "%" not in str(node.network)
    assert len({ep.port for ep in node.endpoints}) <= 1
    assert len({(ep.family, ep.serial_number) for ep in node.endpoints}) == len(node.endpoints)
    for ep in node.endpoints:
        assert ep.family in ("ip4", "ip6")
        assert type(ep.port) is int and 1 <= ep.port <= 65535
        assert type(ep.serial_number) is int and ep.serial_number >= 0
        if ep.is_ip:
            assert ipaddress.ip_address(ep.address).version == int(ep.family[2])
    keys.parse_public(node.public_key)


def _check_config_invariants(cfg: Config) -> None:
    assert isinstance(cfg, Config)
    _check_node(cfg.node)
    s = cfg.settings
    assert s.mode in ("vrf", "netns")
    assert type(s.route_table) is int and type(s.mtu) is int and type(s.dpd_delay) is int
    assert 0 < s.babel_hello < 1000 and 0 < s.babel_update < 1000
    owned = [cfg.node.network.network, *cfg.node.prefixes]
    for ip in s.extra_ip:
        assert any(ip.ip in p for p in owned if p.version == ip.version)
    keys.parse_private(cfg.private_key_pem)


def _check_registry_invariants(reg: Registry) -> None:
    assert isinstance(reg, Registry)
    assert len(reg.by_key) == len(reg.nodes)
    for node in reg.nodes:
        _check_node(node)
        assert keys.same_public(node.public_key, reg.org_keys[node.organization])
    nets = [(n.key, p) for n in reg.nodes for p in (n.network.network, *n.prefixes)]
    for i, (ka, a) in enumerate(nets):
        for kb, b in nets[i + 1:]:
            assert ka == kb or a.version != b.version or not a.overlaps(b)


# ---------------------------------------------------------------- overlaps are all found

PAIR = key_pair()


@st.composite
def v4_prefix(draw):
    """A prefix of length 20 to 28 inside 10.0.0.0/20."""
    address = 0x0A000000 | draw(st.integers(0, 2**12 - 1))
    return str(ipaddress.ip_network((address, draw(st.integers(20, 28))), strict=False))


@settings(max_examples=300, deadline=None)
@given(owners=st.lists(st.lists(v4_prefix(), max_size=3), min_size=1, max_size=8))
def test_overlap_found_iff_brute_force_finds_one(owners):
    """Random small prefixes in 10.0.0.0/20, so that they often overlap."""
    nodes = [make_node(f"n{i}", f"fd00:{i:x}::1/64", prefixes) for i, prefixes in
             enumerate(owners)]
    doc = make_registry(make_org(PAIR.public_pem, "o", nodes))
    nets = [(i, ipaddress.ip_network(p)) for i, ps in enumerate(owners) for p in ps]
    expected = any(a.overlaps(b) for i, a in nets for j, b in nets if i != j)
    try:
        build_registry(doc, "r.json")
    except InputError as e:
        assert expected, e
        assert all(" overlaps " in p.message for p in e.problems)
        # each problem names a real overlap between two different nodes
        for p in e.problems:
            left, right = p.message.split(" overlaps ")
            right_net, _, owner = right.partition(" of node o/")
            assert ipaddress.ip_network(left).overlaps(ipaddress.ip_network(right_net))
            owner_index = owner.split()[0].removeprefix("n")
            assert p.path.startswith("$[0].nodes[")
            assert not p.path.startswith(f"$[0].nodes[{owner_index}]")
    else:
        assert not expected


def test_properties_world_is_valid():
    """The base documents the properties mutate are valid as they stand."""
    for name, doc in WORLD.configs.items():
        build_config(doc, "c.json", base_dir=str(WORLD.root / name))
        build_config(INLINE_CONFIGS[name], "c.json")
    build_registry(WORLD.registry, "r.json")


# ---------------------------------------------------------------- every field, every trap

# Values that are easy to get past a JSON Schema: integral floats, non-finite floats,
# booleans (an int subclass), huge ints, NUL bytes and lone surrogates, zone ids.
TRAPS = [
    None, True, False, 0, -1, 12025.0, 1.0, 0.5, float("nan"), float("inf"), 10**30, 2**64,
    "", " ", "\x00", "\ud800", "-----BEGIN\ud800", "fe80::1%eth0", "fd66::1%x/64", "1.2.3.4%x",
    "999.1.1.1", [], {}, [None], {"": None}, "ip4", "vrf", "../keys", "/",
]


def _field_traps(base, fields, build) -> list[str]:
    failures = []
    for path in fields:
        for value in TRAPS:
            doc = copy.deepcopy(base)
            if not _set_field(doc, path, value):
                continue
            try:
                build(doc)
            except InputError:
                pass
            except Exception as e:  # the point is to catch anything else
                failures.append(f"{path} = {value!r}: {type(e).__name__}: {e}")
    return failures


def test_every_config_field_with_every_trap():
    name = "mars"  # two endpoints, a hostname, extra_ip
    base = WORLD.configs[name]

    def build(doc):
        cfg = build_config(doc, "c.json", base_dir=str(WORLD.root / name))
        _check_config_invariants(cfg)
        assert len(cfg.node.endpoints) == len(doc["endpoints"]), "an endpoint was dropped"
        assert len(cfg.node.prefixes) == len(doc["daemon"].get("prefixs", []))

    assert _field_traps(base, CONFIG_FIELDS, build) == []


def test_every_registry_field_with_every_trap():
    def build(doc):
        reg = build_registry(doc, "r.json")
        _check_registry_invariants(reg)
        for org in doc:
            for raw in org["nodes"]:
                node = reg.get((org["organization"], raw["common_name"]))
                assert len(node.endpoints) == len(raw["endpoints"]), "an endpoint was dropped"

    assert _field_traps(WORLD.registry, REGISTRY_FIELDS, build) == []
