"""The lab's nft rules, as libnftables JSON, built with aronet.core.nft's builders.

Two tables named TABLE (aronet_lab): in the switch, `bridge aronet_lab` holds the
blocked pairs and the loss of each segment, and its `fault` chain the partitions and
ESP drops the lab adds and heals at run time; in each NAT router, `inet aronet_lab`
masquerades what leaves the outside leg and lets nothing unsolicited in.
"""

from __future__ import annotations

from aronet.core import nft
from aronet.core.nft import match, meta, one_or_set

from .model import LabPlan, Topology
from .names import TABLE

SWITCH_CHAINS = ("blocked", "loss", "fault")  # fault: partitions and ESP drops; heal flushes it


def _batch(family: str, objects: list[dict]) -> str:
    """Replace the table atomically: add (so delete cannot fail), delete, create."""
    return nft.transaction([nft.table(family=family, name=TABLE), *objects], family=family,
                           name=TABLE, sort_keys=True)


def _chain(family: str, name: str, hook: str | None = None, type_: str = "filter",
           prio: int = 0) -> dict:
    return nft.chain(name, hook, prio, type_=type_, family=family, table=TABLE)


def _rule(family: str, chain: str, *expr: dict, comment: str | None = None) -> dict:
    return nft.rule(chain, *expr, comment=comment, family=family, table=TABLE)


def nat_batch(outside: str) -> str:
    """A NAT router's table: masquerade what leaves the outside leg."""
    fam = "inet"
    return _batch(fam, [
        _chain(fam, "postrouting", "postrouting", "nat", 100),
        _chain(fam, "forward", "forward"),
        _rule(fam, "postrouting", match(meta("oifname"), outside), {"masquerade": None},
              comment="masquerade"),
        # As a home router: nothing from outside starts a connection inside.
        _rule(fam, "forward", match(meta("iifname"), outside),
              match({"ct": {"key": "state"}}, {"set": ["established", "related"]}, "!="),
              {"drop": None}, comment="no unsolicited inbound"),
    ])


def switch_batch(plan: LabPlan, t: Topology) -> str:
    """The switch's table as the lab starts: blocked pairs and loss; no fault yet."""
    fam = "bridge"
    objects = [_chain(fam, "forward", "forward")]
    objects += [_chain(fam, c) for c in SWITCH_CHAINS]
    objects += [_rule(fam, "forward", {"jump": {"target": c}}) for c in SWITCH_CHAINS]
    for a, b in t.blocked:
        objects += _between(plan, "blocked", a, b, (), f"blocked {_pair(a, b)}")
    for seg in plan.segments:
        if seg.loss:
            objects.append(loss_rule(plan, seg.name, seg.loss))
    return _batch(fam, objects)


def _pair(a: str, b: str) -> str:
    return " ".join(sorted((a, b)))


def _between(plan: LabPlan, chain: str, a: str, b: str, expr: tuple, comment: str) -> list[dict]:
    """Rules in the switch's chain that drop frames from a's ports to b's and back,
    when they also match expr."""
    pa, pb = plan.ports_of(a), plan.ports_of(b)
    if plan.face(a) == plan.face(b):
        raise ValueError(f"{a!r} and {b!r} meet at NAT router {plan.face(a)!r}, not on the switch")
    if not pa or not pb:
        raise ValueError(f"{a if not pa else b!r} has no switch port")
    out = []
    for src, dst in ((pa, pb), (pb, pa)):
        out.append(_rule("bridge", chain, match(meta("iifname"), one_or_set(src)),
                         match(meta("oifname"), one_or_set(dst)), *expr, {"drop": None},
                         comment=comment))
    return out


def loss_rule(plan: LabPlan, segment: str, pct: int) -> dict:
    """Drop pct % of the frames entering the segment's bridge (so pct each way)."""
    seg = plan.segment(segment)
    if not seg.bridge:
        raise ValueError(f"{segment!r} is a NAT inside link; loss applies to LANs and links")
    if not 0 <= pct <= 100:
        raise ValueError(f"loss {pct} is not a percentage")
    ports = [p for p in seg.ports if p]
    # numgen mod 100 yields 0..99, and nft refuses "< 100": 100 % is a plain drop.
    chance = () if pct == 100 else (
        match({"numgen": {"mode": "random", "mod": 100, "offset": 0}}, pct, "<"),)
    return _rule("bridge", "loss", match(meta("iifname"), one_or_set(ports)), *chance,
                 {"drop": None}, comment=f"loss {segment}")


def port_loss_rule(plan: LabPlan, segment: str, member: str, pct: int) -> dict:
    """Drop pct % of the frames the segment's bridge delivers to member (one
    direction: an impairment where the kernel has no netem)."""
    seg = plan.segment(segment)
    if not seg.bridge:
        raise ValueError(f"{segment!r} is a NAT inside link; loss applies to LANs and links")
    if member not in seg.members:
        raise ValueError(f"{member!r} is not on {segment!r}")
    if not 0 <= pct <= 100:
        raise ValueError(f"loss {pct} is not a percentage")
    port = seg.ports[seg.members.index(member)]
    chance = () if pct == 100 else (
        match({"numgen": {"mode": "random", "mod": 100, "offset": 0}}, pct, "<"),)
    return _rule("bridge", "loss", match(meta("oifname"), port), *chance, {"drop": None},
                 comment=f"loss {segment} to {member}")


def partition_rules(plan: LabPlan, a: str, b: str) -> list[dict]:
    return _between(plan, "fault", a, b, (), f"partition {_pair(a, b)}")


def drop_esp_rules(plan: LabPlan, a: str, b: str) -> list[dict]:
    """ESP-in-UDP between a and b: UDP on either's NAT-T port whose first 4 payload
    bytes are non-zero (IKE there starts with the 4 zero bytes of the non-ESP
    marker; a 1-byte NAT-T keepalive is too short to match)."""
    ports = one_or_set({_port(plan, a), _port(plan, b)})
    comment = f"drop-esp {_pair(a, b)}"
    not_ike = match({"payload": {"base": "th", "offset": 64, "len": 32}}, 0, "!=")
    out = []
    for field_ in ("dport", "sport"):
        port = match(nft.payload("udp", field_), ports)
        out += _between(plan, "fault", a, b, (port, not_ike), comment)
    return out


def _port(plan: LabPlan, name: str) -> int:
    for n in plan.nodes:
        if n.name == name:
            return n.port
    raise ValueError(f"{name!r} is not a node")
