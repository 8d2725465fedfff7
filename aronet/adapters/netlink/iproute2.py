"""What pyroute2 cannot do, through iproute2: read XFRM states and policies (`ip xfrm`,
parsed from text: iproute2 has no JSON for xfrm) and seg6local counters (`ip -j`), and
delete the XFRM states and policies of given if_ids (pyroute2 0.9.7 has no XFRM API).

run() starts `ip` to read, and for the ESP probe (which adds a state in a namespace
that is thrown away); failure is ApplyError("ip", ...). delete_xfrm() is the one
place `ip` changes the kernel: it removes only entries carrying one of the if_ids it
is given (owned() is the filter), and checks afterwards that none is left.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Collection, Iterable
from ipaddress import ip_network

from ...errors import ApplyError


def run(netns: str, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """`ip [-n netns] args`; its stdout. Failure is an ApplyError("ip", ...); with
    check=False only a failure to run it at all is."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=stdin)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ApplyError("ip", " ".join(args), str(e)) from e
    if not check:
        return proc.stderr
    if proc.returncode != 0:
        raise ApplyError("ip", " ".join(args),
                         proc.stderr.strip() or f"exit status {proc.returncode}")
    return proc.stdout


def xfrm_states(netns: str = "") -> list[dict]:
    """The XFRM states (SAs) in netns ("" = this process's namespace), from `ip -s
    xfrm state`. iproute2 has no JSON for xfrm (6.1 accepts -j and prints text), so the
    text is parsed: src, dst, proto, spi, reqid, mode, if_id, aead/enc/auth (algorithm
    names; keys are left out), encap {type, sport, dport}, mark (value, mask), bytes
    and packets, and "text", the block as printed."""
    return [_parse_state(b) for b in _blocks(run(netns, "-s", "xfrm", "state"))]


def xfrm_policies(netns: str = "") -> list[dict]:
    """The XFRM policies in netns, from `ip -s xfrm policy`: src, dst, dir (in, out,
    fwd; socket policies have "socket": True), index, priority, ptype, action, if_id,
    mark (value, mask), tmpl (a list of {src, dst, proto, spi, reqid, mode}), and
    "text"."""
    return [_parse_policy(b) for b in _blocks(run(netns, "-s", "xfrm", "policy"))]


def owned(entries: Iterable[dict], if_ids: Collection[int]) -> list[dict]:
    """The states or policies (as xfrm_states() and xfrm_policies() give them) that
    carry one of if_ids. One without an if_id (or with if_id 0, "none") is never
    anyone's: another agent's, a hand-made one, or a socket policy."""
    return [e for e in entries if e.get("if_id") and e["if_id"] in if_ids]


def delete_commands(states: Iterable[dict], policies: Iterable[dict]) -> list[str]:
    """`ip -batch` lines that delete exactly these states (by src, dst, proto, spi and
    mark: the kernel's key for a state) and policies (by dir, index, ptype, if_id and
    mark: the kernel matches all of them). Socket policies and policies without an
    index are left out."""
    lines = []
    for s in states:
        lines.append(f"xfrm state delete src {s['src']} dst {s['dst']} "
                     f"proto {s.get('proto', 'esp')} spi {s['spi']:#x}{_mark(s)}")
    for p in policies:
        if p.get("socket") or "index" not in p or "dir" not in p:
            continue
        lines.append(f"xfrm policy delete index {p['index']} dir {p['dir']} "
                     f"ptype {p.get('ptype', 'main')} if_id {p.get('if_id', 0):#x}{_mark(p)}")
    return lines


def delete_xfrm(netns: str, if_ids: Collection[int]) -> tuple[int, int]:
    """Delete the XFRM states and policies in netns that carry one of if_ids; the
    others stay. Returns how many states and policies were removed. One that is gone
    meanwhile (expired, or deleted by charon) counts as removed; one still there
    afterwards is an ApplyError("ip", "xfrm delete", ...)."""
    if not if_ids:
        return 0, 0
    states = owned(xfrm_states(netns), if_ids)
    policies = owned(xfrm_policies(netns), if_ids)
    lines = delete_commands(states, policies)
    if not lines:
        return 0, 0
    # -force: go on after a line that fails (an entry gone meanwhile); what matters
    # is what is left afterwards.
    errors = run(netns, "-force", "-batch", "-", stdin="\n".join(lines) + "\n", check=False)
    left = (len(owned(xfrm_states(netns), if_ids)), len(owned(xfrm_policies(netns), if_ids)))
    if any(left):
        raise ApplyError("ip", "xfrm delete", f"{left[0]} state(s) and {left[1]} "
                         f"policy(ies) of this node's if_ids are still there: "
                         f"{errors.strip() or 'no error reported'}")
    return len(states), len(policies)


