"""The commands that watch a running agent: `aronet events` (its event stream as
NDJSON, one object per line per state change) and `aronet metrics` (its Prometheus
scrape, over the control socket)."""

from __future__ import annotations

import argparse
import json
import sys

from .common import agent_socket, where


def events(args) -> int:
    from ..client import events as stream

    seen = 0
    for event in stream(agent_socket(args), poll=args.poll):
        if event.get("event") == "subscribed" and not args.subscribed:
            continue
        sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        seen += 1
        if args.count and seen >= args.count:
            break
    return 0


def metrics(args) -> int:
    from ..client import request

    sys.stdout.write(request(agent_socket(args), {"cmd": "metrics"})["text"])
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.2 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text}: from 0.2 to 60 seconds")
    return value


def add(sub) -> None:
    ev = sub.add_parser("events", help="the running agent's events, one JSON object per line (NDJSON)")
    where(ev)
    ev.add_argument("--poll", type=_seconds, help="how often the agent looks at babel's neighbours "
                    "and routes meanwhile (seconds, default 1)")
    ev.add_argument("--count", type=int, metavar="N", help="stop after N events")
    ev.add_argument("--subscribed", action="store_true",
                    help="also print the stream's first line, {\"event\": \"subscribed\"}")
    ev.set_defaults(func=events)
    me = sub.add_parser("metrics", help="the running agent's Prometheus metrics (its scrape, as text)")
    where(me)
    me.set_defaults(func=metrics)
