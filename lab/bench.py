"""aronet-lab bench: aronet's performance figures, measured, with one command.

Every row is a measurement, never a verdict: the targets live in the README, next to
the numbers. Rows that need kernel ESP, XFRM interfaces or VRF run in the microVM
(lab/vm.py: one boot per group of rows, stock Debian kernel under QEMU TCG) unless
--here says this kernel has them. The method of each row:

planner    (this machine) Synthetic registries of N nodes in one organization, each
           with one IPv4 endpoint, a /64 network and one IPv4 /24. Timed: reading and
           validating config and registry (load), planning this node's desired state
           (plan), and planning again after one other node gained a prefix (replan);
           `actions` is the diff between the two plans. Best of three runs each.
reload     (VM) A one-node lab whose agent is given a registry of N nodes (N-1
           synthetic peers that initiate towards it, so it only loads connections and
           creates their interfaces, routes and table entries), then three reloads over
           the control socket: nothing changed; one peer gained a prefix; one peer's
           endpoint moved. Each reload reports the agent's own count of VICI commands,
           netlink changes and state reads, and nft invocations during it (the
           `operations` of `aronet load`), and which objects changed, split into the
           changed peer's own, shared (the nft table, the routing daemon's config) and
           any other peer's (there must be none).
failover   (VM) A three-node full mesh on one LAN (the lab's default timers unless
           --hello/--update), per routing daemon: `measure failover a b` RUNS times
           with drop-esp, then with partition. Median and maximum outage (see
           lab/measure.py for how an outage is cut out of a 10 ms ping stream).
control    (VM, same lab) Control traffic per tunnel while idle (the LAN is dual-stack:
           two tunnels per peer): packets and bytes node a sent on its tunnel
           interfaces (babel, inside) and on its underlay interface (ESP with babel
           inside, IKE/DPD), over a window, divided by its number of tunnels.
mtu        (VM, same lab) From a to b across the overlay: the largest ICMP echo with DF
           that gets a reply (bisection), for IPv6 (overlay addresses) and IPv4
           (prefix addresses, carried by SRv6), next to what the planner advertises
           (tunnel MTU; IPv4 route MTU = tunnel MTU - SRv6 overhead); the TCP MSS a
           connection across the overlay ends up with, next to the clamp; and whether
           any fragment was created or reassembled on the underlay meanwhile.
bringup    (VM, one boot per size) A full mesh of N nodes (two organizations, N/2 in
           VRF mode) on one LAN, with aronet's own babel timers (hello 1 s, update 4 s)
           unless --hello/--update: from the start of the VM (host clock) until every
           check of `aronet-lab check` passes (all SAs up, routes as planned, pings,
           SRv6), with the guest's boot and the lab's own share apart, when each check
           step first passed, and the guest's free memory then.
footprint  (VM, in the largest bring-up's boot) VmRSS and RssAnon of every agent,
           charon and routing daemon once the mesh converged, then the agents' memory
           sampled every --sample seconds for --duration seconds while each agent is
           asked for its status at every sample: VmRSS and what it is made of (the
           agent's `memory` command: glibc heap in use and free, anonymous mappings,
           live Python blocks, threads, descriptors); growth = last sample - first, and
           last - middle for the second half. --trace-nodes K agents trace their Python
           allocations over the window (kept out of the growth figures: tracing costs
           memory) and list where what they still hold was allocated. At the end every
           agent collects garbage and trims its heap: what RSS gives back was only held
           by the allocator. Measured even when the mesh's last check failed; the row
           then says so.

`aronet-lab bench` prints a table and writes everything to OUT/bench.json.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import yaml

from aronet import keys
from aronet.adapters.proc import proc_status_kb
from aronet.client import request
from aronet.core import planner
from aronet.core.diff import diff
from aronet.core.names import netns_path
from aronet.core.state import Address, Connection, XfrmInterface
from aronet.errors import AronetError
from aronet.load import build_registry, load_both
from aronet.model import Settings

from .checks import ping_argv, run_in_ns

ROWS = ("planner", "reload", "failover", "mtu", "control", "bringup", "footprint")
VM_GROUPS = {"triangle": ("failover", "mtu", "control"), "reload": ("reload",),
             "bringup": ("bringup", "footprint")}
DEFAULTS = {"runs": 10, "sizes": (4, 8, 12), "planner_sizes": (100, 1000, 5000),
            "reload_nodes": 1000, "duration": 1800.0, "sample": 60.0, "window": 30.0}
Say = Callable[[str], None]
MAX_SYNTHETIC = 1 << 14
NS_TIMEOUT = 30  # seconds for one command in a lab namespace
# the guest of a bench group: a converged 12-node mesh (36 daemons, 12 agents of
# about 50 MB) with its checks used 0.9 GB; the rest is page cache for the 9p root
VM_MEMORY = "4G"
TRACE_FRAMES = 8  # frames kept per traced allocation: enough to reach aronet's own code
TRACE_TOP = 15


# ================================================================ pure parts


def stats(values: list[float]) -> dict:
    """median / min / max / n of the values that are there (None: not measured)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(vals), "median": round(statistics.median(vals), 3),
            "min": round(min(vals), 3), "max": round(max(vals), 3)}


