"""Looking at a running lab: status, inspect, graph, logs, exec, and save (every
node's state into timestamped files, for a bug report)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from aronet.core.names import netns_path
from aronet.core.status import LAB_COLUMNS, render

from .. import run as labrun
from .common import lab_args, out_dir, print_json, topology


def cmd_status(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    out = {key.split("/", 1)[1]: st for key, st in labrun.statuses(lab).items()}
    if args.json:
        print_json({node: st.to_json() for node, st in out.items()})
        return 0
    sys.stdout.write(render(out, LAB_COLUMNS))
    return 0


def cmd_inspect(args) -> int:
    from .. import inspect

    lab = labrun.find_lab(args.name, args.dir)
    doc = inspect.collect(lab, interfaces=args.interfaces)
    sys.stdout.write(inspect.RENDER[args.format](doc, interfaces=args.interfaces))
    return 0


def cmd_save(args) -> int:
    from .. import save

    lab = labrun.find_lab(args.name, args.dir)
    where = save.save(lab, out_dir(args.directory))
    print(f"saved lab {lab.plan.lab} into {where}")
    return 0


def cmd_exec(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    n = lab.plan.node(args.node)
    ns = n.agent_ns if args.router else n.ns
    return subprocess.call(["nsenter", f"--net={netns_path(ns)}", "--", *args.command])


def cmd_logs(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    with open(lab.log(args.node)) as f:
        sys.stdout.write(f.read())
    return 0


def cmd_graph(args) -> int:
    """The topology with live tunnel and route state (or, given a topology file and no
    running lab, the planned tunnels), as DOT, SVG or PNG."""
    from .. import graph

    if args.topology:
        lab, statuses = labrun.open_lab(topology(args.topology), name=args.name, directory=args.dir), None
    else:
        lab = labrun.find_lab(args.name, args.dir)
        statuses = labrun.statuses(lab)
    dot = graph.to_dot(lab.plan, statuses, via_routes=not args.no_via)
    if args.output:
        print(f"wrote {graph.render(dot, args.output)}")
    else:
        sys.stdout.write(dot)
    return 0


def add_parsers(sub) -> None:
    st = sub.add_parser("status", help="every node's tunnels, neighbours and routes")
    lab_args(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    ins = sub.add_parser("inspect", help="per node: namespace, agent pid, mode, routing daemon, "
                         "addresses, tunnels, files; impairments in force")
    lab_args(ins)
    ins.add_argument("--format", choices=("table", "json", "csv"), default="table")
    ins.add_argument("--interfaces", action="store_true",
                     help="also every interface of the node's and its router's namespaces")
    ins.set_defaults(func=cmd_inspect)

    sv = sub.add_parser("save", help="every node's state (configs, status, logs, routing daemon, "
                        "SAs, ip -j, nft) into DIR/save-<time>/, and DIR/latest")
    lab_args(sv)
    sv.add_argument("directory", nargs="?", default="out", metavar="DIR", help="default: out")
    sv.set_defaults(func=cmd_save)

    ex = sub.add_parser("exec", help="run a command in a node's namespace")
    lab_args(ex)
    ex.add_argument("--router", action="store_true", help="in the agent's router namespace")
    ex.add_argument("node")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)

    gr = sub.add_parser("graph", help="the lab with live tunnel and route state (DOT, SVG, PNG)")
    lab_args(gr)
    gr.add_argument("topology", nargs="?", help="draw a lab that is not running (planned tunnels)")
    gr.add_argument("-o", "--output", help="FILE.svg, FILE.png or FILE.dot (default: DOT on stdout)")
    gr.add_argument("--no-via", action="store_true", help="do not mark routes through third nodes")
    gr.set_defaults(func=cmd_graph)

    lg = sub.add_parser("logs", help="a node's agent log")
    lab_args(lg)
    lg.add_argument("node")
    lg.set_defaults(func=cmd_logs)
