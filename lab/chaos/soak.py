"""The chaos soak: run a schedule's events against a running lab until its minutes
are used up, and check the invariants after each fault and each heal.

The invariants (a broken one is a violation, recorded with its event):
  reconverged   after the heal (or after the fault, for the kinds that heal by
                themselves) every check passes again within `bound` seconds
  refused       a bad reload is refused, and changes nothing: the agent keeps the
                registry it had (its state file, byte for byte), its tunnels, and is
                still in sync with its desired state
  alive         no agent died that the schedule did not kill (its pid is checked
                after the fault and after the heal)
  rss           no agent's resident memory exceeds rss_limit_mb

A violation ends nothing: the soak heals, waits for the mesh (again within the
bound) and goes on, so one run reports every violation it met. At the end every
fault is removed (heal, links up, impairments cleared): `down` then finds nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable

from aronet.adapters.proc import proc_status_kb
from aronet.client import request
from aronet.errors import AronetError, InputError

from .. import impair, underlay
from .. import run as labrun
from ..checks import wait_converged
from .report import summarize
from .schedule import Event, Schedule

Say = Callable[[str], None]


def soak(lab: labrun.Lab, schedule: Schedule, *, bound: float, rss_limit_mb: float,
         say: Say = print) -> dict:
    t0 = time.monotonic()
    end = t0 + schedule.minutes * 60
    timeline: list[dict] = []
    violations: list[dict] = []
    killed: set[str] = set()
    say(f"chaos on lab {lab.plan.lab}: seed {schedule.seed}, {schedule.minutes:g} min, "
        f"faults {','.join(schedule.faults)}")
    first = _converge(lab, bound)
    if first is None:
        violations.append({"event": None, "invariant": "reconverged",
                           "detail": f"the mesh was not whole at the start within {bound:g} s"})
    rss_peak: dict[str, int] = {}
    try:
        for ev in schedule.events:
            if time.monotonic() >= end:
                break
            row = _one(lab, ev, bound, rss_limit_mb, killed, t0, rss_peak)
            timeline.append(row)
            violations += [{"event": ev.index, **v} for v in row["violations"]]
            say(_line(row))
            time.sleep(ev.pause)
    finally:
        _heal_all(lab)
    return {"lab": lab.plan.lab, "schedule": schedule.as_json(), "bound_s": bound,
            "rss_limit_mb": rss_limit_mb, "seconds": round(time.monotonic() - t0, 1),
            "timeline": timeline, "violations": violations, "rss_peak_kb": rss_peak,
            "summary": summarize(timeline, violations)}


def _line(row: dict) -> str:
    rec = row["reconverged_s"]
    state = f"whole again in {rec:.1f} s" if rec is not None else "NOT whole again"
    bad = f"; {len(row['violations'])} violation(s)" if row["violations"] else ""
    return f"  {row['at_s']:7.1f} s  #{row['event']:<3} {row['what']:<40} {state}{bad}"


def _one(lab, ev: Event, bound, rss_limit_mb, killed: set[str], t0: float, rss_peak) -> dict:
    row: dict = {"event": ev.index, "kind": ev.kind, "what": str(ev), "at_s": round(time.monotonic() - t0, 1),
                 "violations": []}
    bad = row["violations"]
    heal = _inject(lab, ev, bad, killed)
    bad += _alive(lab, killed, "after the fault")
    if ev.hold:
        time.sleep(ev.hold)
    started = time.monotonic()
    heal()
    if ev.kind == "kill-agent":
        killed.discard(ev.targets[0])
    took = _converge(lab, bound)
    row["reconverged_s"] = None if took is None else round(time.monotonic() - started, 1)
    if took is None:
        bad.append({"invariant": "reconverged", "detail": f"checks still fail after {bound:g} s"})
    bad += _alive(lab, killed, "after the heal")
    rss = _rss(lab)
    row["rss_kb"] = rss
    for node, kb in rss.items():
        rss_peak[node] = max(rss_peak.get(node, 0), kb)
        if kb > rss_limit_mb * 1024:
            bad.append({"invariant": "rss", "detail": f"{node}: {kb / 1024:.0f} MB > {rss_limit_mb:g} MB"})
    return row


def _converge(lab, bound: float) -> float | None:
    t = time.monotonic()
    report = wait_converged(labrun.node_views(lab), bound)
    return time.monotonic() - t if report.ok else None


# ---------------------------------------------------------------- faults


def _inject(lab, ev: Event, bad: list[dict], killed: set[str]) -> Callable[[], None]:
    """Apply the event's fault; returns its heal."""
    plan = lab.plan
    k, t = ev.kind, ev.targets
    if k == "link":
        underlay.set_link(plan, t[0], t[1], False)
        return lambda: underlay.set_link(plan, t[0], t[1], True)
    if k == "partition":
        underlay.partition(plan, *t)
        return lambda: underlay.heal(plan)
    if k == "drop-esp":
        underlay.drop_esp(plan, *t)
        return lambda: underlay.heal(plan)
    if k == "kill-agent":
        killed.add(t[0])
        labrun.stop_agents(lab, [t[0]], sig=signal.SIGKILL)
        return lambda: labrun.restart_agent(lab, t[0])
    if k in ("kill-charon", "kill-routing"):
        _kill_child(lab, t[0], "charon" if k == "kill-charon" else None, bad)
        return _nothing
    if k == "reload":
        registry = _lab_registry(lab)
        request(lab.control_socket(t[0]), {"cmd": "load", "file": "registry.json", "registry": registry},
                timeout=120)
        return _nothing
    if k == "bad-reload":
        bad += _bad_reload(lab, t[0])
        return _nothing
    if k == "impair":
        p = ev.params
        target = impair.target(plan, t[0], to=p.get("to"))
        netem = underlay.netem_available(plan) is None
        wanted = impair.Impairment(p["delay_ms"] if netem else None, None, p.get("loss", 0))
        before = impair.in_force(lab)
        if not wanted.empty:
            impair.apply(lab, target, wanted)
        return lambda: impair.restore(lab, target.segment, before)
    raise ValueError(f"unknown fault {k!r}")