def synthetic_nodes(n: int, *, first: int = 0, port: int = 12025) -> list[dict]:
    """n registry nodes named n00000.., each with one IPv4 endpoint in 100.64.0.0/16,
    a /64 network and one IPv4 /24 in 10.64.0.0/10 (none overlap, up to 16,384)."""
    if first < 0 or first + n > MAX_SYNTHETIC:
        raise ValueError(f"at most {MAX_SYNTHETIC} synthetic nodes")
    return [{"common_name": f"n{i:05d}",
             "endpoints": [{"address": f"100.64.{i >> 8}.{i & 255}", "port": port, "serial_number": 0}],
             "remarks": {"network": f"fdbe:{i >> 8:x}:{i & 255:x}::1/64",
                         "prefixs": [f"10.{64 + (i >> 8)}.{i & 255}.0/24"]}}
            for i in range(first, first + n)]


def with_change(registry: list[dict], org: str, cn: str, change: str) -> list[dict]:
    """A copy of the registry document in which node org/cn changed: "prefix" adds
    a /24 (its first IPv4 prefix moved from 10/8 to 11/8); "endpoint" moves its first
    endpoint's address (second octet + 32)."""
    if change not in ("prefix", "endpoint"):
        raise ValueError(f"unknown change {change!r}")
    doc = json.loads(json.dumps(registry))
    for o in doc:
        for node in o["nodes"] if o["organization"] == org else ():
            if node["common_name"] != cn:
                continue
            if change == "prefix":
                a, b, c, d = node["remarks"]["prefixs"][0].split(".")
                node["remarks"]["prefixs"].append(f"{int(a) + 1}.{b}.{c}.{d}")
            else:
                ep = node["endpoints"][0]
                a, b, c, d = ep["address"].split(".")
                ep["address"] = f"{a}.{int(b) + 32}.{c}.{d}"
            return doc
    raise KeyError(f"{org}/{cn} is not in the registry")


def classify(actions, peer: str, state) -> dict[str, list[str]]:
    """Split the objects a plan changes into the changed peer's own, shared ones (the
    nft table, the routing daemon's config: no peer of their own) and any other
    peer's. state: the desired state, to tell whose tunnel an address is on."""
    tunnel_peer = {x.name: x.peer for x in state.of(XfrmInterface)}
    out: dict[str, list[str]] = {"own": [], "shared": [], "other": []}
    for a in actions:
        r = a.resource
        owner = getattr(r, "peer", "") or (tunnel_peer.get(r.dev, "") if isinstance(r, Address) else "")
        if owner == peer:
            out["own"].append(str(a))
        elif owner:
            out["other"].append(str(a))
        else:
            out["shared"].append(f"{a.op} {r.kind}")
    return out


def mesh_topology(n: int, *, name: str, routing: str | None = None, hello: float | None = None,
                  update: float | None = None, vrf_share: float = 0.0) -> dict:
    """A full mesh of n public nodes on one dual-stack LAN, in two organizations;
    the first round(n * vrf_share) nodes run in VRF mode."""
    options: dict = {}
    if routing:
        options["routing"] = routing
    babel = {k: v for k, v in (("hello_interval", hello), ("update_interval", update)) if v}
    if babel:
        options["babel"] = babel
    names = [f"n{i + 1}" if n > 3 else "abc"[i] for i in range(n)]
    vrf = round(n * vrf_share)
    nodes = {nm: {"organization": "bench" if i % 2 == 0 else "bench2",
                  **({"mode": "vrf"} if i < vrf else {})} for i, nm in enumerate(names)}
    doc = {"name": name, "nodes": nodes, "lans": {"wan": {"members": names}}}
    if options:
        doc["options"] = options
    return doc


def routes_converged(row: dict) -> dict:
    """The issue's bring-up measure, VM start until all SAs are up and all routes
    converged: the host's VM start -> every check passed, less the lab's seconds from
    the status documents that first showed every route to the end of the checks
    (pings and SRv6 counters, which follow)."""
    passed = row.get("steps_passed_s") or {}
    if row.get("vm_to_converged_s") is None or row.get("lab_s") is None or "routes" not in passed:
        return {}
    return {"vm_to_routes_s": round(row["vm_to_converged_s"] - (row["lab_s"] - passed["routes"]), 1)}


