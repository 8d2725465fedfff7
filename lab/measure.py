"""Failover measurement: how long traffic from node A to node B stops when their
direct path fails, where it goes meanwhile, and how long the mesh takes to come back.

One run of `failover(lab, a, b, fault)`:

1. waits until A's babel route to B's network uses the direct tunnel to B;
2. starts one `ping -i 0.01 -D -O -n` from A's prefix address to B's (IPv4 extra_ip
   when both have one, else the IPv6 overlay addresses; VRF mode: bound to the VRF
   device) in A's router namespace, and waits for a steady stream of replies;
3. applies the fault between A and B on the underlay (drop-esp: ESP-in-UDP dropped,
   IKE still passes; partition: everything dropped; link: the link between them
   down), waits until replies flow again (SETTLE seconds without a gap) or the
   timeout, and reads from A's agent status which tunnel A's route to B now uses;
4. heals (`underlay.heal`, which flushes every partition and ESP drop of the lab, or
   the link up) and polls A's status every POLL seconds until the route is back on
   the direct tunnel (return_ms: from the end of the heal to the answer of the first
   status showing it; status_ms, the median time a status takes, is its
   resolution), then keeps pinging a moment longer.

The ping output is analysed afterwards (analyse()): the outage is the longest gap
between consecutive replies that ends after the fault and begins before traffic
settled again (or before the heal, when it never did); a longer pause after it,
while the fault still lasts, is a flap and reported apart (later_gap_ms). lost
counts the echo requests without a reply from the fault to the heal, out of sent.
The same is reported for the return (return_outage_ms, return_lost): a switch back
to the direct tunnel should not drop traffic either. Also reported: how long the
fault and the heal took to apply (fault_apply_ms, heal_apply_ms). The outage is a
gap between replies, so it begins when the fault takes hold, somewhere during its
application, not when the application starts: fault_apply_ms can exceed it.

Every gap includes one ping interval, and on a loaded machine (the microVM under
TCG) the prober's own stalls: a gap with no lost request is one.

These are measurements, not checks: nothing here decides what is fast enough.
"""

from __future__ import annotations

import math
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from ipaddress import ip_interface
from itertools import pairwise

from aronet.client import request
from aronet.core.names import netns_path
from aronet.core.status import Status
from aronet.errors import AronetError

from . import underlay
from .run import Lab, node_views
from .topology import LabPlan, drop_esp_rules, partition_rules

FAULTS = ("drop-esp", "partition", "link")
INTERVAL = 0.01  # seconds between echo requests
SETTLE = 2.0  # replies for this long without a gap: traffic flows again
BASELINE = 1.0  # the same before the fault
GAP = 0.25  # a pause longer than this between replies breaks "flowing"
AFTER_RETURN = 1.0  # keep pinging this long after the route came back
POLL = 0.2  # seconds between status polls

# "[1700000000.123456] 64 bytes from 172.16.2.1: icmp_seq=12 ttl=63 time=0.52 ms"
_REPLY = re.compile(r"^\[(?P<ts>\d+(?:\.\d+)?)\]\s+\d+ bytes from .*?\bicmp_seq=(?P<seq>\d+)")
# "[1700000000.123456] no answer yet for icmp_seq=13"
_NO_ANSWER = re.compile(r"^\[(?P<ts>\d+(?:\.\d+)?)\]\s+no answer yet for icmp_seq=(?P<seq>\d+)")
_SEQ_SPACE = 1 << 16


# ================================================================ pure parts


def parse_ping_line(line: str) -> tuple[str, float, int] | None:
    """("reply" | "no-answer", timestamp, icmp_seq) for the lines that matter;
    None for everything else (headers, errors, duplicates' "DUP!" counts as reply)."""
    line = line.strip()
    m = _REPLY.match(line)
    if m:
        return "reply", float(m["ts"]), int(m["seq"])
    m = _NO_ANSWER.match(line)
    if m:
        return "no-answer", float(m["ts"]), int(m["seq"])
    return None


