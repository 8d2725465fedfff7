"""The triangle VM group: per routing daemon, one three-node lab (a, b, c on one
dual-stack LAN) on which the control, mtu, failover and reload-gap rows are measured,
in that order (control.py, mtu.py, failover.py, lab/reload_gap.py: a -> b while c is
removed from the registry, last because the mesh is two nodes after it)."""

from __future__ import annotations

from aronet.errors import AronetError

from ..reload_gap import reload_gap
from .common import Say, mesh_topology
from .control import bench_control
from .failover import bench_failover
from .labs import running
from .mtu import bench_mtu


def guest_triangle(out: str, routings: list[str | None], runs: int, hello, update, window: float,
                   rows: set[str], say: Say) -> dict:
    res: dict[str, dict] = {"failover": {}, "mtu": {}, "control": {}, "reload-gap": {}}
    for routing in routings:
        label = routing or "default"
        say(f"triangle, routing {label}")
        topo = mesh_topology(3, name=f"tri{label[:4]}", routing=routing, hello=hello, update=update)
        try:
            with running(topo, out, say) as (lab, _report):
                if "control" in rows:
                    res["control"][label] = bench_control(lab, window, say)
                if "mtu" in rows:
                    res["mtu"][label] = bench_mtu(lab, say)
                if "failover" in rows:
                    res["failover"][label] = bench_failover(lab, runs, say)
                if "reload-gap" in rows:
                    say("  reload-gap: a -> b while c is removed")
                    res["reload-gap"][label] = reload_gap(lab, "a", "b", "c", say=say)
        except AronetError as e:
            say(f"  {e}")
            for k in res:
                res[k][label] = {"error": str(e)}
    return {k: v for k, v in res.items() if k in rows}
