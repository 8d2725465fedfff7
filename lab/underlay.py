"""The lab's underlay, for real: namespaces, veths, bridges, addresses, routes,
sysctls and nft tables from a LabPlan (lab.topology), and the faults the lab injects.

- build(plan) makes everything the plan lists. It refuses to start when any of the
  lab's namespaces already exists, and when it fails half way it removes what it
  made, so a failed build leaves nothing behind.
- destroy(plan) removes the lab's namespaces (which takes the veths, bridges and nft
  tables inside them along), including the agents' netns-mode router namespaces and
  any other "<lab>-" namespace; leftovers(plan) names whatever is still there.
- Faults act in the switch namespace, where every LAN and link is a bridge: the
  table `bridge aronet_lab` has the chains blocked (from the topology), loss (one
  rule per segment, replaced by set_loss) and fault (partition and drop_esp; heal
  flushes it). They only ever drop. set_link takes a link's ports down or up.
  Each helper is idempotent: doing it twice changes nothing the second time.
- Impairments (lab.impair decides them) act on the switch ports too: set_netem puts a
  netem qdisc (delay, jitter, loss, rate) on a port, which shapes the frames the
  switch delivers to that member; set_segment_loss replaces a segment's nft loss
  rules by one per port (where the kernel has no netem). netem_available probes.

Nothing is created in the caller's namespace. pyroute2 does the netlink work, through
the agent's own codec (aronet.adapters.netlink.rtnl: sockets per namespace, device
lookup, and the wording of kernel errors); `nft -j -f -` and `tc` (netem) run
inside a namespace with nsenter. Every failure is an
aronet.errors.ApplyError("lab", what, cause).
"""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
from collections.abc import Iterator

from pyroute2 import netns as pr_netns

from aronet.adapters import sysctl
from aronet.adapters.netlink.rtnl import IFA_F_NODAD, Sockets, failing_as, index
from aronet.core.names import netns_path
from aronet.errors import ApplyError

from .topology import (
    TABLE,
    LabPlan,
    drop_esp_rules,
    loss_rule,
    partition_rules,
    port_loss_rule,
)

RT_SCOPE_LINK = 253
SYSTEM = "lab"


# ================================================================ build / destroy


def build(plan: LabPlan) -> None:
    present = [ns for ns in plan.namespaces if ns in pr_netns.listnetns()]
    if present:
        raise ApplyError(SYSTEM, ", ".join(f"netns {ns}" for ns in present),
                         "already exists: destroy the lab first, or run it under another name")
    try:
        _build(plan)
    except BaseException:
        destroy(plan)
        raise


def _build(plan: LabPlan) -> None:
    for ns in plan.namespaces:
        with _step(f"create netns {ns}"):
            pr_netns.create(ns)
    with Sockets() as socks:
        for ns in plan.namespaces:
            with _step(f"set lo up in {ns}"):
                ipr = socks(ns)
                ipr.link("set", index=index(ipr, "lo", ns), state="up")
        for s in plan.sysctls:  # before the devices: the switch's "default" must apply to them
            with _step(f"sysctl {s.name}={s.value} in {s.ns}"):
                sysctl.write(s.ns, s.name, s.value)
        for b in plan.bridges:
            with _step(f"bridge {b.name} in {b.ns}"):
                ipr = socks(b.ns)
                # No multicast snooping: with no querier it would starve neighbour discovery.
                ipr.link("add", ifname=b.name, kind="bridge", br_mcast_snooping=0)
                ipr.link("set", index=index(ipr, b.name, b.ns), state="up")
        for v in plan.veths:
            with _step(f"veth {v.name} in {v.ns} <-> {v.peer} in {v.peer_ns}"):
                ipr = socks(v.ns)
                ipr.link("add", ifname=v.name, kind="veth",
                         peer={"ifname": v.peer, "net_ns_fd": v.peer_ns})
                if v.master:
                    ipr.link("set", index=index(ipr, v.name, v.ns), master=index(ipr, v.master, v.ns))
        for a in plan.addresses:
            with _step(f"address {a.address} on {a.dev} in {a.ns}"):
                ipr = socks(a.ns)
                ip, length = a.address.split("/")
                ipr.addr("add", index=index(ipr, a.dev, a.ns), address=ip, prefixlen=int(length),
                         flags=IFA_F_NODAD if a.nodad else 0)
        for v in plan.veths:
            for ns, name in ((v.ns, v.name), (v.peer_ns, v.peer)):
                with _step(f"set {name} up in {ns}"):
                    ipr = socks(ns)
                    ipr.link("set", index=index(ipr, name, ns), state="up")
        for r in plan.routes:
            what = f"route {r.dst} via {r.gateway or r.dev} in {r.ns}"
            with _step(what):
                ipr = socks(r.ns)
                args = dict(dst=r.dst, oif=index(ipr, r.dev, r.ns))
                if r.gateway:
                    args["gateway"] = r.gateway
                elif ":" not in r.dst:
                    args["scope"] = RT_SCOPE_LINK  # an IPv4 route without gateway is on-link
                ipr.route("add", **args)
    for rs in plan.rulesets:
        _nft(rs.ns, rs.batch, f"nft table {rs.family} {rs.table} in {rs.ns}")
    for q in plan.netems:
        set_netem(q.ns, q.dev, delay_ms=q.delay_ms, rate=q.rate)


