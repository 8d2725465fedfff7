"""Running a lab: files, underlay and one real agent per node; checks; teardown.

A lab lives in a directory (default /run/aronet-lab/<lab>): the generated keys,
configs and registry, each node's agent log, runtime and state directories, and
lab.json, which records the topology file and the agents' pids so that later
commands (check, down) find the lab. Agents carry ARONET_LAB=<lab> in their
environment: `down` finds a crashed run's agents by that tag, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from pyroute2 import netns as pr_netns

from aronet import keys
from aronet.adapters.netlink import Netlink, xfrm_policies, xfrm_states
from aronet.adapters.nft import Nft
from aronet.adapters.proc import tagged_processes
from aronet.client import Paths, request
from aronet.core.names import netns_path
from aronet.core.status import Status
from aronet.errors import AronetError

from . import signing, underlay
from .checks import NodeView, Report, aronet_command, node_view, run_checks, wait_converged
from .topology import LabPlan, Topology, lab_configs, load_topology, plan_lab, write_lab_files

DEFAULT_ROOT = "/run/aronet-lab"
AGENT_STOP_TIMEOUT = 90.0  # a clean stop takes 5-10 s; far longer on a loaded TCG guest


@dataclass
class Lab:
    plan: LabPlan
    directory: str
    topology_file: str
    topology: Topology
    mode: str | None = None  # every node's mode, overriding the topology

    @property
    def state_file(self) -> str:
        return os.path.join(self.directory, "lab.json")

    def node_dir(self, node: str) -> str:
        return os.path.join(self.directory, node)

    def paths(self, node: str) -> Paths:
        """The node's agent's runtime layout, inside the lab's directory."""
        return Paths(os.path.join(self.node_dir(node), "run"), os.path.join(self.node_dir(node), "state"))

    def runtime_dir(self, node: str) -> str:
        return self.paths(node).runtime_dir

    def control_socket(self, node: str) -> str:
        return self.paths(node).control_socket

    def config_file(self, node: str) -> str:
        return os.path.join(self.node_dir(node), "config.json")

    def log(self, node: str) -> str:
        return os.path.join(self.node_dir(node), "agent.log")

    @property
    def tag(self) -> str:
        return f"ARONET_LAB={self.plan.lab}"


def open_lab(topology: str, *, name: str | None = None, directory: str | None = None,
             mode: str | None = None) -> Lab:
    topo = load_topology(topology, name=name, mode=mode)
    plan = plan_lab(topo)
    return Lab(plan, directory or os.path.join(DEFAULT_ROOT, plan.lab), os.path.abspath(topology),
               topo, mode)


def find_lab(name: str | None = None, directory: str | None = None) -> Lab:
    """The lab a later command means: by directory, by name, or the only one running."""
    if directory is None:
        if name is None:
            running = sorted(os.listdir(DEFAULT_ROOT)) if os.path.isdir(DEFAULT_ROOT) else []
            if len(running) != 1:
                raise AronetError("name the lab (--name): " + (
                    f"{len(running)} are running: {', '.join(running)}" if running else "none is running"))
            name = running[0]
        directory = os.path.join(DEFAULT_ROOT, name)
    try:
        with open(os.path.join(directory, "lab.json")) as f:
            state = json.load(f)
    except OSError:
        raise AronetError(f"no lab in {directory}") from None
    return open_lab(state["topology"], name=state["lab"], directory=directory, mode=state.get("mode"))


def _save(lab: Lab, pids: dict[str, int]) -> None:
    with open(lab.state_file, "w") as f:
        json.dump({"lab": lab.plan.lab, "topology": lab.topology_file, "mode": lab.mode, "pids": pids},
                  f, indent=2)


def agent_pids(lab: Lab) -> dict[str, int]:
    """The pid of each node's agent, as the lab started it."""
    try:
        with open(lab.state_file) as f:
            return json.load(f).get("pids", {})
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------ agents


def start_agent(lab: Lab, node: str) -> int:
    n = lab.plan.node(node)
    os.makedirs(lab.node_dir(node), exist_ok=True)
    paths = lab.paths(node)
    argv = ["nsenter", f"--net={netns_path(n.ns)}", "--", *aronet_command(), "daemon", "run",
            "-c", lab.config_file(node), "-r", os.path.join(lab.directory, "registry.json"),
            "--runtime-dir", paths.runtime_dir, "--state-dir", paths.state_dir]
    env = {**os.environ, "ARONET_LAB": lab.plan.lab}
    with open(lab.log(node), "ab") as log:
        # nsenter --net only: the agent keeps this mount namespace, so the router
        # namespace it creates under /run/netns is visible to the lab and to others
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    return proc.pid


def restart_agent(lab: Lab, node: str) -> int:
    """Start a node's agent again (after `kill`), and record its pid."""
    pids = agent_pids(lab)
    pids[node] = start_agent(lab, node)
    _save(lab, pids)
    return pids[node]


def alive(pid: int) -> bool:
    """The process is there and no zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def _lab_processes(lab: Lab) -> list[int]:
    return tagged_processes(lab.tag)


def stop_agents(lab: Lab, nodes: list[str] | None = None, timeout: float = AGENT_STOP_TIMEOUT,
                sig: signal.Signals = signal.SIGTERM) -> None:
    """SIGTERM (the agent's clean stop), then SIGKILL for what is still alive."""
    pids = agent_pids(lab)
    targets = {pids[n] for n in (nodes or pids) if n in pids}
    if nodes is None:
        targets |= set(_lab_processes(lab))
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in targets) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in targets:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    for pid in targets:  # reap the ones this process started
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


