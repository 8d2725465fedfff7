"""The lab's ordered checks along the chain, node by node:

  1. IKE SA  2. CHILD_SA  3. XFRM interface up  4. babel neighbour
  5. routes match what the planner predicts  6. ping matrix (IPv6 and IPv4)
  7. SRv6 SID counters moved  8. in sync (`aronet check` on every node: nothing differs
     between the machine and the desired state)

Each check returns None when the state is right, or what still differs; the report
names the first step where the chain breaks. The agent's own `status` (the typed
document of aronet.core.status) is the source for steps 1 to 5, so the lab checks what
a user sees; step 8 runs the user's drift check.

The checks reach the nodes through a Transport: LocalTransport for the lab on this
kernel (the control socket, nsenter into the node's namespace), CommandTransport for
nodes behind a command prefix (`ssh HOST`, `vagrant ssh NODE -c`, `sh -c`), where
the status comes from `aronet status --json` on the node (lab/multihost.py).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from aronet.client import Paths, request
from aronet.core import nft, planner
from aronet.core.names import netns_path
from aronet.core.planner import Desired
from aronet.core.state import Connection
from aronet.core.status import Status
from aronet.errors import AronetError
from aronet.load import load_both

from .topology import NodePlan

STEPS = ("ike", "child", "interface", "babel", "routes", "ping", "srv6", "sync")
TITLES = {
    "ike": "IKE SA established",
    "child": "CHILD_SA installed",
    "interface": "XFRM interface up",
    "babel": "babel neighbour",
    "routes": "routes as planned",
    "ping": "ping matrix",
    "srv6": "SRv6 SID counters",
    "sync": "in sync",
}


@dataclass(frozen=True)
class NodeView:
    """What the checks need to know about one node of a running lab."""

    name: str  # org/cn
    ns: str  # the node's host namespace (where its agent runs)
    router_ns: str  # where its overlay addresses live (netns mode: the agent's netns)
    control_socket: str
    desired: Desired
    sources: dict[int, str] = field(default_factory=dict)  # family -> address to ping from
    targets: dict[int, str] = field(default_factory=dict)  # family -> address others ping
    blocked: frozenset[str] = frozenset()  # peers whose direct tunnels cannot come up


@dataclass
class StepResult:
    step: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    detail: dict = field(default_factory=dict)
    at: float | None = None  # time.monotonic() when its evidence was gathered


@dataclass
class Report:
    steps: list[StepResult]
    seconds: float = 0.0
    # while waiting for a mesh: seconds from the start until the evidence was gathered
    # in the first check round in which each step passed (steps 1-5: the agents'
    # status documents; ping and srv6: the end of the pings and of the counters)
    passed_at: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and len(self.steps) == len(STEPS)

    @property
    def broken_at(self) -> str | None:
        for s in self.steps:
            if not s.ok:
                return s.step
        return None

    def as_json(self) -> dict:
        return {"ok": self.ok, "broken_at": self.broken_at, "seconds": round(self.seconds, 2),
                "steps": [{"step": s.step, "title": TITLES[s.step], "ok": s.ok,
                           "problems": s.problems, **({"detail": s.detail} if s.detail else {})}
                          for s in self.steps],
                **({"passed_at": self.passed_at} if self.passed_at else {})}

    def as_text(self) -> str:
        lines = []
        for i, s in enumerate(self.steps, 1):
            lines.append(f"{i}. {TITLES[s.step]:<24} {'ok' if s.ok else 'FAILED'}")
            lines += [f"     {p}" for p in s.problems[:20]]
            if len(s.problems) > 20:
                lines.append(f"     ... and {len(s.problems) - 20} more")
        for step in STEPS[len(self.steps):]:
            lines.append(f"{STEPS.index(step) + 1}. {TITLES[step]:<24} not reached")
        verdict = "PASS" if self.ok else f"FAIL at step {self.broken_at}: {TITLES[self.broken_at]}"
        return "\n".join(lines) + f"\n{verdict} ({self.seconds:.1f} s)\n"


def aronet_command() -> list[str]:
    """The aronet command line of this installation (the venv's, when run from one)."""
    exe = shutil.which("aronet", path=os.path.dirname(sys.executable)) or shutil.which("aronet")
    return [exe] if exe else [sys.executable, "-m", "aronet"]


def run_in_ns(ns: str, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    if ns:
        argv = ["nsenter", f"--net={netns_path(ns)}", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


class Transport(Protocol):
    """How the checks reach a node: its agent's status, and a command run where its
    overlay addresses live (the router namespace)."""

    def status(self, node: NodeView) -> Status:
        """The agent's status document; AronetError when it does not answer."""

    def run(self, node: NodeView, argv: list[str]) -> subprocess.CompletedProcess: ...

    def check(self, node: NodeView) -> dict:
        """The agent's drift check ({"in_sync", "differences"}, as `aronet check
        --json` prints it); AronetError when it does not answer."""


class LocalTransport:
    """Nodes on this kernel: the control socket, and nsenter into router_ns."""

    def status(self, node: NodeView) -> Status:
        return Status.from_json(request(node.control_socket, {"cmd": "status"}, timeout=20)["status"])

    def run(self, node: NodeView, argv: list[str]) -> subprocess.CompletedProcess:
        return run_in_ns(node.router_ns, argv)

    def check(self, node: NodeView) -> dict:
        return request(node.control_socket, {"cmd": "check"}, timeout=60)


LOCAL = LocalTransport()


@dataclass(frozen=True)
class CommandTransport:
    """Nodes behind a command prefix that takes one shell command line, as ssh does:
    prefix(node) is e.g. ["ssh", "-F", cfg, "moon"], ["vagrant", "ssh", "moon", "-c"]
    or ["nsenter", f"--net={netns_path(NS)}", "--", "sh", "-c"]. The prefix lands in the
    node's own namespace (NodeView.ns); a router namespace other than that is entered
    with nsenter. sudo: run the command line with sudo (an unprivileged ssh user)."""

    prefix: Callable[[NodeView], Sequence[str]]
    aronet: tuple[str, ...] = ("aronet",)  # the aronet command on the nodes
    sudo: bool = False
    timeout: float = 60

    def command(self, node: NodeView, argv: list[str], *, in_router: bool = True) -> list[str]:
        if in_router and node.router_ns and node.router_ns != node.ns:
            argv = ["nsenter", f"--net={netns_path(node.router_ns)}", "--", *argv]
        if self.sudo:
            argv = ["sudo", *argv]
        return [*self.prefix(node), shlex.join(argv)]

    def _call(self, cmd: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", f"no answer in {self.timeout:.0f} s")
        except OSError as e:
            raise AronetError(f"cannot run {cmd[0]}: {e}") from None

    def status(self, node: NodeView) -> Status:
        argv = [*self.aronet, "status", "--json", "-s", node.control_socket]
        r = self._call(self.command(node, argv, in_router=False))
        if r.returncode != 0:
            why = r.stderr.strip().splitlines()[-1:] or [f"exit status {r.returncode}"]
            raise AronetError(f"`aronet status` failed: {why[0]}")
        try:
            return Status.from_json(json.loads(r.stdout))
        except json.JSONDecodeError as e:
            raise AronetError(f"`aronet status --json` printed no JSON: {e}") from None

    def run(self, node: NodeView, argv: list[str]) -> subprocess.CompletedProcess:
        return self._call(self.command(node, argv))

    def check(self, node: NodeView) -> dict:
        argv = [*self.aronet, "check", "--json", "-s", node.control_socket]
        r = self._call(self.command(node, argv, in_router=False))
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError:
            why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
            raise AronetError(f"`aronet check` failed: {why}") from None


def node_view(n: NodePlan, config_file: str, registry_file: str, *, ns: str, router_ns: str,
              control_socket: str | None = None, blocked: frozenset[str] = frozenset(),
              runtime_dir: str | None = None) -> NodeView:
    """A lab node's view for the checks, from its config and the registry as its agent
    reads them. control_socket, runtime_dir None: the agent's defaults
    (/run/aronet/IFNAME/...)."""
    config, registry = load_both(config_file, registry_file)
    v4 = [a for a in n.extra_ip if ":" not in a]
    targets = {6: n.overlay_address, **({4: v4[0]} if v4 else {})}
    if n.mode == "vrf":
        # a socket bound to the VRF device routes in the VRF and takes its source
        # from the addresses there
        sources = {6: config.settings.ifname, **({4: config.settings.ifname} if v4 else {})}
    else:
        sources = dict(targets)
    socket = control_socket or Paths.for_instance(config.settings.ifname, runtime_dir).control_socket
    return NodeView(name=config.node.name, ns=ns, router_ns=router_ns, control_socket=socket,
                    desired=planner.desired(config, registry), sources=sources, targets=targets,
                    blocked=blocked)


# nodes asked at once: each answer waits on its own agent (status, nft), so a
# 12-node lab's round is not the sum of 12 slow answers on a loaded machine
PARALLEL = 8


def _each(items: Sequence[Any], fn: Callable[[Any], Any]) -> list[Any]:
    """fn over items, PARALLEL at a time; the results in the items' order."""
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return list(pool.map(fn, items))


def statuses(nodes: list[NodeView], transport: Transport) -> dict[str, Status]:
    """Every node's status, asked in parallel; one that does not answer is marked."""
    def one(n: NodeView) -> Status:
        try:
            return transport.status(n)
        except AronetError as e:
            return Status.unanswered(n.name, str(e))
    return {n.name: st for n, st in zip(nodes, _each(nodes, one), strict=True)}


def _expected(n: NodeView) -> list[Connection]:
    return n.desired.state.of(Connection)


def check_tunnels(nodes, statuses: dict[str, Status], field_name: str, want) -> list[str]:
    problems = []
    for n in nodes:
        st = statuses[n.name]
        if st.error is not None:
            problems.append(f"{n.name}: agent does not answer: {st.error}")
            continue
        tunnels = st.tunnels()
        for c in _expected(n):
            if c.peer in n.blocked:
                continue
            _, t = tunnels.get(c.name, (None, None))
            value = getattr(t, field_name) if t else None
            if not want(value):
                problems.append(f"{n.name} -> {c.peer} ({c.name}, {c.family}): {field_name} is {value}")
    return problems


def check_routes(nodes, statuses) -> list[str]:
    """Babel must have selected a route for exactly the prefixes the planner predicts
    this node learns (every other node's network and IPv6 prefixes)."""
    problems = []
    for n in nodes:
        have = {r.prefix for r in statuses[n.name].routes()}
        want = {prefix for prefix, _ in n.desired.babel_routes}
        if have != want:
            missing, extra = sorted(want - have), sorted(have - want)
            problems.append(f"{n.name}: missing {missing or '-'}, unexpected {extra or '-'}")
    return problems


def ping_argv(a: NodeView, b: NodeView, fam: int, count: int = 1) -> list[str]:
    """An echo from a's source to b's target address of that family (2 s per reply)."""
    return ["ping", f"-{fam}", "-c", str(count), "-W", "2", "-I", a.sources[fam], b.targets[fam]]


def ping_matrix(nodes: list[NodeView], transport: Transport = LOCAL) -> tuple[list[str], dict]:
    jobs = []
    for a in nodes:
        for b in nodes:
            if a is b:
                continue
            for fam in (6, 4):
                if fam in a.sources and fam in b.targets:
                    jobs.append((a, b, fam))

    def one(job):
        a, b, fam = job
        argv = ping_argv(a, b, fam)
        for _ in range(3):  # a lost first packet (neighbour resolution) is not a failure
            r = transport.run(a, argv)
            if r.returncode == 0:
                return None
        return f"{a.name} -> {b.name} IPv{fam} {a.sources[fam]} -> {b.targets[fam]}: no reply"

    results = _each(jobs, one)
    problems = [r for r in results if r]
    failed = [[a.name, b.name, fam] for (a, b, fam), r in zip(jobs, results, strict=True) if r]
    return problems, {"pairs": len(jobs), "failed": len(problems), "failed_pairs": failed}


def srv6_counters(nodes: list[NodeView], transport: Transport = LOCAL) -> dict[str, int]:
    """Packets that arrived for each node's End.DX4 SID, from the counter rule the
    agent keeps in its nft table (pyroute2 cannot turn on seg6local's own counters)."""
    def one(n: NodeView) -> int:
        r = transport.run(n, ["nft", "-j", "list", "table", nft.FAMILY, nft.TABLE])
        try:
            counts = nft.sid_counters(json.loads(r.stdout).get("nftables", [])) if r.returncode == 0 else {}
        except json.JSONDecodeError:  # a remote shell's noise instead of nft's answer
            counts = {}
        return counts.get(n.desired.sids["End.DX4"], 0)
    return {n.name: count for n, count in zip(nodes, _each(nodes, one), strict=True)}


def in_sync(nodes: list[NodeView], transport: Transport = LOCAL) -> list[str]:
    """`aronet check` on every node: each difference between its machine and its
    desired state, or why the check could not run."""
    def one(n: NodeView) -> list[str]:
        try:
            doc = transport.check(n)
        except AronetError as e:
            return [f"{n.name}: no drift check: {e}"]
        return [f"{n.name}: {line}" for line in doc.get("differences", [])] or (
            [] if doc.get("in_sync") else [f"{n.name}: not in sync"])
    return [p for problems in _each(nodes, one) for p in problems]


def run_checks(nodes: list[NodeView], transport: Transport = LOCAL, *,
               stop_early: bool = True) -> Report:
    t0 = time.monotonic()
    report = Report([])
    found = statuses(nodes, transport)
    seen = time.monotonic()

    def add(step, problems, detail=None):
        report.steps.append(StepResult(step, not problems, problems, detail or {}, seen))
        return not problems or not stop_early

    ok = (add("ike", check_tunnels(nodes, found, "ike", lambda v: v == "ESTABLISHED"))
          and add("child", check_tunnels(nodes, found, "child", lambda v: v == "INSTALLED"))
          and add("interface", check_tunnels(nodes, found, "interface_up", lambda v: v is True))
          and add("babel", check_tunnels(nodes, found, "babel_neighbor", lambda v: bool(v)))
          and add("routes", check_routes(nodes, found)))
    if ok:
        before = srv6_counters(nodes, transport)  # only now: a round that stops earlier needs none
        problems, detail = ping_matrix(nodes, transport)
        seen = time.monotonic()
        if add("ping", problems, detail):
            after = srv6_counters(nodes, transport)
            seen = time.monotonic()
            # only nodes some other node pinged over IPv4 (a lone node gets no traffic)
            v4 = [n for n in nodes if 4 in n.targets and any(4 in m.sources for m in nodes if m is not n)]
            moved = [n.name for n in v4 if after[n.name] > before[n.name]]
            problems = [f"{n.name}: End.DX4 {n.desired.sids['End.DX4']} counted no packets"
                        for n in v4 if n.name not in moved]
            if add("srv6", problems, {"before": before, "after": after}):
                problems = in_sync(nodes, transport)
                seen = time.monotonic()
                add("sync", problems)
    report.seconds = time.monotonic() - t0
    return report


def wait_converged(nodes: list[NodeView], timeout: float, transport: Transport = LOCAL,
                   progress: Callable[[Report], None] | None = None) -> Report:
    """Poll the checks until they pass or the time is up; the last report says where
    the chain still breaks."""
    deadline = time.monotonic() + timeout
    while True:
        report = run_checks(nodes, transport)
        if progress:
            progress(report)
        if report.ok or time.monotonic() > deadline:
            return report
        time.sleep(1.0)
