"""Property tests over the three input surfaces, each through its real entry point:
config.json (`aronet config validate`, then `aronet registry build` and `aronet
plan`), registry.json (`aronet registry validate`, then `aronet plan`) and a lab
topology (lab.topology.load_topology, then plan_lab; `aronet-lab up` would build
namespaces). Every input must end in exit 0 or a clean exit 2: one line
`<file>: <path or line/col>: <reason>` per problem and the count, never a
traceback, an exception's name, a stray line, an error report far larger than
the input, or a hang.

The inputs are the valid documents of builders.py and lab/examples/*.yaml, mutated:
values replaced by hostile JSON values, strings given a hostile suffix, keys deleted
or added, items copied, deep nesting and huge integers written verbatim, and the
serialized text itself edited (control characters, NUL, YAML anchors and aliases,
a small alias bomb). The budget is about 2,000 examples in all, derandomized;
`pytest --deep` runs ten times as many with a fresh seed (see tests/conftest.py).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import tempfile
import unicodedata
from pathlib import Path
from unittest import mock

import yaml
from builders import build_world, world_documents
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from aronet import cli
from aronet.errors import InputError, report_error
from lab.topology import load_topology, plan_lab

_ROOT = tempfile.mkdtemp(prefix="aronet-surfaces-")
atexit.register(shutil.rmtree, _ROOT, True)
WORLD = build_world(_ROOT)
INLINE_CONFIGS, _ = world_documents(WORLD.keys, inline=True)
EXAMPLES = {p.stem: p.read_text() for p in sorted(
    (Path(__file__).parents[2] / "lab" / "examples").glob("*.yaml"))}
EXAMPLE_DOCS = {name: yaml.safe_load(text) for name, text in EXAMPLES.items()}

try:  # registered by tests/conftest.py from --deep: the budget of the three tests together
    BUDGET = settings.get_profile("aronet-surfaces")
except InvalidArgument:
    BUDGET = settings(max_examples=2000, derandomize=True, database=None)
BUDGET = settings(BUDGET, deadline=None, suppress_health_check=list(HealthCheck))


def share(fraction: float) -> settings:
    return settings(BUDGET, max_examples=max(1, round(BUDGET.max_examples * fraction)))


HANG_SECONDS = 20  # one example takes tens of milliseconds


# ---------------------------------------------------------------- values

HOSTILE_CHARS = ["\n", "\r\n", "\r", "\x00", "\t", "\x1b[31m", "\x7f", "\x85", "\u2028",
                 "\ufeff", "\ud800", "\udfff", "é", " ", "-", ".", "/", "..", "%", ":", "'",
                 '"', "\\", "#", "&a", "*a"]
HOSTILE_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),  # surrogates included
    st.lists(st.sampled_from(HOSTILE_CHARS), max_size=3).map("".join),
    st.sampled_from(["", " ", "abcdefg\n", "moon\n", "a" * 300, "fd66::1/64\n", "10.0.0.1/8\n",
                     "ip4\n", "vrf\n", "../keys/example.pem", "/dev/null", "-----BEGIN",
                     "fd66::/64", "0.0.0.0/0", "::/0", "::/1", "127.0.0.1/8", "fe80::1%eth0"]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.sampled_from([0, -1, 1, 65535, 65536, 2**31, 2**32, 2**63, 2**64, 10**30, -(10**30)]),
    st.floats(), st.sampled_from([0.5, 1.0, 12025.0, 1e308, -0.0]),
    HOSTILE_TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(HOSTILE_TEXT, children, max_size=4)),
    max_leaves=10,
)
SUFFIXES = st.sampled_from(HOSTILE_CHARS) | HOSTILE_TEXT

# Written verbatim where a value goes: what no serializer writes, or not fast.
DEPTHS = st.integers(1, 40) | st.sampled_from([100, 400, 500, 985, 1000, 1500, 3000])
RAW_TOKENS = st.one_of(
    st.builds(lambda n: "[" * n + "]" * n, DEPTHS),
    st.builds(lambda n: '{"a": ' * n + "1" + "}" * n, DEPTHS),
    st.builds(lambda n, sign: sign + "9" * n, st.integers(4250, 4400), st.sampled_from(["", "-"])),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1E400", '"\\ud800"',
                     '"\\u0000"', '"a\\nb"']),
)


class _Raw:
    """Raw tokens of one document: placeholders in the data, text in the file."""

    def __init__(self):
        self.tokens: dict[str, str] = {}

    def add(self, text: str) -> str:
        mark = f"@@raw{len(self.tokens)}@@"
        self.tokens[mark] = text
        return mark

    def apply(self, text: str) -> str:
        for mark, raw in self.tokens.items():
            for quoted in (f'"{mark}"', f"'{mark}'", mark):
                text = text.replace(quoted, raw)
        return text


# ---------------------------------------------------------------- document mutations


def _paths(doc, prefix=()):
    """Every path to a value inside doc (not the root)."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    out = []
    for k, v in items:
        out.append((*prefix, k))
        out += _paths(v, (*prefix, k))
    return out


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def _set_field(doc, path, value) -> None:
    """doc[path] = value, making missing objects on the way (when the shape allows)."""
    target = doc
    for p in path[:-1]:
        if isinstance(target, dict) and isinstance(p, str):
            if not isinstance(target.get(p), dict | list):
                target[p] = {}
            target = target[p]
        elif isinstance(target, list) and isinstance(p, int) and p < len(target):
            target = target[p]
        else:
            return
    last = path[-1]
    if isinstance(target, dict) and isinstance(last, str):
        target[last] = value
    elif isinstance(target, list) and isinstance(last, int) and last <= len(target):
        target[last:last + 1] = [value]


