"""Every name and number the agent derives: written once, here.

Invariants:
- interface names are at most 15 bytes (Linux IFNAMSIZ - 1);
- an XFRM if_id depends only on this node, the peer and the endpoint pair, so it is
  stable across registry changes that do not touch that peer, and it survives SA
  re-establishment (no %unique);
- if_ids are unique on the node (collisions are re-hashed deterministically);
- no clock, no randomness: the same inputs give the same names.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv6Address, IPv6Network

IFNAMSIZ = 15
NETNS_DIR = "/run/netns"  # where named network namespaces are bound (iproute2's layout)
RTPROT_ARONET = 211  # the rtnetlink protocol number on every route aronet installs
RTPROT_BABEL = 42  # babeld's, fixed: its kernel routes always carry it
RTPROT_HOLD = 212  # babeld's routes, held by the agent while babeld restarts
BABEL_PORT = 6696

# Offsets inside a node's reserved {network}:ffff::/80 range: those of the original
# aronet 0.1b1, so that IPv4 sent through SRv6 reaches its End.DX4 too (README,
# "Interoperability").
SID_END = 0xA
SID_DX4 = 0xB

# Link-local addresses of the netns-mode veth pair (same on every node: a link is local).
VETH_HOST_LL = "fe80::1"
VETH_NS_LL = "fe80::2"


def _h(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()


def if_id_candidate(node_key: tuple, conn_key: tuple, attempt: int) -> int:
    """A 32-bit if_id, never 0 (0 means "no interface" to the kernel). The local node
    is part of the hash so agents sharing one kernel rarely meet the same ids."""
    value = int.from_bytes(_h("if_id", attempt, *node_key, *conn_key)[:4], "big")
    return value or 1


def allocate_if_ids(node_key: tuple, conn_keys: list[tuple]) -> dict[tuple, int]:
    """Give each connection key an if_id, unique within the node. Keys are handled in
    sorted order so the result is deterministic; a collision (about 1 in 10^4 with a
    thousand connections) moves the later key to its next candidate, and only then
    does one peer's id depend on another's presence."""
    taken: dict[int, tuple] = {}
    result = {}
    for key in sorted(conn_keys):
        attempt = 0
        while (cand := if_id_candidate(node_key, key, attempt)) in taken:
            attempt += 1
        taken[cand] = key
        result[key] = cand
    return result


def tunnel_ifname(prefix: str, if_id: int) -> str:
    name = f"{prefix}{if_id:08x}"
    # aronet.load refuses any other prefix (the schema matches it in full): this
    # only guards against a caller that skipped it, even under python -O.
    if len(name.encode()) > IFNAMSIZ or not name.isascii() or not name.isprintable():
        raise ValueError(f"tunnel interface name {name!r} is no Linux interface name")
    return name


def veth_names(ifname: str) -> tuple[str, str]:
    """(host end, netns end) of the netns-mode veth pair."""
    return ifname, f"{ifname}-host"


def link_local(node_key: tuple[str, str]) -> str:
    """This node's link-local address on every tunnel: fe80:: + 64 bits of a hash
    of its identity, so the two ends of a tunnel differ and babel has a stable
    next hop."""
    iid = int.from_bytes(_h("ll", *node_key)[:8], "big") & ~(1 << 57)  # universal/local bit: local
    return str(IPv6Address((0xFE80 << 112) | iid))


def sid(sid_range: IPv6Network, offset: int) -> IPv6Address:
    return sid_range.network_address + offset


def router_id(node_key: tuple[str, str]) -> str:
    """BIRD needs a 32-bit router id; derive one from the identity (a node may have no
    IPv4 address at all)."""
    h = int.from_bytes(_h("router-id", *node_key)[:4], "big") or 1
    return ".".join(str((h >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def bird_babel_router_id(node_key: tuple[str, str]) -> str:
    """The 64-bit babel router id BIRD runs with, in babeld's notation: BIRD takes the
    32-bit `router id` (router_id) as the low half and leaves the high half zero
    (it randomizes that half only with `randomize router id`, which aronet never sets)."""
    return ":".join(["00"] * 4 + [f"{int(b):02x}" for b in router_id(node_key).split(".")])


def babel_router_ids(node_key: tuple[str, str]) -> tuple[str, str]:
    """Every babel router id an aronet node can originate routes with: babeld's, and
    BIRD's (a peer does not know which daemon a node runs)."""
    return babel_router_id(node_key), bird_babel_router_id(node_key)


def babel_router_id(node_key: tuple[str, str]) -> str:
    """babeld's 64-bit router id (EUI-64 notation), derived from the identity: XFRM
    interfaces have no MAC address babeld could take one from."""
    raw = bytearray(_h("babel-router-id", *node_key)[:8])
    raw[0] = (raw[0] | 0x02) & ~0x01  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in raw)


def netns_path(ns: str) -> str:
    """The file that holds the named network namespace ns (what nsenter --net takes)."""
    return f"{NETNS_DIR}/{ns}"