def spread(items: list, k: int) -> list:
    """k of the items, spread evenly (the mesh's first half runs in VRF mode)."""
    k = max(0, min(k, len(items)))
    return [items[i * len(items) // k] for i in range(k)]


def largest_ok(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The largest size in [lo, hi] for which ok(size) holds, assuming it holds up to
    some size and not beyond; None if not even lo works."""
    if not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# ================================================================ the table


def _f(v, digits: int = 2, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def as_table(result: dict) -> str:
    rows = result.get("rows", {})
    out = [f"aronet-lab bench, {result.get('date', '')} on {result.get('machine', {}).get('summary', '')}"]
    if "planner" in rows:
        out.append("\nplanner (seconds, best of 3)")
        out.append(f"{'nodes':>7} {'load':>8} {'plan':>8} {'replan':>8} {'actions':>8}")
        for r in rows["planner"]["sizes"]:
            out.append(f"{r['nodes']:>7} {r['load_s']:>8.3f} {r['plan_s']:>8.3f} "
                       f"{r['replan_s']:>8.3f} {r['actions']:>8}")
    if "reload" in rows and "error" not in rows["reload"]:
        r = rows["reload"]
        out.append(f"\nincremental reload, one agent, registry of {r['nodes']} nodes "
                   f"(first load {_f(r['initial']['seconds'])} s)")
        for case in ("unchanged", "prefix", "endpoint"):
            c = r[case]
            ops = "; ".join(f"{k}: " + ", ".join(f"{n} {v}" for n, v in calls.items())
                            for k, calls in c["operations"].items() if calls)
            out.append(f"  {case:<10} {_f(c['seconds'])} s, {len(c['changes'])} changes "
                       f"(own {len(c['touched']['own'])}, shared {len(c['touched']['shared'])}, "
                       f"other {len(c['touched']['other'])}); {ops}")
    for routing, fo in rows.get("failover", {}).items():
        if "error" in fo:
            out.append(f"\nfailover ({routing}): {fo['error']}")
            continue
        out.append(f"\nfailover a -> b on a triangle, {routing}, hello {fo['hello']} s, "
                   f"update {fo['update']} s (ms)")
        for fault in ("drop-esp", "partition"):
            s = fo[fault]["stats"]
            out.append(f"  {fault:<10} median {_f(s['median'], 0)}, min {_f(s['min'], 0)}, "
                       f"max {_f(s['max'], 0)} ({s['n']} runs)")
    for routing, c in rows.get("control", {}).items():
        if "error" not in c:
            out.append(f"\ncontrol traffic per tunnel, idle, {routing}: babel {c['tunnel_pps']:.1f} pkt/s "
                       f"{c['tunnel_bps']:.0f} B/s inside; underlay {c['underlay_pps']:.1f} pkt/s "
                       f"{c['underlay_bps']:.0f} B/s")
    for routing, m in rows.get("mtu", {}).items():
        if "error" in m:
            continue
        out.append(f"\nMTU a -> b ({routing})")
        for fam in ("6", "4"):
            x = m[fam]
            out.append(f"  IPv{fam}: largest DF echo {_f(x['largest_packet'])} B "
                       f"(advertised {x['advertised_mtu']}); TCP segments of {_f(x['mss'])} B "
                       f"+ 12 B timestamp option (MSS clamp {x['clamp']})")
        out.append(f"  underlay fragments created {m['fragments_created']}, "
                   f"reassembled {m['fragments_reassembled']}")
    if "bringup" in rows:
        out.append("\nbring-up (s): VM start -> all SAs up and routes converged / every check passes")
        for r in rows["bringup"]:
            if "error" in r:
                out.append(f"  {r['nodes']:>3} nodes: {r['error']}")
                continue
            timers = f"; hello {r['hello']} s, update {r['update']} s" if r.get("hello") else ""
            out.append(f"  {r['nodes']:>3} nodes: {_f(r.get('vm_to_routes_s'), 1)} / "
                       f"{_f(r['vm_to_converged_s'], 1)} "
                       f"(guest boot {_f(r['guest_boot_s'], 1)}, lab {_f(r['lab_s'], 1)}; "
                       f"{r['tunnels']} tunnels{timers})")
            if r.get("guest_memory_mb"):
                m = r["guest_memory_mb"]
                out.append(f"       guest memory available then: {m.get('MemAvailable')} of "
                           f"{m.get('MemTotal')} MB")
            if r.get("steps_passed_s"):
                out.append("       lab s at which each step first passed: "
                           + ", ".join(f"{k} {v}" for k, v in r["steps_passed_s"].items()))
    fp = rows.get("footprint")
    if fp and "error" in fp:
        out.append(f"\nfootprint: {fp['error']}")
    elif fp:
        out.append(f"\nfootprint per node, {fp['nodes']} nodes (MB, median / max VmRSS)"
                   + (f"; the mesh's last check {fp['last_check']}" if fp.get("last_check") else ""))
        for proc, s in fp["rss_mb"].items():
            out.append(f"  {proc:<8} {_f(s['median'], 1)} / {_f(s['max'], 1)}")
        g = fp["growth"]
        out.append(f"  agent RSS over {g['duration_s']:.0f} s: growth median {_f(g['median_kb'], 0)} kB, "
                   f"max {_f(g['max_kb'], 0)} kB ({g['samples']} samples); in the second half "
                   f"median {_f(g.get('second_half_median_kb'), 0)} kB, "
                   f"max {_f(g.get('second_half_max_kb'), 0)} kB")
        out.extend(_memory_lines(fp))
    return "\n".join(out) + "\n"


def _memory_lines(fp: dict) -> list[str]:
    """What the agents' growth is made of, and where the traced agents allocated it."""
    out = []
    split = fp.get("growth_split") or {}
    if split:
        out.append("  growth by part, median over the nodes, whole / second half: " + ", ".join(
            f"{name} {_f(v['whole']['median'], 0)} / {_f(v['second_half']['median'], 0)}"
            for name, v in split.items() if name not in ("traced", "tracemalloc", "collection_ms")))
    cost = (fp.get("collections") or {}).get("mean_ms") or {}
    if cost.get("n"):
        out.append(f"  the agent's collection + malloc_trim after each re-check: {_f(cost['median'], 1)} ms "
                   f"median, {_f(cost['max'], 1)} ms max (mean per node)")
    rel = fp.get("released_kb")
    if rel and rel.get("n"):
        out.append(f"  RSS returned by gc + malloc_trim at the end: median {_f(rel['median'], 0)} kB, "
                   f"max {_f(rel['max'], 0)} kB")
    traced = fp.get("traced") or {}
    sizes: dict[tuple, list[float]] = {}
    for sites in (traced.get("sites") or {}).values():
        for site in sites:
            sizes.setdefault(tuple(site["where"]), []).append(site["kb"])
    if sizes:
        n = len(traced["sites"])
        out.append(f"  still held at the end, allocated during the window ({n} traced agents, kB each):")
        for where, kbs in sorted(sizes.items(), key=lambda kv: -sum(kv[1]))[:8]:
            own = next((w for w in where if "/aronet/" in w or "/lab/" in w), None)
            via = f"  <- {own}" if own and own != where[0] else ""
            out.append(f"    {sum(kbs) / n:8.1f}  {where[0]}{via}")
    return out


# ================================================================ rows on this machine


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
            plan_s, before = _timed(functools.partial(planner.desired, cfg, reg))
            changed = with_change(registry, "bench", nodes[n // 2]["common_name"], "prefix")
            reg2 = build_registry(changed, rpath)
            replan_s, after = _timed(functools.partial(planner.desired, cfg, reg2))
            actions = diff(after.state, before.state)
            row = {"nodes": n, "load_s": round(load_s, 4), "plan_s": round(plan_s, 4),
                   "replan_s": round(replan_s, 4), "actions": len(actions),
                   "touched": classify(actions, f"bench/{nodes[n // 2]['common_name']}", after.state)}
            say(f"planner {n} nodes: load {load_s:.3f} s, plan {plan_s:.3f} s, "
                f"replan {replan_s:.3f} s, {len(actions)} actions")
            out.append(row)
    return {"sizes": out}


# ================================================================ rows in the kernel (VM)


def _lab(topology: dict, directory: str):
    from . import run as labrun

    path = os.path.join(directory, f"{topology['name']}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(topology, f, sort_keys=False)
    return labrun.open_lab(path)


@contextlib.contextmanager
def running(topology: dict, directory: str, say: Say, timeout: float = 600, require_ok: bool = True):
    """A lab up and passing its checks for the duration of the block (require_ok False:
    up, whatever its last check said); always down."""
    from . import run as labrun

    lab = _lab(topology, directory)
    try:
        report = labrun.up(lab, timeout, say=lambda line: say(f"  {line}"))
        if not report.ok and require_ok:
            raise AronetError(not_converged(lab, report))
        yield lab, report
    finally:
        left = labrun.down(lab, say=lambda line: say(f"  {line}"))
        if left:
            say(f"  lab {lab.plan.lab}: {len(left)} things left behind")


def not_converged(lab, report) -> str:
    last = report.steps[-1]
    count = f"{len(last.problems)} problems" if len(last.problems) != 1 else "1 problem"
    if "pairs" in last.detail:
        count = f"{last.detail['failed']} of {last.detail['pairs']} pairs"
    return (f"lab {lab.plan.lab} did not converge in {report.seconds:.0f} s: broken at {report.broken_at} "
            f"({count}): {'; '.join(last.problems[:3])}"
            + (f" (steps passed at {report.passed_at} s)" if report.passed_at else ""))


def _diagnose_pings(lab, report, say: Say, most: int = 6) -> list[dict]:
    """For the first failed ping pairs: the route each end takes toward the other, and
    whether one more ping gets through now."""
    failed = report.steps[-1].detail.get("failed_pairs", []) if report.broken_at == "ping" else []
    from .run import node_views

    views = {v.name: v for v in node_views(lab)}
    out = []
    for a_name, b_name, fam in failed[:most]:
        a, b = views[a_name], views[b_name]
        row: dict = {"from": a_name, "to": b_name, "family": fam}
        for end, other, key in ((a, b, "route_there"), (b, a, "route_back")):
            argv = ["ip", f"-{fam}", "route", "get", other.targets[fam]]
            if end.sources[fam] != end.targets[fam]:  # VRF mode: the source is the VRF device
                argv += ["vrf", end.sources[fam]]
            r = _ns_run(end.router_ns, argv)
            row[key] = (r.stdout or r.stderr).strip()
        r = _ns_run(a.router_ns, ping_argv(a, b, fam, count=3))
        row["ping_again"] = r.stdout.strip().splitlines()[-2:] if r.stdout else r.stderr.strip()
        say(f"  failed pair {a_name} -> {b_name} IPv{fam}: there: {row['route_there']}; "
            f"back: {row['route_back']}; again: {row['ping_again']}")
        out.append(row)
    return out


def _ns_run(ns: str, argv: list[str]) -> subprocess.CompletedProcess:
    return run_in_ns(ns, argv, timeout=NS_TIMEOUT)


def _link_stats(ns: str) -> dict[str, dict]:
    r = _ns_run(ns, ["ip", "-j", "-s", "link", "show"])
    return {x["ifname"]: x.get("stats64", {}) for x in json.loads(r.stdout or "[]")}


def _views(lab):
    from .run import node_views

    return {v.name.split("/", 1)[1]: v for v in node_views(lab)}


def bench_control(lab, window: float, say: Say) -> dict:
    """Idle control traffic of node a per tunnel (one per peer and address family):
    its tunnel interfaces (inner, babel) and its underlay interfaces (on the wire:
    ESP with babel inside, IKE and DPD), over `window` seconds."""
    a = lab.plan.node("a")
    tunnels = [c.name for c in _views(lab)["a"].desired.state.of(Connection)]
    underlay = [i.name for i in a.interfaces]
    t0 = time.monotonic()
    s0, u0 = _link_stats(a.agent_ns), _link_stats(a.ns)
    time.sleep(window)  # a measurement window, not a wait for a condition
    s1, u1 = _link_stats(a.agent_ns), _link_stats(a.ns)
    dt = time.monotonic() - t0

    def per_tunnel(before, after, names, field):
        total = sum(after[n]["tx"][field] - before[n]["tx"][field] for n in names if n in after)
        return total / dt / max(1, len(tunnels))

    out = {"window_s": round(dt, 1), "tunnels": len(tunnels),
           "tunnel_pps": round(per_tunnel(s0, s1, tunnels, "packets"), 2),
           "tunnel_bps": round(per_tunnel(s0, s1, tunnels, "bytes"), 1),
           "underlay_pps": round(per_tunnel(u0, u1, underlay, "packets"), 2),
           "underlay_bps": round(per_tunnel(u0, u1, underlay, "bytes"), 1)}
    say(f"  control traffic per tunnel: {out['tunnel_pps']} pkt/s {out['tunnel_bps']} B/s inside, "
        f"{out['underlay_pps']} pkt/s {out['underlay_bps']} B/s on the underlay")
    return out


def _snmp(ns: str) -> dict[str, int]:
    """The namespace's IPv4 (/proc/net/snmp "Ip:" lines) and IPv6 (/proc/net/snmp6)
    counters, as IpFragCreates, Ip6FragCreates, ..."""
    r = _ns_run(ns, ["cat", "/proc/net/snmp", "/proc/net/snmp6"])
    out = {}
    lines = r.stdout.splitlines()
    for head, vals in itertools.pairwise(lines):
        if head.startswith("Ip: ") and vals.startswith("Ip: ") and not head.split()[1].isdigit():
            out.update({f"Ip{k}": int(v) for k, v in zip(head.split()[1:], vals.split()[1:], strict=True)})
    for parts in map(str.split, lines):
        if len(parts) == 2 and parts[0].startswith("Ip6") and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


_FRAG_KEYS = (("IpFragCreates", "Ip6FragCreates"), ("IpReasmReqds", "Ip6ReasmReqds"))

_MSS_CLIENT = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(10)
s.bind((sys.argv[2], 0))
s.connect((sys.argv[1], int(sys.argv[3])))
s.sendall(b"x" * 65536)
print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
s.close()
"""

_MSS_SERVER = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
n = 0
while True:
    data = c.recv(65536)
    if not data:
        break
    n += len(data)
print(n, c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG), flush=True)
"""


def _mss(src_ns: str, src: str, dst_ns: str, dst: str, port: int = 5201) -> dict:
    server = subprocess.Popen(["nsenter", f"--net={netns_path(dst_ns)}", "--", sys.executable, "-c",
                               _MSS_SERVER, dst, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "listening":
            return {"mss": None, "error": "server did not start"}
        r = _ns_run(src_ns, [sys.executable, "-c", _MSS_CLIENT, dst, src, str(port)])
        got = server.communicate(timeout=30)[0].split()
        if r.returncode != 0:
            return {"mss": None, "error": r.stderr.strip().splitlines()[-1:]}
        return {"mss": int(r.stdout.strip()), "received": int(got[0]) if got else None,
                "server_mss": int(got[1]) if len(got) > 1 else None}
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def bench_mtu(lab, say: Say) -> dict:
    views = _views(lab)
    a, b = lab.plan.node("a"), lab.plan.node("b")
    va, vb = views["a"], views["b"]
    mtu = next(iter(va.desired.state.of(XfrmInterface))).mtu
    v4_mtu = mtu - planner.SRV6_OVERHEAD
    before = {ns: _snmp(ns) for ns in (a.ns, b.ns)}
    out: dict = {}
    for fam, src, dst, adv, header in ((6, va.sources[6], vb.targets[6], mtu, 48),
                                       (4, va.sources[4], vb.targets[4], v4_mtu, 28)):
        def df_ping(size, fam=fam, src=src, dst=dst):
            return _ns_run(a.agent_ns, ["ping", f"-{fam}", "-n", "-c", "1", "-W", "2", "-M", "do",
                                        "-s", str(size), "-I", src, dst])

        def ok(size):
            return df_ping(size).returncode == 0
        # a lost first echo (neighbour resolution) is no verdict
        ok(56)
        payload = largest_ok(0, 9000, ok)
        over = df_ping(adv - header + 1)
        m = _mss(a.agent_ns, va.targets[fam] if fam == 4 else src, b.agent_ns, dst)
        out[str(fam)] = {"largest_payload": payload,
                         "largest_packet": None if payload is None else payload + header,
                         "advertised_mtu": adv, "clamp": (v4_mtu - 40) if fam == 4 else (mtu - 60),
                         "one_more_byte": (over.stdout + over.stderr).strip().splitlines()[-1:],
                         **m}
        say(f"  IPv{fam}: largest DF echo {out[str(fam)]['largest_packet']} B "
            f"(advertised {adv}), MSS {m.get('mss')}")
    after = {ns: _snmp(ns) for ns in (a.ns, b.ns)}
    created = sum(after[ns].get(k, 0) - before[ns].get(k, 0) for ns in before for k in _FRAG_KEYS[0])
    reasm = sum(after[ns].get(k, 0) - before[ns].get(k, 0) for ns in before for k in _FRAG_KEYS[1])
    out.update(fragments_created=created, fragments_reassembled=reasm)
    return out


def guest_triangle(out: str, routings: list[str | None], runs: int, hello, update, window: float,
                   rows: set[str], say: Say) -> dict:
    from .measure import failover

    res: dict[str, dict] = {"failover": {}, "mtu": {}, "control": {}}
    for routing in routings:
        label = routing or "default"
        say(f"triangle, routing {label}")
        topo = mesh_topology(3, name=f"tri{label[:4]}", routing=routing, hello=hello, update=update)
        try:
            with running(topo, out, say) as (lab, _report):
                cfg = lab.plan.node("a").config.get("daemon", {}).get("babel", {})
                defaults = Settings()
                if "control" in rows:
                    res["control"][label] = bench_control(lab, window, say)
                if "mtu" in rows:
                    res["mtu"][label] = bench_mtu(lab, say)
                if "failover" in rows:
                    fo = {"hello": cfg.get("hello_interval", defaults.babel_hello),
                          "update": cfg.get("update_interval", defaults.babel_update)}
                    for fault in ("drop-esp", "partition"):
                        say(f"  failover {fault} x{runs}")
                        r = failover(lab, "a", "b", fault=fault, runs=runs,
                                     say=lambda line: say(f"    {line}"))
                        r["stats"] = stats([x["outage_ms"] for x in r["runs"]])
                        fo[fault] = r
                    res["failover"][label] = fo
        except AronetError as e:
            say(f"  {e}")
            for k in res:
                res[k][label] = {"error": str(e)}
    return {k: v for k, v in res.items() if k in rows}


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def _rss(pid: int | None) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return proc_status_kb(f.read())
    except (OSError, TypeError):
        return {}


def _guest_memory_mb() -> dict[str, float]:
    """The guest's MemTotal and MemAvailable: a mesh must fit the VM's memory."""
    with open("/proc/meminfo") as f:
        kb = proc_status_kb(f.read(), ("MemTotal", "MemAvailable"))
    return {k: round(v / 1024) for k, v in kb.items()}


def _processes(lab) -> dict[str, dict[str, int | None]]:
    """node -> {agent, charon, bird|babeld: pid} from the lab's records and each
    agent's `info`."""
    from .run import _pids

    out = {}
    for node, pid in _pids(lab).items():
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
    mem = _guest_memory_mb()
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


def guest_bringup(out: str, n: int, routing: str | None, footprint_s: float | None, sample: float,
                  say: Say, hello: float | None = None, update: float | None = None,
                  trace_nodes: int = 0) -> dict:
    """One VM boot: the n-node mesh up (the host times it by the marker file), then
    optionally the footprint. Writes OUT/bringup-N.converged as soon as it passes."""
    started = _uptime()
    topo = mesh_topology(n, name=f"mesh{n}", routing=routing, hello=hello, update=update, vrf_share=0.5)
    res: dict = {"nodes": n, "hello": hello, "update": update, "guest_boot_s": round(started, 1)}
    try:
        # the footprint is the agents' memory: it is measured even on a mesh whose
        # last check failed, and the row says so
        with running(topo, out, say, require_ok=footprint_s is None) as (lab, report):
            if not report.ok:
                res["error"] = not_converged(lab, report)
                res["failed_pairs"] = _diagnose_pings(lab, report, say)
                res["footprint"] = {**footprint(lab, footprint_s, sample, say, trace_nodes),
                                    "last_check": f"failed at {report.broken_at}"}
                return res
            converged = _uptime()
            with open(os.path.join(out, f"bringup-{n}.converged"), "w") as f:
                f.write(f"{converged}\n")
            res.update(lab_s=round(report.seconds, 1), guest_converged_s=round(converged, 1),
                       steps_passed_s=report.passed_at, guest_memory_mb=_guest_memory_mb(),
                       tunnels=sum(len(v.desired.state.of(Connection)) for v in _views(lab).values()) // 2)
            if footprint_s is not None:
                res["footprint"] = footprint(lab, footprint_s, sample, say, trace_nodes)
    except AronetError as e:
        res["error"] = str(e)
    return res


def _load(lab, node: str, registry: list[dict], timeout: float = 1800) -> dict:
    reply = request(lab.control_socket(node), {"cmd": "load", "file": "bench-registry.json",
                                               "registry": registry}, timeout=timeout)
    return {"seconds": reply.get("seconds"), "changes": reply["changes"],
            "operations": reply.get("operations", {})}


def guest_reload(out: str, nodes: int, say: Say) -> dict:
    """One agent, a registry of `nodes` nodes, three reloads (see the module doc)."""
    topo = {"name": "reload", "nodes": {"solo": {"organization": "zz-solo"}},
            "lans": {"wan": {"members": ["solo"], "ipv6": False}}}
    res: dict = {"nodes": nodes}
    try:
        with running(topo, out, say) as (lab, _report):
            with open(os.path.join(lab.directory, "registry.json")) as f:
                base = json.load(f)
            key = keys.generate()
            peers = synthetic_nodes(nodes - 1)
            registry = [*base, {"public_key": keys.public_pem(key), "organization": "bench",
                                "nodes": peers}]
            say(f"  loading a registry of {nodes} nodes")
            res["initial"] = _load(lab, "solo", registry)
            say(f"  first load: {res['initial']['seconds']} s, {len(res['initial']['changes'])} changes")
            target = peers[len(peers) // 2]["common_name"]
            config, _ = load_both(os.path.join(lab.node_dir("solo"), "config.json"),
                                  os.path.join(lab.directory, "registry.json"))
            current = registry
            before = planner.desired(config, build_registry(current, "registry.json"))
            for case in ("unchanged", "prefix", "endpoint"):
                new = current if case == "unchanged" else with_change(current, "bench", target, case)
                after = planner.desired(config, build_registry(new, "registry.json"))
                r = _load(lab, "solo", new)
                r["touched"] = classify(diff(after.state, before.state), f"bench/{target}", after.state)
                res[case] = r
                say(f"  {case}: {r['seconds']} s, operations {r['operations']}")
                current, before = new, after
    except AronetError as e:
        res["error"] = str(e)
    return res


# ================================================================ orchestration


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) // 1024 // 1024

    def version(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    info = {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "kernel": platform.release(),
            "python": platform.python_version(), "hostname": socket.gethostname(),
            "bird": version(["bird", "--version"]), "babeld": version(["babeld", "-V"]),
            "charon": version(["dpkg-query", "-W", "-f", "${Version}", "strongswan-charon"])}
    info["summary"] = (f"{cpu or 'unknown CPU'}, {os.cpu_count()} cores, {mem} GiB, "
                       f"kernel {platform.release()}")
    return info


def _vm_group(cmd: list[str], out: str, timeout: float, say: Say, marker: str | None = None) -> dict:
    """Run `aronet-lab bench --inside ...` in one microVM boot; returns what the guest
    wrote, plus (with marker) the host's seconds from the VM's start until the guest
    wrote the marker file."""
    from . import vm

    result_file = os.path.join(out, f"{cmd[0]}.json")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(result_file)
    inner = ["aronet-lab", "bench", "--inside", *cmd, "--out", out]
    t0 = time.monotonic()
    seen: dict = {}
    box: dict = {}
    cancel, done = threading.Event(), threading.Event()

    def boot():
        try:
            box["res"] = vm.run_in_vm(" ".join(inner), out, timeout=timeout, cancel=cancel,
                                      memory=VM_MEMORY, env={"PYTHONUNBUFFERED": "1"},
                                      log_path=os.path.join(out, f"{cmd[0]}-console.log"))
        except Exception as e:  # reported with the row
            box["error"] = str(e)
        finally:
            done.set()

    th = threading.Thread(target=boot, daemon=True)
    th.start()
    marker_path = os.path.join(out, marker) if marker else None
    if marker_path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker_path)
    try:
        while not done.wait(0.2):
            if marker_path and "at" not in seen and os.path.exists(marker_path):
                seen["at"] = time.monotonic() - t0
    except BaseException:
        # Ctrl-C: the VM runs in the thread, which must stop it. Not th.join(): a
        # join that KeyboardInterrupt broke may report the thread finished (CPython 3.11).
        cancel.set()
        done.wait(30)
        raise
    if "error" in box:
        return {"error": box["error"]}
    for line in vm.command_output(box["res"].stdout).splitlines():
        say(f"  | {line}")
    try:
        with open(result_file) as f:
            data = json.load(f)
    except (OSError, ValueError):
        res = box.get("res")
        return {"error": "the guest wrote no result: " + (vm.tail(res.stdout, 20) if res else "")}
    if "at" in seen:
        data["vm_to_converged_s"] = round(seen["at"], 1)
    return data


def run(args, say: Say = print) -> dict:
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    rows = set(args.rows)
    routings = args.routing or [None]
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "rows": {},
              "settings": {"runs": args.runs, "sizes": args.sizes, "planner_sizes": args.planner_sizes,
                           "reload_nodes": args.reload_nodes, "duration_s": args.duration,
                           "routing": routings, "hello": args.hello, "update": args.update,
                           "trace_nodes": args.trace_nodes}}
    common = ["--runs", str(args.runs), "--window", str(args.window), "--sample", str(args.sample)]
    for r in routings:
        if r:
            common += ["--routing", r]
    timers = [*(["--hello", str(args.hello)] if args.hello else []),
              *(["--update", str(args.update)] if args.update else [])]
    if "planner" in rows:
        result["rows"]["planner"] = bench_planner(args.planner_sizes, say)
    tri = rows & set(VM_GROUPS["triangle"])
    if tri:
        say(f"triangle: {', '.join(sorted(tri))} ({'here' if args.here else 'microVM'})")
        if args.here:
            data = guest_triangle(out, routings, args.runs, args.hello, args.update, args.window, tri, say)
        else:
            data = _vm_group(["triangle", "--rows", *sorted(tri), *common, *timers], out,
                             1800 + 120 * args.runs * len(routings), say)
        for row in tri:
            result["rows"][row] = data.get(row, {"default": {"error": data.get("error", "no result")}})
    if "reload" in rows:
        say(f"reload: one agent, {args.reload_nodes} nodes")
        result["rows"]["reload"] = (guest_reload(out, args.reload_nodes, say) if args.here else
                                    _vm_group(["reload", "--reload-nodes", str(args.reload_nodes)],
                                              out, 3600, say))
    if rows & {"bringup", "footprint"}:
        sizes = args.sizes if "bringup" in rows else [max(args.sizes)]
        result["rows"]["bringup"] = []
        # aronet's own timers unless told: at 12 nodes the lab's fast hello (150 ms; 200 ms
        # already) is more ESP than 2 emulated vCPUs carry (README, Benchmarks)
        hello, update = args.hello or Settings.babel_hello, args.update or Settings.babel_update
        mesh_args = [*common, "--hello", str(hello), "--update", str(update)]
        for n in sizes:
            with_fp = "footprint" in rows and n == max(sizes)
            say(f"bring-up: {n} nodes" + (f", then footprint for {args.duration:.0f} s" if with_fp else ""))
            extra = (["--duration", str(args.duration), "--trace-nodes", str(args.trace_nodes)]
                     if with_fp else [])
            if args.here:
                data = guest_bringup(out, n, routings[0], args.duration if with_fp else None,
                                     args.sample, say, hello, update, args.trace_nodes)
            else:
                data = _vm_group([f"bringup-{n}", *mesh_args, *extra], out,
                                 1200 + (args.duration if with_fp else 0), say,
                                 marker=f"bringup-{n}.converged")
            fp = data.pop("footprint", None)
            if fp is not None:
                result["rows"]["footprint"] = fp
            elif with_fp:
                result["rows"]["footprint"] = {"error": data.get("error", "no result")}
            result["rows"]["bringup"].append({"nodes": n, **data, **routes_converged(data)})
        if "bringup" not in rows:
            del result["rows"]["bringup"]
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def inside(args, say: Say = print) -> int:
    """The guest's side of one VM group: run it and write OUT/<group>.json."""
    group, out = args.inside, os.path.abspath(args.out)
    routings = args.routing or [None]
    if group == "triangle":
        data = guest_triangle(out, routings, args.runs, args.hello, args.update, args.window,
                              set(args.rows), say)
    elif group == "reload":
        data = guest_reload(out, args.reload_nodes, say)
    elif group.startswith("bringup-"):
        n = int(group.split("-", 1)[1])
        data = guest_bringup(out, n, routings[0], args.duration, args.sample, say, args.hello, args.update,
                             args.trace_nodes)
    else:
        raise AronetError(f"unknown bench group {group!r}")
    with open(os.path.join(out, f"{group}.json"), "w") as f:
        json.dump(data, f, indent=2)
    return 0


def available_routings() -> list[str]:
    return [r for r, exe in (("bird", "bird"), ("babeld", "babeld")) if shutil.which(exe)]
