"""Read and check config.json and registry.json; build the model.

Every check runs and every problem is collected before anything is reported, each
with the file, the JSON path and the reason (aronet.errors.Problem). Checks come in
three passes: JSON syntax (line and column), the JSON Schemas shipped in
aronet/schemas (checked by aronet.schema), then the semantic rules, which look only
at values whose type the schema accepted. Nothing here touches the system except
reading files.

  files     read_text, read_json, parse_json: the one reader of every input file
            (regular files only, size limits), JSON syntax, duplicate keys, depth
  schemas   schema_problems: the shipped schemas and the words for their errors
  values    parse_network, parse_prefix, Collector: values a schema cannot check,
            and the problems found in one file
  ranges    what a node may claim (no special-purpose range, nothing too broad),
            accept_prefixes, and which network holds an endpoint address
  overlap   overlap_problems: no two nodes own overlapping networks
  config    load_config, build_config: config.json -> Config
  registry  load_registry, build_registry: registry.json -> Registry
  cross     cross_problems, load_both: the rules that need both files
  policy    registry_policy: config.json's `registry` block (which registries to trust)
  signed    read_signed: a registry's exact text and its detached .sig
"""

from __future__ import annotations

from .config import build_config, load_config
from .cross import cross_problems, load_both
from .files import parse_json, read_json, read_text
from .overlap import overlap_problems
from .registry import build_registry, load_registry
from .schemas import schema_problems
from .signed import Signed, read_signed, signature_path
from .values import HOSTNAME, Collector, parse_network, parse_prefix

__all__ = [
    "HOSTNAME",
    "Collector",
    "Signed",
    "build_config",
    "build_registry",
    "cross_problems",
    "load_both",
    "load_config",
    "load_registry",
    "overlap_problems",
    "parse_json",
    "parse_network",
    "parse_prefix",
    "read_json",
    "read_signed",
    "read_text",
    "schema_problems",
    "signature_path",
]
