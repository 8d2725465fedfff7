"""aronet.load: every rule of config.json and registry.json, each bad input paired
with the exact lines a user sees (file: path: reason).

Expected lines use placeholders: <c> the config file, <r> the registry file,
<root> the directory the example world was written to (see builders.World).
"""

from __future__ import annotations

import copy
import json
import os
import re
from functools import cache
from pathlib import Path

import pytest
from builders import (
    NODES,
    build_world,
    endpoint,
    key_pair,
    make_config,
    make_node,
    make_org,
    make_registry,
    write_json,
    write_key,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa

from aronet import keys
from aronet.errors import InputError, Problem
from aronet.load import (
    build_config,
    build_registry,
    cross_problems,
    load_both,
    load_config,
    load_registry,
    parse_json,
    read_json,
)
from aronet.model import Endpoint

REPO = Path(__file__).resolve().parents[2]
SEED_PKG_INFO = Path("/work/shared/seed/aronet-0.1b1-PKG-INFO.md")

# What cryptography 38 says about data that is not a key at all.
NOT_KEY_DATA = (
    "Could not deserialize key data. The data may be in an incorrect format, it may be "
    "encrypted with an unsupported algorithm, or it may be an unsupported key type "
    "(e.g. EC curves with explicit parameters)."
)


# ---------------------------------------------------------------- helpers


def _parts(path: str) -> list:
    return [int(p) if p.isdigit() else p for p in path.split(".")] if path else []


def S(path: str, value):
    """A mutation: set the value at a dotted path ("endpoints.0.port")."""

    def apply(doc):
        *head, last = _parts(path)
        target = doc
        for p in head:
            target = target[p]
        target[last] = copy.deepcopy(value)

    apply.__name__ = f"set {path}={value!r}"[:60]
    return apply


def D(path: str):
    """A mutation: delete the key or item at a dotted path."""

    def apply(doc):
        *head, last = _parts(path)
        target = doc
        for p in head:
            target = target[p]
        del target[last]

    apply.__name__ = f"del {path}"
    return apply


def A(path: str, value):
    """A mutation: append value to the list at a dotted path."""

    def apply(doc):
        target = doc
        for p in _parts(path):
            target = target[p]
        target.append(copy.deepcopy(value))

    apply.__name__ = f"append {path}"
    return apply


class Replace:
    """Returned by a mutation that replaces the whole document."""

    def __init__(self, value):
        self.value = value


def apply_all(doc, mutations):
    if callable(mutations):
        mutations = (mutations,)
    for m in mutations:
        result = m(doc)
        if isinstance(result, Replace):
            doc = result.value
    return doc


def lines(err: InputError) -> list[str]:
    return [str(p) for p in err.problems]


def expand(expected: list[str], **names) -> list[str]:
    out = []
    for line in expected:
        for name, value in names.items():
            line = line.replace(f"<{name}>", str(value))
        out.append(line)
    return out


def config_lines(world, mutations, name: str = "moon") -> list[str]:
    """Mutate a node's config document, write it in its place and load it."""
    doc = apply_all(world.config(name), mutations)
    path = write_json(world.config_path(name), doc)
    with pytest.raises(InputError) as exc:
        load_config(str(path))
    return lines(exc.value)


def registry_lines(world, mutations) -> list[str]:
    doc = apply_all(world.registry_doc(), mutations)
    path = write_json(world.registry_path, doc)
    with pytest.raises(InputError) as exc:
        load_registry(str(path))
    return lines(exc.value)


@cache
def foreign_keys() -> dict[str, tuple[str, str]]:
    """Private and public PEMs of keys aronet must refuse."""
    out = {}
    for name, key in {
        "rsa": rsa.generate_private_key(65537, 1024),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed448": ed448.Ed448PrivateKey.generate(),
    }.items():
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        out[name] = (private, public)
    return out


def _private(kind):
    def apply(doc):
        doc["private_key"] = foreign_keys()[kind][0]

    apply.__name__ = f"private_key={kind}"
    return apply


def _public(index: int, kind):
    def apply(doc):
        doc[index]["public_key"] = foreign_keys()[kind][1]

    apply.__name__ = f"public_key[{index}]={kind}"
    return apply


def _whole(value):
    def apply(doc):
        return Replace(copy.deepcopy(value))

    apply.__name__ = f"document={value!r}"
    return apply


# ---------------------------------------------------------------- config: the table

# The config mutated is the example's "moon":
#   private_key "../keys/example.pem", organization "example", common_name "moon",
#   daemon {network fd66::1/64, prefixs [192.168.128.0/24], mode vrf,
#           extra_ip [192.168.128.1]},
#   endpoints [{address 198.51.100.1, port 12025}]
CONFIG_CASES = [
    # -- wrong types
    ("network-int", S("daemon.network", 64),
     ["<c>: $.daemon.network: 64 is not of type 'string'"]),
    ("organization-int", S("organization", 5),
     ["<c>: $.organization: 5 is not of type 'string'"]),
    ("prefixs-string", S("daemon.prefixs", "192.168.128.0/24"),
     ["<c>: $.daemon.prefixs: '192.168.128.0/24' is not of type 'array'"]),
    ("prefix-item-int", S("daemon.prefixs.0", 24),
     ["<c>: $.daemon.prefixs[0]: 24 is not of type 'string'"]),
    ("daemon-list", S("daemon", []),
     ["<c>: $.daemon: [] is not of type 'object'"]),
    ("endpoints-object", S("endpoints", {}),
     ["<c>: $.endpoints: {} is not of type 'array'"]),
    ("endpoint-string", S("endpoints.0", "198.51.100.1:12025"),
     ["<c>: $.endpoints[0]: '198.51.100.1:12025' is not of type 'object'"]),
    ("port-string", S("endpoints.0.port", "12025"),
     ["<c>: $.endpoints[0].port: '12025' is not of type 'integer'"]),
    ("port-bool", S("endpoints.0.port", True),
     ["<c>: $.endpoints[0].port: True is not of type 'integer'"]),
    ("port-float", S("endpoints.0.port", 12025.0),
     ["<c>: $.endpoints[0].port: 12025.0 is not of type 'integer'"]),
    ("serial-float", S("endpoints.0.serial_number", 0.0),
     ["<c>: $.endpoints[0].serial_number: 0.0 is not of type 'integer', 'string'"]),
    ("serial-string-huge", S("endpoints.0.serial_number", "4294967296"),
     ["<c>: $.endpoints[0].serial_number: '4294967296' is greater than the maximum of 4294967295"]),
    ("serial-string-not-decimal", S("endpoints.0.serial_number", "01"),
     ["<c>: $.endpoints[0].serial_number: '01' does not match '^(0|[1-9][0-9]{0,9})$'"]),
    ("address-int", S("endpoints.0.address", 17),
     ["<c>: $.endpoints[0].address: 17 is not of type 'string', 'null'"]),
    ("use_netns-string", S("daemon.use_netns", "yes"),
     ["<c>: $.daemon.use_netns: 'yes' is not of type 'boolean'"]),
    ("route_table-float", S("daemon.route_table", 128.0),
     ["<c>: $.daemon.route_table: 128.0 is not of type 'integer'"]),
    ("private_key-null", S("private_key", None),
     ["<c>: $.private_key: None is not of type 'string'"]),
    ("private_key-empty", S("private_key", ""),
     ["<c>: $.private_key: '' should be non-empty"]),
    ("document-list", _whole([]),
     ["<c>: $: [] is not of type 'object'"]),
    ("document-null", _whole(None),
     ["<c>: $: None is not of type 'object'"]),
    # -- unknown keys
    ("unknown-top", S("foo", 1),
     ["<c>: $: Additional properties are not allowed ('foo' was unexpected)"]),
    ("unknown-daemon", S("daemon.prefixes", ["10.0.0.0/8"]),
     ["<c>: $.daemon: Additional properties are not allowed ('prefixes' was unexpected)"]),
    ("unknown-endpoint", S("endpoints.0.family", "ip4"),
     ["<c>: $.endpoints[0]: Additional properties are not allowed ('family' was unexpected)"]),
    ("unknown-babel", S("daemon.babel", {"hello": 1}),
     ["<c>: $.daemon.babel: Additional properties are not allowed ('hello' was unexpected)"]),
    # -- missing required fields
    ("missing-private_key", D("private_key"),
     ["<c>: $: 'private_key' is a required property"]),
    ("missing-organization", D("organization"),
     ["<c>: $: 'organization' is a required property"]),
    ("missing-common_name", D("common_name"),
     ["<c>: $: 'common_name' is a required property"]),
    ("missing-daemon", D("daemon"),
     ["<c>: $: 'daemon' is a required property"]),
    ("missing-endpoints", D("endpoints"),
     ["<c>: $: 'endpoints' is a required property"]),
    ("missing-network", D("daemon.network"),
     ["<c>: $.daemon: 'network' is a required property"]),
    ("missing-port", D("endpoints.0.port"),
     ["<c>: $.endpoints[0]: 'port' is a required property"]),
    ("missing-address", D("endpoints.0.address"),
     ["<c>: $.endpoints[0]: 'address' is a required property"]),
    # -- names and daemon settings
    ("organization-pattern", S("organization", "my org"),
     ["<c>: $.organization: 'my org' must be 1 to 63 letters, digits, '.', '_' or '-', "
      "starting with a letter or digit"]),
    ("common_name-pattern", S("common_name", "-moon"),
     ["<c>: $.common_name: '-moon' must be 1 to 63 letters, digits, '.', '_' or '-', "
      "starting with a letter or digit"]),
    ("ifname-too-long", S("daemon.ifname", "aronet-overlay"),
     ["<c>: $.daemon.ifname: 'aronet-overlay' must be 1 to 10 letters, digits, '_' or '-', "
      "starting with a letter (names derived from it must fit Linux's 15 bytes)"]),
    ("route_table-main", S("daemon.route_table", 254),
     ["<c>: $.daemon.route_table: 254 is reserved by Linux (253 default, 254 main, 255 local)"]),
    ("route_table-zero", S("daemon.route_table", 0),
     ["<c>: $.daemon.route_table: 0 is less than the minimum of 1"]),
    ("mode-enum", S("daemon.mode", "bridge"),
     ['<c>: $.daemon.mode: "bridge" is not one of "vrf", "netns"']),
    ("routing-enum", S("daemon.routing", "quagga"),
     ['<c>: $.daemon.routing: "quagga" is not one of "bird", "babeld"']),
    ("babeld-needs-netns", S("daemon.routing", "babeld"),
     ['<c>: $.daemon.routing: "babeld" needs daemon.mode "netns": babeld 1.12 hears no babel '
      'packet on interfaces inside a VRF (checked on Linux 6.1); use "bird" in VRF mode']),
    ("mode-contradicts-use_netns", S("daemon.use_netns", True),
     ["<c>: $.daemon.mode: 'vrf' contradicts use_netns=true; drop use_netns (the old spelling) "
      "or make them agree"]),
    ("netns-contradicts-use_netns", (S("daemon.mode", "netns"), S("daemon.use_netns", False)),
     ["<c>: $.daemon.mode: 'netns' contradicts use_netns=false; drop use_netns (the old "
      "spelling) or make them agree"]),
    ("nan-interval", S("daemon.babel", {"hello_interval": float("nan")}),
     ["<c>: $.daemon.babel.hello_interval: nan is not of type 'number'"]),
    # -- daemon.network
    ("network-prefix-80", S("daemon.network", "fd66::1/80"),
     ["<c>: $.daemon.network: 'fd66::1/80' has prefix length /80; it must be /64 or shorter"]),
    ("network-prefix-65", S("daemon.network", "fd66::1/65"),
     ["<c>: $.daemon.network: 'fd66::1/65' has prefix length /65; it must be /64 or shorter"]),
    ("network-ipv4", S("daemon.network", "10.0.0.1/8"),
     ["<c>: $.daemon.network: '10.0.0.1/8' is IPv4; the overlay network must be IPv6"]),
    ("network-no-length", S("daemon.network", "fd66::1"),
     ["<c>: $.daemon.network: 'fd66::1' has no prefix length; write it like fd66::1/64"]),
    ("network-garbage", S("daemon.network", "fd66::zz/64"),
     ["<c>: $.daemon.network: 'fd66::zz/64' is not an IPv6 network (like fd66::1/64)"]),
    ("network-zone-id", S("daemon.network", "fd66::1%eth0/64"),
     ["<c>: $.daemon.network: 'fd66::1%eth0/64' is not an IPv6 network (like fd66::1/64)"]),
    ("network-reserved", S("daemon.network", "fd66::ffff:0:0:1/64"),
     ["<c>: $.daemon.network: the node address fd66::ffff:0:0:1 lies in the reserved range "
      "fd66::ffff:0:0:0/80 (used for SRv6 SIDs)"]),
    ("network-reserved-48", S("daemon.network", "fd66::ffff:1:2:3/48"),
     ["<c>: $.daemon.network: the node address fd66::ffff:1:2:3 lies in the reserved range "
      "fd66::ffff:0:0:0/80 (used for SRv6 SIDs)"]),
    # -- prefixes
    ("prefix-33", S("daemon.prefixs.0", "192.168.128.0/33"),
     ["<c>: $.daemon.prefixs[0]: '192.168.128.0/33' is not an IP prefix "
      "(like 192.168.128.0/24 or 2001:db8::/48)"]),
    ("prefix-garbage", A("daemon.prefixs", "lan"),
     ["<c>: $.daemon.prefixs[1]: 'lan' is not an IP prefix "
      "(like 192.168.128.0/24 or 2001:db8::/48)"]),
    # -- endpoints
    ("port-zero", S("endpoints.0.port", 0),
     ["<c>: $.endpoints[0].port: 0 is less than the minimum of 1"]),
    ("port-65536", S("endpoints.0.port", 65536),
     ["<c>: $.endpoints[0].port: 65536 is greater than the maximum of 65535"]),
    ("ports-differ", A("endpoints", endpoint("2001:db8::1", 12026)),
     ["<c>: $.endpoints[1].port: port 12026 differs from port 12025 of endpoint [0]; "
      "a node uses one port on all its endpoints"]),
    ("family-mismatch", S("endpoints.0.address_family", "ip6"),
     ["<c>: $.endpoints[0].address_family: 'ip6' does not match the address 198.51.100.1 "
      "(which is ip4)"]),
    ("family-enum", S("endpoints.0.address_family", "ipv4"),
     ['<c>: $.endpoints[0].address_family: "ipv4" is not one of "ip4", "ip6"']),
    ("hostname-needs-family", S("endpoints.0.address", "moon.example.net"),
     ["<c>: $.endpoints[0].address_family: hostname 'moon.example.net' needs an explicit "
      'address_family ("ip4" or "ip6")']),
    ("null-needs-family", S("endpoints.0.address", None),
     ["<c>: $.endpoints[0].address_family: a null address needs an explicit address_family "
      '("ip4" or "ip6")']),
    ("address-not-host", S("endpoints.0.address", "moon!"),
     ["<c>: $.endpoints[0].address: 'moon!' is neither an IP address nor a hostname"]),
    ("address-zone-id", S("endpoints.0.address", "fe80::1%eth0"),
     ["<c>: $.endpoints[0].address: 'fe80::1%eth0' is neither an IP address nor a hostname"]),
    ("address-empty", S("endpoints.0.address", ""),
     ["<c>: $.endpoints[0].address: '' should be non-empty",
      "<c>: $.endpoints[0].address: '' is neither an IP address nor a hostname"]),
    ("serial-duplicate", A("endpoints", endpoint("198.51.100.2", serial_number=0)),
     ["<c>: $.endpoints[1].serial_number: serial_number 0 is already used by ip4 endpoint [0]; "
      "give each endpoint of a family its own"]),
    ("serial-default-collides",
     (S("endpoints.0.serial_number", 1), A("endpoints", endpoint("198.51.100.2"))),
     ["<c>: $.endpoints[1].serial_number: serial_number 1 is already used by ip4 endpoint [0]; "
      "give each endpoint of a family its own"]),
    ("serial-negative", S("endpoints.0.serial_number", -1),
     ["<c>: $.endpoints[0].serial_number: -1 is less than the minimum of 0"]),
    ("serial-huge", S("endpoints.0.serial_number", 2**32),
     ["<c>: $.endpoints[0].serial_number: 4294967296 is greater than the maximum of 4294967295"]),
    # -- extra_ip
    ("extra_ip-outside", S("daemon.extra_ip", ["10.9.9.9"]),
     ["<c>: $.daemon.extra_ip[0]: 10.9.9.9 is not inside daemon.network or any of "
      "daemon.prefixs, so no other node would route it here"]),
    ("extra_ip-v6-outside", S("daemon.extra_ip", ["fd67::5/64"]),
     ["<c>: $.daemon.extra_ip[0]: fd67::5 is not inside daemon.network or any of "
      "daemon.prefixs, so no other node would route it here"]),
    ("extra_ip-garbage", S("daemon.extra_ip", ["192.168.128.300"]),
     ["<c>: $.daemon.extra_ip[0]: '192.168.128.300' is not an IP address "
      "(like 192.168.128.1 or 192.168.128.1/24)"]),
    # -- keys
    ("key-rsa", _private("rsa"),
     ["<c>: $.private_key: is an RSA key; aronet needs Ed25519"]),
    ("key-ec", _private("ec"),
     ["<c>: $.private_key: is an EC key; aronet needs Ed25519"]),
    ("key-ed448", _private("ed448"),
     ["<c>: $.private_key: is an Ed448 key; aronet needs Ed25519"]),
    ("key-inline-garbage",
     S("private_key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
     [f"<c>: $.private_key: not an unencrypted PEM private key ({NOT_KEY_DATA})"]),
    ("key-file-missing", S("private_key", "../keys/nope.pem"),
     ["<c>: $.private_key: cannot read key file <root>/moon/../keys/nope.pem: "
      "No such file or directory"]),
    ("key-file-directory", S("private_key", "../keys"),
     ["<c>: $.private_key: key file <root>/moon/../keys is not a regular file"]),
    ("key-file-nul", S("private_key", "a\x00b"),
     ["<c>: $.private_key: cannot read key file '<root>/moon/a\\x00b': not a valid file name"]),
    # -- several problems at once, from every pass
    ("many",
     (S("organization", "my org"), S("daemon.network", "10.0.0.1/8"),
      S("daemon.prefixs", ["192.168.128.0/24", "bogus"]),
      A("endpoints", endpoint(None, 4500)), S("daemon.extra_ip", ["10.9.9.9", "x"]),
      S("private_key", "../keys/nope.pem"), S("bogus", True)),
     ["<c>: $: Additional properties are not allowed ('bogus' was unexpected)",
      "<c>: $.organization: 'my org' must be 1 to 63 letters, digits, '.', '_' or '-', "
      "starting with a letter or digit",
      "<c>: $.daemon.network: '10.0.0.1/8' is IPv4; the overlay network must be IPv6",
      "<c>: $.daemon.prefixs[1]: 'bogus' is not an IP prefix "
      "(like 192.168.128.0/24 or 2001:db8::/48)",
      "<c>: $.endpoints[1].address_family: a null address needs an explicit address_family "
      '("ip4" or "ip6")',
      "<c>: $.endpoints[1].port: port 4500 differs from port 12025 of endpoint [0]; "
      "a node uses one port on all its endpoints",
      # extra_ip[0] is not checked against networks that did not parse
      "<c>: $.daemon.extra_ip[1]: 'x' is not an IP address "
      "(like 192.168.128.1 or 192.168.128.1/24)",
      "<c>: $.private_key: cannot read key file <root>/moon/../keys/nope.pem: "
      "No such file or directory"]),
]


@pytest.mark.parametrize(
    ("mutations", "expected"),
    [pytest.param(m, e, id=i) for i, m, e in CONFIG_CASES],
)
def test_config_problem(world, mutations, expected):
    got = config_lines(world, mutations)
    want = expand(expected, c=world.config_path("moon"), root=world.root)
    assert sorted(got) == sorted(want)


def test_config_key_file_readable_by_others(world):
    os.chmod(world.key_path("example"), 0o644)
    key = world.root / "moon" / ".." / "keys" / "example.pem"
    assert config_lines(world, ()) == [
        f"{world.config_path('moon')}: $.private_key: key file {key} is accessible by group "
        f"or others (mode 0644); run: chmod 600 {key}"
    ]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o601])
