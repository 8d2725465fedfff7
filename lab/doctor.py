"""aronet-lab doctor: which kernel features this machine has, and what they allow.

probe() tries each feature for real, the way the lab and the agent use it, inside one
temporary network namespace that is removed afterwards (everything made in it goes
with it): nothing on the machine is left changed, except that asking for a feature may
make the kernel load its module, as first use would.

  netns              the temporary namespace itself
  veth               a veth pair, and an IPv4 route via an IPv6 next hop (netns mode)
  bridge             a bridge device (every LAN and link is one, in the lab's switch)
  nftables           `nft -j list ruleset`, a NAT chain that masquerades, a bridge table
                     with the lab's random-loss rule
  seg6               seg6 encap, seg6local End and End.DX4 routes
  nf_hooks_lwtunnel  the sysctl exists (it appears with nf_conntrack)
  XFRM interfaces    an xfrm device
  ESP                an ESP state with AES-GCM for IPv4 and IPv6 (as charon installs it)
  VRF                a vrf device
  netem              `tc qdisc add ... netem delay 1ms rate 10mbit` on a veth

The veth, bridge, VRF, XFRM, seg6, ESP and nf_hooks_lwtunnel probes are the agent's
own preflight probes (aronet.adapters.netlink.probes), so doctor and the agent agree.
report(features) is a table and a conclusion: whether `aronet-lab up` can run here or
the lab needs the microVM (`aronet-lab run --vm`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from aronet.adapters import sysctl
from aronet.adapters.netlink import probes
from aronet.adapters.netlink.probes import LWTUNNEL_SYSCTL
from aronet.core.names import netns_path

PROBE_PREFIX = "aronet-doctor-"
TIMEOUT = 30


@dataclass(frozen=True)
class Feature:
    name: str
    present: bool
    detail: str  # what was tried and what the kernel said
    allows: str  # what in the lab it enables
    required: bool  # every lab needs it (else only some topologies or modes)


# name -> (allows, required); also the order of probe()'s answer
FEATURES: dict[str, tuple[str, bool]] = {
    "netns": ("every lab: nodes, the switch and NAT routers are namespaces; netns mode", True),
    "veth": ("every attachment to a LAN, link or NAT router; netns-mode nodes", True),
    "bridge": ("LANs and links (bridges in the lab's switch)", True),
    "nftables": ("the agent's table; NAT routers; blocked, loss, partition, drop-esp", True),
    "seg6": ("IPv4 over the overlay (SRv6 End.DX4); the agent's start", True),
    "nf_hooks_lwtunnel": ("the agent's start (nftables sees SRv6-decapsulated packets)", True),
    "XFRM interfaces": ("tunnels: one XFRM interface per IKE connection", True),
    "ESP": ("tunnels: the CHILD_SAs (kernel ESP with AES-GCM)", True),
    "VRF": ("nodes in mode vrf (without it: --mode netns)", False),
    "netem": ("delay and rate on LANs and links", False),
}


def _feature(name: str, problems: list[str], ok: str) -> Feature:
    allows, required = FEATURES[name]
    return Feature(name, not problems, "; ".join(problems) if problems else ok, allows, required)


def _not_probed(name: str, why: str) -> Feature:
    allows, required = FEATURES[name]
    return Feature(name, False, f"not probed: {why}", allows, required)


def _run(argv: list[str], stdin: str | None = None) -> tuple[bool, str]:
    """(succeeded, stderr or the reason it could not run)."""
    try:
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        return False, f"{argv[0]} is not installed"
    except subprocess.TimeoutExpired:
        return False, f"{argv[0]} took longer than {TIMEOUT} s"
    return r.returncode == 0, (r.stderr.strip() or r.stdout.strip()
                               or f"exit status {r.returncode}")


def _in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={netns_path(ns)}", "--", *argv]


# ---------------------------------------------------------------- the probes


def _probe_netlink(ns: str) -> dict[str, Feature]:
    """The agent's preflight probes, each on its own, in the probe namespace."""
    out = {}
    with IPRoute(netns=ns, flags=0, ext_ack=True) as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        out["veth"] = _feature("veth", probes.probe_veth(ipr),
                               "veth pair created; IPv4 route via an IPv6 next hop accepted")
        out["bridge"] = _feature("bridge", probes.probe_link(
            ipr, "bridge", dict(kind="bridge"), "needed for every LAN and link; load the "
            "bridge module"), "bridge device created")
        out["seg6"] = _feature("seg6", probes.probe_seg6(ipr, lo, "vrf and netns"),
                               "seg6 encap, seg6local End and End.DX4 routes accepted")
        out["XFRM interfaces"] = _feature("XFRM interfaces", probes.probe_link(
            ipr, "XFRM interfaces", dict(kind="xfrm", xfrm_if_id=42),
            "needed by every tunnel; load the xfrm_interface module (CONFIG_XFRM_INTERFACE)"),
            "xfrm device created")
        out["VRF"] = _feature("VRF", probes.probe_link(
            ipr, "VRF", dict(kind="vrf", vrf_table=4242),
            "needed by mode vrf; use --mode netns or load the vrf module"), "vrf device created")
    esp = probes.probe_esp(ns, "vrf and netns")
    if esp:
        esp = [f"{esp[0]} ({_modules('esp4', 'esp6', 'xfrm_user')})"]
    out["ESP"] = _feature("ESP", esp, "ESP states with AES-GCM (IPv4 and IPv6 outer) accepted")
    return out


