"""The planner row (this machine).

Synthetic registries of N nodes in one organization, each with one IPv4 endpoint, a
/64 network and one IPv4 /24. Timed: reading and validating config and registry
(load), planning this node's desired state (plan), and planning again after one other
node gained a prefix (replan); `actions` is the diff between the two plans. Best of
three runs each.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time

from aronet import keys
from aronet.core.diff import diff
from aronet.core.planner import desired
from aronet.load import build_registry, load_both

from .common import Say, classify, synthetic_nodes, with_change


def _timed(fn, repeat: int = 3):
    best, value = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, value


def bench_planner(sizes, say: Say) -> dict:
    out = []
    key = keys.generate()
    with tempfile.TemporaryDirectory(prefix="aronet-bench-") as d:
        keys.write_private(os.path.join(d, "key.pem"), key)
        for n in sizes:
            nodes = synthetic_nodes(n)
            registry = [{"public_key": keys.public_pem(key), "organization": "bench", "nodes": nodes}]
            me = nodes[0]
            config = {"private_key": "key.pem", "organization": "bench", "common_name": me["common_name"],
                      "daemon": {"network": me["remarks"]["network"], "prefixs": me["remarks"]["prefixs"]},
                      "endpoints": [{"address": me["endpoints"][0]["address"], "port": 12025}]}
            cpath, rpath = os.path.join(d, "config.json"), os.path.join(d, "registry.json")
            with open(cpath, "w") as f:
                json.dump(config, f)
            with open(rpath, "w") as f:
                json.dump(registry, f)
            load_s, (cfg, reg) = _timed(functools.partial(load_both, cpath, rpath))
            plan_s, before = _timed(functools.partial(desired, cfg, reg))
            changed = with_change(registry, "bench", nodes[n // 2]["common_name"], "prefix")
            reg2 = build_registry(changed, rpath)
            replan_s, after = _timed(functools.partial(desired, cfg, reg2))
            actions = diff(after.state, before.state)
            row = {"nodes": n, "load_s": round(load_s, 4), "plan_s": round(plan_s, 4),
                   "replan_s": round(replan_s, 4), "actions": len(actions),
                   "touched": classify(actions, f"bench/{nodes[n // 2]['common_name']}", after.state)}
            say(f"planner {n} nodes: load {load_s:.3f} s, plan {plan_s:.3f} s, "
                f"replan {replan_s:.3f} s, {len(actions)} actions")
            out.append(row)
    return {"sizes": out}
