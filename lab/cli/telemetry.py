"""A running lab's metrics and events: `aronet-lab metrics NODE` (the node's scrape)
and `aronet-lab events` (every node's event stream, merged, as NDJSON)."""

from __future__ import annotations

import sys
import threading

from .. import run as labrun
from .common import lab_args


def cmd_metrics(args) -> int:
    from .. import telemetry

    lab = labrun.find_lab(args.name, args.dir)
    sys.stdout.write(telemetry.scrape(lab, args.node))
    return 0


def cmd_events(args) -> int:
    """Until interrupted (or --count events): each line one node's event, tagged lab_node."""
    from .. import telemetry

    lab = labrun.find_lab(args.name, args.dir)
    nodes = args.nodes or None
    if nodes:
        for n in nodes:
            lab.plan.node(n)  # KeyError: no such node
    done, count, lock = threading.Event(), [0], threading.Lock()

    def say(node: str, event: dict) -> None:
        if event.get("event") == "subscribed":
            return
        with lock:
            if done.is_set():
                return
            sys.stdout.write(telemetry.line(node, event) + "\n")
            sys.stdout.flush()
            count[0] += 1
            if args.count and count[0] >= args.count:
                done.set()

    with telemetry.Recorder(lab, nodes, poll=args.poll, say=say) as rec:
        for node, why in rec.errors.items():
            print(f"aronet-lab: {node}: {why}", file=sys.stderr)
        if len(rec.errors) == len(rec.nodes):
            return 1
        done.wait(args.timeout)
    return 0


def add_parsers(sub) -> None:
    me = sub.add_parser("metrics", help="a node's Prometheus metrics, as a scrape gets them")
    lab_args(me)
    me.add_argument("node")
    me.set_defaults(func=cmd_metrics)

    ev = sub.add_parser("events", help="every node's events, merged, one JSON object per line")
    lab_args(ev)
    ev.add_argument("nodes", nargs="*", help="only these nodes (default: all)")
    ev.add_argument("--poll", type=float, default=None,
                    help="how often the agents look at babel meanwhile (seconds, default 1)")
    ev.add_argument("--count", type=int, help="stop after this many events")
    ev.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    ev.set_defaults(func=cmd_events)
