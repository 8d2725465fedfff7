"""The bringup row (VM, one boot per size).

A full mesh of N nodes (two organizations, N/2 in VRF mode) on one LAN, with aronet's
own babel timers (hello 1 s, update 4 s) unless --hello/--update: from the start of
the VM (host clock) until every check of `aronet-lab check` passes (all SAs up, routes
as planned, pings, SRv6), with the guest's boot and the lab's own share apart, when
each check step first passed, and the guest's free memory then. The largest size's
boot goes on to measure the footprint row (footprint.py). When the mesh does not
converge, the first failed ping pairs are diagnosed from both ends.
"""

from __future__ import annotations

import os

from aronet.core.state import Connection
from aronet.errors import AronetError

from .. import run as labrun
from ..checks import ping_argv
from .common import Say, mesh_topology
from .footprint import footprint
from .labs import guest_memory_mb, not_converged, ns_run, running, uptime, views


def routes_converged(row: dict) -> dict:
    """The issue's bring-up measure, VM start until all SAs are up and all routes
    converged: the host's VM start -> every check passed, less the lab's seconds from
    the status documents that first showed every route to the end of the checks
    (pings and SRv6 counters, which follow)."""
    passed = row.get("steps_passed_s") or {}
    if row.get("vm_to_converged_s") is None or row.get("lab_s") is None or "routes" not in passed:
        return {}
    return {"vm_to_routes_s": round(row["vm_to_converged_s"] - (row["lab_s"] - passed["routes"]), 1)}


def _diagnose_pings(lab, report, say: Say, most: int = 6) -> list[dict]:
    """For the first failed ping pairs: the route each end takes toward the other, and
    whether one more ping gets through now."""
    failed = report.steps[-1].detail.get("failed_pairs", []) if report.broken_at == "ping" else []
    by_name = {v.name: v for v in labrun.node_views(lab)}
    out = []
    for a_name, b_name, fam in failed[:most]:
        a, b = by_name[a_name], by_name[b_name]
        row: dict = {"from": a_name, "to": b_name, "family": fam}
        for end, other, key in ((a, b, "route_there"), (b, a, "route_back")):
            argv = ["ip", f"-{fam}", "route", "get", other.targets[fam]]
            if end.sources[fam] != end.targets[fam]:  # VRF mode: the source is the VRF device
                argv += ["vrf", end.sources[fam]]
            r = ns_run(end.router_ns, argv)
            row[key] = (r.stdout or r.stderr).strip()
        r = ns_run(a.router_ns, ping_argv(a, b, fam, count=3))
        row["ping_again"] = r.stdout.strip().splitlines()[-2:] if r.stdout else r.stderr.strip()
        say(f"  failed pair {a_name} -> {b_name} IPv{fam}: there: {row['route_there']}; "
            f"back: {row['route_back']}; again: {row['ping_again']}")
        out.append(row)
    return out


def guest_bringup(out: str, n: int, routing: str | None, footprint_s: float | None, sample: float,
                  say: Say, hello: float | None = None, update: float | None = None,
                  trace_nodes: int = 0) -> dict:
    """One VM boot: the n-node mesh up (the host times it by the marker file), then
    optionally the footprint. Writes OUT/bringup-N.converged as soon as it passes."""
    started = uptime()
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
            converged = uptime()
            with open(os.path.join(out, f"bringup-{n}.converged"), "w") as f:
                f.write(f"{converged}\n")
            res.update(lab_s=round(report.seconds, 1), guest_converged_s=round(converged, 1),
                       steps_passed_s=report.passed_at, guest_memory_mb=guest_memory_mb(),
                       tunnels=sum(len(v.desired.state.of(Connection)) for v in views(lab).values()) // 2)
            if footprint_s is not None:
                res["footprint"] = footprint(lab, footprint_s, sample, say, trace_nodes)
    except AronetError as e:
        res["error"] = str(e)
    return res
