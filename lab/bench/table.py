"""The bench's output: the table `aronet-lab bench` prints (one block per row that
ran), and OUT/bench.json, which holds every figure with each run's raw data."""

from __future__ import annotations

import json
import os


def _f(v, digits: int = 2, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def as_table(result: dict) -> str:
    rows = result.get("rows", {})
    out = [f"aronet-lab bench, {result.get('date', '')} on {result.get('machine', {}).get('summary', '')}"
           + (f"; guest {result['stack']}" if result.get("stack") else "")]
    if "planner" in rows:
        floor = rows["planner"].get("process_floor") or {}
        out.append("\nplanner (seconds, best of 3; process: the whole `aronet plan`, and the same minus "
                   f"its {floor.get('nodes', '-')}-node time, {_f(floor.get('process_s'), 3)} s)")
        out.append(f"{'nodes':>7} {'load':>8} {'plan':>8} {'replan':>8} {'actions':>8} {'process':>8} "
                   f"{'-floor':>8}")
        for r in rows["planner"]["sizes"]:
            out.append(f"{r['nodes']:>7} {r['load_s']:>8.3f} {r['plan_s']:>8.3f} "
                       f"{r['replan_s']:>8.3f} {r['actions']:>8} {_f(r.get('process_s'), 3):>8} "
                       f"{_f(r.get('process_over_floor_s'), 3):>8}")
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
    for routing, g in rows.get("reload-gap", {}).items():
        if "error" in g:
            out.append(f"\nreload gap ({routing}): {g['error']}")
            continue
        out.append(f"\nreload gap a -> b on a triangle while c is removed, {routing} "
                   f"(the loads took {_f(g['load_s'])} s)")
        for fam in ("ipv6", "ipv4"):
            if fam in g:
                x = g[fam]
                out.append(f"  {fam}: longest gap {_f(x['gap_ms'], 0)} ms, lost {_f(x['lost'])} "
                           f"of {_f(x['sent'])}")
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



def save(result: dict, out: str) -> None:
    """Write the whole result to OUT/bench.json."""
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(result, f, indent=2)
