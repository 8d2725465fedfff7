"""The `aronet-lab` command line."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from aronet.core.names import netns_path
from aronet.core.status import LAB_COLUMNS, render
from aronet.errors import AronetError, report_error

from . import run as labrun

EXAMPLES = os.path.join(os.path.dirname(__file__), "examples")


def _topology(path: str) -> str:
    """A topology file, or the name of a bundled example ("seed")."""
    if not os.path.exists(path) and os.path.exists(os.path.join(EXAMPLES, f"{path}.yaml")):
        return os.path.join(EXAMPLES, f"{path}.yaml")
    return path


def _emit(report, as_json: bool) -> None:
    if as_json:
        json.dump(report.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.as_text())


def cmd_up(args) -> int:
    lab = labrun.open_lab(_topology(args.topology), name=args.name, directory=args.dir, mode=args.mode)
    report = labrun.up(lab, args.timeout)
    _emit(report, args.json)
    return 0 if report.ok else 1


def cmd_check(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    report = labrun.check(lab)
    _emit(report, args.json)
    return 0 if report.ok else 1


def cmd_down(args) -> int:
    try:
        lab = labrun.find_lab(args.name, args.dir)
    except AronetError:
        if not (args.force and args.topology):
            raise
        lab = labrun.open_lab(_topology(args.topology), name=args.name, directory=args.dir)
    left = labrun.down(lab)
    print(f"lab {lab.plan.lab}: " + ("removed; nothing left" if not left else f"{len(left)} things left"))
    return 0 if not left else 1


def cmd_run(args) -> int:
    """up, check, down in one go; with --vm, inside one microVM boot."""
    if args.vm:
        return _run_in_vm(args)
    lab = labrun.open_lab(_topology(args.topology), name=args.name, directory=args.dir, mode=args.mode)
    report = None
    try:
        report = labrun.up(lab, args.timeout)
        _emit(report, False)
    finally:
        if args.logs:
            _copy_logs(lab, args.logs)
        left = labrun.down(lab)
        print("down: nothing left" if not left else f"down: {len(left)} things left")
        if args.report:
            with open(args.report, "w") as f:
                json.dump({**(report.as_json() if report else {"ok": False}), "left_behind": left},
                          f, indent=2)
    return 0 if report.ok and not left else 1


def _copy_logs(lab: labrun.Lab, dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    for n in lab.plan.nodes:
        if os.path.exists(lab.log(n.name)):
            shutil.copy(lab.log(n.name), os.path.join(dest, f"{n.name}.log"))


def _run_in_vm(args) -> int:
    from . import vm

    reason = vm.vm_available()
    if reason:
        raise AronetError(f"the microVM cannot start: {reason}")
    out = os.path.abspath(args.out or os.path.join("out", f"lab-{time.strftime('%Y%m%d-%H%M%S')}"))
    os.makedirs(out, exist_ok=True)
    inner = ["aronet-lab", "run", os.path.abspath(_topology(args.topology)),
             "--timeout", str(args.timeout), "--report", f"{out}/report.json", "--logs", f"{out}/logs"]
    if args.name:
        inner += ["--name", args.name]
    if args.mode:
        inner += ["--mode", args.mode]
    print(f"booting the microVM (stock Debian kernel under QEMU TCG); results in {out}", flush=True)
    res = vm.run_in_vm(shlex.join(inner), out, timeout=args.timeout + 600)  # quoted: paths may hold spaces
    sys.stdout.write(vm.command_output(res.stdout))
    if res.returncode != 0 and os.path.isdir(f"{out}/logs"):
        for log in sorted(os.listdir(f"{out}/logs")):
            print(f"--- {log} (last lines)")
            with open(f"{out}/logs/{log}") as f:
                print(vm.tail(f.read(), 30))
    return res.returncode


def cmd_status(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    out = {key.split("/", 1)[1]: st for key, st in labrun.statuses(lab).items()}
    if args.json:
        json.dump({node: st.to_json() for node, st in out.items()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(render(out, LAB_COLUMNS))
    return 0


def cmd_exec(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    n = lab.plan.node(args.node)
    ns = n.agent_ns if args.router else n.ns
    return subprocess.call(["nsenter", f"--net={netns_path(ns)}", "--", *args.command])


def cmd_logs(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    with open(lab.log(args.node)) as f:
        sys.stdout.write(f.read())
    return 0


def cmd_fault(args) -> int:
    """link down|up A B, partition A B, heal, loss LINK PCT, drop-esp A B."""
    from . import underlay

    lab = labrun.find_lab(args.name, args.dir)
    plan = lab.plan
    if args.command == "link":
        underlay.set_link(plan, args.a, args.b, args.state == "up")
        print(f"link {args.a} {args.b} {args.state}")
    elif args.command == "partition":
        underlay.partition(plan, args.a, args.b)
        print(f"partitioned {args.a} from {args.b} (undo: aronet-lab heal)")
    elif args.command == "drop-esp":
        underlay.drop_esp(plan, args.a, args.b)
        print(f"dropping ESP-in-UDP between {args.a} and {args.b}; IKE still passes (undo: heal)")
    elif args.command == "heal":
        underlay.heal(plan)
        print("healed: every partition and ESP drop removed")
    elif args.command == "loss":
        underlay.set_loss(plan, args.link, args.pct)
        print(f"loss {args.pct}% on {args.link}")
    return 0


def cmd_kill(args) -> int:
    """Kill a node's agent (SIGKILL: its children die with it), as a crash would."""
    import signal

    lab = labrun.find_lab(args.name, args.dir)
    lab.plan.node(args.node)
    labrun.stop_agents(lab, [args.node], sig=signal.SIGKILL)
    print(f"killed {args.node}'s agent (undo: aronet-lab start {args.node})")
    return 0


