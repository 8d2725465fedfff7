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
from .errors import AronetError, InputError, Problem, report_error
from .load import build_registry, cross_problems, load_config, load_registry, read_json


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
    from .core import planner, show
    from .load import load_both

    config, registry = load_both(args.config, args.registry)
    d = planner.desired(config, registry, bird_version=args.bird_version)
    if args.json:
        json.dump(show.as_json(config, d), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(show.as_text(config, d))
    return 0


def _bird_version(text: str) -> tuple[int, ...]:
    """--bird-version: junk is a usage error (exit 2), as argparse gives any bad value."""
    import re

    from .core import bird

    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}", text, re.ASCII):
        raise argparse.ArgumentTypeError(f"{text!r} is not a BIRD version like 2.0.12")
    return bird.parse_version(text)


def _daemon_run(args) -> int:
    import asyncio
    import logging

    from .daemon.agent import Agent
    from .load import load_both
    from .paths import Paths

    if args.registry:
        config, registry = load_both(args.config, args.registry)
    else:
        config, registry = load_config(args.config), None
    paths = Paths.for_instance(config.settings.ifname, args.runtime_dir, args.state_dir)
    if registry is None and os.path.exists(paths.registry):
        # the last registry the agent accepted: a restart brings the mesh back
        _, registry = load_both(args.config, paths.registry)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    if args.verbose:
        logging.getLogger("aronet").setLevel(logging.DEBUG)
    agent = Agent(config, paths, registry)
    return asyncio.run(agent.run())


def _socket(args) -> str:
    from .model import Settings
    from .paths import Paths

    if args.socket:
        return args.socket
    if args.config:
        return Paths.for_instance(load_config(args.config).settings.ifname, args.runtime_dir).control_socket
    return Paths.for_instance(Settings().ifname, args.runtime_dir).control_socket


def _load(args) -> int:
    from .client import request

    data = read_json(args.registry)
    build_registry(data, args.registry)  # refuse locally first, without bothering the agent
    reply = request(_socket(args), {"cmd": "load", "file": args.registry, "registry": data})
    print(f"{args.registry}: loaded ({reply['nodes']} nodes, {len(reply['changes'])} changes)")
    for line in reply["changes"]:
        print(f"  {line}")
    ops = reply.get("operations") or {}
    done = "; ".join(f"{system}: " + ", ".join(f"{name} {n}" for name, n in calls.items())
                     for system, calls in ops.items() if calls)
    if done:
        print(f"applied in {reply.get('seconds', 0):.2f} s ({done})")
    return 0


def _status(args) -> int:
    from .client import request
    from .core.status import Status, render

    status = Status.from_json(request(_socket(args), {"cmd": "status"})["status"])
    if args.json:
        json.dump(status.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"node {status.node} ({status.mode or '?'} mode)")
    sys.stdout.write(render({status.node: status}))
    return 0


def _check(args) -> int:
    """Drift: what differs between the machine (kernel, nft, charon, the routing
    daemon's config) and the desired state; exit 1 unless in sync. By default the
    running agent observes and answers (it knows what it loaded into charon); --local
    observes from this process, without the agent."""
    if args.local:
        node, in_sync, lines = _check_here(args)
    else:
        from .client import request

        reply = request(_socket(args), {"cmd": "check"}, timeout=120)
        node, in_sync, lines = reply["node"], reply["in_sync"], reply["differences"]
    if args.json:
        json.dump({"node": node, "in_sync": in_sync, "differences": lines}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)
        print(f"{node}: " + ("in sync" if in_sync else
                             f"not in sync ({len(lines)} difference{'' if len(lines) == 1 else 's'})"))
    return 0 if in_sync else 1


