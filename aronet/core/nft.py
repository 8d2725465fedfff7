"""The `inet aronet` nftables table, as libnftables JSON, and the builders of
libnftables JSON objects that the lab's tables (lab.topology.nft) use too.

The table only drops and mangles: an accept in one table cannot override a drop in
another, so accepting here would promise what it cannot keep. Rules:
- babel (UDP 6696) is dropped unless it arrives on a tunnel interface;
- a packet arriving from a tunnel whose source belongs to no registry node is dropped
  (link-local sources are babel's and neighbour discovery's). This runs at prerouting
  so it sees each packet on the tunnel itself: in VRF mode the forward and input hooks
  only see the VRF device. With net.netfilter.nf_hooks_lwtunnel=1 the IPv4 packet that
  End.DX4 decapsulates passes prerouting again on the tunnel, so it is checked too;
- TCP MSS is clamped for traffic to the overlay's prefixes, so that ESP-in-UDP and the
  SRv6 header that carries IPv4 fit the tunnel MTU without fragmentation;
- packets to this node's SIDs are counted (a counter without a verdict).
"""

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Network, ip_network

from .names import BABEL_PORT

TABLE = "aronet"
FAMILY = "inet"


def _set(name: str, type_: str, prefixes: list) -> dict:
    s = {"family": FAMILY, "table": TABLE, "name": name, "type": type_, "flags": ["interval"]}
    if prefixes:
        s["elem"] = [{"prefix": {"addr": str(p.network_address), "len": p.prefixlen}}
                     for p in prefixes]
    return {"set": s}


# Builders of libnftables JSON objects and expressions. They make aronet's table by
# default; the lab's tables (bridge and inet aronet_lab) use them with their own
# family and table.


def table(*, family: str = FAMILY, name: str = TABLE) -> dict:
    return {"table": {"family": family, "name": name}}


def chain(name: str, hook: str | None = None, prio: int = 0, *, type_: str = "filter",
          family: str = FAMILY, table: str = TABLE) -> dict:
    """A chain; with a hook, a base chain of type_ whose policy is accept."""
    c = {"family": family, "table": table, "name": name}
    if hook:
        c.update(type=type_, hook=hook, prio=prio, policy="accept")
    return {"chain": c}


def rule(chain: str, *expr: dict, comment: str | None = None, family: str = FAMILY,
         table: str = TABLE) -> dict:
    r = {"family": family, "table": table, "chain": chain, "expr": list(expr)}
    if comment:
        r["comment"] = comment
    return {"rule": r}