def unwrap_seq(raw: int, last: int | None) -> int:
    """ping's icmp_seq is 16 bits; give the continuous number closest to the last one."""
    if last is None:
        return raw
    base = last - last % _SEQ_SPACE
    return min((base - _SEQ_SPACE + raw, base + raw, base + _SEQ_SPACE + raw),
               key=lambda c: abs(c - last))


def parse_ping_output(text: str) -> tuple[list[tuple[float, int]], int | None]:
    """All replies (timestamp, unwrapped seq; duplicates dropped) and the highest
    sequence number known to have been sent."""
    replies: list[tuple[float, int]] = []
    seen: set[int] = set()
    last = sent = None
    for line in text.splitlines():
        p = parse_ping_line(line)
        if p is None:
            continue
        kind, ts, raw = p
        seq = unwrap_seq(raw, last)
        last = seq
        sent = seq if sent is None else max(sent, seq)
        if kind == "reply" and seq not in seen:
            seen.add(seq)
            replies.append((ts, seq))
    return replies, sent


def flowing_since(replies: list[tuple[float, int]], since: float, now: float,
                  gap: float = GAP) -> float | None:
    """Start of the current unbroken stream of replies after `since` (no two
    consecutive replies further apart than gap, the last one at most gap ago),
    or None when replies do not flow now."""
    start = prev = None
    for ts, _seq in replies:
        if ts <= since:
            continue
        if prev is None or ts - prev > gap:
            start = ts
        prev = ts
    if prev is None or now - prev > gap:
        return None
    return start


def analyse(replies: list[tuple[float, int]], fault_at: float, heal_at: float | None = None,
            last_sent: int | None = None, settled_at: float | None = None) -> dict:
    """Outage and losses around a fault, from the replies (timestamp, seq).

    Phases: the fault (fault_at to heal_at), in which the failover ends when traffic
    has settled (settled_at: replies have flowed steadily again; None when they
    never did before the heal), and the return (after heal_at).

    outage_ms: the longest gap between consecutive replies where the later one came
    after the fault and the earlier one before traffic settled, or before the heal
    (None: no reply after the fault at all). resumed: that gap ended before the
    heal. later_gap_ms: the longest gap that began after traffic settled and before
    the heal (a flap while the fault lasts). lost: requests without a reply from the
    last one answered before the fault to the end of the fault phase (the last reply
    before the heal, or the one that ended the outage when that came after the heal);
    sent: the requests in that span. return_outage_ms and return_lost: the same
    after the heal, for the way back."""
    rs = sorted(replies)
    before = [seq for ts, seq in rs if ts <= fault_at]
    if not before:
        raise ValueError("no reply before the fault")
    heal = math.inf if heal_at is None else heal_at
    settled = heal if settled_at is None else min(settled_at, heal)
    replied = {seq for _ts, seq in rs}
    s0 = max(before)

    outage = end = later = None
    for (t1, _s1), (t2, s2) in pairwise(rs):
        if t2 > fault_at and t1 < settled and (outage is None or t2 - t1 > outage):
            outage, end = t2 - t1, (t2, s2)
        if settled - GAP <= t1 < heal and (later is None or t2 - t1 > later):
            later = t2 - t1
    if outage is None:  # never answered again
        lost = None if last_sent is None else max(0, last_sent - s0)
        return {"outage_ms": None, "lost": lost, "sent": lost, "resumed": False,
                "later_gap_ms": None, "return_outage_ms": None, "return_lost": None}

    s1 = max([s0, *(seq for ts, seq in rs if fault_at < ts <= heal)])
    if end[0] > heal:
        s1 = max(s1, end[1])
    lost = sum(1 for s in range(s0 + 1, s1 + 1) if s not in replied)
    out = {"outage_ms": _ms(outage), "lost": lost, "sent": s1 - s0, "resumed": end[0] <= heal,
           "later_gap_ms": _ms(later) if settled < heal else None,
           "return_outage_ms": None, "return_lost": None}
    if heal_at is not None:
        back = [(t1, t2) for (t1, _a), (t2, _b) in pairwise(rs) if t1 >= heal_at]
        last = max(seq for _ts, seq in rs)
        out["return_outage_ms"] = _ms(max(t2 - t1 for t1, t2 in back)) if back else None
        out["return_lost"] = sum(1 for s in range(s1 + 1, last + 1) if s not in replied)
    return out