def destroy(plan: LabPlan) -> None:
    """Remove every namespace of the lab. Removing one that is already gone is fine."""
    names = list(dict.fromkeys([*reversed(plan.namespaces), *plan.agent_namespaces,
                                *_prefixed(plan)]))
    failed = []
    for ns in names:
        try:
            pr_netns.remove(ns)
        except FileNotFoundError:
            pass
        except OSError as e:
            failed.append(f"{ns} ({errno.errorcode.get(e.errno, e.errno)}: {e.strerror})")
    if failed:
        raise ApplyError(SYSTEM, "remove netns", ", ".join(failed))


def leftovers(plan: LabPlan) -> list[str]:
    """What of the lab is still on the machine: namespaces named "<lab>-..." and the
    agents' router namespaces. Empty after destroy()."""
    listed = set(pr_netns.listnetns())
    found = set(_prefixed(plan)) | {ns for ns in (*plan.namespaces, *plan.agent_namespaces)
                                    if ns in listed}
    return [f"netns {ns}" for ns in sorted(found)]


def _prefixed(plan: LabPlan) -> list[str]:
    # Lab names have no "-", so "<lab>-" belongs to this lab alone.
    return [ns for ns in pr_netns.listnetns() if ns.startswith(f"{plan.lab}-")]


# ================================================================ faults


def set_link(plan: LabPlan, a: str, b: str, up: bool) -> None:
    """Take a link down or up: the link (or NAT inside link) between members a and b,
    or a's attachment to the LAN or link named b. Down means no carrier at the
    member's end, as when a cable is pulled."""
    state = "up" if up else "down"
    with Sockets() as socks:
        for ns, name in _link_ends(plan, a, b):
            with _step(f"set {name} {state} in {ns}"):
                ipr = socks(ns)
                ipr.link("set", index=index(ipr, name, ns), state=state)


def _link_ends(plan: LabPlan, a: str, b: str) -> list[tuple[str, str]]:
    segments = {s.name: s for s in plan.segments}
    for member, seg_name in ((a, b), (b, a)):
        seg = segments.get(seg_name)
        if seg is not None and member in seg.members:
            if seg.bridge:
                return [(plan.switch_ns, seg.ports[seg.members.index(member)])]
            return _nat_end(plan, seg.name)
    ends = []
    for seg in plan.segments:
        if seg.kind in ("link", "nat") and set(seg.members) == {a, b}:
            ends += ([(plan.switch_ns, p) for p in seg.ports if p] if seg.bridge
                     else _nat_end(plan, seg.name))
    if not ends:
        raise ApplyError(SYSTEM, f"link {a} {b}", f"no link joins {a!r} and {b!r}, and neither is "
                         "a LAN or link the other is on")
    return ends


