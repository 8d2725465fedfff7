"""Which bench rows run where. On the host, `run` measures the planner row here and
each VM group (common.VM_GROUPS) in one microVM boot, or here with --here; in the
guest, `inside` runs one group and writes OUT/<group>.json for the host to read."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import threading
import time

from aronet.errors import AronetError
from aronet.model import Settings

from .. import vm
from .bringup import guest_bringup, routes_converged
from .common import VM_GROUPS, Say
from .planner import bench_planner
from .reload import guest_reload
from .table import save
from .triangle import guest_triangle

# the guest of a bench group: a converged 12-node mesh (36 daemons, 12 agents of
# about 50 MB) with its checks used 0.9 GB; the rest is page cache for the 9p root
VM_MEMORY = "4G"


def machine() -> dict:
    """This machine: CPU, memory, kernel and daemon versions, and a one-line summary."""
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) // 1024 // 1024

    def version(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    info = {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "kernel": platform.release(),
            "python": platform.python_version(), "hostname": socket.gethostname(),
            "bird": version(["bird", "--version"]), "babeld": version(["babeld", "-V"]),
            "charon": version(["dpkg-query", "-W", "-f", "${Version}", "strongswan-charon"])}
    info["summary"] = (f"{cpu or 'unknown CPU'}, {os.cpu_count()} cores, {mem} GiB, "
                       f"kernel {platform.release()}")
    return info


def _vm_group(cmd: list[str], out: str, timeout: float, say: Say, marker: str | None = None,
              stack: str = vm.roots.DEFAULT) -> dict:
    """Run `aronet-lab bench --inside ...` in one microVM boot; returns what the guest
    wrote, plus (with marker) the host's seconds from the VM's start until the guest
    wrote the marker file."""
    result_file = os.path.join(out, f"{cmd[0]}.json")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(result_file)
    # python -m: a stack's own root has the venv of its Python, not aronet's scripts
    inner = ["python", "-m", "lab.cli", "bench", "--inside", *cmd, "--out", out]
    t0 = time.monotonic()
    seen: dict = {}
    box: dict = {}
    cancel, done = threading.Event(), threading.Event()

    def boot():
        try:
            box["res"] = vm.run_in_vm(" ".join(inner), out, timeout=timeout, cancel=cancel,
                                      memory=VM_MEMORY, env={"PYTHONUNBUFFERED": "1"},
                                      log_path=os.path.join(out, f"{cmd[0]}-console.log"),
                                      stack=stack)
        except Exception as e:  # reported with the row
            box["error"] = str(e)
        finally:
            done.set()

    th = threading.Thread(target=boot, daemon=True)
    th.start()
    marker_path = os.path.join(out, marker) if marker else None
    if marker_path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker_path)
    try:
        while not done.wait(0.2):
            if marker_path and "at" not in seen and os.path.exists(marker_path):
                seen["at"] = time.monotonic() - t0
    except BaseException:
        # Ctrl-C: the VM runs in the thread, which must stop it. Not th.join(): a
        # join that KeyboardInterrupt broke may report the thread finished (CPython 3.11).
        cancel.set()
        done.wait(30)
        raise
    if "error" in box:
        return {"error": box["error"]}
    for line in vm.command_output(box["res"].stdout).splitlines():
        say(f"  | {line}")
    try:
        with open(result_file) as f:
            data = json.load(f)
    except (OSError, ValueError):
        res = box.get("res")
        return {"error": "the guest wrote no result: " + (vm.tail(res.stdout, 20) if res else "")}
    if "at" in seen:
        data["vm_to_converged_s"] = round(seen["at"], 1)
    return data


def run(args, say: Say = print) -> dict:
    """The rows args.rows asks for, each where it runs; the result, also in OUT/bench.json."""
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    rows = set(args.rows)
    routings = args.routing or [None]
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "rows": {},
              "stack": args.stack,
              "settings": {"runs": args.runs, "sizes": args.sizes, "planner_sizes": args.planner_sizes,
                           "reload_nodes": args.reload_nodes, "duration_s": args.duration,
                           "routing": routings, "hello": args.hello, "update": args.update,
                           "trace_nodes": args.trace_nodes}}
    common = ["--runs", str(args.runs), "--window", str(args.window), "--sample", str(args.sample)]
    for r in routings:
        if r:
            common += ["--routing", r]
    timers = [*(["--hello", str(args.hello)] if args.hello else []),
              *(["--update", str(args.update)] if args.update else [])]
    if "planner" in rows:
        result["rows"]["planner"] = bench_planner(args.planner_sizes, say)
    tri = rows & set(VM_GROUPS["triangle"])
    if tri:
        say(f"triangle: {', '.join(sorted(tri))} ({'here' if args.here else 'microVM'})")
        if args.here:
            data = guest_triangle(out, routings, args.runs, args.hello, args.update, args.window, tri, say)
        else:
            data = _vm_group(["triangle", "--rows", *sorted(tri), *common, *timers], out,
                             1800 + 120 * args.runs * len(routings), say, stack=args.stack)
        for row in tri:
            result["rows"][row] = data.get(row, {"default": {"error": data.get("error", "no result")}})
    if "reload" in rows:
        say(f"reload: one agent, {args.reload_nodes} nodes")
        result["rows"]["reload"] = (guest_reload(out, args.reload_nodes, say) if args.here else
                                    _vm_group(["reload", "--reload-nodes", str(args.reload_nodes)],
                                              out, 3600, say, stack=args.stack))
    if rows & {"bringup", "footprint"}:
        sizes = args.sizes if "bringup" in rows else [max(args.sizes)]
        result["rows"]["bringup"] = []
        # aronet's own timers unless told: at 12 nodes the lab's fast hello (150 ms; 200 ms
        # already) is more ESP than 2 emulated vCPUs carry (README, Benchmarks)
        hello, update = args.hello or Settings.babel_hello, args.update or Settings.babel_update
        mesh_args = [*common, "--hello", str(hello), "--update", str(update)]
        for n in sizes:
            with_fp = "footprint" in rows and n == max(sizes)
            say(f"bring-up: {n} nodes" + (f", then footprint for {args.duration:.0f} s" if with_fp else ""))
            extra = (["--duration", str(args.duration), "--trace-nodes", str(args.trace_nodes)]
                     if with_fp else [])
            if args.here:
                data = guest_bringup(out, n, routings[0], args.duration if with_fp else None,
                                     args.sample, say, hello, update, args.trace_nodes)
            else:
                data = _vm_group([f"bringup-{n}", *mesh_args, *extra], out,
                                 1200 + (args.duration if with_fp else 0), say,
                                 marker=f"bringup-{n}.converged", stack=args.stack)
            fp = data.pop("footprint", None)
            if fp is not None:
                result["rows"]["footprint"] = fp
            elif with_fp:
                result["rows"]["footprint"] = {"error": data.get("error", "no result")}
            result["rows"]["bringup"].append({"nodes": n, **data, **routes_converged(data)})
        if "bringup" not in rows:
            del result["rows"]["bringup"]
    save(result, out)
    return result


def inside(args, say: Say = print) -> int:
    """The guest's side of one VM group: run it and write OUT/<group>.json."""
    group, out = args.inside, os.path.abspath(args.out)
    routings = args.routing or [None]
    if group == "triangle":
        data = guest_triangle(out, routings, args.runs, args.hello, args.update, args.window,
                              set(args.rows), say)
    elif group == "reload":
        data = guest_reload(out, args.reload_nodes, say)
    elif group.startswith("bringup-"):
        n = int(group.split("-", 1)[1])
        data = guest_bringup(out, n, routings[0], args.duration, args.sample, say, args.hello, args.update,
                             args.trace_nodes)
    else:
        raise AronetError(f"unknown bench group {group!r}")
    with open(os.path.join(out, f"{group}.json"), "w") as f:
        json.dump(data, f, indent=2)
    return 0