# The fields the loaders read, present in the documents or not ("set-field" makes
# them); the ones whose change leaves the rest valid first (hypothesis favours them).
CONFIG_FIELDS = [
    *(("daemon", f) for f in ("tunnel_prefix", "ifname", "network", "prefixs", "mode", "use_netns",
                              "routing", "extra_ip", "route_table", "mtu")),
    ("daemon", "prefixs", 0), ("daemon", "extra_ip", 0), ("daemon", "babel", "hello_interval"),
    ("daemon", "babel", "update_interval"), ("daemon", "ike", "dpd_delay"),
    *(("endpoints", i, f) for i in (0, 1)
      for f in ("address", "port", "address_family", "serial_number")),
    ("common_name",), ("organization",), ("private_key",),
]
REGISTRY_FIELDS = [
    (o, *rest) for o in (0, 1) for rest in [
        *(("nodes", n, *f) for n in (0, 1) for f in [
            ("remarks", "prefixs", 0), ("remarks", "prefixs"), ("remarks", "network"),
            ("endpoints", 0, "address"), ("endpoints", 0, "port"), ("endpoints", 0, "address_family"),
            ("endpoints", 0, "serial_number"), ("endpoints", 1, "address"), ("common_name",),
        ]),
        ("nodes", 2), ("organization",), ("public_key",),
    ]
]
TOPOLOGY_FIELDS = [
    ("name",), ("options", "mode"), ("options", "routing"), ("options", "port"),
    ("options", "nodad"), ("options", "babel", "hello_interval"), ("options", "ike", "dpd_delay"),
    ("nat", "gw", "inside"), ("nat", "gw", "inside", 0), ("lans", "wan", "members"),
    ("lans", "wan", "members", 0), ("lans", "wan", "ipv4"), ("lans", "wan", "ipv6"),
    ("lans", "wan", "loss"), ("lans", "wan", "delay"), ("lans", "wan", "rate"),
    ("links",), ("links", 0), ("links", 0, "between"), ("blocked",), ("blocked", 0),
    *(("nodes", n, f) for n in ("moon", "sun", "n1", "a1", "b1") for f in
      ("organization", "mode", "routing", "network", "prefixes", "port", "endpoints")),
    ("nodes", "a1", "endpoints", 2, "via"), ("nodes", "moon", "endpoints", 0),
]
KEYS = st.one_of(HOSTILE_TEXT, st.sampled_from(
    ["a\nb", "\n", "nodes\n", "moon\n", "network", "prefixs", "prefixes", "endpoints", "members",
     "tunnel_prefix", "ifname", "mode", "remarks", "common_name", "<<", "?"]))