# ------------------------------------------------------------------ views for checks


def node_views(lab: Lab) -> list[NodeView]:
    ident = {n.name: f"{n.organization}/{n.name}" for n in lab.plan.nodes}
    blocked: dict[str, set[str]] = {}
    for a, b in lab.topology.blocked:
        if a in ident and b in ident:
            blocked.setdefault(a, set()).add(ident[b])
            blocked.setdefault(b, set()).add(ident[a])
    registry_path = os.path.join(lab.directory, "registry.json")
    return [node_view(n, lab.config_file(n.name), registry_path, ns=n.ns, router_ns=n.agent_ns,
                      control_socket=lab.control_socket(n.name), blocked=frozenset(blocked.get(n.name, ())),
                      runtime_dir=lab.runtime_dir(n.name))
            for n in lab.plan.nodes]


def statuses(lab: Lab) -> dict[str, Status]:
    """Every agent's status, by node identity (org/cn); one that does not answer is
    marked, not fatal."""
    out = {}
    for n in lab.plan.nodes:
        key = f"{n.organization}/{n.name}"
        try:
            out[key] = Status.from_json(request(lab.control_socket(n.name), {"cmd": "status"},
                                                timeout=30)["status"])
        except AronetError as e:
            out[key] = Status.unanswered(key, str(e))
    return out


# ------------------------------------------------------------------ commands


def up(lab: Lab, timeout: float, say=print, signed: bool = False) -> Report:
    """signed: the registry is signed and every node requires it (lab/signing.py)."""
    leftover = underlay.leftovers(lab.plan)
    if leftover or _lab_processes(lab):
        say(f"cleaning up an earlier run of lab {lab.plan.lab}: {', '.join(leftover) or 'agents'}")
        down(lab, say=lambda *_: None, strict=False)
    if os.path.isdir(lab.directory):
        shutil.rmtree(lab.directory)
    os.makedirs(lab.directory, mode=0o700)
    t0 = time.monotonic()
    say(f"lab {lab.plan.lab}: {len(lab.plan.nodes)} nodes, {len(lab.plan.routers)} NAT routers, "
        f"{len(lab.plan.segments)} LANs/links; files in {lab.directory}")
    files = write_lab_files(lab.plan, lab.directory)
    if signed:
        signing.sign_lab(lab.directory, lab.plan.lab, [files.configs[n.name] for n in lab.plan.nodes])
    underlay.build(lab.plan)
    say(f"underlay built ({time.monotonic() - t0:.1f} s)")
    pids = {n.name: start_agent(lab, n.name) for n in lab.plan.nodes}
    _save(lab, pids)
    say(f"started {len(pids)} agents; waiting for the mesh (at most {timeout:.0f} s)")
    last = [None]
    passed_at: dict[str, float] = {}

    def progress(report: Report):
        for s in report.steps:
            if s.ok:
                passed_at.setdefault(s.step, round((s.at or time.monotonic()) - t0, 1))
        step = report.broken_at or "done"
        if step != last[0]:
            say(f"  {time.monotonic() - t0:6.1f} s  " + (
                "all checks pass" if report.ok else f"waiting at step {step}"))
            last[0] = step
    report = wait_converged(node_views(lab), timeout, progress=progress)
    report.seconds = time.monotonic() - t0
    report.passed_at = passed_at
    return report


def check(lab: Lab) -> Report:
    return run_checks(node_views(lab))


def down(lab: Lab, say=print, strict: bool = True) -> list[str]:
    """Stop the agents (they remove their own state), verify they left nothing in
    their namespaces, remove the underlay, and verify nothing of the lab is left.
    Returns what was left (empty when clean)."""
    stop_agents(lab)
    left = agent_leftovers(lab)
    underlay.destroy(lab.plan)
    left += underlay.leftovers(lab.plan)
    left += [f"process {p} tagged {lab.tag}" for p in _lab_processes(lab)]
    if os.path.isdir(lab.directory):
        shutil.rmtree(lab.directory, ignore_errors=True)
    for line in left:
        say(f"left behind: {line}")
    return left


def agent_leftovers(lab: Lab) -> list[str]:
    """In every node namespace: what its agent's adapters observe of aronet's objects
    (namespace or VRF, veth, tunnel interfaces, addresses, routes, the nft table), and
    XFRM states and policies, must all be gone."""
    left = []
    existing = set(pr_netns.listnetns())
    # the nodes' settings (names, mode, tables) do not depend on their keys, which a
    # crashed run's directory may no longer hold
    some_key = keys.private_pem(keys.generate())
    configs = lab_configs(lab.plan, {n.organization: some_key for n in lab.plan.nodes})
    settings = {n.name: c.settings for n, c in zip(lab.plan.nodes, configs, strict=True)}
    for n in lab.plan.nodes:
        if n.ns not in existing:
            continue
        if xfrm_states(n.ns):
            left.append(f"{n.name}: XFRM states")
        if xfrm_policies(n.ns):
            left.append(f"{n.name}: XFRM policies")
        observed = Netlink(settings[n.name], base_ns=n.ns).observe().resources
        left += [f"{n.name}: {r}" for r in sorted(observed, key=str)]
        left += [f"{n.name}: {r}" for r in Nft().observe([n.ns]).resources]
    return left