def test_config_key_file_any_group_or_other_bit_is_refused(world, mode):
    os.chmod(world.key_path("example"), mode)
    (line,) = config_lines(world, ())
    assert f"(mode {mode:04o}); run: chmod 600" in line


def test_config_key_file_0400_is_fine(world):
    os.chmod(world.key_path("example"), 0o400)
    assert load_config(str(world.config_path("moon"))).node.name == "example/moon"


def test_config_problems_have_file_path_reason(world):
    doc = apply_all(world.config("moon"), (S("daemon.network", "x"), S("endpoints.0.port", 0)))
    with pytest.raises(InputError) as exc:
        build_config(doc, "cfg.json", base_dir=str(world.root / "moon"))
    assert exc.value.problems == [
        Problem("cfg.json", "$.endpoints[0].port", "0 is less than the minimum of 1"),
        Problem("cfg.json", "$.daemon.network", "'x' is not an IPv6 network (like fd66::1/64)"),
    ]
    assert exc.value.exit_code == 2
    assert str(exc.value) == "\n".join(str(p) for p in exc.value.problems)


# ---------------------------------------------------------------- JSON syntax


def seed_config_text(private_key: str) -> str:
    """config.json exactly as the 0.1b1 README shows it (comments, a trailing comma)."""
    text = SEED_PKG_INFO.read_text()
    start = text.index("```json\n{\n  \"private_key\"") + len("```json\n")
    body = text[start:text.index("```", start)]
    return body.replace("./test/config/moon/private.pem", private_key)


