"""The footprint row (VM, in the largest bring-up's boot: bringup.py).

VmRSS and RssAnon of every agent, charon and routing daemon once the mesh converged,
then the agents' memory sampled every --sample seconds for --duration seconds while
each agent is asked for its status at every sample: VmRSS and what it is made of (the
agent's `memory` command: glibc heap in use and free, anonymous mappings, live Python
blocks, threads, descriptors); growth = last sample - first, and last - middle for the
second half. --trace-nodes K agents trace their Python allocations over the window
(kept out of the growth figures: tracing costs memory) and list where what they still
hold was allocated. At the end every agent collects garbage and trims its heap: what
RSS gives back was only held by the allocator. Measured even when the mesh's last
check failed; the row then says so.
"""

from __future__ import annotations

import contextlib
import statistics
import time

from aronet.adapters.proc import proc_status_kb
from aronet.client import request
from aronet.errors import AronetError

from .. import run as labrun
from .common import Say, stats
from .labs import guest_memory_mb

TRACE_FRAMES = 8  # frames kept per traced allocation: enough to reach aronet's own code
TRACE_TOP = 15

# what each memory sample keeps: name -> path in the agent's `memory` usage
MEMORY_SERIES = {"rss": ("rss_kb", "VmRSS"), "anon": ("rss_kb", "RssAnon"),
                 "malloc_in_use": ("malloc_kb", "in_use"), "malloc_free": ("malloc_kb", "free"),
                 "malloc_mmapped": ("malloc_kb", "mmapped"), "anon_heap": ("anon_kb", "heap"),
                 "anon_thread_stacks": ("anon_kb", "thread_stacks"), "anon_other": ("anon_kb", "other"),
                 "anon_other_mappings": ("anon_kb", "other_mappings"), "python_blocks": ("python_blocks",),
                 "full_collections": ("gc", "full_collections"), "threads": ("threads",), "fds": ("fds",),
                 "traced": ("traced_kb", "current"), "tracemalloc": ("traced_kb", "tracemalloc_itself"),
                 "collections": ("gc", "agent_collections", "runs"),
                 "collection_ms": ("gc", "agent_collections", "ms")}


