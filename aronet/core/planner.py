"""The planner: config + registry -> everything the node must have.

`desired(config, registry, bird_version)` is a pure function: no I/O, no clock, no
environment. The agent applies its result, the lab predicts with it, and
`aronet plan` prints it.

Design decisions (the README's "Architecture" repeats them for users):

* IKE: one connection per local endpoint x remote endpoint of the same family, for
  every other node; pairs where both addresses are null are skipped. A node without
  an address initiates towards nodes that have one. Between two nodes that both have
  addresses, the one whose (organization, common_name) sorts first initiates, so the
  two never race; the other only responds (`unique=replace` would make a race
  harmless, but a single initiator also halves the IKE traffic at start).
* Each connection has its own XFRM interface with one static if_id in and out
  (aronet.core.names), so the CHILD_SA's traffic has an interface babel can run on.
* IPv4 reaches its owner through the owner's SRv6 End.DX4 SID: every IPv4 prefix of
  another node is a seg6 encap route to `{its network}:ffff::b`, and babel routes
  only IPv6 (BIRD 2.14 and later also announce this node's IPv4 prefixes, for peers
  that route IPv4 over babel; aronet imports none). Why: BIRD 2.0.12's babel has no
  IPv4-via-IPv6 next hops and no extended next hop; the alternative, an IPv4 address
  on every tunnel, needs an IPv4 plan for tunnels that users would have to keep free.
  The seed format already reserves {network}:ffff::/80 for SRv6, so the SID is known
  from the registry alone.
* VRF mode: the kernel looks the outer IPv6 packet up in the main table after seg6
  encapsulation, not in the VRF's. The host routes aronet installs anyway (every other
  node's network and prefixes, `dev <vrf>` in the main table) are a route leak that
  sends that packet straight back into the VRF, where babel's routes forward it. No
  extra rule is needed; the VM tests prove the path.
* netns mode: the namespace is the router (tunnels, babel, SIDs, this node's overlay
  addresses on `lo`); a veth pair with fixed link-local addresses joins it to the
  host, the namespace's default routes point at the host, and the host routes every
  overlay prefix into the namespace (IPv4 via the IPv6 link-local next hop).
* Routing daemon (`daemon.routing`): BIRD or babeld, rendered from the same inputs
  into one RoutingConfig. BIRD announces this node's own prefixes from static
  unreachable routes of its own; for babeld the planner installs those unreachable
  routes (aronet's protocol, the overlay table) and babeld redistributes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from ipaddress import IPv6Network, ip_interface, ip_network

from ..model import Config, Node, Registry
from . import babeld, bird, names, nft
from .state import (
    Address,
    Connection,
    Namespace,
    NftTable,
    Resource,
    Route,
    RoutingConfig,
    State,
    Sysctl,
    Veth,
    Vrf,
    XfrmInterface,
)

MAIN_TABLE = 254
SRV6_OVERHEAD = 40 + 24  # seg6 "mode encap": outer IPv6 header + an SRH with one segment
DEFAULT_BIRD_VERSION = (2, 0, 12)


@dataclass(frozen=True)
class Desired:
    """The planner's answer: the resources, plus what the node should observe once
    converged (the lab's checks compare against these)."""

    state: State
    router_ns: str  # where tunnels, babel and SIDs live ("" = the agent's namespace)
    overlay_table: int
    sids: dict = field(default_factory=dict)  # "End" / "End.DX4" -> address
    babel_routes: tuple[tuple[str, str], ...] = ()  # (prefix, owner) babel should learn
    notes: tuple[str, ...] = ()


def identity(node: Node, serial_number: int) -> str:
    return f"O={node.organization}, CN={node.common_name}, serialNumber={serial_number}"


def initiates(local: Node, local_addr, remote: Node, remote_addr) -> bool:
    if local_addr is None:
        return True  # behind NAT or unknown: only we can start
    if remote_addr is None:
        return False
    return local.key < remote.key


def connection_keys(local: Node, remote: Node) -> list[tuple]:
    """(peer org, peer cn, family, local serial, remote serial) for every endpoint pair
    that can form a tunnel."""
    keys = []
    for le in local.endpoints:
        for re_ in remote.endpoints:
            if le.family != re_.family or (le.address is None and re_.address is None):
                continue
            keys.append((remote.organization, remote.common_name, le.family,
                         le.serial_number, re_.serial_number))
    return keys


def peers(config: Config, registry: Registry) -> list[Node]:
    return [n for n in registry.nodes if n.key != config.node.key]


def desired(config: Config, registry: Registry,
            bird_version: tuple[int, ...] = DEFAULT_BIRD_VERSION) -> Desired:
    me, s = config.node, config.settings
    others = peers(config, registry)
    netns = s.mode == "netns"
    router = s.ifname if netns else ""
    table = MAIN_TABLE if netns else s.route_table
    host_end, ns_end = names.veth_names(s.ifname)
    ovl_dev = ns_end if netns else s.ifname  # device that carries SID and encap routes
    res: list[Resource] = []

    # --- isolation
    if netns:
        res += [
            Namespace(router),
            Veth("", host_end, ns_end, router),
            Address("", host_end, f"{names.VETH_HOST_LL}/64", nodad=True),
            Address(router, ns_end, f"{names.VETH_NS_LL}/64", nodad=True),
            Route(router, MAIN_TABLE, "::/0", dev=ns_end, gateway=names.VETH_HOST_LL),
            Route(router, MAIN_TABLE, "0.0.0.0/0", dev=ns_end, gateway=names.VETH_HOST_LL),
        ]
        addr_dev = "lo"
    else:
        res.append(Vrf("", s.ifname, s.route_table))
        addr_dev = s.ifname
    res.append(Address(router, addr_dev, f"{me.address}/128", nodad=True))
    for ip in s.extra_ip:
        host = ip_interface(f"{ip.ip}/{ip.max_prefixlen}")
        res.append(Address(router, addr_dev, str(host), nodad=ip.version == 6))

    # --- sysctls
    res += sysctls(router, netns)

    # --- IKE connections and their XFRM interfaces
    ll = names.link_local(me.key)
    all_keys = [k for peer in others for k in connection_keys(me, peer)]
    if_ids = names.allocate_if_ids(me.key, all_keys)
    by_key = {n.key: n for n in others}
    for key in sorted(all_keys):
        peer = by_key[key[:2]]
        family, lsn, rsn = key[2:]
        le = next(e for e in me.endpoints if e.family == family and e.serial_number == lsn)
        re_ = next(e for e in peer.endpoints if e.family == family and e.serial_number == rsn)
        if_id = if_ids[key]
        name = names.tunnel_ifname(s.tunnel_prefix, if_id)
        res.append(Connection(
            name=name, peer=peer.name, family=family, if_id=if_id,
            local_addrs="%any", remote_addrs=re_.address or "%any",
            local_port=le.port, remote_port=re_.port,
            local_id=identity(me, lsn), remote_id=identity(peer, rsn),
            remote_pubkey=peer.public_key,
            local_pubkey=me.public_key,
            initiate=initiates(me, le.address, peer, re_.address),
            dpd_delay=s.dpd_delay,
        ))
        res.append(XfrmInterface(router, name, if_id, s.mtu,
                                 master=None if netns else s.ifname, peer=peer.name))
        res.append(Address(router, name, f"{ll}/64", nodad=True))

    # --- SRv6: this node's SIDs
    sid_end = names.sid(me.sid_range, names.SID_END)
    sid_dx4 = names.sid(me.sid_range, names.SID_DX4)
    res.append(Route(router, table, f"{sid_end}/128", dev=ovl_dev, encap=("seg6local", "End")))
    res.append(Route(router, table, f"{sid_dx4}/128", dev=ovl_dev,
                     encap=("seg6local", "End.DX4", "0.0.0.0")))

    # --- routes to other nodes: IPv4 via their End.DX4 SID; host routes into the overlay.
    # The route's MTU is the tunnel's: the kernel takes the seg6 encapsulation's
    # headroom off it by itself (measured: mtu 1336 let only 1272-byte IPv4 through).
    v4_mtu = s.mtu - SRV6_OVERHEAD
    babel_routes = []
    origins: dict[str, tuple[str, ...]] = {}  # what babel imports -> its owner's router ids
    for peer in others:
        peer_dx4 = str(names.sid(peer.sid_range, names.SID_DX4))
        for p in peer.ipv4_prefixes:
            res.append(Route(router, table, str(p), dev=ovl_dev, encap=("seg6", "encap", peer_dx4),
                             mtu=s.mtu, peer=peer.name))
        babel_routes += [(str(peer.network.network), peer.name)]
        babel_routes += [(str(p), peer.name) for p in peer.ipv6_prefixes]
        origins |= dict.fromkeys([str(peer.network.network), *map(str, peer.ipv6_prefixes)],
                                 names.babel_router_ids(peer.key))
        res += host_routes(peer.network.network, peer.prefixes, netns, host_end, s.ifname,
                           peer.name)
    if netns:
        # the host reaches this node's own overlay addresses in the namespace
        own = [me.network.network] + [ip_interface(f"{i.ip}/{i.max_prefixlen}").network
                                      for i in s.extra_ip if i.version == 4]
        res += host_routes(own[0], own[1:], netns, host_end, s.ifname, me.name)

    # --- nftables and the routing daemon
    every = [me, *others]
    owned4 = sorted({p for n in every for p in n.ipv4_prefixes})
    owned6 = sorted({n.network.network for n in every} | {p for n in every for p in n.ipv6_prefixes})
    tunnel_pattern = f"{s.tunnel_prefix}*"
    rules = nft.ruleset(tunnel_pattern=tunnel_pattern, owned4=owned4, owned6=owned6,
                        mss4=v4_mtu - 40, mss6=s.mtu - 60,
                        sids={"End": str(sid_end), "End.DX4": str(sid_dx4)})
    res.append(NftTable(router, nft.FAMILY, nft.TABLE, nft.summary(rules),
                        json.dumps(rules, sort_keys=True)))
    own = [str(me.network.network)] + [str(p) for p in me.ipv6_prefixes]
    others = sorted({p for p, _ in babel_routes}, key=_net_sort)
    hello, update = round(s.babel_hello * 1000), round(s.babel_update * 1000)
    if s.routing == "babeld":
        tunnels = tuple(x.name for x in res if isinstance(x, XfrmInterface))
        res += [Route(router, table, p, type="unreachable") for p in own]
        text = babeld.render(node_name=me.name, router_id=names.babel_router_id(me.key),
                             own=own, others=others, origins=origins if s.prefix_origin else None,
                             babel=babeld.BabeldSettings(tuple(sorted(tunnels)), hello, update, table))
    else:
        text = bird.render(node_name=me.name, router_id=names.router_id(me.key), own=own,
                           others=others, version=bird_version,
                           own4=[str(p) for p in me.ipv4_prefixes],
                           babel=bird.BabelSettings(tunnel_pattern, hello, update,
                                                    None if netns else table))
    res.append(RoutingConfig(router, s.routing, text))

    return Desired(
        state=State(frozenset(res)),
        router_ns=router,
        overlay_table=table,
        sids={"End": str(sid_end), "End.DX4": str(sid_dx4)},
        babel_routes=tuple(sorted(babel_routes)),
        notes=NOTES,
    )


def host_routes(network: IPv6Network, prefixes, netns: bool, host_end: str, vrf: str,
                owner: str) -> list[Route]:
    """Routes in the agent's namespace that send a node's networks into the overlay:
    via the veth (IPv4 via the IPv6 link-local next hop) or into the VRF device."""
    out = []
    for p in (network, *prefixes):
        if netns:
            out.append(Route("", MAIN_TABLE, str(p), dev=host_end, gateway=names.VETH_NS_LL,
                             peer=owner))
        else:
            out.append(Route("", MAIN_TABLE, str(p), dev=vrf, peer=owner))
    return out


def sysctls(router: str, netns: bool) -> list[Sysctl]:
    scope = "netns" if netns else "host"
    out = [
        Sysctl(router, "net.ipv6.conf.all.forwarding", "1", scope,
               why="route between tunnels and the host"),
        Sysctl(router, "net.ipv4.ip_forward", "1", scope,
               why="forward IPv4 that End.DX4 decapsulates"),
        Sysctl(router, "net.ipv6.conf.all.seg6_enabled", "1", scope,
               why="accept packets with a segment routing header"),
        Sysctl("", "net.netfilter.nf_hooks_lwtunnel", "1", "kernel", restorable=False,
               why="let nftables see packets that SRv6 decapsulates; the kernel refuses "
                   "to set it back to 0"),
    ]
    if not netns:
        out += [
            Sysctl("", "net.ipv4.tcp_l3mdev_accept", "1", "host",
                   why="host TCP sockets accept connections arriving through the VRF"),
            Sysctl("", "net.ipv4.udp_l3mdev_accept", "1", "host",
                   why="host UDP sockets accept datagrams arriving through the VRF"),
        ]
    return out


NOTES = (
    "net.core.devconf_inherit_init_net exists only in the root namespace; aronet does "
    "not need it, because it sets the router namespace's own sysctls.",
    "'host' sysctls are restored when the agent stops; 'kernel' sysctls cannot be.",
)


def _net_sort(text: str):
    n = ip_network(text)
    return (n.version, n.network_address, n.prefixlen)