def _probe_nftables(ns: str) -> Feature:
    problems = []
    ok, why = _run(_in_ns(ns, ["nft", "-j", "list", "ruleset"]))
    if not ok:
        problems.append(f"nft -j list ruleset: {why}")
    else:
        # what the lab's NAT routers and switch load (lab.topology), in small form
        for what, family, chain, rule in (
            ("NAT (inet table, masquerade)", "inet",
             {"type": "nat", "hook": "postrouting", "prio": 100}, [{"masquerade": None}]),
            ("bridge table with random loss", "bridge",
             {"type": "filter", "hook": "forward", "prio": 0},
             [{"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 100, "offset": 0}},
                         "right": 5}}, {"drop": None}]),
        ):
            ok, why = _run(_in_ns(ns, ["nft", "-j", "-f", "-"]), _nft_batch(family, chain, rule))
            if not ok:
                problems.append(f"{what}: {why}")
    return _feature("nftables", problems,
                    "nft -j list ruleset, a masquerading NAT chain and a bridge table work")


def _nft_batch(family: str, chain: dict, expr: list) -> str:
    table = {"family": family, "name": "aronet_doctor"}
    base = {"family": family, "table": "aronet_doctor", "name": "probe"}
    return json.dumps({"nftables": [
        {"add": {"table": table}},
        {"add": {"chain": {**base, **chain, "policy": "accept"}}},
        {"add": {"rule": {"family": family, "table": "aronet_doctor", "chain": "probe",
                          "expr": expr}}},
    ]})


def _probe_netem(ns: str, dev: str) -> Feature:
    ok, why = _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms",
                    "rate", "10mbit"])
    if ok:
        return _feature("netem", [], f"netem qdisc (delay, rate) added on {dev}")
    if "kind is unknown" in why:
        why += f" (no sch_netem: {_modules('sch_netem')})"
    return _feature("netem", [f"tc qdisc add dev {dev} root netem: {why}"], "")


def _probe_lwtunnel() -> Feature:
    problems = probes.probe_lwtunnel_hooks()
    if problems:
        return _feature("nf_hooks_lwtunnel", problems, "")
    value = sysctl.read("", LWTUNNEL_SYSCTL)
    return _feature("nf_hooks_lwtunnel", [], f"{LWTUNNEL_SYSCTL} = {value} (the agent sets it "
                    "to 1, kernel-wide, for good)")


