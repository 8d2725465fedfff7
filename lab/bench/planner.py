"""The planner row (this machine).

Synthetic registries of N nodes in one organization, each with one IPv4 endpoint, a
/64 network and one IPv4 /24. Timed: reading and validating config and registry
(load), planning this node's desired state (plan), and planning again after one other
node gained a prefix (replan); `actions` is the diff between the two plans. Best of
three runs each.

Also timed, as a user meets it: the whole process `python -m aronet plan -c CONFIG -r
REGISTRY` (interpreter start, imports, load, plan, printing; stdout to /dev/null),
best of three, and the same minus its time on a registry of 10 nodes (what the
registry's size costs, without the fixed start-up).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
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


FLOOR_NODES = 10


def _files(d: str, key, n: int) -> tuple[str, str, list[dict], list[dict]]:
    """config.json (the first node's) and registry-N.json of n synthetic nodes, in d."""
    nodes = synthetic_nodes(n)
    registry = [{"public_key": keys.public_pem(key), "organization": "bench", "nodes": nodes}]
    me = nodes[0]
    config = {"private_key": "key.pem", "organization": "bench", "common_name": me["common_name"],
              "daemon": {"network": me["remarks"]["network"], "prefixs": me["remarks"]["prefixs"]},
              "endpoints": [{"address": me["endpoints"][0]["address"], "port": 12025}]}
    cpath, rpath = os.path.join(d, "config.json"), os.path.join(d, f"registry-{n}.json")
    with open(cpath, "w") as f:
        json.dump(config, f)
    with open(rpath, "w") as f:
        json.dump(registry, f)
    return cpath, rpath, registry, nodes


def process_seconds(cpath: str, rpath: str, repeat: int = 3) -> float:
    """Whole-process `aronet plan`, best of repeat (seconds)."""
    argv = [sys.executable, "-m", "aronet", "plan", "-c", cpath, "-r", rpath]

    def once():
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-500:]}")

    return _timed(once, repeat)[0]


def bench_planner(sizes, say: Say) -> dict:
    out = []
    key = keys.generate()
    with tempfile.TemporaryDirectory(prefix="aronet-bench-") as d:
        keys.write_private(os.path.join(d, "key.pem"), key)
        floor_s = process_seconds(*_files(d, key, FLOOR_NODES)[:2])
        say(f"planner: whole-process `aronet plan`, {FLOOR_NODES} nodes: {floor_s:.3f} s")
        for n in sizes:
            cpath, rpath, registry, nodes = _files(d, key, n)
            process_s = process_seconds(cpath, rpath)
            load_s, (cfg, reg) = _timed(functools.partial(load_both, cpath, rpath))
            plan_s, before = _timed(functools.partial(desired, cfg, reg))
            changed = with_change(registry, "bench", nodes[n // 2]["common_name"], "prefix")
            reg2 = build_registry(changed, rpath)
            replan_s, after = _timed(functools.partial(desired, cfg, reg2))
            actions = diff(after.state, before.state)
            row = {"nodes": n, "load_s": round(load_s, 4), "plan_s": round(plan_s, 4),
                   "replan_s": round(replan_s, 4), "actions": len(actions),
                   "touched": classify(actions, f"bench/{nodes[n // 2]['common_name']}", after.state),
                   "process_s": round(process_s, 4), "process_over_floor_s": round(process_s - floor_s, 4)}
            say(f"planner {n} nodes: load {load_s:.3f} s, plan {plan_s:.3f} s, "
                f"replan {replan_s:.3f} s, {len(actions)} actions; whole `aronet plan` "
                f"{process_s:.3f} s ({process_s - floor_s:+.3f} s over {FLOOR_NODES} nodes)")
            out.append(row)
    return {"sizes": out, "process_floor": {"nodes": FLOOR_NODES, "process_s": round(floor_s, 4)}}