def request_rate(replies: list[tuple[float, int]]) -> float | None:
    """Echo requests per second ping really sent (a loaded machine falls short of
    1 / INTERVAL), from the first and the last reply."""
    if len(replies) < 2:
        return None
    (t1, s1), (t2, s2) = min(replies), max(replies)
    return round((s2 - s1) / (t2 - t1), 1) if t2 > t1 else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def route_path(status: Status, prefix: str, target: str) -> dict | None:
    """Which tunnel the node's babel route to prefix uses, from its agent's status:
    {prefix, interface, via, metric, peer (the tunnel's peer), direct (peer is
    target)}; None when babel has no route to it."""
    tunnels = {name: p.peer for name, (p, _) in status.tunnels().items()}
    for r in status.routes():
        if r.prefix == prefix:
            peer = tunnels.get(r.interface)
            return {"prefix": prefix, "interface": r.interface, "via": r.via,
                    "metric": r.metric, "peer": peer, "direct": peer == target}
    return None


def ping_argv(family: int, source: str, target: str, interval: float = INTERVAL) -> list[str]:
    """-D: a timestamp on every line; -O: report each request left unanswered;
    -n: no name lookups. source: an address, or the VRF device to bind to."""
    return ["ping", f"-{family}", "-n", "-D", "-O", "-i", f"{interval:g}", "-I", source, target]


def summarize(runs: list[dict]) -> dict:
    outages = [r["outage_ms"] for r in runs if r.get("outage_ms") is not None]
    return {"median_outage_ms": round(statistics.median(outages), 1) if outages else None,
            "max_outage_ms": max(outages) if outages else None}


def _path_text(path: dict | None) -> str:
    if path is None:
        return "no route"
    if path.get("direct"):
        return f"direct ({path['interface']})"
    who = path.get("node") or path.get("peer") or "?"
    return f"via {who} ({path['interface']})"


def _num(v, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def as_table(result: dict) -> str:
    head = (f"failover {result['a']} -> {result['b']}, fault {result['fault']}")
    if result.get("target"):
        head += (f", IPv{result['family']} {result['source']} -> {result['target']}, "
                 f"ping every {result.get('interval_ms', INTERVAL * 1000):g} ms")
    rows = [("run", "outage ms", "lost/sent", "later gap ms", "path after fault", "return ms",
             "return outage ms", "return lost")]
    for i, r in enumerate(result["runs"], 1):
        outage = _num(r.get("outage_ms"))
        if r.get("outage_ms") is not None and r.get("resumed") is False:
            outage += " (after heal)"
        elif r.get("outage_ms") is None:
            outage = "not resumed"
        lost = _num(r.get("lost")) + (f"/{r['sent']}" if r.get("sent") is not None else "")
        rows.append((str(i), outage, lost, _num(r.get("later_gap_ms")), _path_text(r.get("path_after")),
                     _num(r.get("return_ms")) if r.get("return_ms") is not None else "not back",
                     _num(r.get("return_outage_ms")), _num(r.get("return_lost"))))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [head]
    for row in rows:
        cells = [row[c].ljust(widths[c]) if c == 4 else row[c].rjust(widths[c])
                 for c in range(len(row))]
        lines.append("  ".join(cells).rstrip())
    summary = (f"median outage {_num(result.get('median_outage_ms'), ' ms')}, "
               f"max {_num(result.get('max_outage_ms'), ' ms')}")
    rates = [r["rate_pps"] for r in result["runs"] if r.get("rate_pps")]
    if rates:
        summary += f"; ping really sent {min(rates):g} to {max(rates):g} requests/s"
    lines.append(summary)
    return "\n".join(lines) + "\n"


# ================================================================ the prober


class Pinger:
    """One long-running ping, in a namespace (nsenter) or here (ns empty); its
    output is parsed as it comes, by a reader thread."""

    def __init__(self, argv: list[str], ns: str | None = None):
        self.argv = (["nsenter", f"--net={netns_path(ns)}", "--", *argv] if ns else list(argv))
        self.replies: list[tuple[float, int]] = []
        self.last_sent: int | None = None
        self.other: list[str] = []  # lines that are neither replies nor "no answer"
        self._seen: set[int] = set()
        self._last: int | None = None
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Pinger:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, bufsize=1)
        except FileNotFoundError as e:
            raise AronetError(f"{e.filename} is not installed") from None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            p = parse_ping_line(line)
            if p is None:
                if line.strip() and len(self.other) < 50:
                    self.other.append(line.strip())
                continue
            kind, ts, raw = p
            seq = unwrap_seq(raw, self._last)
            self._last = seq
            self.last_sent = seq if self.last_sent is None else max(self.last_sent, seq)
            if kind == "reply" and seq not in self._seen:
                self._seen.add(seq)
                self.replies.append((ts, seq))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)

    def wait_flowing(self, since: float, duration: float, deadline: float) -> bool:
        """Until replies after `since` have flowed without a break for `duration`
        seconds (True), or the deadline (False)."""
        while True:
            now = time.time()
            start = flowing_since(list(self.replies), since, now)
            if start is not None and now - start >= duration:
                return True
            if not self.running:
                if self._reader is not None:
                    self._reader.join(2)  # its last words
                raise AronetError(f"ping stopped: {'; '.join(self.other[-3:]) or 'no output'}")
            if now >= deadline:
                return False
            time.sleep(0.05)


