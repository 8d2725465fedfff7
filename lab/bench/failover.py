"""The failover row (VM, on the triangle: triangle.py).

A three-node full mesh on one LAN (the lab's default timers unless --hello/--update),
per routing daemon: `measure failover a b` RUNS times with drop-esp, then with
partition. Median and maximum outage (see lab/measure.py for how an outage is cut out
of a 10 ms ping stream).
"""

from __future__ import annotations

from aronet.model import Settings

from .. import measure
from .common import Say, stats


def bench_failover(lab, runs: int, say: Say) -> dict:
    """a -> b on the lab's triangle, `runs` times per fault, with the babel timers in use."""
    cfg = lab.plan.node("a").config.get("daemon", {}).get("babel", {})
    defaults = Settings()
    fo = {"hello": cfg.get("hello_interval", defaults.babel_hello),
          "update": cfg.get("update_interval", defaults.babel_update)}
    for fault in ("drop-esp", "partition"):
        say(f"  failover {fault} x{runs}")
        r = measure.failover(lab, "a", "b", fault=fault, runs=runs, say=lambda line: say(f"    {line}"))
        r["stats"] = stats([x["outage_ms"] for x in r["runs"]])
        fo[fault] = r
    return fo
