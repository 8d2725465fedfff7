"""The `aronet-lab` command line: the parser, main(), and forwarding to the
persistent microVM. One module per group of commands:

  lifecycle  up, check, down, run
  faults     link, partition, drop-esp, heal, loss, kill, start, reload, impair
  observe    status, inspect, save, exec, graph, logs
  measure    measure, bench, chaos
  telemetry  metrics, events (a running lab's agents' metrics and event streams)
  tools      generate, doctor (no running lab needed)

A command module holds its commands (cmd_*) and add_parsers(sub); common holds what
they share. A new command goes into the module of its group, or a new one listed here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from aronet.errors import AronetError, report_error

from . import faults, lifecycle, measure, observe, telemetry, tools
from .common import OUT_ENV, out_dir
from .common import topology as _topology  # lab.multihost's name for it, from before the split

# a command that writes files goes to the persistent VM with OUT_ENV set; the host
# moves what it wrote from there to the directory the user asked for
_WRITES = {observe.cmd_save: "directory", measure.cmd_chaos: "out"}
# run --vm and bench boot their own VMs; doctor describes this machine; generate
# writes a file here and needs no lab
_HERE = {lifecycle.cmd_run, measure.cmd_bench, tools.cmd_doctor, tools.cmd_generate}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aronet-lab", description="aronet meshes in network namespaces")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (lifecycle, observe, faults, measure, telemetry, tools):
        module.add_parsers(sub)
    return p


def _through_vm(args, raw: list[str]) -> int | None:
    """With a persistent VM (`up --vm`), every command runs in it, as if the lab were
    local. Returns None when the command should run here."""
    from .. import vm

    if args.func is lifecycle.cmd_up and args.vm:
        reason = vm.vm_available()
        if reason:
            raise AronetError(f"the microVM cannot start: {reason}")
        if vm.persistent_state() is None:
            print("booting the persistent microVM (stock Debian kernel under QEMU TCG); "
                  "`aronet-lab down` powers it off", flush=True)
            vm.start_persistent()
        return vm.forward(vm.PERSISTENT_DIR, [a for a in raw if a != "--vm"])
    if args.func in _HERE or vm.persistent_state() is None:
        return None
    if args.func in _WRITES:
        return _forward_writing(vm, raw, getattr(args, _WRITES[args.func]))
    code = vm.forward(vm.PERSISTENT_DIR, raw)
    if args.func is lifecycle.cmd_down and code == 0 and not args.keep_vm:
        print(f"microVM: {vm.stop_persistent()}")
    return code


def _forward_writing(vm, raw: list[str], dest: str) -> int:
    """Forward a command that writes files: it writes into a directory the guest
    may write, whose entries then move to dest here (symlinks are made anew)."""
    staging = tempfile.mkdtemp(prefix="out-", dir=vm.PERSISTENT_DIR)
    try:
        code = vm.forward(vm.PERSISTENT_DIR, raw, env={OUT_ENV: staging})
        os.makedirs(dest, exist_ok=True)
        for entry in sorted(os.listdir(staging), key=lambda e: os.path.islink(os.path.join(staging, e))):
            src, dst = os.path.join(staging, entry), os.path.join(dest, entry)
            if os.path.islink(src):
                if os.path.lexists(dst):
                    os.unlink(dst)
                os.symlink(os.readlink(src), dst)
            else:
                shutil.move(src, dst)
        return code
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(raw)
    if args.func is observe.cmd_exec and args.command and args.command[0] == "--":
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


__all__ = ["_topology", "main", "out_dir", "parser"]