def cmd_start(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    lab.plan.node(args.node)
    pid = labrun.restart_agent(lab, args.node)
    print(f"started {args.node}'s agent, pid {pid}")
    return 0


def cmd_reload(args) -> int:
    """Give one node's running agent a registry (validated first; refused ones change
    nothing)."""
    from aronet.client import request
    from aronet.load import build_registry, read_json

    lab = labrun.find_lab(args.name, args.dir)
    lab.plan.node(args.node)
    data = read_json(args.registry)
    build_registry(data, args.registry)
    reply = request(lab.control_socket(args.node),
                    {"cmd": "load", "file": args.registry, "registry": data}, timeout=120)
    print(f"{args.node}: loaded {args.registry} ({reply['nodes']} nodes, "
          f"{len(reply['changes'])} changes)")
    return 0


def cmd_graph(args) -> int:
    """The topology with live tunnel and route state (or, given a topology file and no
    running lab, the planned tunnels), as DOT, SVG or PNG."""
    from . import graph

    if args.topology:
        lab, statuses = labrun.open_lab(_topology(args.topology), name=args.name, directory=args.dir), None
    else:
        lab = labrun.find_lab(args.name, args.dir)
        statuses = labrun.statuses(lab)
    dot = graph.to_dot(lab.plan, statuses, via_routes=not args.no_via)
    if args.output:
        print(f"wrote {graph.render(dot, args.output)}")
    else:
        sys.stdout.write(dot)
    return 0


def cmd_measure(args) -> int:
    """measure failover A B: ping every 10 ms from A's prefix to B's, apply the fault,
    report the outage, the path during the fault and the return to the direct path."""
    from .measure import as_table, failover

    lab = labrun.find_lab(args.name, args.dir)
    result = failover(lab, args.a, args.b, fault=args.fault, runs=args.runs, timeout=args.timeout,
                      say=None if args.json else print)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(as_table(result))
    return 0


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive numbers: {text!r}")
    return values


def cmd_bench(args) -> int:
    """The benchmarks (lab/bench/): a table on stdout, everything in OUT/bench.json."""
    from . import bench

    if args.inside:
        return bench.inside(args)
    args.duration = bench.DEFAULTS["duration"] if args.duration is None else args.duration
    result = bench.run(args, say=(lambda _line: None) if args.json else
                       (lambda line: print(line, flush=True)))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n" + bench.as_table(result))
        print(f"\nall figures: {os.path.join(os.path.abspath(args.out), 'bench.json')}")
    return 0


def cmd_doctor(args) -> int:
    from . import doctor

    features = doctor.probe()
    if args.json:
        json.dump(doctor.report_json(features), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(doctor.report(features))
    return 0 if doctor.can_run_here(features) else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aronet-lab", description="aronet meshes in network namespaces")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def lab_args(sp, topology: bool = False):
        if topology:
            sp.add_argument("topology", help="topology file, or a bundled example: seed, dualstack, ring")
        sp.add_argument("--name", help="lab name (default: the topology's)")
        sp.add_argument("--dir", help=f"lab directory (default {labrun.DEFAULT_ROOT}/NAME)")

    up = sub.add_parser("up", help="build the underlay, start one agent per node, wait for the mesh")
    lab_args(up, True)
    up.add_argument("--timeout", type=float, default=180.0)
    up.add_argument("--mode", choices=("vrf", "netns"), help="run every node in this mode")
    up.add_argument("--vm", action="store_true",
                    help="in a microVM that keeps running: later commands go to it, down stops it")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=cmd_up)

    ck = sub.add_parser("check", help="the ordered checks: IKE .. CHILD .. interface .. babel .. "
                        "routes .. ping .. SRv6")
    lab_args(ck)
    ck.add_argument("--json", action="store_true")
    ck.set_defaults(func=cmd_check)

    dn = sub.add_parser("down", help="stop the agents, remove everything, verify nothing is left")
    lab_args(dn)
    dn.add_argument("--force", action="store_true", help="clean a crashed run (give the topology)")
    dn.add_argument("topology", nargs="?")
    dn.add_argument("--keep-vm", action="store_true", help="leave the persistent microVM running")
    dn.set_defaults(func=cmd_down)

    rn = sub.add_parser("run", help="up, check and down in one go")
    lab_args(rn, True)
    rn.add_argument("--vm", action="store_true", help="inside one microVM boot (stock Debian kernel)")
    rn.add_argument("--timeout", type=float, default=180.0)
    rn.add_argument("--mode", choices=("vrf", "netns"), help="run every node in this mode")
    rn.add_argument("--report", help="write the check report (JSON) here")
    rn.add_argument("--logs", help="copy the agents' logs here")
    rn.add_argument("--out", help="with --vm: where the report and logs come back")
    rn.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="every node's tunnels, neighbours and routes")
    lab_args(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    ex = sub.add_parser("exec", help="run a command in a node's namespace")
    lab_args(ex)
    ex.add_argument("--router", action="store_true", help="in the agent's router namespace")
    ex.add_argument("node")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)

    ln = sub.add_parser("link", help="take the underlay link between A and B down or up")
    lab_args(ln)
    ln.add_argument("state", choices=("down", "up"))
    ln.add_argument("a")
    ln.add_argument("b", help="a node or NAT router, or a LAN or link A is on")
    ln.set_defaults(func=cmd_fault)
    pt = sub.add_parser("partition", help="drop all underlay traffic between A and B")
    lab_args(pt)
    pt.add_argument("a")
    pt.add_argument("b")
    pt.set_defaults(func=cmd_fault)
    de = sub.add_parser("drop-esp", help="drop only ESP-in-UDP between A and B (IKE passes)")
    lab_args(de)
    de.add_argument("a")
    de.add_argument("b")
    de.set_defaults(func=cmd_fault)
    hl = sub.add_parser("heal", help="undo every partition and ESP drop")
    lab_args(hl)
    hl.set_defaults(func=cmd_fault)
    ls = sub.add_parser("loss", help="drop PCT %% of the frames on a LAN or link (0 removes it)")
    lab_args(ls)
    ls.add_argument("link")
    ls.add_argument("pct", type=int, choices=range(101), metavar="PCT")
    ls.set_defaults(func=cmd_fault)
    kl = sub.add_parser("kill", help="kill a node's agent, as a crash would")
    lab_args(kl)
    kl.add_argument("node")
    kl.set_defaults(func=cmd_kill)
    sa = sub.add_parser("start", help="start a killed node's agent again")
    lab_args(sa)
    sa.add_argument("node")
    sa.set_defaults(func=cmd_start)
    rl = sub.add_parser("reload", help="give a node's agent a new registry")
    lab_args(rl)
    rl.add_argument("node")
    rl.add_argument("registry")
    rl.set_defaults(func=cmd_reload)

    gr = sub.add_parser("graph", help="the lab with live tunnel and route state (DOT, SVG, PNG)")
    lab_args(gr)
    gr.add_argument("topology", nargs="?", help="draw a lab that is not running (planned tunnels)")
    gr.add_argument("-o", "--output", help="FILE.svg, FILE.png or FILE.dot (default: DOT on stdout)")
    gr.add_argument("--no-via", action="store_true", help="do not mark routes through third nodes")
    gr.set_defaults(func=cmd_graph)
    me = sub.add_parser("measure", help="measure failover A B: outage, path, return (ms)")
    lab_args(me)
    me.add_argument("what", choices=("failover",))
    me.add_argument("a")
    me.add_argument("b")
    me.add_argument("--fault", choices=("drop-esp", "partition", "link"), default="drop-esp",
                    help="link needs a point-to-point link between A and B")
    me.add_argument("--runs", type=int, default=1)
    me.add_argument("--timeout", type=float, default=60.0)
    me.add_argument("--json", action="store_true")
    me.add_argument("-o", "--output", help="also write the JSON result here")
    me.set_defaults(func=cmd_measure)
    from .bench import DEFAULTS, ROWS

    be = sub.add_parser("bench", help="the benchmarks: failover, bring-up, planner, reload, "
                        "footprint, MTU (in the microVM where the kernel needs it)")
    be.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW",
                    help=f"which rows (default all: {' '.join(ROWS)})")
    be.add_argument("--runs", type=int, default=DEFAULTS["runs"], help="failover runs per fault")
    be.add_argument("--routing", action="append", choices=("bird", "babeld"),
                    help="routing daemon for the failover/MTU/bring-up labs (repeat for both; "
                    "default: the lab's default)")
    be.add_argument("--hello", type=float, help="babel hello interval (default: the lab's for "
                    "failover, control and mtu; aronet's own for bring-up and footprint)")
    be.add_argument("--update", type=float, help="babel update interval (defaults as --hello)")
    be.add_argument("--sizes", type=_ints, default=list(DEFAULTS["sizes"]), help="bring-up mesh sizes")
    be.add_argument("--planner-sizes", type=_ints, default=list(DEFAULTS["planner_sizes"]))
    be.add_argument("--reload-nodes", type=int, default=DEFAULTS["reload_nodes"])
    be.add_argument("--duration", type=float, help="footprint: how long to watch the agents "
                    f"(default {DEFAULTS['duration']:.0f} s)")
    be.add_argument("--sample", type=float, default=DEFAULTS["sample"], help="footprint sampling period")
    be.add_argument("--trace-nodes", type=int, default=0, metavar="K",
                    help="footprint: K agents (spread over the mesh) trace their Python allocations "
                    "over the window and list where what they kept was allocated; their memory is "
                    "reported apart (default 0)")
    be.add_argument("--window", type=float, default=DEFAULTS["window"],
                    help="control traffic measurement window (s)")
    be.add_argument("--here", action="store_true", help="this kernel has ESP, XFRM interfaces "
                    "and VRF: no microVM")
    be.add_argument("--out", default=os.path.join("out", f"bench-{time.strftime('%Y%m%d-%H%M%S')}"))
    be.add_argument("--json", action="store_true")
    be.add_argument("--inside", help=argparse.SUPPRESS)  # the guest's side of one VM group
    be.set_defaults(func=cmd_bench)

    dr = sub.add_parser("doctor", help="which kernel features are here, and what they allow")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=cmd_doctor)

    lg = sub.add_parser("logs", help="a node's agent log")
    lab_args(lg)
    lg.add_argument("node")
    lg.set_defaults(func=cmd_logs)
    return p


