"""Multi-host runs: a lab topology across real VMs with Vagrant, checked with the lab's
own ordered checks.

One VM per node and one per NAT router, each with its own kernel and NICs; every node
runs aronet as a systemd service (ci/aronet.service). Four steps:

- render(topology, directory) writes what the top-level Vagrantfile reads. The lab's
  generator (plan_lab, write_lab_files) makes the keys, configs and registry, so the
  VMs get exactly the files `aronet-lab up` would; the rest is pure (vagrant_machines,
  underlay_script):

    machines.json                the lab, the box and the VMs: role, resources, NICs
    lab/                         write_lab_files: keys/, <node>/config.json, registry.json
    machines/<vm>/underlay.sh    what Vagrant does not set up (run at every boot)
    machines/<node>/config.json  the lab's config with private_key "key.pem", plus
                                 key.pem and registry.json: installed in /etc/aronet

- `vagrant up`; provisioning (ci/vagrant-provision) installs the packages, aronet from
  the working tree, the files above and the services.
- the checks of `aronet-lab check`, through CommandTransport over ssh with the
  configuration `vagrant ssh-config` prints (what `vagrant ssh` uses, without a Ruby
  start per command; `--ssh vagrant` uses `vagrant ssh NODE -c` itself).
- the report, in the JSON of `aronet-lab check --json`; then `vagrant destroy -f`,
  whatever happened.

The underlay: each LAN, link and NAT inside link is a Vagrant private network (a
VirtualBox internal network, a libvirt network without forwarding or DHCP) named
aronet-<lab>-<segment>. Vagrant gives each NIC its IPv4 address from the plan;
underlay.sh finds the NIC by that address and adds the IPv6 address, a node behind
NAT routes the other segments through its NAT router, and the router masquerades with
the lab's own nft ruleset. Each VM keeps Vagrant's management NIC (ssh, packages).
What the lab's switch does (blocked pairs, loss, delay, rate) has no counterpart
here: such topologies are refused.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from aronet.errors import AronetError, InputError, Problem, json_path, report_error

from .checks import CommandTransport, NodeView, Report, node_view, wait_converged
from .cli import _topology as topology_path  # a file, or a bundled example's name
from .topology import (
    LabPlan,
    NodePlan,
    Topology,
    load_topology,
    nat_batch,
    plan_lab,
    write_lab_files,
)

ROOT = Path(__file__).resolve().parent.parent  # the working tree: Vagrantfile, ci/
DEFAULT_DIR = ROOT / "out" / "multihost"  # the Vagrantfile's default, too
BOX = "debian/bookworm64"
NODE_MEMORY, ROUTER_MEMORY, CPUS = 1024, 768, 1
ARONET = ("/opt/aronet/bin/aronet",)  # where ci/vagrant-provision installs it
# Management networks of the providers' defaults: the underlay must not overlap them.
MANAGEMENT = {"VirtualBox NAT": IPv4Network("10.0.2.0/24"),
              "vagrant-libvirt management": IPv4Network("192.168.121.0/24")}
OUTSIDE_VAR = "${OUTSIDE}"  # the NAT router's outside NIC, found at boot


# ================================================================ rendering (pure)


def network_name(lab: str, segment: str) -> str:
    """The private network of a segment; NAT inside links are named "<router>:<node>"."""
    return f"aronet-{lab}-{segment.replace(':', '-')}"


def unsupported(t: Topology) -> list[Problem]:
    """What the lab's switch emulates and separate VMs cannot."""
    problems = []
    links = [s for s in t.segments if s.kind == "link"]
    for seg in t.segments:
        if not seg.switched:
            continue
        where = (["lans", seg.name] if seg.kind == "lan" else ["links", links.index(seg)])
        impaired = [k for k, v in (("loss", seg.loss), ("delay", seg.delay_ms), ("rate", seg.rate)) if v]
        if impaired:
            problems.append(Problem(t.file, json_path(where), f"{' and '.join(impaired)} need the lab's "
                                    "switch; a multi-host run has plain private networks: remove them"))
        if seg.ipv4 is None:
            problems.append(Problem(t.file, json_path(where), "a multi-host run needs IPv4 on every "
                                    "LAN and link (Vagrant configures the NICs by their IPv4 address)"))
        elif (clash := [k for k, net in MANAGEMENT.items() if net.overlaps(seg.ipv4)]):
            problems.append(Problem(t.file, json_path([*where, "ipv4"]), f"{seg.ipv4} overlaps the "
                                    f"{clash[0]} network; give the segment another ipv4"))
    if t.blocked:
        problems.append(Problem(t.file, "$.blocked", "blocked pairs need the lab's switch; a "
                                "multi-host run has plain private networks: remove them"))
    return problems