# ================================================================ against a running lab


def _identity(plan: LabPlan, node: str) -> str:
    n = plan.node(node)
    return f"{n.organization}/{n.name}"


def _fault_actions(plan: LabPlan, a: str, b: str, fault: str) -> tuple[Callable[[], None],
                                                                         Callable[[], None]]:
    """(inject, repair) for the fault; checked here, before anything runs."""
    try:
        if fault == "drop-esp":
            drop_esp_rules(plan, a, b)
            return (lambda: underlay.drop_esp(plan, a, b)), (lambda: underlay.heal(plan))
        if fault == "partition":
            partition_rules(plan, a, b)
            return (lambda: underlay.partition(plan, a, b)), (lambda: underlay.heal(plan))
    except ValueError as e:
        raise AronetError(f"cannot {fault} {a} {b}: {e}") from None
    if not any(s.kind == "link" and set(s.members) == {a, b} for s in plan.segments):
        raise AronetError(f"no link joins {a} and {b}: fault 'link' takes down a point-to-point "
                          "link (`links:` in the topology); on a shared LAN use partition")
    return ((lambda: underlay.set_link(plan, a, b, False)),
            (lambda: underlay.set_link(plan, a, b, True)))


class _Paths:
    """A's route to B, from A's agent status; keeps how long each status took (the
    resolution of return_ms)."""

    def __init__(self, lab: Lab, a: str, prefix: str, target: str, names: dict[str, str]):
        self.socket, self.prefix, self.target, self.names = lab.control_socket(a), prefix, target, names
        self.durations: list[float] = []

    def now(self) -> dict | None:
        t = time.time()
        try:
            status = Status.from_json(request(self.socket, {"cmd": "status"}, timeout=20)["status"])
        except AronetError:
            return None
        finally:
            self.durations.append(time.time() - t)
        path = route_path(status, self.prefix, self.target)
        if path is not None:
            path["node"] = self.names.get(path["peer"])
        return path

    def wait_direct(self, deadline: float) -> tuple[bool, dict | None]:
        while True:
            path = self.now()
            if path is not None and path["direct"]:
                return True, path
            if time.time() >= deadline:
                return False, path
            time.sleep(POLL)