def match(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def meta(key: str) -> dict:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> dict:
    return {"payload": {"protocol": protocol, "field": field}}


def one_or_set(values) -> object:
    """The right side of a match on any of values: the value itself when there is
    one, else an anonymous set (sorted, without duplicates)."""
    values = sorted(set(values))
    return values[0] if len(values) == 1 else {"set": values}


def _clamp(chain: str, family: str, setname: str, mss: int) -> dict:
    return rule(
        chain,
        match(payload(family, "daddr"), f"@{setname}"),
        match({"&": [payload("tcp", "flags"), ["syn", "rst"]]}, "syn"),
        match({"tcp option": {"name": "maxseg", "field": "size"}}, mss, ">"),
        {"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}}, "value": mss}},
        comment=f"clamp MSS to {mss} toward {family} overlay prefixes",
    )


def ruleset(*, tunnel_pattern: str, owned4: list[IPv4Network], owned6: list[IPv6Network],
            mss4: int, mss6: int, sids: dict[str, str] | None = None) -> list[dict]:
    """owned4/owned6: every registry node's prefixes (this node's included). The
    result is one atomic transaction: flush-free, it deletes and re-adds the table."""
    tunnels = tunnel_pattern  # nft matches a trailing "*" as a wildcard
    cmds: list[dict] = [
        table(),
        _set("owned4", "ipv4_addr", sorted(owned4)),
        _set("owned6", "ipv6_addr", sorted(owned6)),
        chain("prerouting", "prerouting", -150),
        chain("forward", "forward", 0),
        chain("output", "output", 0),
        rule("prerouting",
             match(meta("l4proto"), "udp"),
             match(payload("udp", "dport"), BABEL_PORT),
             match(meta("iifname"), tunnels, "!="),
             {"drop": None}, comment=f"babel only on {tunnel_pattern}"),
        rule("prerouting",
             match(meta("iifname"), tunnels),
             match(payload("ip", "saddr"), "@owned4", "!="),
             {"drop": None}, comment=f"{tunnel_pattern}: IPv4 source owned by no registry node"),
        rule("prerouting",
             match(meta("iifname"), tunnels),
             match(payload("ip6", "saddr"), {"prefix": {"addr": "fe80::", "len": 10}}, "!="),
             match(payload("ip6", "saddr"), "@owned6", "!="),
             {"drop": None}, comment=f"{tunnel_pattern}: IPv6 source owned by no registry node"),
    ]
    for behaviour, sid in sorted((sids or {}).items()):
        # counts only (no verdict): the lab reads these to see SRv6 at work, because
        # pyroute2 cannot ask the kernel for seg6local's own counters
        cmds.append(rule("prerouting", match(payload("ip6", "daddr"), sid),
                         {"counter": {"packets": 0, "bytes": 0}}, comment=f"SID {behaviour} {sid}"))
    for hook in ("forward", "output"):
        cmds.append(_clamp(hook, "ip", "owned4", mss4))
        cmds.append(_clamp(hook, "ip6", "owned6", mss6))
    return cmds


def transaction(commands: list[dict], *, family: str = FAMILY, name: str = TABLE,
                sort_keys: bool = False) -> str:
    """Replace the table atomically: add (so delete cannot fail), delete, then create
    everything (commands, the table first), in one libnftables batch."""
    t = table(family=family, name=name)
    batch = [{"add": t}, {"delete": t}] + [{"add": c} for c in commands]
    return json.dumps({"nftables": batch}, sort_keys=sort_keys)


def delete_transaction(name: str = TABLE) -> str:
    t = table(name=name)
    return json.dumps({"nftables": [{"add": t}, {"delete": t}]})


QUIET_TABLE = "aronet_quiet"


def quiet_transaction(tunnel_pattern: str) -> str:
    """A table of its own that drops the babel packets this node sends on its tunnels,
    while babeld restarts: the old instance's retractions of every route, as it
    exits, would make the neighbours drop their routes to this node until the new
    instance has announced them again (seconds). Deleted before the new one starts."""
    t = table(name=QUIET_TABLE)
    return json.dumps({"nftables": [
        {"add": t}, {"delete": t}, {"add": t},
        {"add": chain("output", "output", -150, table=QUIET_TABLE)},
        {"add": rule("output", match(meta("l4proto"), "udp"),
                     match(payload("udp", "dport"), BABEL_PORT),
                     match(meta("oifname"), tunnel_pattern), {"drop": None},
                     comment="babeld restarting: its retractions stay here", table=QUIET_TABLE)},
    ]})


def summary(objects: list[dict]) -> tuple:
    """What identifies a table's content, from either the commands aronet sends or
    the objects `nft -j list table` returns: each rule's (chain, comment), each
    set's (name, elements)."""
    rules, sets = [], []
    for obj in objects:
        if "rule" in obj:
            rules.append((obj["rule"]["chain"], obj["rule"].get("comment", "")))
        elif "set" in obj:
            elems = obj["set"].get("elem", [])
            sets.append((obj["set"]["name"], tuple(sorted(_element(e) for e in elems))))
    return (tuple(sorted(sets)), tuple(rules))


def _element(e) -> str:
    if isinstance(e, dict) and "prefix" in e:
        return str(ip_network(f"{e['prefix']['addr']}/{e['prefix']['len']}"))
    if isinstance(e, dict) and "elem" in e:  # an element with options
        return _element(e["elem"]["val"])
    if isinstance(e, dict) and "range" in e:
        return "-".join(map(str, e["range"]))
    return str(ip_network(e)) if isinstance(e, str) else str(e)


def sid_counters(objects: list[dict]) -> dict[str, int]:
    """Packets counted per SID, from `nft -j list table inet aronet` output."""
    out = {}
    for obj in objects:
        rule = obj.get("rule", {})
        comment = rule.get("comment", "")
        if comment.startswith("SID "):
            for e in rule.get("expr", []):
                if "counter" in e:
                    out[comment.split()[-1]] = int(e["counter"].get("packets", 0))
    return out