def _through_vm(args, raw: list[str]) -> int | None:
    """With a persistent VM (`up --vm`), every command runs in it, as if the lab were
    local. Returns None when the command should run here."""
    from . import vm

    if args.func is cmd_up and args.vm:
        reason = vm.vm_available()
        if reason:
            raise AronetError(f"the microVM cannot start: {reason}")
        if vm.persistent_state() is None:
            print("booting the persistent microVM (stock Debian kernel under QEMU TCG); "
                  "`aronet-lab down` powers it off", flush=True)
            vm.start_persistent()
        return vm.forward(vm.PERSISTENT_DIR, [a for a in raw if a != "--vm"])
    if args.func in (cmd_run, cmd_doctor, cmd_bench) or vm.persistent_state() is None:
        return None  # run --vm and bench boot their own VMs; doctor describes this machine
    code = vm.forward(vm.PERSISTENT_DIR, raw)
    if args.func is cmd_down and code == 0 and not args.keep_vm:
        print(f"microVM: {vm.stop_persistent()}")
    return code


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(raw)
    if args.func is cmd_exec and args.command and args.command[0] == "--":
        args.command = args.command[1:]
    try:
        code = _through_vm(args, raw)
        if code is not None:
            return code
        return args.func(args)
    except AronetError as e:
        return report_error(e, "aronet-lab")
    except RuntimeError as e:  # lab.vm.VMError: the microVM failed to boot or answer
        print(f"aronet-lab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