def failover(lab: Lab, a: str, b: str, fault: str = "drop-esp", runs: int = 1, timeout: float = 60,
             say: Callable[[str], None] | None = None) -> dict:
    """Measure the failover of A's traffic to B under the fault, `runs` times; see
    the module's docstring. timeout bounds each wait (the direct path at the start,
    traffic flowing again after the fault, the route coming back after the heal).
    Raises AronetError for a bad request or when there is no traffic to measure."""
    say = say or (lambda _line: None)
    if fault not in FAULTS:
        raise AronetError(f"unknown fault {fault!r}: choose one of {', '.join(FAULTS)}")
    if runs < 1:
        raise AronetError(f"runs must be at least 1, not {runs}")
    if a == b:
        raise AronetError(f"{a} and {b} are the same node")
    plan = lab.plan
    for n in (a, b):
        try:
            plan.node(n)
        except KeyError:
            raise AronetError(f"no node {n!r} in lab {plan.lab} "
                              f"(nodes: {', '.join(x.name for x in plan.nodes)})") from None
    inject, repair = _fault_actions(plan, a, b, fault)

    names = {_identity(plan, n.name): n.name for n in plan.nodes}
    views = {v.name: v for v in node_views(lab)}
    va, vb = views[_identity(plan, a)], views[_identity(plan, b)]
    family = 4 if 4 in va.sources and 4 in vb.targets else 6
    argv = ping_argv(family, va.sources[family], vb.targets[family])
    prefix = str(ip_interface(plan.node(b).network).network)
    result = {"a": a, "b": b, "fault": fault, "family": family, "source": va.sources[family],
              "target": vb.targets[family], "interval_ms": INTERVAL * 1000, "prefix": prefix,
              "runs": []}

    paths = _Paths(lab, a, prefix, _identity(plan, b), names)
    for i in range(1, runs + 1):
        ok, path = paths.wait_direct(time.time() + timeout)
        if not ok:
            raise AronetError(f"{a}'s route to {b} ({prefix}) does not use the direct tunnel "
                              f"({_path_text(path)}) after {timeout:.0f} s: nothing to fail over")
        run = _one_run(paths, va.router_ns, argv, inject, repair, timeout)
        run["path_before"] = path
        result["runs"].append(run)
        say(f"run {i}: outage {_num(run['outage_ms'], ' ms')}, lost {_num(run['lost'])}, "
            f"{_path_text(run['path_after'])}, back in {_num(run['return_ms'], ' ms')}")
    result.update(summarize(result["runs"]))
    return result


def _one_run(paths: _Paths, ns: str, argv: list[str], inject: Callable[[], None],
             repair: Callable[[], None], timeout: float) -> dict:
    paths.durations.clear()
    with Pinger(argv, ns) as ping:
        started = time.time()
        if not ping.wait_flowing(started, BASELINE, started + timeout):
            raise AronetError(f"no steady replies from {argv[-1]} before the fault "
                              f"({len(ping.replies)} replies; {'; '.join(ping.other[-3:])})")
        # The fault takes hold somewhere during inject() (nft in the switch: under
        # TCG that can take a second): the outage is the reply gap that ends after
        # inject() started, but only replies after its end show that traffic flows
        # again.
        fault_at = time.time()
        injected = heal_at = healed = settled_at = None
        try:
            inject()
            injected = time.time()
            if ping.wait_flowing(injected + 10 * INTERVAL, SETTLE, injected + timeout):
                settled_at = time.time()
            path_after = paths.now()
        finally:
            heal_at = time.time()
            repair()
            healed = time.time()
        # from the end of the heal, when the fault is certainly gone, to the answer
        # of the first status that shows the direct tunnel again
        back, _path = paths.wait_direct(healed + timeout)
        return_ms = round((time.time() - healed) * 1000) if back else None
        ping.wait_flowing(time.time(), AFTER_RETURN, time.time() + AFTER_RETURN + 5)
    stats = analyse(ping.replies, fault_at, heal_at, ping.last_sent, settled_at)
    return {"outage_ms": stats["outage_ms"], "lost": stats["lost"], "sent": stats["sent"],
            "rate_pps": request_rate(ping.replies),
            "path_after": path_after, "return_ms": return_ms, "resumed": stats["resumed"],
            "later_gap_ms": stats["later_gap_ms"],
            "return_outage_ms": stats["return_outage_ms"], "return_lost": stats["return_lost"],
            "fault_at": round(fault_at, 3), "heal_at": round(heal_at, 3),  # lab/failover_events.py
            "fault_apply_ms": _ms(injected - fault_at), "heal_apply_ms": _ms(healed - heal_at),
            "status_ms": _ms(statistics.median(paths.durations)) if paths.durations else None}