def _mark(entry: dict) -> str:
    if "mark" not in entry:
        return ""
    value, mask = entry["mark"]
    return f" mark {value:#x} mask {mask:#x}"


def seg6local_counters(netns: str, table: int) -> dict[str, dict]:
    """{SID: {"action", "packets", "bytes", "errors"}} for the seg6local routes in
    `table` that have counters, from `ip -j -s -6 route show table T`. The kernel keeps
    counters only for routes created with them; pyroute2 0.9.7 cannot ask for them
    (no SEG6_LOCAL_COUNTERS), so routes made by this adapter have none."""
    out = {}
    for route in json.loads(run(netns, "-j", "-s", "-6", "route", "show", "table",
                                str(table)) or "[]"):
        if route.get("encap") == "seg6local" and "stats64" in route:
            stats = route["stats64"]
            out[str(ip_network(route["dst"]))] = {
                "action": route.get("action"), "packets": stats.get("packets", 0),
                "bytes": stats.get("bytes", 0), "errors": stats.get("errors", 0)}
    return out


def _blocks(text: str) -> list[str]:
    """One block per object: a line at column 0 and its indented continuation."""
    return [b for b in re.split(r"^(?=\S)", text, flags=re.M) if b.strip()]


def _num(text: str) -> int:
    return int(text.split("(")[0], 0)  # -s prints "0x00001000(4096)"


def _first(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text, flags=re.M)
    return m.group(1) if m else None


_MARK = re.compile(r"^\s+mark 0x([0-9a-f]+)/0x([0-9a-f]+)", re.M)


def _parse_state(block: str) -> dict:
    head = block.splitlines()[0].split()
    state: dict = {"src": _after(head, "src"), "dst": _after(head, "dst"), "text": block}
    for key, pattern in (("proto", r"\bproto (\S+)"), ("mode", r"\bmode (\S+)")):
        if (v := _first(pattern, block)) is not None:
            state[key] = v
    for key, pattern in (("spi", r"\bspi (0x[0-9a-f]+)"), ("reqid", r"\breqid (\d+)"),
                         ("if_id", r"\bif_id (0x[0-9a-f]+|\d+)")):
        if (v := _first(pattern, block)) is not None:
            state[key] = _num(v)
    for key in ("aead", "enc", "auth", "auth-trunc"):
        if (v := _first(rf"^\s+{re.escape(key)} (\S+)", block)) is not None:
            state[key] = v
    m = re.search(r"\bencap type (\S+) sport (\d+) dport (\d+)", block)
    if m:
        state["encap"] = {"type": m.group(1), "sport": int(m.group(2)), "dport": int(m.group(3))}
    m = re.search(r"\b(\d+)\(bytes\), (\d+)\(packets\)", block)
    if m:
        state["bytes"], state["packets"] = int(m.group(1)), int(m.group(2))
    if (m := _MARK.search(block)) is not None:
        state["mark"] = (int(m.group(1), 16), int(m.group(2), 16))
    return state


def _parse_policy(block: str) -> dict:
    own, *tmpls = re.split(r"\btmpl\b", block)
    head = own.splitlines()[0].split()
    policy: dict = {"src": _after(head, "src"), "dst": _after(head, "dst"), "text": block}
    if (v := _first(r"\bdir (\S+)", own)) is not None:
        policy["dir"] = v
    elif (v := _first(r"\bsocket (\S+)", own)) is not None:
        policy["dir"], policy["socket"] = v, True
    for key in ("ptype", "action"):
        if (v := _first(rf"\b{key} (\S+)", own)) is not None:
            policy[key] = v
    for key in ("priority", "index"):
        if (v := _first(rf"\b{key} (\d+)", own)) is not None:
            policy[key] = int(v)
    if (m := _MARK.search(own)) is not None:
        policy["mark"] = (int(m.group(1), 16), int(m.group(2), 16))
    if (v := _first(r"\bif_id (0x[0-9a-f]+|\d+)", block)) is not None:
        policy["if_id"] = _num(v)
    policy["tmpl"] = []
    for t in tmpls:
        t = t.split("if_id")[0]
        words = t.split()
        tmpl = {k: _after(words, k) for k in ("src", "dst", "proto", "mode")}
        for k in ("spi", "reqid"):
            if _after(words, k) is not None:
                tmpl[k] = _num(_after(words, k))
        policy["tmpl"].append({k: v for k, v in tmpl.items() if v is not None})
    return policy


def _after(words: list[str], key: str) -> str | None:
    try:
        return words[words.index(key) + 1]
    except (ValueError, IndexError):
        return None
