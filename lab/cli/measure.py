"""Measuring a lab: measure failover, the benchmarks (bench), and the chaos soak."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .. import run as labrun
from .common import ints, lab_args, out_dir, print_json


def cmd_measure(args) -> int:
    """measure failover A B: ping every 10 ms from A's prefix to B's, apply the fault,
    report the outage, the path during the fault and the return to the direct path."""
    import contextlib

    from .. import failover_events as seen
    from ..measure import as_table, failover
    from ..telemetry import Recorder

    lab = labrun.find_lab(args.name, args.dir)
    nodes = [n.name for n in lab.plan.nodes]
    with contextlib.ExitStack() as stack:  # what each node saw, from its event stream
        rec = None if args.no_events else stack.enter_context(Recorder(lab, nodes, poll=seen.POLL))
        result = failover(lab, args.a, args.b, fault=args.fault, runs=args.runs, timeout=args.timeout,
                          say=None if args.json else print)
    if rec is not None:
        seen.annotate(result, rec.events, nodes)
        result["events_missing"] = rec.errors or None
    if args.openmetrics:
        with open(args.openmetrics, "w") as f:
            f.write(seen.openmetrics(result))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    if args.json:
        print_json(result)
    else:
        sys.stdout.write(as_table(result) + seen.as_text(result))
    return 0


def cmd_bench(args) -> int:
    """The benchmarks (lab/bench/): a table on stdout, everything in OUT/bench.json."""
    from .. import bench

    if args.inside:
        return bench.inside(args)
    args.duration = bench.DEFAULTS["duration"] if args.duration is None else args.duration
    result = bench.run(args, say=(lambda _line: None) if args.json else
                       (lambda line: print(line, flush=True)))
    if args.json:
        print_json(result)
    else:
        sys.stdout.write("\n" + bench.as_table(result))
        print(f"\nall figures: {os.path.join(os.path.abspath(args.out), 'bench.json')}")
    return 0


def cmd_chaos(args) -> int:
    """Random faults on a seeded, reproducible schedule; the invariants after each
    fault and heal; a timeline, a summary and chaos.json. Exit 1 on a violation."""
    from .. import chaos

    lab = labrun.find_lab(args.name, args.dir)
    schedule = chaos.make_schedule(lab.plan, minutes=args.minutes, seed=args.seed, faults=args.faults,
                                   hold=args.hold)
    say = (lambda _line: None) if args.json else (lambda line: print(line, flush=True))
    result = chaos.soak(lab, schedule, bound=args.bound, rss_limit_mb=args.rss_limit, say=say)
    path = chaos.write(result, out_dir(args.out))
    if args.json:
        print_json(result)
    else:
        sys.stdout.write(chaos.as_text(result))
        print(f"\nall of it: {path}")
    return 0 if not result["violations"] else 1


def _faults(text: str) -> list[str]:
    from ..chaos import FAULTS

    kinds = [k for k in text.split(",") if k]
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown fault {', '.join(unknown) or '(none)'}; "
                                         f"choose from {','.join(FAULTS)}")
    return kinds


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def add_parsers(sub) -> None:
    me = sub.add_parser("measure", help="measure failover A B: outage, path, return (ms)")
    lab_args(me)
    me.add_argument("what", choices=("failover",))
    me.add_argument("a")
    me.add_argument("b")
    me.add_argument("--fault", choices=("drop-esp", "partition", "link"), default="drop-esp",
                    help="link needs a point-to-point link between A and B")
    me.add_argument("--runs", type=int, default=1)
    me.add_argument("--timeout", type=float, default=60.0)
    me.add_argument("--json", action="store_true")
    me.add_argument("-o", "--output", help="also write the JSON result here")
    me.add_argument("--openmetrics", metavar="FILE", help="also write the result as OpenMetrics: "
                    "aronet_lab_failover_seconds{fault}, aronet_lab_converge_seconds{stage}")
    me.add_argument("--no-events", action="store_true", help="do not record the agents' events "
                    "(when each node saw the neighbour go and the route change)")
    me.set_defaults(func=cmd_measure)

    from ..bench import DEFAULTS, ROWS

    be = sub.add_parser("bench", help="the benchmarks: failover, bring-up, planner, reload, "
                        "footprint, MTU (in the microVM where the kernel needs it)")
    be.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW",
                    help=f"which rows (default all: {' '.join(ROWS)})")
    be.add_argument("--runs", type=int, default=DEFAULTS["runs"], help="failover runs per fault")
    be.add_argument("--routing", action="append", choices=("bird", "babeld"),
                    help="routing daemon for the failover/MTU/bring-up labs (repeat for both; "
                    "default: the lab's default)")
    be.add_argument("--hello", type=float, help="babel hello interval (default: the lab's for "
                    "failover, control and mtu; aronet's own for bring-up and footprint)")
    be.add_argument("--update", type=float, help="babel update interval (defaults as --hello)")
    be.add_argument("--sizes", type=ints, default=list(DEFAULTS["sizes"]), help="bring-up mesh sizes")
    be.add_argument("--planner-sizes", type=ints, default=list(DEFAULTS["planner_sizes"]))
    be.add_argument("--reload-nodes", type=int, default=DEFAULTS["reload_nodes"])
    be.add_argument("--duration", type=float, help="footprint: how long to watch the agents "
                    f"(default {DEFAULTS['duration']:.0f} s)")
    be.add_argument("--sample", type=float, default=DEFAULTS["sample"], help="footprint sampling period")
    be.add_argument("--trace-nodes", type=int, default=0, metavar="K",
                    help="footprint: K agents (spread over the mesh) trace their Python allocations "
                    "over the window and list where what they kept was allocated; their memory is "
                    "reported apart (default 0)")
    be.add_argument("--window", type=float, default=DEFAULTS["window"],
                    help="control traffic measurement window (s)")
    be.add_argument("--stack", choices=("debian12", "debian13"), default="debian12",
                    help="the guest's Debian release (lab/vm/roots.py; debian13: ci/build-root debian13)")
    be.add_argument("--here", action="store_true", help="this kernel has ESP, XFRM interfaces "
                    "and VRF: no microVM")
    be.add_argument("--out", default=os.path.join("out", f"bench-{time.strftime('%Y%m%d-%H%M%S')}"))
    be.add_argument("--json", action="store_true")
    be.add_argument("--inside", help=argparse.SUPPRESS)  # the guest's side of one VM group
    be.set_defaults(func=cmd_bench)

    from ..chaos import DEFAULTS as CHAOS
    from ..chaos import FAULTS

    ch = sub.add_parser("chaos", help="random faults on a seeded schedule; the invariants after "
                        "each fault and heal; timeline, summary, JSON")
    lab_args(ch)
    ch.add_argument("--minutes", type=_positive, required=True)
    ch.add_argument("--seed", type=int, required=True, help="the same seed gives the same schedule")
    ch.add_argument("--faults", type=_faults, default=list(FAULTS),
                    help=f"comma-separated, from {','.join(FAULTS)} (default all)")
    ch.add_argument("--hold", type=_positive, default=CHAOS["hold"],
                    help=f"how long a fault lasts before its heal, seconds (default {CHAOS['hold']:g})")
    ch.add_argument("--bound", type=float, default=CHAOS["bound"],
                    help="the checks must pass again within this many seconds after a heal "
                    f"(default {CHAOS['bound']:g})")
    ch.add_argument("--rss-limit", type=float, default=CHAOS["rss_limit_mb"], metavar="MB",
                    help=f"an agent's RSS may not exceed this (default {CHAOS['rss_limit_mb']:g} MB)")
    ch.add_argument("--out", default="out", help="chaos-<time>.json goes here (default out)")
    ch.add_argument("--json", action="store_true")
    ch.set_defaults(func=cmd_chaos)
