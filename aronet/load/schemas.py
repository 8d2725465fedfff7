"""The JSON Schemas of config.json and registry.json (aronet/schemas), checked by
aronet.schema, with the words for the rules a user is likely to break."""

from __future__ import annotations

from functools import cache
from importlib import resources

from .. import schema
from ..errors import Problem

# Friendlier words for schema rules a user is likely to break.
_PATTERN_HINTS = {
    "name": "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "ifname": "must be 1 to 10 letters, digits, '_' or '-', starting with a letter "
    "(names derived from it must fit Linux's 15 bytes)",
    "tunnel_prefix": "must be 1 to 7 letters, digits, '_' or '-', starting with a letter "
    "(8 hex digits of the if_id follow it, within Linux's 15 bytes)",
}


def _pattern_key(path: list):
    last = path[-1] if path else None
    return "name" if last in ("organization", "common_name") else last


def _special(err, path: list) -> str | None:
    if err.validator == "not" and path and path[-1] == "route_table":
        return f"{err.instance} is reserved by Linux (253 default, 254 main, 255 local)"
    return None


WORDING = schema.Wording(pattern_hints=_PATTERN_HINTS, pattern_key=_pattern_key, special=_special)


@cache
def _validators() -> dict[str, schema.Validator]:
    schemas = {name: schema.read(resources.files("aronet").joinpath(f"schemas/{name}.schema.json"))
               for name in ("config", "registry")}
    return {name: schema.strict_validator(s, references=schemas.values())
            for name, s in schemas.items()}


def schema_problems(kind: str, data, file: str) -> list[Problem]:
    """kind: "config" or "registry"."""
    return schema.problems(_validators()[kind], data, file, WORDING)