def _nat_end(plan: LabPlan, segment: str) -> list[tuple[str, str]]:
    for r in plan.routers:
        for leg in r.inside:
            if leg.segment == segment:
                return [(leg.ns, leg.name)]
    raise ApplyError(SYSTEM, f"link {segment}", "no such NAT inside link")


def set_loss(plan: LabPlan, link: str, pct: int) -> None:
    """Drop pct % of the frames on the LAN or link, each way (0 removes the loss)."""
    what = f"loss {pct}% on {link}"
    with _step(what):
        rule = loss_rule(plan, link, pct)
    batch = [{"delete": {"rule": {"family": "bridge", "table": TABLE, "chain": "loss",
                                  "handle": h}}}
             for h in _handles(plan, "loss", rule["rule"]["comment"])]
    if pct:
        batch.append({"add": rule})
    if batch:
        _nft(plan.switch_ns, json.dumps({"nftables": batch}), what)


def partition(plan: LabPlan, a: str, b: str) -> None:
    """Drop all underlay traffic between a and b (a node behind NAT: its router's)."""
    with _step(f"partition {a} {b}"):
        rules = partition_rules(plan, a, b)
    _add_fault(plan, rules, f"partition {a} {b}")


def drop_esp(plan: LabPlan, a: str, b: str) -> None:
    """Drop ESP-in-UDP between nodes a and b, and keep IKE: UDP on either NAT-T port
    whose first 4 payload bytes are non-zero."""
    with _step(f"drop ESP {a} {b}"):
        rules = drop_esp_rules(plan, a, b)
    _add_fault(plan, rules, f"drop ESP {a} {b}")


def heal(plan: LabPlan) -> None:
    """Remove every partition and ESP drop (blocked pairs and loss stay)."""
    chain = {"chain": {"family": "bridge", "table": TABLE, "name": "fault"}}
    _nft(plan.switch_ns, json.dumps({"nftables": [{"flush": chain}]}), "heal")


def _add_fault(plan: LabPlan, rules: list[dict], what: str) -> None:
    if _handles(plan, "fault", rules[0]["rule"]["comment"]):
        return  # already in place
    _nft(plan.switch_ns, json.dumps({"nftables": [{"add": r} for r in rules]}), what)


def _handles(plan: LabPlan, chain: str, comment: str) -> list[int]:
    """Handles of the rules in the switch's chain that carry the comment."""
    out = _run(plan.switch_ns, ["nft", "-j", "list", "chain", "bridge", TABLE, chain], None,
               f"list chain {chain}")
    return [obj["rule"]["handle"] for obj in json.loads(out).get("nftables", [])
            if "rule" in obj and obj["rule"].get("comment") == comment]


# ================================================================ impairments

NO_NETEM = "this kernel has no netem (sch_netem): delay, jitter and rate need the VM"
# netem goes through iproute2's tc: pyroute2 (0.9.7) sends netem's rate also as the
# qdisc's own TCA_RATE attribute, which it then fails to encode.


def netem_available(plan: LabPlan) -> str | None:
    """None when the kernel takes a netem qdisc (tried on the switch's lo, then
    removed), else why not."""
    try:
        _run(plan.switch_ns, ["tc", "qdisc", "replace", "dev", "lo", "root", "netem", "delay", "1ms"],
             None, "netem probe")
    except ApplyError as e:
        return NO_NETEM if "kind is unknown" in e.cause else f"netem: {e.cause}"
    with contextlib.suppress(ApplyError):
        _run(plan.switch_ns, ["tc", "qdisc", "del", "dev", "lo", "root"], None, "netem probe")
    return None


