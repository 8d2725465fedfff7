"""What pyroute2 cannot read, from iproute2: XFRM states and policies (`ip xfrm`,
parsed from text: iproute2 has no JSON for xfrm) and seg6local counters (`ip -j`).

run() is the one place `ip` is started; only to read, and for the ESP probe (which
adds a state in a namespace that is thrown away). Failure is ApplyError("ip", ...).
"""

from __future__ import annotations

import json
import re
import subprocess
from ipaddress import ip_network

from ...errors import ApplyError


def run(netns: str, *args: str) -> str:
    """`ip [-n netns] args`; its stdout. Failure is an ApplyError("ip", ...)."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ApplyError("ip", " ".join(args), str(e)) from e
    if proc.returncode != 0:
        raise ApplyError("ip", " ".join(args),
                         proc.stderr.strip() or f"exit status {proc.returncode}")
    return proc.stdout


def xfrm_states(netns: str = "") -> list[dict]:
    """The XFRM states (SAs) in netns ("" = this process's namespace), from `ip -s
    xfrm state`. iproute2 has no JSON for xfrm (6.1 accepts -j and prints text), so the
    text is parsed: src, dst, proto, spi, reqid, mode, if_id, aead/enc/auth (algorithm
    names; keys are left out), encap {type, sport, dport}, bytes and packets, and
    "text", the block as printed."""
    return [_parse_state(b) for b in _blocks(run(netns, "-s", "xfrm", "state"))]


def xfrm_policies(netns: str = "") -> list[dict]:
    """The XFRM policies in netns, from `ip xfrm policy`: src, dst, dir (in, out, fwd;
    socket policies have "socket": True), priority, ptype, action, if_id, tmpl (a list
    of {src, dst, proto, spi, reqid, mode}), and "text"."""
    return [_parse_policy(b) for b in _blocks(run(netns, "xfrm", "policy"))]


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
    if (v := _first(r"\bpriority (\d+)", own)) is not None:
        policy["priority"] = int(v)
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