def _nothing() -> None:
    pass


def _kill_child(lab, node: str, name: str | None, bad: list[dict]) -> None:
    """SIGKILL the agent's charon (name) or routing daemon (None): the agent's
    supervisor must start it again."""
    info = request(lab.control_socket(node), {"cmd": "info"}, timeout=30)["info"]
    name = name or info.get("routing") or next((c for c in info["children"] if c != "charon"), None)
    child = info.get("children", {}).get(name)
    if not child or not child.get("pid"):
        bad.append({"invariant": "alive", "detail": f"{node}: no {name} to kill"})
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(child["pid"], signal.SIGKILL)


def _lab_registry(lab) -> list:
    with open(os.path.join(lab.directory, "registry.json")) as f:
        return json.load(f)


def refused_registry(registry: list) -> list:
    """A registry the agent must refuse: the second node's network is the first's
    (two nodes would own the same prefix)."""
    doc = json.loads(json.dumps(registry))
    nodes = [n for org in doc for n in org.get("nodes", [])]
    if len(nodes) >= 2:
        nodes[1].setdefault("remarks", {})["network"] = nodes[0].get("remarks", {}).get("network")
    else:
        doc.append({"organization": "", "public_key": "", "nodes": []})
    return doc


def _bad_reload(lab, node: str) -> list[dict]:
    """A reload the agent must refuse, and that must change nothing."""
    sock = lab.control_socket(node)
    registry_file = lab.paths(node).registry
    before = (_digest(registry_file), _tunnels(lab, node))
    try:
        request(sock, {"cmd": "load", "file": "bad-registry.json",
                       "registry": refused_registry(_lab_registry(lab))}, timeout=120)
    except InputError:
        pass
    else:
        request(sock, {"cmd": "load", "file": "registry.json", "registry": _lab_registry(lab)}, timeout=120)
        return [{"invariant": "refused", "detail": f"{node} accepted a registry it must refuse"}]
    out = []
    after = (_digest(registry_file), _tunnels(lab, node))
    if after[0] != before[0]:
        out.append({"invariant": "refused", "detail": f"{node}: its registry changed"})
    if after[1] != before[1]:
        out.append({"invariant": "refused", "detail": f"{node}: its tunnels changed"})
    drift = request(sock, {"cmd": "check"}, timeout=120)
    if not drift.get("in_sync"):
        out.append({"invariant": "refused", "detail": f"{node}: not in sync after the refused reload: "
                    + "; ".join(drift.get("differences", []))[:300]})
    return out


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _tunnels(lab, node: str) -> tuple[str, ...]:
    st = request(lab.control_socket(node), {"cmd": "status"}, timeout=30)["status"]
    return tuple(sorted(t["name"] for p in st.get("peers", []) for t in p.get("tunnels", [])))


# ---------------------------------------------------------------- invariants


def _alive(lab, killed: set[str], when: str) -> list[dict]:
    pids = labrun.agent_pids(lab)
    return [{"invariant": "alive", "detail": f"{node}'s agent (pid {pid}) died unexpectedly {when}"}
            for node, pid in pids.items() if node not in killed and not labrun.alive(pid)]


def _rss(lab) -> dict[str, int]:
    out = {}
    for node, pid in labrun.agent_pids(lab).items():
        try:
            with open(f"/proc/{pid}/status") as f:
                out[node] = proc_status_kb(f.read()).get("VmRSS", 0)
        except OSError:
            continue
    return out


def _heal_all(lab) -> None:
    """Whatever the soak left in force goes: partitions and ESP drops, links down,
    impairments, killed agents."""
    plan = lab.plan
    with contextlib.suppress(AronetError):
        underlay.heal(plan)
    declared = impair.declared(plan)
    for seg in plan.segments:
        for m in seg.members:
            with contextlib.suppress(AronetError):
                underlay.set_link(plan, m, seg.name, True)
        if seg.bridge:
            with contextlib.suppress(AronetError):
                impair.restore(lab, seg.name, declared)
    for node, pid in labrun.agent_pids(lab).items():
        if not labrun.alive(pid):
            with contextlib.suppress(AronetError, OSError):
                labrun.restart_agent(lab, node)