SEED_CONFIG_FALLBACK = """{
  "private_key": "./test/config/moon/private.pem",
  "organization": "example",
  "common_name": "host-01",
  "daemon": {
    "prefixs": [
      "192.168.128.1/24"
    ],
    "use_netns": false,
    "network": "fd66::1/64" # must be a v6 network with prefix less or equal to 64
  },
  # endpoints are some ip:port pairs for establishing tunnels with other nodes in a registry
  "endpoints": [
    {
      "address": "1.1.1.1",
      "port": 12025,
    },
    {
      "address_family": "ip6",
      "address": null,
      "port": 12025,
      "serial_number": 1
    }
  ]
}
"""


def _seed_text(private_key: str) -> str:
    if SEED_PKG_INFO.exists():
        return seed_config_text(private_key)
    return SEED_CONFIG_FALLBACK.replace("./test/config/moon/private.pem", private_key)


def _strip_comments_and_trailing_commas(text: str) -> str:
    text = re.sub(r"\s*#[^\n]*", "", text)
    return re.sub(r",(\s*[}\]])", r"\1", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"a": 1 # note\n}',
                     "line 1, column 9: invalid JSON: Expecting ',' delimiter "
                     "(comments are not allowed in JSON)", id="comment-after-value"),
        pytest.param('{\n  # note\n  "a": 1\n}',
                     "line 2, column 3: invalid JSON: Expecting property name enclosed in double "
                     "quotes (comments are not allowed in JSON)", id="comment-line"),
        pytest.param('{"a": 1 // note\n}',
                     "line 1, column 9: invalid JSON: Expecting ',' delimiter "
                     "(comments are not allowed in JSON)", id="slash-comment"),
        pytest.param('{\n  "a": 1,\n}',
                     "line 3, column 1: invalid JSON: Expecting property name enclosed in double "
                     "quotes (a trailing comma is not allowed in JSON)",
                     id="trailing-comma-object"),
        pytest.param('[\n  1,\n  2,\n]',
                     "line 4, column 1: invalid JSON: Expecting value "
                     "(a trailing comma is not allowed in JSON)", id="trailing-comma-array"),
        pytest.param("", "line 1, column 1: invalid JSON: Expecting value", id="empty"),
        pytest.param('{"a": 1} x', "line 1, column 10: invalid JSON: Extra data", id="extra"),
        pytest.param("{'a': 1}",
                     "line 1, column 2: invalid JSON: Expecting property name enclosed in double "
                     "quotes", id="single-quotes"),
        pytest.param("[" + "9" * 5000 + "]",
                     "line 1, column 2: invalid JSON: a number of 5000 digits is too long",
                     id="huge-integer"),
        pytest.param("[" * 100_000 + "]" * 100_000, "$: invalid JSON: nested too deeply",
                     id="deep-nesting"),
    ],
)
def test_json_syntax(text, expected):
    with pytest.raises(InputError) as exc:
        parse_json(text, "f.json")
    assert lines(exc.value) == [f"f.json: {expected}"]