def _libvirt_host_ip(seg) -> str | None:
    """The host's address on a libvirt network: the highest free one (libvirt's default,
    the first, is member 1's address in the lab)."""
    used = {m.ipv4.ip for m in seg.members if m.ipv4}
    return next((str(a) for a in reversed(list(seg.ipv4.hosts())) if a not in used), None)


def vagrant_machines(plan: LabPlan, t: Topology) -> dict:
    """machines.json: every VM with its role and NICs; nodes first, then NAT routers."""
    segments = {s.name: s for s in t.segments}
    problems = []

    def nics(interfaces) -> list[dict]:
        out = []
        for i in interfaces:
            seg = segments[i.segment]
            host_ip = _libvirt_host_ip(seg)
            if host_ip is None:
                problems.append(Problem(t.file, "$", f"{seg.ipv4} of {i.segment!r} has no address left "
                                        "for the libvirt host; give it a larger ipv4 prefix"))
            out.append({"segment": i.segment, "network": network_name(plan.lab, i.segment),
                        "ipv4": str(i.ipv4.ip), "netmask": str(i.ipv4.netmask),
                        "ipv6": str(i.ipv6) if i.ipv6 else None, "libvirt_host_ip": host_ip})
        return out

    machines = [{"name": n.name, "role": "node", "nat": n.nat, "cpus": CPUS, "memory": NODE_MEMORY,
                 "nics": nics(n.interfaces)} for n in plan.nodes]
    machines += [{"name": r.name, "role": "nat", "nat": None, "cpus": CPUS, "memory": ROUTER_MEMORY,
                  "nics": nics((r.outside, *r.inside))} for r in plan.routers]
    if problems:
        raise InputError(sorted(set(problems)))
    return {"lab": plan.lab, "box": BOX, "machines": machines}


def underlay_script(plan: LabPlan, t: Topology, vm: str) -> str:
    """/usr/local/sbin/aronet-underlay of one VM, run at every boot before aronet:
    what Vagrant does not set up (it sets the IPv4 addresses)."""
    node = next((n for n in plan.nodes if n.name == vm), None)
    router = None if node else plan.router(vm)
    interfaces = node.interfaces if node else (router.outside, *router.inside)
    lines = [
        "#!/bin/sh",
        f"# aronet multi-host underlay of {vm} (lab {plan.lab}), rendered by lab/multihost.py",
        "set -eu",
        "nic() {  # the NIC that holds IPv4 address $1 (Vagrant configures it); waits 60 s",
        "  for _ in $(seq 60); do",
        "    dev=$(ip -o -4 addr show to \"$1/32\" | awk '{print $2; exit}')",
        "    [ -n \"$dev\" ] && { echo \"$dev\"; return 0; }",
        "    sleep 1",
        "  done",
        "  echo \"aronet-underlay: no NIC has $1\" >&2",
        "  exit 1",
        "}",
    ]
    for k, i in enumerate(interfaces, 1):
        lines.append(f"NIC{k}=$(nic {i.ipv4.ip})  # {i.segment}")
        if i.ipv6:
            lines.append(f"ip -6 addr replace {i.ipv6} dev \"$NIC{k}\" nodad")
    if node and node.nat:
        # As in the lab, the node's way out is its NAT router: here for the underlay's
        # prefixes only, so the management NIC keeps the default route.
        (leg,) = node.interfaces
        gateway = next(i for i in plan.router(node.nat).inside if i.segment == leg.segment)
        for seg in t.segments:
            if seg.name == leg.segment:
                continue
            for net, via in ((seg.ipv4, gateway.ipv4), (seg.ipv6, gateway.ipv6)):
                if net is not None and via is not None:
                    lines.append(f"ip route replace {net} via {via.ip}")
    if router:
        lines += ["sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
                  f"OUTSIDE=$NIC1  # {router.outside.segment}: the lab's NAT ruleset on it",
                  "nft -j -f - <<EOF", nat_batch(OUTSIDE_VAR), "EOF"]
    return "\n".join(lines) + "\n"