# Values a field may well hold: with the rest valid, the planner sees them.
PREFIXES = st.one_of(
    st.builds(lambda a, n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)),
              st.ip_addresses(v=4), st.integers(0, 32)),
    st.builds(lambda a, n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)),
              st.ip_addresses(v=6), st.integers(0, 128)),
    st.sampled_from(["0.0.0.0/0", "::/0", "0.0.0.0/1", "::/1", "127.0.0.0/8", "224.0.0.0/4",
                     "240.0.0.0/4", "2000::/3", "::1/128", "fe80::/10", "198.51.100.1/32",
                     "203.0.113.3/32", "fd66::/16", "10.0.0.0/8", "192.168.128.0/23"]),
)
ADDRESSES = st.one_of(st.ip_addresses().map(str), PREFIXES,
                      st.builds(lambda a, n: f"{a}/{n}", st.ip_addresses(), st.integers(0, 128)))
NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True) | st.sampled_from(
    ["moon", "earth", "sun", "mars", "example", "example2", "wan", "gw", "n1", "a1", "b1"])
NUMBERS = st.one_of(st.integers(0, 70_000), st.floats(0, 100), st.sampled_from([1, 12025, 65535]))
BY_FIELD = {
    "network": ADDRESSES, "address": ADDRESSES | st.none(), "ipv4": PREFIXES | st.booleans(),
    "ipv6": PREFIXES | st.booleans(), "prefixs": st.lists(PREFIXES, max_size=3),
    "prefixes": st.lists(PREFIXES, max_size=3) | st.booleans(),
    "extra_ip": st.lists(ADDRESSES, max_size=2), "members": st.lists(NAMES, max_size=4),
    "inside": st.lists(NAMES, max_size=2), "between": st.lists(NAMES, max_size=3),
    "mode": st.sampled_from(["vrf", "netns"]), "routing": st.sampled_from(["bird", "babeld"]),
    "address_family": st.sampled_from(["ip4", "ip6"]), "use_netns": st.booleans(),
    "nodad": st.booleans(), "endpoints": st.lists(st.sampled_from(["ip4", "ip6"]), max_size=3),
    **{k: NAMES for k in ("tunnel_prefix", "ifname", "common_name", "organization", "name", "via")},
}
ITEMS = {"prefixs": PREFIXES, "prefixes": PREFIXES, "extra_ip": ADDRESSES, "members": NAMES,
         "inside": NAMES, "between": NAMES, "blocked": st.lists(NAMES, min_size=2, max_size=2)}


def plausible(path) -> st.SearchStrategy:
    """A value of the right kind for the field at path."""
    names = [p for p in path if isinstance(p, str)]
    if isinstance(path[-1], int) and names and names[-1] in ITEMS:
        return ITEMS[names[-1]]
    return BY_FIELD.get(names[-1] if names else "", NUMBERS)


PLAUSIBLE = st.one_of(ADDRESSES, NAMES, NUMBERS, st.booleans(), st.none())
FIELD_VALUES = st.one_of(PLAUSIBLE, VALUES, st.builds(lambda v, s: v + s, st.sampled_from(
    ["abcdefg", "ar", "moon", "vrf", "netns", "ip4", "ip6", "bird", "babel", "fd66::1/64",
     "192.168.128.0/24", "10.0.0.0/8", "example", "wan", "10mbit", "5ms"]), SUFFIXES))