def set_netem(ns: str, dev: str, *, delay_ms: float | None = None, jitter_ms: float | None = None,
              loss: float = 0, rate: str | None = None) -> None:
    """netem on dev's egress (replaced when there is one); with nothing to do, the
    qdisc is removed (removing none is fine)."""
    what = f"netem on {dev} in {ns}"
    with _step(what):
        args = netem_arguments(delay_ms, jitter_ms, loss, rate)
    if not args:
        try:
            _run(ns, ["tc", "qdisc", "del", "dev", dev, "root"], None, what)
        except ApplyError as e:  # none there: the default qdisc has handle 0, or none at all
            if "handle of zero" not in e.cause and "No such file" not in e.cause:
                raise
        return
    try:
        _run(ns, ["tc", "qdisc", "replace", "dev", dev, "root", "netem", *args], None, what)
    except ApplyError as e:
        if "kind is unknown" in e.cause:
            raise ApplyError(SYSTEM, what, NO_NETEM) from None
        raise


def netem_arguments(delay_ms: float | None, jitter_ms: float | None, loss: float,
                    rate: str | None) -> list[str]:
    """tc's netem words for the impairment; empty: no netem at all."""
    out: list[str] = []
    if delay_ms or jitter_ms:
        out += ["delay", f"{delay_ms or 0:g}ms"]
    if jitter_ms:
        out.append(f"{jitter_ms:g}ms")
    if loss:
        out += ["loss", f"{loss:g}%"]
    if rate is not None:
        rate_bytes(rate)  # refused here, with the lab's words, rather than by tc
        out += ["rate", rate]
    return out


_RATE_UNITS = {"bit": 1 / 8, "bps": 1}  # tc's words: "bit" is bits, "bps" bytes per second
_PREFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def rate_bytes(text: str) -> int:
    """A rate as tc writes it (10mbit, 512kbit, 1gbit, 100kbps) in bytes per second."""
    t = text.strip().lower()
    for unit, factor in _RATE_UNITS.items():
        if t.endswith(unit):
            number, prefix = t[: -len(unit)], ""
            if number and number[-1] in "kmg":
                number, prefix = number[:-1], number[-1]
            try:
                value = float(number) * _PREFIXES[prefix] * factor
            except ValueError:
                break
            if value >= 2**32:
                raise ValueError(f"rate {text} is more than netem takes (about 34gbit)")
            return int(value)
    raise ValueError(f"rate {text} is not like 10mbit, 512kbit or 1gbit")


def set_segment_loss(plan: LabPlan, segment: str, per_member: dict[str, int]) -> None:
    """Replace every loss rule of the segment (the topology's, and earlier ones per
    member) by one rule per member that loses frames: frames delivered to it."""
    with _step(f"loss on {segment}"):
        rules = [port_loss_rule(plan, segment, m, pct) for m, pct in per_member.items() if pct]
        loss_rule(plan, segment, 0)  # checks it is a switched segment
    comments = {f"loss {segment}", *(f"loss {segment} to {m}" for m in plan.segment(segment).members)}
    batch = [{"delete": {"rule": {"family": "bridge", "table": TABLE, "chain": "loss", "handle": h}}}
             for c in sorted(comments) for h in _handles(plan, "loss", c)]
    batch += [{"add": r} for r in rules]
    if batch:
        _nft(plan.switch_ns, json.dumps({"nftables": batch}), f"loss on {segment}")


# ================================================================ helpers


def _nft(ns: str, batch: str, what: str) -> None:
    _run(ns, ["nft", "-j", "-f", "-"], batch, what)


def _run(ns: str, argv: list[str], stdin: str | None, what: str) -> str:
    full = ["nsenter", f"--net={netns_path(ns)}", "--", *argv]
    try:
        r = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        raise ApplyError(SYSTEM, what, f"{e.filename} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ApplyError(SYSTEM, what, f"{argv[0]} timed out after 30 s") from None
    if r.returncode != 0:
        raise ApplyError(SYSTEM, what, r.stderr.strip() or f"{argv[0]}: exit status {r.returncode}")
    return r.stdout


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Turns a library's error into ApplyError("lab", what, cause): the kernel's as the
    agent words them (rtnl.failing_as), the topology's (a bad name or value) as said."""
    try:
        with failing_as(SYSTEM, what):
            yield
    except (ValueError, KeyError, LookupError) as e:
        raise ApplyError(SYSTEM, what, str(e).strip("'\"")) from None