def vagrant_config(n: NodePlan) -> dict:
    """The node's config.json in the VM: the lab's, with the key next to it."""
    doc = copy.deepcopy(n.config)
    doc["private_key"] = "key.pem"
    return doc


# ================================================================ rendering (files)


@dataclass(frozen=True)
class Rendered:
    directory: Path
    plan: LabPlan
    machines: dict

    def machine_dir(self, vm: str) -> Path:
        return self.directory / "machines" / vm

    def views(self) -> list[NodeView]:
        """The checks' views: the agent's default control socket, the VM's own network
        namespace, and in netns mode the agent's router namespace."""
        return [node_view(n, str(self.machine_dir(n.name) / "config.json"),
                          str(self.machine_dir(n.name) / "registry.json"),
                          ns="", router_ns=n.agent_ns if n.mode == "netns" else "")
                for n in self.plan.nodes]


def render(t: Topology, directory: str | os.PathLike) -> Rendered:
    """Write the Vagrantfile's input for topology t into directory (replacing it)."""
    problems = unsupported(t)
    if problems:
        raise InputError(problems)
    plan = plan_lab(t)
    machines = vagrant_machines(plan, t)
    directory = Path(directory).resolve()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    files = write_lab_files(plan, directory / "lab")
    for m in machines["machines"]:
        d = directory / "machines" / m["name"]
        d.mkdir(parents=True)
        _write(d / "underlay.sh", underlay_script(plan, t, m["name"]))
        if m["role"] == "node":
            n = plan.node(m["name"])
            _write(d / "config.json", json.dumps(vagrant_config(n), indent=2) + "\n")
            shutil.copyfile(files.registry, d / "registry.json")
            shutil.copyfile(files.keys[n.organization], d / "key.pem")
            os.chmod(d / "key.pem", 0o600)
    _write(directory / "machines.json", json.dumps(machines, indent=2) + "\n")
    rendered = Rendered(directory, plan, machines)
    rendered.views()  # every VM's files load as its agent will load them
    return rendered


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


# ================================================================ running


