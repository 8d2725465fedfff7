"""The lab's life: up, check, down, and run (all three in one go; on failure the
lab's state is saved first, as `save` does)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time

from aronet.errors import AronetError

from .. import run as labrun
from .common import emit, lab_args, topology


def cmd_up(args) -> int:
    lab = labrun.open_lab(topology(args.topology), name=args.name, directory=args.dir, mode=args.mode)
    report = labrun.up(lab, args.timeout, signed=args.signed)
    emit(report, args.json)
    return 0 if report.ok else 1


def cmd_check(args) -> int:
    lab = labrun.find_lab(args.name, args.dir)
    report = labrun.check(lab)
    emit(report, args.json)
    return 0 if report.ok else 1


def cmd_down(args) -> int:
    try:
        lab = labrun.find_lab(args.name, args.dir)
    except AronetError:
        if not (args.force and args.topology):
            raise
        lab = labrun.open_lab(topology(args.topology), name=args.name, directory=args.dir)
    left = labrun.down(lab)
    print(f"lab {lab.plan.lab}: " + ("removed; nothing left" if not left else f"{len(left)} things left"))
    return 0 if not left else 1


def cmd_run(args) -> int:
    """up, check, down in one go; with --vm, inside one microVM boot. When the checks
    fail, the lab's state is saved (as `save` does) before it goes down."""
    if args.vm:
        return _run_in_vm(args)
    lab = labrun.open_lab(topology(args.topology), name=args.name, directory=args.dir, mode=args.mode)
    report = None
    try:
        report = labrun.up(lab, args.timeout)
        emit(report, False)
    finally:
        if (report is None or not report.ok) and args.save:
            _save_on_failure(lab, args.save)
        if args.logs:
            _copy_logs(lab, args.logs)
        left = labrun.down(lab)
        print("down: nothing left" if not left else f"down: {len(left)} things left")
        if args.report:
            with open(args.report, "w") as f:
                json.dump({**(report.as_json() if report else {"ok": False}), "left_behind": left},
                          f, indent=2)
    return 0 if report.ok and not left else 1


def _save_on_failure(lab: labrun.Lab, base: str) -> None:
    from .. import save

    try:
        where = save.save(lab, base)
    except (AronetError, OSError) as e:  # saving must never hide the failure itself
        print(f"could not save the lab's state: {e}", file=sys.stderr)
        return
    print(f"the checks failed: the lab's state is in {where}")


def _copy_logs(lab: labrun.Lab, dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    for n in lab.plan.nodes:
        if os.path.exists(lab.log(n.name)):
            shutil.copy(lab.log(n.name), os.path.join(dest, f"{n.name}.log"))


def _run_in_vm(args) -> int:
    from .. import vm

    reason = vm.vm_available()
    if reason:
        raise AronetError(f"the microVM cannot start: {reason}")
    out = os.path.abspath(args.out or os.path.join("out", f"lab-{time.strftime('%Y%m%d-%H%M%S')}"))
    os.makedirs(out, exist_ok=True)
    inner = ["aronet-lab", "run", os.path.abspath(topology(args.topology)),
             "--timeout", str(args.timeout), "--report", f"{out}/report.json", "--logs", f"{out}/logs",
             "--save", out if args.save else ""]
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


def add_parsers(sub) -> None:
    up = sub.add_parser("up", help="build the underlay, start one agent per node, wait for the mesh")
    lab_args(up, True)
    up.add_argument("--timeout", type=float, default=180.0)
    up.add_argument("--mode", choices=("vrf", "netns"), help="run every node in this mode")
    up.add_argument("--signed", action="store_true",
                    help="sign the registry, and make every node require the signature")
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
    rn.add_argument("--save", default="out", metavar="DIR",
                    help="when the checks fail, save the lab's state into DIR/save-<time>/ first "
                    "(default out; with --vm, the --out directory; '' for no save)")
    rn.set_defaults(func=cmd_run)