# hypothesis favours the first of a list: the mildest first, so that more examples
# stay valid and reach the planner
OPS = ["set-field", "set-field", "copy", "replace", "suffix", "add", "wrap", "raw", "share", "delete"]


@st.composite
def mutated(draw, base, fields, raw: _Raw, *, yaml_anchors=False, gentle=False):
    """A deep copy of base with 1 to 5 mutations (one most often). gentle: only
    plausible values in known fields, so that many examples reach the planner."""
    doc = copy.deepcopy(base)
    if gentle:
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(fields))
            _set_field(doc, path, draw(plausible(path)))
        return doc
    for _ in range(draw(st.sampled_from([1, 1, 2, 3, 5]))):
        op = draw(st.sampled_from(OPS))
        paths = _paths(doc)
        if op == "set-field":
            _set_field(doc, draw(st.sampled_from(fields)), draw(FIELD_VALUES))
            continue
        if not paths:
            doc = draw(VALUES)
            continue
        path = draw(st.sampled_from(paths))
        parent, last = _get(doc, path[:-1]), path[-1]
        value = parent[last]
        if op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(VALUES)
        elif op == "suffix":
            parent[last] = (value if isinstance(value, str) else json.dumps(value)) + draw(SUFFIXES)
        elif op == "add":
            if isinstance(value, dict):
                value[draw(KEYS)] = draw(VALUES | FIELD_VALUES)
            elif isinstance(value, list):
                value.insert(draw(st.integers(0, len(value))), draw(VALUES | FIELD_VALUES))
            else:
                parent[last] = [value, draw(VALUES)]
        elif op == "wrap":
            parent[last] = draw(st.sampled_from([
                [value], {"value": value}, json.dumps(value), None,
                value[0] if isinstance(value, list) and value else 0]))
        elif op == "copy":  # a duplicate: two nodes, endpoints, members... alike
            if isinstance(parent, list):
                parent.insert(draw(st.integers(0, len(parent))), copy.deepcopy(value))
            else:
                parent[draw(KEYS)] = copy.deepcopy(value)
        elif op == "raw":
            parent[last] = raw.add(draw(RAW_TOKENS))
        else:  # share: one object in two places (YAML writes an anchor and an alias)
            shared = _get(doc, draw(st.sampled_from(paths)))
            if all(_get(doc, path[:k]) is not shared for k in range(len(path))):  # no cycle
                parent[last] = shared if yaml_anchors else copy.deepcopy(shared)
    return doc


# ---------------------------------------------------------------- text mutations

JSON_JUNK = ["\x00", "\x01", "\x1b", "\x7f", "\ufeff", "\ud800", "\n", ",", "]", "}", "[", "{",
             '"', "\\", "#", "//", "NaN", "-", "1e999", '"a": 1,', '"\\ud800"', "\\u0000"]
YAML_JUNK = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\ufeff", "\ud800", "\ufffe",
             "\n", "\t", "&a ", "*a", "*b ", "&a [*a]", "!!binary ", "!!str ", "!!set ",
             "!!python/object/apply:os.system ['true'] ", "? ", "- ", ": ", "{", "[", "'", '"',
             "#", "%YAML 1.1\n", "---\n", "...\n", "<<: *a\n", "\\", "%", "@", "`", "|", ">"]


@st.composite
def edited(draw, text: str, junk: list[str], *, lines=False):
    """text with 0 to 3 edits: junk inserted, a range cut, a line doubled."""
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        op = draw(st.sampled_from(["insert", "insert", "cut", "line"] if lines else ["insert", "cut"]))
        at = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(junk) | HOSTILE_TEXT) + text[at:]
        elif op == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        else:  # a duplicate key, or a second item
            rows = text.split("\n")
            i = draw(st.integers(0, len(rows) - 1))
            rows.insert(i, rows[i])
            text = "\n".join(rows)
    return text