def _modules(*names: str) -> str:
    """Where the kernel could get these modules from, for a missing feature's detail."""
    release = os.uname().release
    if not os.path.exists("/proc/modules"):
        return f"kernel {release} cannot load modules"
    base = f"/lib/modules/{release}"
    try:
        with open(f"{base}/modules.builtin") as f:
            builtin = {os.path.basename(line.strip()).split(".")[0] for line in f}
    except OSError:
        builtin = set()
    try:
        with open(f"{base}/modules.dep") as f:
            available = {os.path.basename(line.split(":")[0]).split(".")[0] for line in f}
    except OSError:
        available = set()
    out = []
    for name in names:
        if os.path.isdir(f"/sys/module/{name}"):
            state = "loaded"
        elif name in builtin:
            state = "built in"
        elif name in available:
            state = "available, not loaded"
        else:
            state = f"not in {base}"
        out.append(f"{name}: {state}")
    return ", ".join(out)


def probe() -> list[Feature]:
    """Every feature, in FEATURES order. Needs root (it makes a namespace); without,
    netns is absent and the rest is not probed."""
    name = f"{PROBE_PREFIX}{secrets.token_hex(4)}"
    found: dict[str, Feature] = {}
    try:
        pr_netns.create(name)
    except OSError as e:
        why = e.strerror or str(e)
        hint = " (run as root)" if e.errno in (1, 13) else ""
        found["netns"] = _feature("netns", [f"cannot create a network namespace: {why}{hint}"], "")
        return [found.get(n) or _not_probed(n, "no network namespace") for n in FEATURES]
    try:
        found["netns"] = _feature("netns", [], "temporary namespace created (and removed)")
        try:
            found.update(_probe_netlink(name))
        except (NetlinkError, OSError) as e:  # a probe that failed in an unexpected way
            for n in ("veth", "bridge", "seg6", "XFRM interfaces", "VRF", "ESP"):
                found.setdefault(n, _feature(n, [f"probe failed: {e}"], ""))
        found["nftables"] = _probe_nftables(name)
        dev = "probe0" if found["veth"].present else "lo"
        found["netem"] = _probe_netem(name, dev)
        found["nf_hooks_lwtunnel"] = _probe_lwtunnel()
    finally:
        with contextlib.suppress(OSError):
            pr_netns.remove(name)
    return [found[n] for n in FEATURES]


# ---------------------------------------------------------------- the verdict


def can_run_here(features: list[Feature]) -> bool:
    """`aronet-lab up` can build a lab on this kernel (perhaps not every topology)."""
    return all(f.present for f in features if f.required)


def conclusion(features: list[Feature]) -> str:
    missing = [f.name for f in features if f.required and not f.present]
    if missing:
        return (f"aronet-lab up cannot run here (missing: {', '.join(missing)}); use the microVM: "
                "aronet-lab run --vm TOPOLOGY")
    limits = []
    if not _present(features, "VRF"):
        limits.append("nodes in mode vrf (as in seed) need --mode netns or --vm")
    if not _present(features, "netem"):
        limits.append("delay and rate on LANs and links need --vm")
    if limits:
        return "aronet-lab up can run here, but " + "; ".join(limits)
    return "aronet-lab up can run here: every feature is present"


def _present(features: list[Feature], name: str) -> bool:
    return any(f.name == name and f.present for f in features)


def report(features: list[Feature]) -> str:
    """A table (one row per feature, its detail below when it is missing) and the
    conclusion line."""
    width = max([len("feature"), *(len(f.name) for f in features)])
    lines = [f"{'feature':<{width}}  {'here':<4}  enables"]
    for f in features:
        lines.append(f"{f.name:<{width}}  {'yes' if f.present else 'NO':<4}  {f.allows}")
        if not f.present:
            lines.append(f"{'':<{width}}        {f.detail}")
    lines += ["", conclusion(features)]
    return "\n".join(lines) + "\n"


def report_json(features: list[Feature]) -> dict:
    return {"features": [{"name": f.name, "present": f.present, "required": f.required,
                          "allows": f.allows, "detail": f.detail} for f in features],
            "can_run_here": can_run_here(features), "conclusion": conclusion(features)}