def _check_here(args) -> tuple[str, bool, list[str]]:
    from .adapters.node import NodeAdapters
    from .core import planner
    from .load import load_both
    from .paths import Paths

    if not args.config:
        raise InputError(Problem("aronet check", "--local", "needs -c CONFIG"))
    config = load_config(args.config)
    paths = Paths.for_instance(config.settings.ifname, args.runtime_dir, args.state_dir)
    registry_file = args.registry or paths.registry
    if not args.registry and not os.path.exists(registry_file):
        raise AronetError(f"no registry: give -r, or start the agent once (it keeps the last one "
                          f"it accepted in {registry_file})")
    config, registry = load_both(args.config, registry_file)
    node = NodeAdapters(config.settings, paths)
    d = planner.desired(config, registry, bird_version=node.bird_version)
    drift = node.drift(d)
    node.vici.close()
    return config.node.name, drift.in_sync, drift.lines(node.routing.conf_path)


def _daemon_info(args) -> int:
    from .client import request

    info = request(_socket(args), {"cmd": "info"})["info"]
    json.dump(info, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _daemon_memory(args) -> int:
    from .client import request

    reply = request(_socket(args), {"cmd": "memory", "trace": args.trace, "top": args.top,
                                    "release": args.release})
    reply.pop("ok", None)
    json.dump(reply, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _daemon_stop(args) -> int:
    from .client import request

    request(_socket(args), {"cmd": "stop"})
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
    pl.add_argument("--bird-version", default="2.0.12", type=_bird_version,
                    help="render BIRD's config for this version (default: %(default)s)")
    pl.set_defaults(func=_plan)

    def where(sp):
        sp.add_argument("-s", "--socket", help="the agent's control socket")
        sp.add_argument("-c", "--config", help="find the agent's socket from its config")
        sp.add_argument("--runtime-dir", help="the agent's runtime directory")

    dm = sub.add_parser("daemon", help="the agent").add_subparsers(dest="sub", required=True)
    run = dm.add_parser("run", help="run the agent in the foreground")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("-r", "--registry", help="start with this registry (default: the last one loaded)")
    run.add_argument("--runtime-dir", help="sockets, generated configs (default /run/aronet/IFNAME)")
    run.add_argument("--state-dir", help="the last accepted registry (default /var/lib/aronet/IFNAME)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_daemon_run)
    info = dm.add_parser("info", help="what the running agent is")
    where(info)
    info.set_defaults(func=_daemon_info)
    mem = dm.add_parser("memory", help="what the running agent's memory is made of (JSON)")
    where(mem)
    mem.add_argument("--trace", type=int, metavar="FRAMES",
                     help="start tracing Python allocations from now on (tracemalloc)")
    mem.add_argument("--top", type=int, metavar="N",
                     help="the N largest groups of live blocks allocated since tracing started")
    mem.add_argument("--release", action="store_true",
                     help="collect garbage and return free heap memory to the kernel; RSS before/after")
    mem.set_defaults(func=_daemon_memory)
    stop = dm.add_parser("stop", help="ask the running agent to stop and clean up")
    where(stop)
    stop.set_defaults(func=_daemon_stop)

    ld = sub.add_parser("load", help="give the running agent a new registry")
    ld.add_argument("-r", "--registry", required=True)
    where(ld)
    ld.set_defaults(func=_load)
    st = sub.add_parser("status", help="tunnels, babel neighbours and routes per peer")
    st.add_argument("--json", action="store_true")
    where(st)
    st.set_defaults(func=_status)
    ck = sub.add_parser("check", help="drift: what differs between this machine and the desired state "
                                      "(exit 1 when not in sync)")
    where(ck)
    ck.add_argument("--local", action="store_true",
                    help="observe from this process instead of asking the agent (needs -c)")
    ck.add_argument("-r", "--registry", help="with --local: default the last registry the agent accepted")
    ck.add_argument("--state-dir", help="with --local: the agent's state directory "
                                        "(default /var/lib/aronet/IFNAME)")
    ck.add_argument("--json", action="store_true")
    ck.set_defaults(func=_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except AronetError as e:
        return report_error(e, "aronet")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `aronet plan | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