class Vagrant:
    """The vagrant command on the working tree's Vagrantfile, reading directory."""

    def __init__(self, directory: Path, out=sys.stdout):
        self.directory, self.out = directory, out
        self.env = {**os.environ, "VAGRANT_CWD": str(ROOT), "ARONET_VAGRANT_DIR": str(directory)}

    def __call__(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(["vagrant", *args], cwd=ROOT, env=self.env, text=True,
                                  stdout=subprocess.PIPE if capture else self.out,
                                  stderr=subprocess.PIPE if capture else self.out)
        except FileNotFoundError:
            raise AronetError("vagrant is not installed (https://developer.hashicorp.com/vagrant; "
                              "on Debian: apt-get install vagrant vagrant-libvirt)") from None

    def ssh_prefix(self, vm: str) -> list[str]:
        return ["env", f"VAGRANT_CWD={ROOT}", f"ARONET_VAGRANT_DIR={self.directory}",
                "vagrant", "ssh", vm, "-c"]


def transport(vagrant: Vagrant, via: str) -> CommandTransport:
    """ssh with `vagrant ssh-config`'s configuration, or `vagrant ssh` itself."""
    if via == "vagrant":
        return CommandTransport(lambda n: vagrant.ssh_prefix(_vm(n)), aronet=ARONET, sudo=True)
    r = vagrant("ssh-config", capture=True)
    if r.returncode != 0:
        raise AronetError(f"vagrant ssh-config failed: {r.stderr.strip()}")
    config = vagrant.directory / "ssh_config"
    config.write_text(r.stdout)
    return CommandTransport(lambda n: ["ssh", "-F", str(config), "-o", "BatchMode=yes",
                                       "-o", "ConnectTimeout=10", _vm(n)], aronet=ARONET, sudo=True)


def _vm(view: NodeView) -> str:
    return view.name.split("/", 1)[1]  # org/cn; the VM is named after the node


def collect_logs(vagrant: Vagrant, vms: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for vm in vms:
        r = vagrant("ssh", vm, "-c", "sudo journalctl --no-pager -u aronet-underlay -u aronet",
                    capture=True)
        (dest / f"{vm}.log").write_text(r.stdout + r.stderr)


def run(t: Topology, directory: Path, *, provider: str | None, timeout: float, via: str,
        keep: bool, out=sys.stdout) -> tuple[Report | None, list[str]]:
    """render, vagrant up, wait for the checks, vagrant destroy -f (unless keep).
    Returns the last report (None if the VMs did not come up) and what went wrong.
    Progress and vagrant's own output go to out."""

    def say(*args) -> None:
        print(*args, file=out, flush=True)

    rendered = render(t, directory)
    vms = [m["name"] for m in rendered.machines["machines"]]
    say(f"lab {t.name}: {len(rendered.plan.nodes)} node VMs, {len(rendered.plan.routers)} NAT router "
        f"VMs; files in {rendered.directory}")
    vagrant = Vagrant(rendered.directory, out=out)
    errors: list[str] = []
    report = None
    t0 = time.monotonic()
    try:
        up = vagrant("up", *(["--provider", provider] if provider else []))
        if up.returncode != 0:
            errors.append(f"vagrant up failed (exit status {up.returncode})")
            return None, errors
        say(f"VMs up and provisioned ({time.monotonic() - t0:.0f} s); waiting for the mesh "
            f"(at most {timeout:.0f} s)")
        last = [None]

        def progress(r: Report):
            step = r.broken_at or "done"
            if step != last[0]:
                say(f"  {time.monotonic() - t0:6.1f} s  "
                    + ("all checks pass" if r.ok else f"waiting at step {step}"))
                last[0] = step

        report = wait_converged(rendered.views(), timeout, transport(vagrant, via), progress)
        if not report.ok:
            collect_logs(vagrant, vms, rendered.directory / "logs")
            say(f"agent logs (journalctl) in {rendered.directory / 'logs'}")
        return report, errors
    finally:
        if keep:
            say(f"VMs kept (--keep): ARONET_VAGRANT_DIR={rendered.directory} vagrant destroy -f")
        else:
            down = vagrant("destroy", "-f")
            if down.returncode != 0:
                errors.append(f"vagrant destroy -f failed (exit status {down.returncode}); "
                              "check `vagrant global-status`")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ci/multihost",
        description="Run a lab topology across Vagrant VMs (one per node and NAT router), check it "
                    "with the checks of `aronet-lab check`, and destroy the VMs.")
    p.add_argument("topology", nargs="?", default="seed",
                   help="a topology file or a bundled example (default: %(default)s)")
    p.add_argument("--dir", default=str(DEFAULT_DIR),
                   help="where the Vagrantfile's input goes (default: %(default)s)")
    p.add_argument("--provider", choices=("libvirt", "virtualbox"),
                   help="Vagrant's provider (default: Vagrant's choice)")
    p.add_argument("--timeout", type=float, default=600,
                   help="seconds the mesh may take to pass every check after provisioning")
    p.add_argument("--ssh", choices=("config", "vagrant"), default="config",
                   help="run the checks' commands with ssh and `vagrant ssh-config` (fast), or with "
                        "`vagrant ssh NODE -c` (a Ruby start per command)")
    p.add_argument("--render", action="store_true",
                   help="only render the files (then `vagrant validate`, `vagrant up` by hand)")
    p.add_argument("--keep", action="store_true", help="leave the VMs running")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (as `aronet-lab check --json`); progress to stderr")
    p.add_argument("--report", help="also write the JSON report to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    try:
        t = load_topology(topology_path(args.topology))
        directory = Path(args.dir)
        if args.render:
            r = render(t, directory)
            print(f"rendered lab {t.name} ({len(r.machines['machines'])} VMs) into {r.directory}",
                  file=out)
            return 0
        report, errors = run(t, directory, provider=args.provider, timeout=args.timeout,
                             via=args.ssh, keep=args.keep, out=out)
    except AronetError as e:
        return report_error(e, "ci/multihost", "nothing was started")
    except KeyboardInterrupt:
        return 130
    doc = {**(report.as_json() if report else {"ok": False, "broken_at": None, "steps": []}),
           "errors": errors}
    for path in (directory / "report.json", *([Path(args.report)] if args.report else [])):
        with contextlib.suppress(OSError):
            path.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif report:
        sys.stdout.write(report.as_text())
    for e in errors:
        print(f"ci/multihost: {e}", file=sys.stderr)
    return 0 if report and report.ok and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
