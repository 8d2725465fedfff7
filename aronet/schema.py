"""Strict JSON Schema checking, every error reported as a Problem.

One checker for every input aronet and its lab read: aronet.load checks config.json
and registry.json with it, lab.topology the lab's topology files. It is strict where
JSON Schema is lenient (12025.0 is no integer, True no number, NaN no number), it
reports every error at once, each as an aronet.errors.Problem with its JSON path,
and it words the errors a user is likely to make. What differs between the
surfaces (which hint a pattern takes, rules only one schema has) is their Wording.

Pure: the only I/O is reading the schema file it is given.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path

import jsonschema
import referencing

from .errors import Problem, json_path

Validator = jsonschema.protocols.Validator


def read(source: Traversable | PathLike | str) -> dict:
    """A schema document from a file or a package resource
    (importlib.resources.files(...).joinpath(...))."""
    if isinstance(source, str | PathLike):
        source = Path(source)
    return json.loads(source.read_text(encoding="utf-8"))


def strict_validator(schema: dict, *, references: Iterable[dict] = ()) -> Validator:
    """A Draft 2020-12 validator for schema whose integers are ints and whose numbers
    are ints or finite floats (never bools). references: schemas that schema may
    $ref by their $id."""
    store = referencing.Registry().with_resources(
        (s["$id"], referencing.Resource.from_contents(s)) for s in references
    )
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
        "integer": lambda _, x: isinstance(x, int) and not isinstance(x, bool),
        "number": lambda _, x: (isinstance(x, int) and not isinstance(x, bool))
        or (isinstance(x, float) and math.isfinite(x)),
    })
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker,
                                       validators={"pattern": _full_pattern})
    return cls(schema, registry=store)


def _full_pattern(validator, pattern: str, instance, schema):
    """A pattern matches the whole string. jsonschema searches with Python's re, where
    "$" also matches before a final newline, so "^[a-z]+$" would take "name\n";
    ECMA-262, which JSON Schema names, does not. Every pattern here is anchored."""
    if validator.is_type(instance, "string") and re.fullmatch(pattern, instance) is None:
        yield jsonschema.ValidationError(f"{_short(instance)} does not match {pattern!r}")


def _short(value, limit: int = 200) -> str:
    """repr of value, cut in the middle when long: a message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit // 2]} ... {text[-limit // 4:]}"


def _last(path: list):
    return path[-1] if path else None


def _nothing(err: jsonschema.ValidationError, path: list) -> str | None:
    return None


@dataclass(frozen=True)
class Wording:
    """How one surface words its schema errors.

    pattern_hints: what a value that fails a pattern must look like, by hint key;
    pattern_key(path): the hint key for a pattern error at path (no hint: err.message);
    special(err, path): a message for a rule only this surface's schema has, or None.
    """

    pattern_hints: Mapping[str, str] = field(default_factory=dict)
    pattern_key: Callable[[list], object] = _last
    special: Callable[[jsonschema.ValidationError, list], str | None] = _nothing


PLAIN = Wording()  # jsonschema's words, but for enum, and bool-for-number, errors


def problems(validator: Validator, doc, file: str, wording: Wording = PLAIN) -> list[Problem]:
    """Every schema error of doc, each once, in the validator's order. A bad key
    (propertyNames) is reported at the key itself, not at the mapping holding it."""
    out = []
    for err in validator.iter_errors(doc):
        path = list(err.absolute_path)
        if "propertyNames" in err.relative_schema_path or "propertyNames" in err.schema_path:
            path.append(err.instance)
        out.append(Problem(file, json_path(path), message(err, path, wording)))
    return list(dict.fromkeys(out))  # each once, in order (linear: thousands of errors)


def message(err: jsonschema.ValidationError, path: list, wording: Wording = PLAIN) -> str:
    """The words for one error at path (where the problem is reported)."""
    special = wording.special(err, path)
    if special is not None:
        return special
    if err.validator == "pattern":
        hint = wording.pattern_hints.get(wording.pattern_key(path))
        if hint is not None:
            return f"{_short(err.instance)} {hint}"
    if err.validator == "enum":
        choices = ", ".join(json.dumps(c) for c in err.validator_value)
        return f"{json.dumps(err.instance)} is not one of {choices}"
    if (err.validator == "type" and isinstance(err.instance, bool)
            and isinstance(err.validator_value, str) and err.validator_value != "boolean"):
        return f"{err.instance!r} is not of type {err.validator_value!r}"
    if len(err.message) > 300:  # it quotes a large instance whole: cut the quote
        return err.message.replace(repr(err.instance), _short(err.instance))
    return err.message