def spread(items: list, k: int) -> list:
    """k of the items, spread evenly (the mesh's first half runs in VRF mode)."""
    k = max(0, min(k, len(items)))
    return [items[i * len(items) // k] for i in range(k)]


def _rss(pid: int | None) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return proc_status_kb(f.read())
    except (OSError, TypeError):
        return {}


def _processes(lab) -> dict[str, dict[str, int | None]]:
    """node -> {agent, charon, bird|babeld: pid} from the lab's records and each
    agent's `info`."""
    out = {}
    for node, pid in labrun.agent_pids(lab).items():
        procs: dict[str, int | None] = {"agent": pid}
        try:
            info = request(lab.control_socket(node), {"cmd": "info"}, timeout=30)["info"]
            procs.update({name: c.get("pid") for name, c in info.get("children", {}).items()})
        except AronetError:
            pass
        out[node] = procs
    return out


def _memory(lab, node: str, **req) -> dict:
    """The agent's `memory` reply ({} if it did not answer)."""
    try:
        return request(lab.control_socket(node), {"cmd": "memory", **req}, timeout=60)
    except AronetError:
        return {}


def memory_sample(usage: dict) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name, path in MEMORY_SERIES.items():
        v = usage
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        out[name] = v
    return out


def collection_cost(series: dict[str, list[dict]]) -> dict:
    """Per node, the agent's own full collections over the window: how many, and the
    mean time one took (ms)."""
    runs, mean = [], []
    for s in series.values():
        have = [x for x in s if x.get("collections") is not None]
        if len(have) > 1 and have[-1]["collections"] > have[0]["collections"]:
            n = have[-1]["collections"] - have[0]["collections"]
            runs.append(n)
            mean.append((have[-1]["collection_ms"] - have[0]["collection_ms"]) / n)
    return {"runs": stats(runs), "mean_ms": stats(mean)}


def memory_growth(series: dict[str, list[dict]]) -> dict[str, dict]:
    """Per quantity, the spread over the nodes of last sample - first, and of last -
    middle (the second half alone: what is left once first-use allocations settled)."""
    out = {}
    for name in MEMORY_SERIES:
        whole, late = [], []
        for s in series.values():
            vals = [x[name] for x in s if x.get(name) is not None]
            if len(vals) > 1:
                whole.append(vals[-1] - vals[0])
            if len(vals) > 2:
                late.append(vals[-1] - vals[len(vals) // 2])
        if whole:
            out[name] = {"whole": stats(whole), "second_half": stats(late)}
    return out


def footprint(lab, duration: float, sample: float, say: Say, trace_nodes: int = 0) -> dict:
    """RSS of every process, then the agents' memory over `duration`: VmRSS and what
    it is made of (the agent's `memory` command). `trace_nodes` agents, spread over the
    mesh, trace their Python allocations over the window (tracemalloc costs memory, so their figures
    are kept apart); at the end they list where what they still hold was allocated."""
    procs = _processes(lab)
    rss: dict[str, list[float]] = {}
    for pids in procs.values():
        for name, pid in pids.items():
            kb = _rss(pid).get("VmRSS")
            if kb:
                rss.setdefault(name, []).append(kb / 1024)
    say("  RSS (MB) " + ", ".join(f"{k} median {statistics.median(v):.1f}" for k, v in rss.items()))
    traced = spread(list(procs), trace_nodes)
    for node in traced:
        _memory(lab, node, trace=TRACE_FRAMES)
    if traced:
        say(f"  tracing Python allocations in {', '.join(traced)}")
    series: dict[str, list[dict]] = {node: [] for node in procs}
    deadline = time.monotonic() + duration
    while True:
        for node in procs:
            with contextlib.suppress(AronetError):
                request(lab.control_socket(node), {"cmd": "status"}, timeout=30)
            usage = _memory(lab, node).get("usage")
            if usage:
                series[node].append(memory_sample(usage))
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(sample, left))  # the sampling period of a long measurement
    plain = {n: s for n, s in series.items() if n not in traced}
    split = memory_growth(plain)
    rss_growth = split.get("rss", {"whole": stats([]), "second_half": stats([])})
    g = rss_growth["whole"]
    say(f"  agent RSS growth over {duration:.0f} s: median {g['median']} kB, max {g['max']} kB")
    sites = {node: _memory(lab, node, top=TRACE_TOP).get("top", []) for node in traced}
    released = {}
    for node in procs:
        r = _memory(lab, node, release=True).get("release")
        if r:
            released[node] = r["before_kb"]["VmRSS"] - r["after_kb"]["VmRSS"]
    # the last sample's: the release below trims the heap
    anon = [s[-1]["anon"] / 1024 for s in series.values() if s and s[-1].get("anon") is not None]
    mem = guest_memory_mb()
    say(f"  guest memory: {mem.get('MemAvailable')} of {mem.get('MemTotal')} MB available")
    return {"nodes": len(procs), "rss_mb": {k: stats(v) for k, v in rss.items()}, "guest_memory_mb": mem,
            "agent_anon_mb": stats(anon),
            "growth": {"duration_s": duration, "samples": max((len(s) for s in plain.values()), default=0),
                       "nodes": len(plain),
                       "median_kb": g["median"], "max_kb": g["max"], "min_kb": g["min"],
                       "second_half_median_kb": rss_growth["second_half"]["median"],
                       "second_half_max_kb": rss_growth["second_half"]["max"]},
            "growth_split": split, "collections": collection_cost(plain),
            "released_kb": {"per_node": released, **stats(list(released.values()))},
            "traced": {"nodes": traced, "frames": TRACE_FRAMES,
                       "growth_split": memory_growth({n: series[n] for n in traced}), "sites": sites},
            "samples": series}
