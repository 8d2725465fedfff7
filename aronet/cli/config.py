"""`aronet config validate`, and `aronet plan`: one node's config, alone or with a
registry, and the desired state they make."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError


def config_validate(args) -> int:
    from ..load import cross_problems, load_config, load_registry

    problems = []
    config = registry = None
    try:
        config = load_config(args.file)
    except InputError as e:
        problems += e.problems
    if args.registry:
        try:
            registry = load_registry(args.registry)
        except InputError as e:
            problems += e.problems
    if config and registry:
        problems += cross_problems(config, registry)
    if problems:
        raise InputError(problems)
    print(f"{args.file}: valid ({config.node.name}, {config.settings.mode} mode)")
    return 0


def plan(args) -> int:
    from ..core import planner, show
    from ..load import load_both

    config, registry = load_both(args.config, args.registry)
    d = planner.desired(config, registry, bird_version=args.bird_version)
    if args.json:
        json.dump(show.as_json(config, d), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(show.as_text(config, d))
    return 0


def bird_version(text: str) -> tuple[int, ...]:
    """--bird-version: junk is a usage error (exit 2), as argparse gives any bad value."""
    import re

    from ..core import bird

    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}", text, re.ASCII):
        raise argparse.ArgumentTypeError(f"{text!r} is not a BIRD version like 2.0.12")
    return bird.parse_version(text)


def add(sub) -> None:
    cfg = sub.add_parser("config", help="config.json").add_subparsers(dest="sub", required=True)
    v = cfg.add_parser("validate", help="check a config file (and, with -r, against a registry)")
    v.add_argument("file")
    v.add_argument("-r", "--registry", help="also check against this registry")
    v.set_defaults(func=config_validate)


def add_plan(sub) -> None:
    pl = sub.add_parser("plan", help="print this node's desired state; touches nothing")
    pl.add_argument("-c", "--config", required=True)
    pl.add_argument("-r", "--registry", required=True)
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.add_argument("--bird-version", default="2.0.12", type=bird_version,
                    help="render BIRD's config for this version (default: %(default)s)")
    pl.set_defaults(func=plan)
