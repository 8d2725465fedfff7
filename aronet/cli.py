"""The `aronet` command line.

Bad input prints every problem (file: path: reason) and exits 2; a failing system
exits 1. A traceback means a bug in aronet, never bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__, keys
from .errors import AronetError, InputError, Problem
from .load import build_registry, cross_problems, load_config, load_registry


def _key_generate(args) -> int:
    key = keys.generate()
    try:
        keys.write_private(args.path, key, force=args.force)
    except FileExistsError:
        raise InputError(Problem(args.path, "$", "already exists; pass --force to overwrite")) from None
    except OSError as e:
        raise AronetError(f"{args.path}: cannot write: {e.strerror}") from None
    sys.stdout.write(keys.public_pem(key))
    return 0


def _key_public(args) -> int:
    try:
        pem = keys.read_private(args.path, os.getcwd())
        sys.stdout.write(keys.public_pem(keys.parse_private(pem)))
    except keys.KeyProblem as e:
        raise InputError(Problem(args.path, "$", str(e))) from None
    return 0


def _config_validate(args) -> int:
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


def _registry_validate(args) -> int:
    reg = load_registry(args.file)
    orgs = len({n.organization for n in reg.nodes})
    print(f"{args.file}: valid ({len(reg.nodes)} nodes in {orgs} organizations)")
    return 0


def _registry_build(args) -> int:
    from .core.registry import registry_document

    problems, configs = [], []
    for path in args.configs:
        try:
            configs.append(load_config(path))
        except InputError as e:
            problems += e.problems
    if problems:
        raise InputError(problems)
    doc = registry_document(configs)
    build_registry(doc, args.output or "<built registry>")  # the generator's output must validate
    text = json.dumps(doc, indent=2) + "\n"
    if args.output:
        tmp = args.output + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, args.output)
        except OSError as e:
            raise AronetError(f"{args.output}: cannot write: {e.strerror}") from None
    else:
        sys.stdout.write(text)
    return 0


def _plan(args) -> int:
    from .core import bird, planner, show
    from .load import load_both

    config, registry = load_both(args.config, args.registry)
    version = bird.parse_version(args.bird_version)
    d = planner.desired(config, registry, bird_version=version)
    if args.json:
        json.dump(show.as_json(config, d), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(show.as_text(config, d))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aronet", description="auto-routed full-mesh overlay network")
    p.add_argument("--version", action="version", version=f"aronet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    key = sub.add_parser("key", help="Ed25519 keys").add_subparsers(dest="sub", required=True)
    g = key.add_parser("generate", help="write a new private key (mode 0600), print its public key")
    g.add_argument("path")
    g.add_argument("--force", action="store_true", help="overwrite an existing file")
    g.set_defaults(func=_key_generate)
    pub = key.add_parser("public", help="print the public key of a private key file")
    pub.add_argument("path")
    pub.set_defaults(func=_key_public)

    cfg = sub.add_parser("config", help="config.json").add_subparsers(dest="sub", required=True)
    v = cfg.add_parser("validate", help="check a config file (and, with -r, against a registry)")
    v.add_argument("file")
    v.add_argument("-r", "--registry", help="also check against this registry")
    v.set_defaults(func=_config_validate)

    reg = sub.add_parser("registry", help="registry.json").add_subparsers(dest="sub", required=True)
    v = reg.add_parser("validate", help="check a registry file")
    v.add_argument("file")
    v.set_defaults(func=_registry_validate)
    b = reg.add_parser("build", help="build a registry from node configs")
    b.add_argument("configs", nargs="+", metavar="CONFIG")
    b.add_argument("-o", "--output", help="write here (atomically) instead of stdout")
    b.set_defaults(func=_registry_build)

    pl = sub.add_parser("plan", help="print this node's desired state; touches nothing")
    pl.add_argument("-c", "--config", required=True)
    pl.add_argument("-r", "--registry", required=True)
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.add_argument("--bird-version", default="2.0.12",
                    help="render BIRD's config for this version (default: %(default)s)")
    pl.set_defaults(func=_plan)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        n = len(e.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found; nothing was changed", file=sys.stderr)
        return e.exit_code
    except AronetError as e:
        print(f"aronet: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `aronet plan | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
