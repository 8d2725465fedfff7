"""load_topology: read a topology file, check it, and complete it into a Topology.

The file is read by aronet.load's reader (a regular file, at most 1 MiB). YAML
syntax errors give line and column (and a duplicate key, a control character, an
anchor or alias, or nesting deeper than 32 levels is one); then the JSON
Schema lab/schema/topology.schema.json (through aronet.schema), then what nodes
inherit from their group and the defaults (lab.topology.inherit), then the rules of
lab.topology.rules; every problem is reported at once, each with its path
(aronet.errors.Problem). The values left out are assigned by lab.topology.addresses.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

import yaml

from aronet import schema
from aronet.errors import InputError, Problem
from aronet.load import Collector, read_text
from aronet.load.files import MAX_DEPTH, TOPOLOGY_LIMIT, structure_problems
from aronet.load.values import one_line
from aronet.model import DEFAULT_PORT

from .addresses import complete
from .inherit import inherit, prefix_origin_babeld, vrf_babeld
from .model import DEFAULT_MODE, LAB_BABEL_HELLO, LAB_BABEL_UPDATE, NatSpec, Options, Topology
from .rules import as_dict, as_list, as_str, check_rules

SCHEMA_FILE = Path(__file__).parent.parent / "schema" / "topology.schema.json"

_PATTERN_HINTS = {
    "lab": "must be 1 to 12 lowercase letters or digits, starting with a letter "
    "(it prefixes every namespace of the lab, so it has no '-')",
    "name": "must be 1 to 63 letters, digits, '_' or '-', starting with a letter or digit",
    "organization": "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a "
    "letter or digit",
    "rate": "is not a rate like 10mbit, 512kbit or 1gbit",
}


def load_topology(path: str | os.PathLike, *, name: str | None = None,
                  mode: str | None = None) -> Topology:
    """Read, check and complete a topology. name: run it under another lab name
    (several labs from one file at once); it is checked like the file's own. mode:
    every node in this mode (`up --mode`), checked as if each node said so."""
    path = str(path)
    return parse_topology(read_text(path, TOPOLOGY_LIMIT), path, name=name, mode=mode)


def parse_topology(text: str, file: str, *, name: str | None = None,
                   mode: str | None = None) -> Topology:
    doc, problems = _parse_yaml(text, file)
    if name is not None and isinstance(doc, dict):
        doc["name"] = name
    if mode is not None and isinstance(doc, dict) and isinstance(doc.get("nodes"), dict):
        for node in doc["nodes"].values():
            if isinstance(node, dict):
                node["mode"] = mode  # a node's own value wins over its group's and defaults
    problems += schema_problems(doc, file)
    topology = None
    if isinstance(doc, dict):
        check = Collector(file)
        topology = _build(doc, check)
        problems += check.problems
    if problems:  # a value several nodes inherit may break one rule for each: say it once
        raise InputError(list(dict.fromkeys(problems)))
    assert topology is not None
    return topology


def _build(doc: dict, check: Collector) -> Topology | None:
    """The Topology, or None when a rule is broken (the problems are in check)."""
    lab = as_str(doc.get("name"))
    opts = _options(as_dict(doc.get("options")))
    problems_before = len(check.problems)
    nodes, origins = inherit(doc, check)
    vrf_babeld(nodes, origins, as_dict(doc.get("options")), check)
    prefix_origin_babeld(nodes, origins, as_dict(doc.get("options")), check)
    draft = check_rules({**doc, "nodes": nodes}, check, origins)
    if len(check.problems) > problems_before or lab is None or not _valid_doc(doc):
        return None
    segments, nodes = complete(lab, opts, draft, check)
    if len(check.problems) > problems_before:
        return None
    nats = tuple(NatSpec(r, tuple(as_list(spec.get("inside"))), draft.outside[r].name)
                 for r, spec in draft.nat.items())
    return Topology(file=check.file, name=lab, options=opts, nodes=nodes, nat=nats,
                    segments=segments, blocked=tuple(draft.blocked))


def _options(raw: dict) -> Options:
    babel, ike = as_dict(raw.get("babel")), as_dict(raw.get("ike"))
    return Options(
        mode=raw.get("mode", DEFAULT_MODE), routing=raw.get("routing"), port=raw.get("port", DEFAULT_PORT),
        nodad=raw.get("nodad", True), babel_hello=babel.get("hello_interval", LAB_BABEL_HELLO),
        babel_update=babel.get("update_interval", LAB_BABEL_UPDATE),
        babel_prefix_origin=babel.get("prefix_origin") is True, dpd_delay=ike.get("dpd_delay"))


# ---------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that notes duplicate keys (PyYAML silently keeps the last one) and
    refuses what a topology never needs: anchors and aliases (an alias bomb of a few
    hundred bytes expands to gigabytes), nesting deeper than MAX_DEPTH and integers
    longer than Python converts."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[tuple[object, yaml.Mark, yaml.Mark]] = []
        self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not allowed in a topology",
                event.start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested too deeply: at most {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    self.duplicates.append((key, key_node.start_mark, seen[key]))
                else:
                    seen[key] = key_node.start_mark
            except TypeError:  # an unhashable key: construct_mapping reports it
                pass
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        digits = sum(c.isdigit() for c in node.value)
        if digits > sys.get_int_max_str_digits():
            raise yaml.constructor.ConstructorError(
                None, None, f"a number of {digits} digits is too long", node.start_mark)
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _where(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _parse_yaml(text: str, file: str) -> tuple[object, list[Problem]]:
    loader = None
    try:
        loader = _Loader(text)
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = _where(mark) if mark else "$"
        reason = "; ".join(x for x in (e.context, e.problem) if x)
        raise InputError(Problem(file, where, f"invalid YAML: {one_line(reason)}")) from None
    except yaml.reader.ReaderError as e:  # a NUL or control character
        pos = e.position
        line, col = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        what = repr(chr(e.character)) if isinstance(e.character, int) else repr(e.character)
        raise InputError(Problem(file, f"line {line}, column {col}",
                                 f"invalid YAML: the character {what} is not allowed")) from None
    except yaml.YAMLError as e:
        raise InputError(Problem(file, "$", f"invalid YAML: {one_line(str(e))}")) from None
    except RecursionError:
        raise InputError(Problem(file, "$", "invalid YAML: nested too deeply")) from None
    finally:
        if loader is not None:
            loader.dispose()
    problems = [Problem(file, _where(mark), f"duplicate key {key!r} (first at {_where(first)})")
                for key, mark, first in loader.duplicates]
    return doc, problems + structure_problems(doc, file)


# ---------------------------------------------------------------- the schema


@cache
def _validator() -> schema.Validator:
    return schema.strict_validator(schema.read(SCHEMA_FILE))


def _pattern_key(path: list) -> str:
    last = path[-1] if path else None
    if path == ["name"]:
        return "lab"
    if last in ("organization", "rate"):
        return last
    return "name"


def _special(err, path: list) -> str | None:
    """The rules only the topology schema has."""
    last = path[-1] if path else None
    if err.validator == "const" and err.validator_value is False:
        return "true is not allowed: give a prefix, or false for none"
    if err.validator in ("minItems", "maxItems") and (
            last == "between" or (len(path) == 2 and path[0] in ("links", "blocked"))):
        return f"{err.instance!r} is not a pair of two names"
    return None


WORDING = schema.Wording(pattern_hints=_PATTERN_HINTS, pattern_key=_pattern_key, special=_special)


def schema_problems(doc, file: str) -> list[Problem]:
    return schema.problems(_validator(), doc, file, WORDING)


def _valid_doc(doc: dict) -> bool:
    return not any(True for _ in _validator().iter_errors(doc))
