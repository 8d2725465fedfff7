"""The `aronet-lab` command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from aronet.errors import AronetError, InputError

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
    res = vm.run_in_vm(" ".join(inner), out, timeout=args.timeout + 600)
    sys.stdout.write(vm.command_output(res.stdout))
    if res.returncode != 0 and os.path.isdir(f"{out}/logs"):
        for log in sorted(os.listdir(f"{out}/logs")):
            print(f"--- {log} (last lines)")
            with open(f"{out}/logs/{log}") as f:
                print(vm.tail(f.read(), 30))
    return res.returncode


def cmd_status(args) -> int:
    from aronet.daemon.control import request

    lab = labrun.find_lab(args.name, args.dir)
    out = {}
    for n in lab.plan.nodes:
        try:
            out[n.name] = request(lab.control_socket(n.name), {"cmd": "status"}, timeout=20)["status"]
        except AronetError as e:
            out[n.name] = {"error": str(e)}
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{'node':<8} {'peer':<20} {'tunnel':<12} {'IKE':<12} {'CHILD':<10} "
          f"{'if':<4} {'metric':>6}  routes")
    for node, st in out.items():
        if "error" in st:
            print(f"{node:<8} agent: {st['error']}")
            continue
        for p in st["peers"]:
            routes = ", ".join(r["prefix"] for r in p["routes"]) or "-"
            for t in p["tunnels"]:
                metric = t["babel_metric"] if t["babel_metric"] is not None else "-"
                print(f"{node:<8} {p['peer']:<20} {t['name']:<12} {t['ike']:<12} {t['child']:<10} "
                      f"{'up' if t['interface_up'] else 'down':<4} {metric:>6}  {routes}")
    return 0


def cmd_exec(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    n = lab.plan.node(args.node)
    ns = n.agent_ns if args.router else n.ns
    return subprocess.call(["nsenter", f"--net=/run/netns/{ns}", "--", *args.command])


def cmd_logs(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    with open(lab.log(args.node)) as f:
        sys.stdout.write(f.read())
    return 0


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

    lg = sub.add_parser("logs", help="a node's agent log")
    lab_args(lg)
    lg.add_argument("node")
    lg.set_defaults(func=cmd_logs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "command", None) == "exec" and args.command and args.command[0] == "--":
        args.command = args.command[1:]
    try:
        return args.func(args)
    except InputError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        print(f"{len(e.problems)} problem(s) found; nothing was changed", file=sys.stderr)
        return 2
    except AronetError as e:
        print(f"aronet-lab: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