def test_seed_readme_config_is_refused_with_line_and_column(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(_seed_text("key.pem"))
    with pytest.raises(InputError) as exc:
        load_config(str(path))
    assert lines(exc.value) == [
        f"{path}: line 10, column 29: invalid JSON: Expecting ',' delimiter "
        "(comments are not allowed in JSON)"
    ]


def test_seed_readme_trailing_comma_is_refused_with_line_and_column(tmp_path):
    # Without the comments, the next thing the seed gets wrong is its trailing comma.
    path = tmp_path / "config.json"
    path.write_text(re.sub(r"[ \t]*#[^\n]*", "", _seed_text("key.pem")))  # keep lines
    with pytest.raises(InputError) as exc:
        load_config(str(path))
    assert lines(exc.value) == [
        f"{path}: line 17, column 5: invalid JSON: Expecting property name enclosed in double "
        "quotes (a trailing comma is not allowed in JSON)"
    ]


def test_seed_readme_registry_is_refused(tmp_path):
    if not SEED_PKG_INFO.exists():
        pytest.skip("seed PKG-INFO not available")
    text = SEED_PKG_INFO.read_text()
    start = text.index("```json\n[") + len("```json\n")
    path = tmp_path / "registry.json"
    path.write_text(text[start:text.index("```", start)])
    with pytest.raises(InputError) as exc:
        load_registry(str(path))
    assert lines(exc.value) == [
        f"{path}: line 12, column 11: invalid JSON: Expecting property name enclosed in double "
        "quotes (a trailing comma is not allowed in JSON)"
    ]


def test_read_json_problems(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(InputError) as exc:
        read_json(str(missing))
    assert lines(exc.value) == [f"{missing}: $: cannot read: No such file or directory"]

    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"a": "caf\xe9"}')
    with pytest.raises(InputError) as exc:
        read_json(str(latin1))
    assert lines(exc.value) == [f"{latin1}: $: not UTF-8 text (invalid continuation byte)"]

    with pytest.raises(InputError) as exc:
        read_json(str(tmp_path))
    assert lines(exc.value) == [f"{tmp_path}: $: cannot read: Is a directory"]


# ---------------------------------------------------------------- config: happy paths


def test_world_configs_load(world):
    for name, spec in NODES.items():
        cfg = load_config(str(world.config_path(name)))
        assert cfg.node.name == f"{spec['organization']}/{name}"
        assert str(cfg.node.network) == spec["network"]
        assert [str(p) for p in cfg.node.prefixes] == spec["prefixes"]
        assert cfg.settings.mode == spec["daemon"]["mode"]
        assert cfg.node.public_key == world.keys[spec["organization"]].public_pem
        assert cfg.private_key_pem == world.keys[spec["organization"]].private_pem.encode()


def test_seed_readme_config_loads_once_cleaned(tmp_path, pair):
    """The seed's own spellings: prefixs (with host bits), use_netns, network,
    address null + address_family, serial_number, the default port."""
    write_key(tmp_path / "keys" / "moon.pem", pair)
    path = tmp_path / "conf" / "config.json"
    path.parent.mkdir()
    path.write_text(_strip_comments_and_trailing_commas(_seed_text("../keys/moon.pem")))
    cfg = load_config(str(path))
    assert cfg.node.name == "example/host-01"
    assert cfg.settings.mode == "vrf"
    assert [str(p) for p in cfg.node.prefixes] == ["192.168.128.0/24"]
    assert str(cfg.node.network) == "fd66::1/64"
    assert str(cfg.node.address) == "fd66::1"
    assert cfg.node.endpoints == (
        Endpoint(family="ip4", serial_number=0, address="1.1.1.1", port=12025),
        Endpoint(family="ip6", serial_number=1, address=None, port=12025),
    )
    assert cfg.node.public_key == pair.public_pem


def test_use_netns_true_means_netns_mode(world):
    doc = apply_all(world.config("moon"), (D("daemon.mode"), S("daemon.use_netns", True)))
    cfg = build_config(doc, "c.json", base_dir=str(world.root / "moon"))
    assert cfg.settings.mode == "netns"
    doc = apply_all(world.config("moon"), (S("daemon.mode", "netns"), S("daemon.use_netns", True)))
    assert build_config(doc, "c.json", base_dir=str(world.root / "moon")).settings.mode == "netns"
    doc = apply_all(world.config("moon"), D("daemon.mode"))
    assert build_config(doc, "c.json", base_dir=str(world.root / "moon")).settings.mode == "vrf"


def test_inline_pem_private_key(pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = make_config(private_key=pair.private_pem)
    cfg = build_config(doc, "inline.json", base_dir="/nonexistent")
    assert cfg.node.public_key == pair.public_pem
    assert cfg.private_key_pem == pair.private_pem.encode()
    # leading whitespace before the PEM is still inline
    cfg = build_config(make_config(private_key="\n  " + pair.private_pem), "i.json")
    assert cfg.node.public_key == pair.public_pem


def test_relative_key_path_resolves_against_config_dir(world, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(os.path.relpath(world.config_path("sun"), elsewhere))
    assert cfg.node.public_key == world.keys["example2"].public_pem
    # and not against the working directory, where ../keys/example2.pem is another key
    write_key(elsewhere / "keys" / "example2.pem", key_pair())
    (elsewhere / "sun").mkdir()
    monkeypatch.chdir(elsewhere / "sun")
    cfg = load_config(str(world.config_path("sun")))
    assert cfg.node.public_key == world.keys["example2"].public_pem


def test_absolute_key_path(world, tmp_path):
    doc = world.config("moon")
    doc["private_key"] = str(world.key_path("example"))
    path = write_json(tmp_path / "other" / "config.json", doc)
    assert load_config(str(path)).node.public_key == world.keys["example"].public_pem


def test_valid_variants(world):
    """Things the rules allow."""
    base = str(world.root / "moon")
    cases = [
        S("daemon.network", "fd66::/64"),  # host part zero: the node is ::1
        S("daemon.network", "fd66::1/48"),  # shorter than /64
        S("daemon.network", "fd66::fffe:0:0:1/64"),  # next to, not in, the reserved /80
        (S("daemon.prefixs", []), D("daemon.extra_ip")),
        (D("daemon.prefixs"), S("daemon.extra_ip", ["fd66::1:1/64"])),
        S("daemon.prefixs", ["192.168.128.1/24", "2001:db8:1::/48"]),
        S("daemon.extra_ip", ["fd66::5", "192.168.128.9/24"]),
        D("daemon.extra_ip"),
        S("endpoints", []),
        A("endpoints", endpoint("2001:db8::1")),  # serial 1 by default, another family
        A("endpoints", endpoint("2001:db8::1", serial_number=0)),  # same serial, other family
        A("endpoints", endpoint("198.51.100.2", serial_number=7)),
        S("endpoints.0.address_family", "ip4"),  # matching the address
        S("endpoints.0", endpoint("moon.example.net.", address_family="ip6")),
        S("endpoints.0", endpoint(None, 1, address_family="ip6")),
        S("endpoints.0.port", 65535),
        S("daemon.route_table", 4294967295),
        S("daemon.ifname", "aronet0123"),
        S("daemon.babel", {"hello_interval": 0.5, "update_interval": 2}),
        S("daemon.ike", {"dpd_delay": 30}),
        S("organization", "a.b_c-d"),
    ]
    for mutation in cases:
        doc = apply_all(world.config("moon"), mutation)
        build_config(doc, "c.json", base_dir=base)  # does not raise


def test_node_address_defaults_to_one():
    pair = key_pair()
    cfg = build_config(make_config(private_key=pair.private_pem, network="fd66::/64"), "c.json")
    assert str(cfg.node.address) == "fd66::1"
    assert str(cfg.node.sid_range) == "fd66::ffff:0:0:0/80"


# ---------------------------------------------------------------- registry: the table

# The registry mutated is the example's:
#   $[0] example:  nodes[0] moon  fd66::1/64 [192.168.128.0/24]
#                  nodes[1] earth fd67::1/64 [192.168.129.0/24]
#   $[1] example2: nodes[0] sun   fd68::1/64 [192.168.130.0/24]   (NAT: null, ip4)
#                  nodes[1] mars  fd69::1/64 [192.168.131.0/24, 2001:db8:131::/48]
REGISTRY_CASES = [
    ("document-object", _whole({}), ["<r>: $: {} is not of type 'array'"]),
    ("org-string", S("0", "example"), ["<r>: $[0]: 'example' is not of type 'object'"]),
    ("nodes-object", S("0.nodes", {}), ["<r>: $[0].nodes: {} is not of type 'array'"]),
    ("unknown-org-key", S("0.nodes_count", 2),
     ["<r>: $[0]: Additional properties are not allowed ('nodes_count' was unexpected)"]),
    ("unknown-node-key", S("0.nodes.0.network", "fd66::1/64"),
     ["<r>: $[0].nodes[0]: Additional properties are not allowed ('network' was unexpected)"]),
    ("missing-public_key", D("0.public_key"), ["<r>: $[0]: 'public_key' is a required property"]),
    ("missing-remarks", D("0.nodes.0.remarks"),
     ["<r>: $[0].nodes[0]: 'remarks' is a required property"]),
    ("missing-network", D("1.nodes.1.remarks.network"),
     ["<r>: $[1].nodes[1].remarks: 'network' is a required property"]),
    ("missing-endpoints", D("0.nodes.1.endpoints"),
     ["<r>: $[0].nodes[1]: 'endpoints' is a required property"]),
    ("network-int", S("0.nodes.0.remarks.network", 6),
     ["<r>: $[0].nodes[0].remarks.network: 6 is not of type 'string'"]),
    ("remarks-free-form", S("0.nodes.0.remarks.location", {"any": ["thing", 1]}), []),
    # -- networks and prefixes
    ("network-prefix-96", S("0.nodes.1.remarks.network", "fd67::1/96"),
     ["<r>: $[0].nodes[1].remarks.network: 'fd67::1/96' has prefix length /96; "
      "it must be /64 or shorter"]),
    ("network-ipv4", S("0.nodes.1.remarks.network", "192.168.200.1/24"),
     ["<r>: $[0].nodes[1].remarks.network: '192.168.200.1/24' is IPv4; "
      "the overlay network must be IPv6"]),
    ("network-reserved", S("1.nodes.0.remarks.network", "fd68::ffff:abcd:0:1/64"),
     ["<r>: $[1].nodes[0].remarks.network: the node address fd68::ffff:abcd:0:1 lies in the "
      "reserved range fd68::ffff:0:0:0/80 (used for SRv6 SIDs)"]),
    ("prefix-garbage", S("1.nodes.1.remarks.prefixs.1", "2001:db8:131::/129"),
     ["<r>: $[1].nodes[1].remarks.prefixs[1]: '2001:db8:131::/129' is not an IP prefix "
      "(like 192.168.128.0/24 or 2001:db8::/48)"]),
    ("overlapping-prefixes", S("1.nodes.0.remarks.prefixs.0", "192.168.128.128/25"),
     ["<r>: $[1].nodes[0].remarks.prefixs[0]: 192.168.128.128/25 overlaps 192.168.128.0/24 of "
      "node example/moon (<r> $[0].nodes[0].remarks.prefixs[0])"]),
    ("same-prefix-same-org", S("0.nodes.1.remarks.prefixs.0", "192.168.128.0/24"),
     ["<r>: $[0].nodes[1].remarks.prefixs[0]: 192.168.128.0/24 overlaps 192.168.128.0/24 of "
      "node example/moon (<r> $[0].nodes[0].remarks.prefixs[0])"]),
    ("overlapping-networks", S("0.nodes.1.remarks.network", "fd66::2/64"),
     ["<r>: $[0].nodes[1].remarks.network: fd66::/64 overlaps fd66::/64 of node example/moon "
      "(<r> $[0].nodes[0].remarks.network)"]),
    ("prefix-covers-network", S("1.nodes.1.remarks.prefixs.1", "fd66::/48"),
     ["<r>: $[1].nodes[1].remarks.prefixs[1]: fd66::/48 overlaps fd66::/64 of node example/moon "
      "(<r> $[0].nodes[0].remarks.network)"]),
    ("one-supernet-two-victims", S("1.nodes.0.remarks.prefixs.0", "192.168.128.0/23"),
     ["<r>: $[1].nodes[0].remarks.prefixs[0]: 192.168.128.0/23 overlaps 192.168.128.0/24 of "
      "node example/moon (<r> $[0].nodes[0].remarks.prefixs[0])",
      "<r>: $[0].nodes[1].remarks.prefixs[0]: 192.168.129.0/24 overlaps 192.168.128.0/23 of "
      "node example2/sun (<r> $[1].nodes[0].remarks.prefixs[0])"]),
    ("own-prefix-in-own-network", S("0.nodes.0.remarks.prefixs", ["fd66::/64", "fd66::/80"]), []),
    # -- names, organizations, keys
    ("duplicate-node-name", S("0.nodes.1.common_name", "moon"),
     ["<r>: $[0].nodes[1].common_name: node name 'moon' is already used in organization "
      "'example' at $[0].nodes[0]"]),
    ("same-name-other-org", S("1.nodes.0.common_name", "moon"), []),
    ("duplicate-organization", S("1.organization", "example"),
     ["<r>: $[1].organization: organization 'example' is already listed at $[0]; "
      "list each organization once, with one key"]),
    ("organization-pattern", S("1.organization", "example 2"),
     ["<r>: $[1].organization: 'example 2' must be 1 to 63 letters, digits, '.', '_' or '-', "
      "starting with a letter or digit"]),
    ("public-key-garbage", S("0.public_key", "-- raw pem of public key --"),
     [f"<r>: $[0].public_key: not a PEM public key ({NOT_KEY_DATA})"]),
    ("public-key-rsa", _public(0, "rsa"),
     ["<r>: $[0].public_key: is an RSA key; aronet needs Ed25519"]),
    ("public-key-ec", _public(1, "ec"),
     ["<r>: $[1].public_key: is an EC key; aronet needs Ed25519"]),
    ("public-key-empty", S("0.public_key", ""),
     ["<r>: $[0].public_key: '' should be non-empty",
      f"<r>: $[0].public_key: not a PEM public key ({NOT_KEY_DATA})"]),
    # -- endpoints
    ("nat-without-family", D("1.nodes.0.endpoints.0.address_family"),
     ["<r>: $[1].nodes[0].endpoints[0].address_family: a null address needs an explicit "
      'address_family ("ip4" or "ip6")']),
    ("hostname-without-family", D("1.nodes.1.endpoints.0.address_family"),
     ["<r>: $[1].nodes[1].endpoints[0].address_family: hostname 'mars.example.net' needs an "
      'explicit address_family ("ip4" or "ip6")']),
    ("endpoint-ports-differ", S("0.nodes.1.endpoints.1.port", 4500),
     ["<r>: $[0].nodes[1].endpoints[1].port: port 4500 differs from port 12025 of endpoint [0]; "
      "a node uses one port on all its endpoints"]),
    ("endpoint-serial-duplicate",
     A("1.nodes.1.endpoints", endpoint("2001:db8::5", serial_number=1)),
     ["<r>: $[1].nodes[1].endpoints[2].serial_number: serial_number 1 is already used by ip6 "
      "endpoint [1]; give each endpoint of a family its own"]),
    ("endpoint-family-mismatch", S("0.nodes.1.endpoints.1.address_family", "ip4"),
     ["<r>: $[0].nodes[1].endpoints[1].address_family: 'ip4' does not match the address "
      "2001:db8::3 (which is ip6)"]),
    ("endpoint-port-huge", S("0.nodes.0.endpoints.0.port", 10**30),
     ["<r>: $[0].nodes[0].endpoints[0].port: 1000000000000000000000000000000 is greater than "
      "the maximum of 65535"]),
    # -- several at once
    ("many",
     (S("0.nodes.1.common_name", "moon"), S("1.public_key", "nope"),
      S("1.nodes.1.remarks.network", "fd69::1/72"), D("1.nodes.0.endpoints.0.address_family")),
     ["<r>: $[0].nodes[1].common_name: node name 'moon' is already used in organization "
      "'example' at $[0].nodes[0]",
      f"<r>: $[1].public_key: not a PEM public key ({NOT_KEY_DATA})",
      "<r>: $[1].nodes[0].endpoints[0].address_family: a null address needs an explicit "
      'address_family ("ip4" or "ip6")',
      "<r>: $[1].nodes[1].remarks.network: 'fd69::1/72' has prefix length /72; "
      "it must be /64 or shorter"]),
]


@pytest.mark.parametrize(
    ("mutations", "expected"),
    [pytest.param(m, e, id=i) for i, m, e in REGISTRY_CASES],
)
def test_registry_problem(world, mutations, expected):
    doc = apply_all(world.registry_doc(), mutations)
    path = write_json(world.registry_path, doc)
    want = expand(expected, r=path)
    if not want:
        load_registry(str(path))  # valid
        return
    with pytest.raises(InputError) as exc:
        load_registry(str(path))
    assert sorted(lines(exc.value)) == sorted(want)


def test_world_registry_validates(world):
    reg = load_registry(str(world.registry_path))
    assert [n.name for n in reg.nodes] == [
        "example/earth", "example/moon", "example2/mars", "example2/sun"]
    assert set(reg.org_keys) == {"example", "example2"}
    sun = reg.get(("example2", "sun"))
    assert sun.endpoints == (Endpoint(family="ip4", serial_number=0, address=None, port=12025),)
    mars = reg.get(("example2", "mars"))
    assert mars.endpoints == (
        Endpoint(family="ip4", serial_number=0, address="mars.example.net", port=12025),
        Endpoint(family="ip6", serial_number=1, address="2001:db8::4", port=12025),
    )
    assert [str(p) for p in mars.prefixes] == ["192.168.131.0/24", "2001:db8:131::/48"]
    assert reg.paths[("example2", "mars")] == (1, "nodes", 1)
    assert reg.get(("example", "nope")) is None


def test_empty_registry_is_valid():
    assert build_registry([], "r.json").nodes == ()


def test_registry_key_pem_line_breaks_do_not_matter(world):
    """same_public compares keys by value."""
    pem = world.keys["example"].public_pem
    body = "".join(pem.splitlines()[1:-1])
    rewrapped = "-----BEGIN PUBLIC KEY-----\n" + "\n".join(
        body[i:i + 16] for i in range(0, len(body), 16)) + "\n-----END PUBLIC KEY-----\n"
    assert keys.same_public(pem, rewrapped)
    doc = world.registry_doc()
    doc[0]["public_key"] = rewrapped
    reg = build_registry(doc, "r.json")
    cfg = load_config(str(world.config_path("moon")))
    assert cross_problems(cfg, reg) == []


def test_many_nodes_overlap_check_is_fast():
    import time

    pair = key_pair()
    nodes = [make_node(f"n{i}", f"fd00:{i:x}::1/64", [f"10.{i // 256}.{i % 256}.0/24"])
             for i in range(3000)]
    nodes.append(make_node("late", "fd01::1/64", ["10.11.0.0/16"]))
    doc = make_registry(make_org(pair.public_pem, "big", nodes))
    t0 = time.monotonic()
    with pytest.raises(InputError) as exc:
        build_registry(doc, "r.json")
    assert time.monotonic() - t0 < 5
    # n2816 .. n2999 own 10.11.0.0/24 .. 10.11.183.0/24, all inside late's 10.11.0.0/16
    assert len(exc.value.problems) == 184


# ---------------------------------------------------------------- both files


def _venus(world, **kw) -> dict:
    """A new node of organization "example", not listed in the registry."""
    args = dict(private_key="../keys/example.pem", organization="example", common_name="venus",
                network="fd70::1/64", prefixes=["192.168.140.0/24"])
    args.update(kw)
    return make_config(**args)


def _both_lines(world, config_doc, registry_doc=None, name="venus") -> list[str]:
    cpath = write_json(world.root / name / "config.json", config_doc)
    rpath = write_json(world.registry_path, registry_doc or world.registry)
    with pytest.raises(InputError) as exc:
        load_both(str(cpath), str(rpath))
    return lines(exc.value)


CROSS_CASES = [
    ("prefix-inside-registry-prefix", {"prefixes": ["192.168.129.128/25"]},
     ["<c>: $.daemon.prefixs[0]: 192.168.129.128/25 overlaps 192.168.129.0/24 of node "
      "example/earth (<r> $[0].nodes[1].remarks.prefixs[0])"]),
    ("prefix-covers-registry-prefixes", {"prefixes": ["192.168.130.0/23"]},
     ["<c>: $.daemon.prefixs[0]: 192.168.130.0/23 overlaps 192.168.130.0/24 of node "
      "example2/sun (<r> $[1].nodes[0].remarks.prefixs[0])",
      "<c>: $.daemon.prefixs[0]: 192.168.130.0/23 overlaps 192.168.131.0/24 of node "
      "example2/mars (<r> $[1].nodes[1].remarks.prefixs[0])"]),
    ("network-covers-registry-network", {"network": "fd68::1/16"},
     ["<c>: $.daemon.network: fd68::/16 overlaps fd68::/64 of node example2/sun "
      "(<r> $[1].nodes[0].remarks.network)"]),
    ("network-equals-registry-network", {"network": "fd67::99/64"},
     ["<c>: $.daemon.network: fd67::/64 overlaps fd67::/64 of node example/earth "
      "(<r> $[0].nodes[1].remarks.network)"]),
    ("v6-prefix-covers-registry-network", {"prefixes": ["fd69::/32"]},
     ["<c>: $.daemon.prefixs[0]: fd69::/32 overlaps fd69::/64 of node example2/mars "
      "(<r> $[1].nodes[1].remarks.network)"]),
    ("network-inside-registry-prefix", {"network": "2001:db8:131:5::1/64"},
     ["<c>: $.daemon.network: 2001:db8:131:5::/64 overlaps 2001:db8:131::/48 of node "
      "example2/mars (<r> $[1].nodes[1].remarks.prefixs[1])"]),
    ("key-mismatch", {"private_key": "../keys/other.pem"},
     ["<c>: $.private_key: its public key does not match the key <r> lists for "
      "organization 'example'"]),
]


@pytest.mark.parametrize(("changes", "expected"),
                         [pytest.param(c, e, id=i) for i, c, e in CROSS_CASES])
def test_cross_problem(world, changes, expected):
    write_key(world.root / "keys" / "other.pem")
    got = _both_lines(world, _venus(world, **changes))
    want = expand(expected, c=world.root / "venus" / "config.json", r=world.registry_path)
    assert sorted(got) == sorted(want)


def test_cross_problems_direct(world):
    """cross_problems on built objects: only the config's file is blamed."""
    reg = load_registry(str(world.registry_path))
    doc = _venus(world, prefixes=["192.168.128.0/16"],
                 private_key=world.keys["example2"].private_pem)
    cfg = build_config(doc, "venus.json")
    assert sorted(str(p) for p in cross_problems(cfg, reg)) == sorted([
        f"venus.json: $.private_key: its public key does not match the key {world.registry_path} "
        "lists for organization 'example'",
        *(f"venus.json: $.daemon.prefixs[0]: 192.168.0.0/16 overlaps 192.168.{128 + i}.0/24 of "
          f"node {org}/{name} ({world.registry_path} $[{o}].nodes[{j}].remarks.prefixs[0])"
          for i, (o, j, org, name) in enumerate([
              (0, 0, "example", "moon"), (0, 1, "example", "earth"),
              (1, 0, "example2", "sun"), (1, 1, "example2", "mars")])),
    ])


def test_listed_node_must_agree_with_registry(world):
    cfg_path = world.config_path("moon")
    doc = world.registry_doc()
    doc[0]["nodes"][0]["remarks"]["network"] = "fd66::2/64"
    doc[0]["nodes"][0]["remarks"]["prefixs"] = ["192.168.128.0/25"]
    rpath = write_json(world.registry_path, doc)
    with pytest.raises(InputError) as exc:
        load_both(str(cfg_path), str(rpath))
    assert lines(exc.value) == [
        f"{cfg_path}: $.daemon.network: fd66::1/64 differs from fd66::2/64, which {rpath} lists "
        "for example/moon",
        f"{cfg_path}: $.daemon.prefixs: ['192.168.128.0/24'] differs from ['192.168.128.0/25'], "
        f"which {rpath} lists for example/moon",
    ]


def test_listed_node_overlapping_itself_is_fine(world):
    # moon's own registry entry is not "another node"
    cfg, reg = load_both(str(world.config_path("moon")), str(world.registry_path))
    assert reg.get(cfg.node.key).network == cfg.node.network


def test_organization_missing_from_registry_is_fine(world, pair):
    doc = make_config(private_key=pair.private_pem, organization="example3", common_name="pluto",
                      network="fd71::1/64", prefixes=["192.168.150.0/24"])
    path = write_json(world.root / "pluto" / "config.json", doc)
    cfg, _ = load_both(str(path), str(world.registry_path))
    assert cfg.node.name == "example3/pluto"


def test_every_world_config_agrees_with_registry(world):
    for name in NODES:
        load_both(str(world.config_path(name)), str(world.registry_path))


def test_load_both_reports_both_files_at_once(world):
    cfg_doc = apply_all(world.config("moon"), S("daemon.network", "fd66::1/96"))
    reg_doc = apply_all(world.registry_doc(), S("1.nodes.1.remarks.prefixs.0", "lan"))
    cpath = write_json(world.config_path("moon"), cfg_doc)
    rpath = write_json(world.registry_path, reg_doc)
    with pytest.raises(InputError) as exc:
        load_both(str(cpath), str(rpath))
    assert lines(exc.value) == [
        f"{cpath}: $.daemon.network: 'fd66::1/96' has prefix length /96; it must be /64 or shorter",
        f"{rpath}: $[1].nodes[1].remarks.prefixs[0]: 'lan' is not an IP prefix "
        "(like 192.168.128.0/24 or 2001:db8::/48)",
    ]


def test_load_both_cross_problems_only_when_both_load(world):
    write_key(world.root / "keys" / "other.pem")
    cfg_doc = _venus(world, private_key="../keys/other.pem")
    reg_doc = apply_all(world.registry_doc(), S("0.nodes.0.endpoints.0.port", 0))
    got = _both_lines(world, cfg_doc, reg_doc)
    # the registry failed, so the key comparison did not run
    assert got == [f"{world.registry_path}: $[0].nodes[0].endpoints[0].port: "
                   "0 is less than the minimum of 1"]


# ---------------------------------------------------------------- the repository's example


SEED_EXAMPLE = REPO / "examples" / "seed"


@pytest.mark.skipif(not (SEED_EXAMPLE / "registry.json").exists(),
                    reason="examples/seed is made by `make example`")
@pytest.mark.parametrize("name", ["moon", "earth", "sun", "mars"])
def test_repository_example_loads(name):
    cfg, reg = load_both(str(SEED_EXAMPLE / name / "config.json"),
                         str(SEED_EXAMPLE / "registry.json"))
    assert reg.get(cfg.node.key) is not None


def test_build_world_again_is_deterministic_in_shape(tmp_path):
    a = build_world(tmp_path / "a")
    b = build_world(tmp_path / "b", pairs=a.keys)
    assert a.registry == b.registry
    assert json.loads(a.registry_path.read_text()) == a.registry


def test_a_registry_in_ranets_shape_loads(pair, other_pair):
    """ranet writes serial_number as a decimal string and always names the address
    family; remarks hold strings of its own beside aronet's network. aronet reads it
    as the same registry with integer serial numbers (issue 19)."""
    doc = [
        {"public_key": pair.public_pem, "organization": "nickcao", "nodes": [
            {"common_name": "nrt0", "endpoints": [
                {"serial_number": "0", "address_family": "ip4", "address": None, "port": 3000},
                {"serial_number": "1", "address_family": "ip6", "address": "nrt0.example.net",
                 "port": 3000}],
             "remarks": {"network": "fd10::1/64", "some": "random note"}}]},
        {"public_key": other_pair.public_pem, "organization": "other", "nodes": [
            {"common_name": "a", "endpoints": [
                {"serial_number": 7, "address_family": "ip4", "address": "198.51.100.7", "port": 3000}],
             "remarks": {"network": "fd11::1/64"}}]},
    ]
    reg = build_registry(doc, "ranet.json")
    nrt0 = next(n for n in reg.nodes if n.common_name == "nrt0")
    assert [(e.family, e.serial_number, e.address) for e in nrt0.endpoints] == [
        ("ip4", 0, None), ("ip6", 1, "nrt0.example.net")]
    other = next(n for n in reg.nodes if n.common_name == "a")
    assert other.endpoints[0].serial_number == 7
