"""The commands that run or ask an agent: `aronet daemon run | info | memory | stop`,
`aronet load`, `aronet status` and `aronet check`."""

from __future__ import annotations

import json
import os
import sys

from ..errors import AronetError, InputError, Problem
from .common import agent_socket, where


def daemon_run(args) -> int:
    import asyncio
    import logging

    from ..daemon.agent import Agent
    from ..load import load_both, load_config, read_signed
    from ..paths import Paths

    signed = None
    if args.registry:
        config, registry = load_both(args.config, args.registry)
        signed = read_signed(args.registry, args.sig)
    else:
        config, registry = load_config(args.config), None
    paths = Paths.for_instance(config.settings.ifname, args.runtime_dir, args.state_dir)
    if registry is None and os.path.exists(paths.registry):
        # the last registry the agent accepted: a restart brings the mesh back
        _, registry = load_both(args.config, paths.registry)
        signed = read_signed(paths.registry)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    if args.verbose:
        logging.getLogger("aronet").setLevel(logging.DEBUG)
    agent = Agent(config, paths, registry, signed)
    return asyncio.run(agent.run())


def load(args) -> int:
    from ..client import request
    from ..load import build_registry, parse_json, read_signed

    signed = read_signed(args.registry, args.sig)
    # refuse locally first, without bothering the agent
    build_registry(parse_json(signed.text, args.registry), args.registry)
    reply = request(agent_socket(args), {"cmd": "load", "file": args.registry, "registry": signed.text,
                                         "signature": signed.sig_text, "signature_file": signed.sig_file},
                    timeout=120)
    print(f"{args.registry}: loaded ({reply['nodes']} nodes, {len(reply['changes'])} changes)")
    for line in reply["changes"]:
        print(f"  {line}")
    ops = reply.get("operations") or {}
    done = "; ".join(f"{system}: " + ", ".join(f"{name} {n}" for name, n in calls.items())
                     for system, calls in ops.items() if calls)
    if done:
        print(f"applied in {reply.get('seconds', 0):.2f} s ({done})")
    reg = reply.get("registry") or {}
    if reg.get("serial") is not None:
        print(f"signed: serial {reg['serial']}, {len(reg.get('signers', ()))} signer(s), expires "
              f"{reg.get('expires_at')}, {reg.get('revoked', 0)} revoked")
    for line in reg.get("left_out", ()):
        print(f"  {line}")
    return 0


def status(args) -> int:
    from ..client import request
    from ..core.status import Status, render

    st = Status.from_json(request(agent_socket(args), {"cmd": "status"})["status"])
    if args.json:
        json.dump(st.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"node {st.node} ({st.mode or '?'} mode)")
    reg = st.registry
    if reg is not None and reg.serial is not None:
        print(f"registry: serial {reg.serial} ({reg.state}), {len(reg.signers)} signer(s), expires "
              f"{reg.expires_at}, {reg.revoked} revoked")
    sys.stdout.write(render({st.node: st}))
    return 0


def check(args) -> int:
    """Drift: what differs between the machine (kernel, nft, charon, the routing
    daemon's config) and the desired state; exit 1 unless in sync. By default the
    running agent observes and answers (it knows what it loaded into charon); --local
    observes from this process, without the agent."""
    if args.local:
        node, in_sync, lines = _check_here(args)
    else:
        from ..client import request

        reply = request(agent_socket(args), {"cmd": "check"}, timeout=120)
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
    from ..adapters.node import NodeAdapters
    from ..core import planner
    from ..load import load_both, load_config
    from ..paths import Paths

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


def daemon_info(args) -> int:
    from ..client import request

    info = request(agent_socket(args), {"cmd": "info"})["info"]
    json.dump(info, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def daemon_memory(args) -> int:
    from ..client import request

    reply = request(agent_socket(args), {"cmd": "memory", "trace": args.trace, "top": args.top,
                                         "release": args.release})
    reply.pop("ok", None)
    json.dump(reply, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def daemon_stop(args) -> int:
    from ..client import request

    request(agent_socket(args), {"cmd": "stop"})
    return 0


def add_daemon(sub) -> None:
    dm = sub.add_parser("daemon", help="the agent").add_subparsers(dest="sub", required=True)
    run = dm.add_parser("run", help="run the agent in the foreground")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("-r", "--registry", help="start with this registry (default: the last one loaded)")
    run.add_argument("--sig", help="the registry's signature (default: REGISTRY.sig, if it exists)")
    run.add_argument("--runtime-dir", help="sockets, generated configs (default /run/aronet/IFNAME)")
    run.add_argument("--state-dir", help="the last accepted registry (default /var/lib/aronet/IFNAME)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=daemon_run)
    info = dm.add_parser("info", help="what the running agent is")
    where(info)
    info.set_defaults(func=daemon_info)
    mem = dm.add_parser("memory", help="what the running agent's memory is made of (JSON)")
    where(mem)
    mem.add_argument("--trace", type=int, metavar="FRAMES",
                     help="start tracing Python allocations from now on (tracemalloc)")
    mem.add_argument("--top", type=int, metavar="N",
                     help="the N largest groups of live blocks allocated since tracing started")
    mem.add_argument("--release", action="store_true",
                     help="collect garbage and return free heap memory to the kernel; RSS before/after")
    mem.set_defaults(func=daemon_memory)
    stop = dm.add_parser("stop", help="ask the running agent to stop and clean up")
    where(stop)
    stop.set_defaults(func=daemon_stop)


def add_agent(sub) -> None:
    ld = sub.add_parser("load", help="give the running agent a new registry (and its .sig)")
    ld.add_argument("-r", "--registry", required=True)
    ld.add_argument("--sig", help="the registry's signature (default: REGISTRY.sig, if it exists)")
    where(ld)
    ld.set_defaults(func=load)
    st = sub.add_parser("status", help="tunnels, babel neighbours and routes per peer")
    st.add_argument("--json", action="store_true")
    where(st)
    st.set_defaults(func=status)
    ck = sub.add_parser("check", help="drift: what differs between this machine and the desired state "
                                      "(exit 1 when not in sync)")
    where(ck)
    ck.add_argument("--local", action="store_true",
                    help="observe from this process instead of asking the agent (needs -c)")
    ck.add_argument("-r", "--registry", help="with --local: default the last registry the agent accepted")
    ck.add_argument("--state-dir", help="with --local: the agent's state directory "
                                        "(default /var/lib/aronet/IFNAME)")
    ck.add_argument("--json", action="store_true")
    ck.set_defaults(func=check)