# A few hundred bytes that expand into width**levels items; kept small (at most
# 59,049) so that a loader which expands them costs seconds, not the machine.
BOMBS = [(w, n) for w in range(2, 10) for n in range(1, 7) if w**n <= 60_000]


def alias_bomb(width: int, levels: int) -> str:
    rows = ["b0: &b0 [" + ", ".join(["lol"] * width) + "]"]
    rows += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(rows) + "\n"


@st.composite
def json_file(draw, base, fields) -> bytes:
    """base mutated (half of the time gently), written as JSON, the text perhaps edited."""
    raw = _Raw()
    gentle = draw(st.booleans())
    doc = draw(mutated(base, fields, raw, gentle=gentle))
    text = raw.apply(json.dumps(doc, indent=draw(st.sampled_from([None, 2])),
                                ensure_ascii=draw(st.booleans())))
    if not gentle:
        text = draw(edited(text, JSON_JUNK))
    return text.encode("utf-8", "surrogatepass")


def _yaml_dump(doc, **options) -> str:
    try:  # libyaml's emitter is fast, and refuses a lone surrogate
        return yaml.dump(doc, Dumper=yaml.CSafeDumper, sort_keys=False, **options)
    except (UnicodeEncodeError, yaml.YAMLError):
        return yaml.safe_dump(doc, sort_keys=False, **options)


@st.composite
def yaml_file(draw) -> bytes:
    """A bundled topology: its text edited, or its document mutated (gently or not),
    written by PyYAML and edited; now and then after an alias bomb, which a mutated
    document then uses as one of its values."""
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    text = EXAMPLES[name]
    how = draw(st.sampled_from(["text", "document", "gentle"]))
    bomb = draw(st.sampled_from(BOMBS)) if how != "gentle" and draw(st.integers(0, 9)) == 0 else None
    if how != "text":
        raw = _Raw()
        doc = draw(mutated(EXAMPLE_DOCS[name], TOPOLOGY_FIELDS, raw, yaml_anchors=True,
                           gentle=how == "gentle"))
        if bomb and _paths(doc):
            path = draw(st.sampled_from(_paths(doc)))
            _get(doc, path[:-1])[path[-1]] = raw.add(f"*b{bomb[1]}")
        text = raw.apply(_yaml_dump(doc, allow_unicode=draw(st.booleans()),
                                    default_flow_style=draw(st.sampled_from([False, None]))))
    if how != "gentle":
        text = draw(edited(text, YAML_JUNK, lines=True))
    if bomb:
        text = alias_bomb(*bomb) + text
    return text.encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------- the outcome

EXCEPTION_TEXT = re.compile(
    r"Traceback|\b[A-Z][A-Za-z]*(Error|Exception)\b|maximum recursion depth|"
    r"integer string conversion|codec can't|object has no attribute|unhashable type|"
    r"not subscriptable|<unicode string>|is not iterable")
SUMMARY = re.compile(r"\d+ problems? found; nothing was changed")


