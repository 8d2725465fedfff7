"""The lab a bench row is measured on: written from a topology document, up and
checked for the length of the row, always down after; commands in its namespaces;
and the guest's clock and memory."""

from __future__ import annotations

import contextlib
import os
import subprocess

import yaml

from aronet.adapters.proc import proc_status_kb
from aronet.errors import AronetError

from .. import run as labrun
from ..checks import run_in_ns
from .common import Say

NS_TIMEOUT = 30  # seconds for one command in a lab namespace


def _lab(topology: dict, directory: str):
    path = os.path.join(directory, f"{topology['name']}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(topology, f, sort_keys=False)
    return labrun.open_lab(path)


@contextlib.contextmanager
def running(topology: dict, directory: str, say: Say, timeout: float = 600, require_ok: bool = True):
    """A lab up and passing its checks for the duration of the block (require_ok False:
    up, whatever its last check said); always down."""
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


def views(lab) -> dict:
    """node's short name (without its organization) -> its lab.checks.NodeView."""
    return {v.name.split("/", 1)[1]: v for v in labrun.node_views(lab)}


def ns_run(ns: str, argv: list[str]) -> subprocess.CompletedProcess:
    return run_in_ns(ns, argv, timeout=NS_TIMEOUT)


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def guest_memory_mb() -> dict[str, float]:
    """The guest's MemTotal and MemAvailable: a mesh must fit the VM's memory."""
    with open("/proc/meminfo") as f:
        kb = proc_status_kb(f.read(), ("MemTotal", "MemAvailable"))
    return {k: round(v / 1024) for k, v in kb.items()}
