"""The mtu row (VM, on the triangle: triangle.py).

From a to b across the overlay: the largest ICMP echo with DF that gets a reply
(bisection), for IPv6 (overlay addresses) and IPv4 (prefix addresses, carried by
SRv6), next to what the planner advertises (tunnel MTU; IPv4 route MTU = tunnel MTU -
SRv6 overhead); the TCP MSS a connection across the overlay ends up with, next to the
clamp; and whether any fragment was created or reassembled on the underlay meanwhile.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable

from aronet.core import planner
from aronet.core.names import netns_path
from aronet.core.state import XfrmInterface

from .common import Say
from .labs import ns_run, views


def largest_ok(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The largest size in [lo, hi] for which ok(size) holds, assuming it holds up to
    some size and not beyond; None if not even lo works."""
    if not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _snmp(ns: str) -> dict[str, int]:
    """The namespace's IPv4 (/proc/net/snmp "Ip:" lines) and IPv6 (/proc/net/snmp6)
    counters, as IpFragCreates, Ip6FragCreates, ..."""
    r = ns_run(ns, ["cat", "/proc/net/snmp", "/proc/net/snmp6"])
    out = {}
    lines = r.stdout.splitlines()
    for head, vals in itertools.pairwise(lines):
        if head.startswith("Ip: ") and vals.startswith("Ip: ") and not head.split()[1].isdigit():
            out.update({f"Ip{k}": int(v) for k, v in zip(head.split()[1:], vals.split()[1:], strict=True)})
    for parts in map(str.split, lines):
        if len(parts) == 2 and parts[0].startswith("Ip6") and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


_FRAG_KEYS = (("IpFragCreates", "Ip6FragCreates"), ("IpReasmReqds", "Ip6ReasmReqds"))

_MSS_CLIENT = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(10)
s.bind((sys.argv[2], 0))
s.connect((sys.argv[1], int(sys.argv[3])))
s.sendall(b"x" * 65536)
print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
s.close()
"""

_MSS_SERVER = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
n = 0
while True:
    data = c.recv(65536)
    if not data:
        break
    n += len(data)
print(n, c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG), flush=True)
"""


def _mss(src_ns: str, src: str, dst_ns: str, dst: str, port: int = 5201) -> dict:
    server = subprocess.Popen(["nsenter", f"--net={netns_path(dst_ns)}", "--", sys.executable, "-c",
                               _MSS_SERVER, dst, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "listening":
            return {"mss": None, "error": "server did not start"}
        r = ns_run(src_ns, [sys.executable, "-c", _MSS_CLIENT, dst, src, str(port)])
        got = server.communicate(timeout=30)[0].split()
        if r.returncode != 0:
            return {"mss": None, "error": r.stderr.strip().splitlines()[-1:]}
        return {"mss": int(r.stdout.strip()), "received": int(got[0]) if got else None,
                "server_mss": int(got[1]) if len(got) > 1 else None}
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def bench_mtu(lab, say: Say) -> dict:
    vs = views(lab)
    a, b = lab.plan.node("a"), lab.plan.node("b")
    va, vb = vs["a"], vs["b"]
    mtu = next(iter(va.desired.state.of(XfrmInterface))).mtu
    v4_mtu = mtu - planner.SRV6_OVERHEAD
    before = {ns: _snmp(ns) for ns in (a.ns, b.ns)}
    out: dict = {}
    for fam, src, dst, adv, header in ((6, va.sources[6], vb.targets[6], mtu, 48),
                                       (4, va.sources[4], vb.targets[4], v4_mtu, 28)):
        def df_ping(size, fam=fam, src=src, dst=dst):
            return ns_run(a.agent_ns, ["ping", f"-{fam}", "-n", "-c", "1", "-W", "2", "-M", "do",
                                       "-s", str(size), "-I", src, dst])

        def ok(size):
            return df_ping(size).returncode == 0
        # a lost first echo (neighbour resolution) is no verdict
        ok(56)
        payload = largest_ok(0, 9000, ok)
        over = df_ping(adv - header + 1)
        m = _mss(a.agent_ns, va.targets[fam] if fam == 4 else src, b.agent_ns, dst)
        out[str(fam)] = {"largest_payload": payload,
                         "largest_packet": None if payload is None else payload + header,
                         "advertised_mtu": adv, "clamp": (v4_mtu - 40) if fam == 4 else (mtu - 60),
                         "one_more_byte": (over.stdout + over.stderr).strip().splitlines()[-1:],
                         **m}
        say(f"  IPv{fam}: largest DF echo {out[str(fam)]['largest_packet']} B "
            f"(advertised {adv}), MSS {m.get('mss')}")
    after = {ns: _snmp(ns) for ns in (a.ns, b.ns)}
    created = sum(after[ns].get(k, 0) - before[ns].get(k, 0) for ns in before for k in _FRAG_KEYS[0])
    reasm = sum(after[ns].get(k, 0) - before[ns].get(k, 0) for ns in before for k in _FRAG_KEYS[1])
    out.update(fragments_created=created, fragments_reassembled=reasm)
    return out