class Hang(BaseException):
    """An example ran for HANG_SECONDS (a BaseException: no `except Exception` eats it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def alarm(signum, frame):
        raise Hang()
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Hang:
        raise AssertionError(f"no answer within {seconds} s (a hang)") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_report(rc: int, out: str, err: str, files: list[str], size: int) -> None:
    """rc and the output of one command are a clean outcome for input files of
    `size` bytes in all."""
    assert rc in (0, 2), f"exit {rc}: {err[-2000:]}"
    out.encode()  # a real stdout is strict UTF-8: a lone surrogate would be a traceback
    assert not EXCEPTION_TEXT.search(err), err[-2000:]
    assert len(err) <= 20_000 + 20 * size, f"an error report of {len(err)} characters"
    if rc == 0:
        return
    *problems, summary = err.rstrip("\n").split("\n")
    assert SUMMARY.fullmatch(summary), err[-2000:]
    assert len(problems) == int(summary.split()[0]), f"a problem spans several lines:\n{err}"
    line = re.compile("(?:" + "|".join(map(re.escape, files)) + r"): (?:\$|line \d+(?:, column \d+)?)"
                      r"[^\n]*?: \S")
    for p in problems:
        assert line.match(p), f"not `<file>: <path>: <reason>`: {p!r}"
        bad = [c for c in p if c != "\t" and unicodedata.category(c) == "Cc"]
        assert not bad, f"control characters {bad!r} in {p!r}"


_build_parser = cli.parser


@functools.cache
def _parser():
    return _build_parser()


def run(argv: list[str], size: int) -> int:
    """aronet's command line in-process; assert a clean outcome, return the exit status.
    The parser is built once (building it is most of the time of a call)."""
    out, err = io.StringIO(), io.StringIO()
    with time_limit(HANG_SECONDS), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err), mock.patch.object(cli, "parser", _parser):
        try:
            rc = cli.main(argv)
        except SystemExit as e:  # argparse: the arguments are fixed, so never
            raise AssertionError(f"SystemExit({e.code}): {err.getvalue()}") from None
    files = [a for a in argv[2:] if os.sep in a]
    check_report(rc, out.getvalue(), err.getvalue(), files, size)
    return rc


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    os.chmod(path, 0o600)  # a config holding its PEM inline must be 0600
    return str(path)


def example_dir() -> tempfile.TemporaryDirectory:
    """A fresh directory for one example's files, inside the world's root: a config
    there finds its key at ../keys/<org>.pem like the world's own configs."""
    return tempfile.TemporaryDirectory(dir=_ROOT)


# ---------------------------------------------------------------- the three surfaces


@st.composite
def config_case(draw):
    """(node name, config file bytes): one of the world's configs, its key inline or not."""
    name = draw(st.sampled_from(sorted(WORLD.configs)))
    base = INLINE_CONFIGS[name] if draw(st.booleans()) else WORLD.configs[name]
    return name, draw(json_file(base, CONFIG_FIELDS))


@share(0.35)
@given(case=config_case())
def test_config_surface(case):
    """config validate; then plan against the world's registry, and against a registry
    built from this config and the other three (so the planner sees its values)."""
    name, data = case
    registry = str(WORLD.registry_path)
    with example_dir() as d:
        cfg = write(Path(d) / "config.json", data)
        size = len(data) + os.path.getsize(registry)
        if run(["config", "validate", cfg], len(data)) != 0:
            return
        event("config valid")
        run(["plan", "-c", cfg, "-r", registry], size)
        built = os.path.join(d, "built.json")
        others = [str(WORLD.config_path(n)) for n in sorted(WORLD.configs) if n != name]
        if run(["registry", "build", cfg, *others, "-o", built], size) == 0:
            run(["plan", "-c", cfg, "-r", built, "--json"], size)


@share(0.35)
@given(case=json_file(WORLD.registry, REGISTRY_FIELDS))
def test_registry_surface(case):
    """registry validate; then moon's plan with it."""
    moon = str(WORLD.config_path("moon"))
    with example_dir() as d:
        reg = write(Path(d) / "registry.json", case)
        if run(["registry", "validate", reg], len(case)) == 0:
            event("registry valid")
            run(["plan", "-c", moon, "-r", reg], len(case) + os.path.getsize(moon))


@share(0.30)
@given(case=yaml_file())
def test_topology_surface(case):
    """load_topology, then plan_lab; an InputError reported as aronet-lab reports it."""
    with example_dir() as d:
        path = write(Path(d) / "topology.yaml", case)
        err = io.StringIO()
        with time_limit(HANG_SECONDS):
            try:
                plan_lab(load_topology(path))
                rc = 0
                event("topology valid")
            except InputError as e:
                with contextlib.redirect_stderr(err):
                    rc = report_error(e, "aronet-lab")
        check_report(rc, "", err.getvalue(), [path], len(case))
