"""The kernel adapters (netlink and nft) on the VM's stock kernel, in both modes.

The host tier (tests/netns) cannot create VRFs or XFRM interfaces; here the real
planner's desired state for a node of the example mesh ("moon" in VRF mode, "sun" in
netns mode) goes through Netlink.apply() and Nft.apply() whole. Each test's agent
runs with base_ns = a fresh namespace, so the guest's root namespace is never touched
(a module fixture checks that), except for net.netfilter.nf_hooks_lwtunnel, which the
kernel keeps once for all namespaces.

What the adapters did is read back with `ip -j` and `nft -j`, independent readers,
and compared with expectations computed from the example's documents (NODES), not
only with the planner's output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import secrets
import subprocess
import sys
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path

import pytest
from pyroute2 import netns as pr_netns

from aronet.adapters.netlink import Netlink
from aronet.adapters.nft import Nft
from aronet.core import names, planner
from aronet.core import nft as core_nft
from aronet.core.diff import diff
from aronet.core.state import (
    Address,
    NftTable,
    Route,
    State,
    Sysctl,
    Veth,
    Vrf,
    XfrmInterface,
)
from aronet.errors import ApplyError
from aronet.load import build_config, build_registry
from aronet.model import Settings


def _load_builders():
    """tests/unit/builders.py (valid example documents), without touching sys.path."""
    path = Path(__file__).resolve().parents[1] / "unit" / "builders.py"
    spec = importlib.util.spec_from_file_location("aronet_test_builders", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


builders = _load_builders()

NETLINK_KINDS = ("netns", "sysctl", "vrf", "veth", "xfrm", "address", "route")
MODES = ("vrf", "netns")
NODE_OF_MODE = {"vrf": "moon", "netns": "sun"}  # the example's node in each mode
VRF_TABLE = 4321  # not the default 128: the setting must reach the kernel
MTU = 1420  # not the default 1400, likewise
MAIN = 254
NETNS_PREFIX = "adapt"  # base namespaces: "adapt-<hex>"
ROUTER_SYSCTLS = {  # per namespace, where the router lives
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.all.seg6_enabled": "1",
}
VRF_HOST_SYSCTLS = {"net.ipv4.tcp_l3mdev_accept": "1", "net.ipv4.udp_l3mdev_accept": "1"}
KERNEL_SYSCTL = "net.netfilter.nf_hooks_lwtunnel"
NS_SYSCTLS = (*ROUTER_SYSCTLS, *VRF_HOST_SYSCTLS)

# ---------------------------------------------------------------- readers


def ip(ns: str, *args: str) -> str:
    """`ip [-n ns] args`; ns "" is the guest's root namespace."""
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr.strip()}"
    return proc.stdout


def ip_json(ns: str, *args: str):
    return json.loads(ip(ns, "-j", *args) or "[]")


def links(ns: str) -> dict[str, dict]:
    return {link["ifname"]: link for link in ip_json(ns, "-d", "link", "show")}


def addresses(ns: str, dev: str) -> set[str]:
    (link,) = ip_json(ns, "addr", "show", "dev", dev)
    return {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]}


def as_int(value) -> int:
    return value if isinstance(value, int) else int(value, 0)  # "0x2a" from iproute2


def aronet_routes(ns: str) -> dict[tuple[int, str], dict]:
    """Every route with protocol 211, in every table, by (table, dst), as `ip -j`
    prints it (with "table" made a number and "dst" a network)."""
    out = {}
    for family, default in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
        for r in ip_json(ns, "-d", family, "route", "show", "table", "all"):
            if str(r.get("protocol")) != str(names.RTPROT_ARONET):
                continue
            table = {"main": MAIN, "local": 255, "default": 253}.get(r["table"]) or int(r["table"])
            dst = default if r["dst"] == "default" else str(ip_network(r["dst"]))
            assert (table, dst) not in out, f"two routes for {dst} in table {table}"
            out[(table, dst)] = r
    return out


def read_sysctl(ns: str, name: str) -> str:
    path = "/proc/sys/" + name.replace(".", "/")
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["cat", path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr.strip()}"
    return " ".join(proc.stdout.split())


def netns_names() -> set[str]:
    return {n["name"] for n in json.loads(ip("", "-j", "netns", "list") or "[]")}


def nft_tables(ns: str) -> set[tuple[str, str]]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["nft", "-j", "list", "tables"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr.strip()}"
    objs = json.loads(proc.stdout)["nftables"]
    return {(o["table"]["family"], o["table"]["name"]) for o in objs if "table" in o}


def netnsid_names(ns: str) -> dict[int, str]:
    """The namespaces `ns` knows by id (link-netnsid), with their /run/netns names."""
    return {e["nsid"]: e.get("name") for e in ip_json(ns, "netns", "list-id")}


# ---------------------------------------------------------------- expectations from NODES


def peers(me: str) -> dict[str, dict]:
    return {n: spec for n, spec in builders.NODES.items() if n != me}


def network_of(spec: dict) -> str:
    return str(ip_network(spec["network"], strict=False))


def dx4_sid(spec: dict) -> str:
    # {network}:ffff::/80 is reserved for SRv6; End.DX4 is ::b in it, End ::a (the
    # original aronet's offsets: README, Interoperability).
    return str(ip_network(spec["network"], strict=False).network_address + (0xFFFF << 48) + 0xB)


def end_sid(spec: dict) -> str:
    return str(ip_network(spec["network"], strict=False).network_address + (0xFFFF << 48) + 0xA)


def v4(prefixes) -> list[str]:
    return [p for p in prefixes if ip_network(p).version == 4]


def check_tunnel(link: dict, want: XfrmInterface, *, master: str | None) -> None:
    name = want.name
    assert link["linkinfo"]["info_kind"] == "xfrm", (name, link["linkinfo"])
    assert as_int(link["linkinfo"]["info_data"]["if_id"]) == want.if_id, name
    assert "MULTICAST" in link["flags"], (name, link["flags"])  # the kernel makes it without
    assert "UP" not in link["flags"], (name, link["flags"])  # up only with a CHILD_SA (the agent)
    assert link["mtu"] == MTU, (name, link["mtu"])
    assert link.get("master") == master, (name, link.get("master"))
    assert link["inet6_addr_gen_mode"] == "none", name  # no kernel-made link-local


# ---------------------------------------------------------------- the node under test


@dataclasses.dataclass
class Node:
    """One agent's kernel side: the planner's desired state for an example node, the
    adapters, and the namespace they count as their own."""

    name: str
    settings: Settings
    desired: planner.Desired
    base: str
    netlink: Netlink
    nft: Nft

    @property
    def router(self) -> str:
        """The router's namespace as the adapters name it ("" = base)."""
        return self.desired.router_ns

    @property
    def router_real(self) -> str:
        return self.router or self.base

    @property
    def kernel(self) -> State:
        return State(frozenset(r for r in self.desired.state.resources
                               if r.kind in NETLINK_KINDS))

    @property
    def tables(self) -> State:
        return State(frozenset(self.desired.state.of(NftTable)))

    def want(self, kind) -> list:
        return self.desired.state.of(kind)

    @property
    def sysctls(self) -> list[Sysctl]:
        return self.want(Sysctl)

    def pending(self) -> tuple:
        """What the adapters would still do: empty when in sync."""
        return (diff(self.kernel, self.netlink.observe(self.sysctls))
                + diff(self.tables, self.nft.observe([self.router])))

    def converge(self) -> None:
        first = diff(self.kernel, self.netlink.observe(self.sysctls))
        assert first, "a fresh namespace already in sync?"
        self.netlink.apply(first)
        self.nft.apply(diff(self.tables, self.nft.observe([self.router])))


def plan_node(mode: str, base: str) -> Node:
    node = NODE_OF_MODE[mode]
    pairs = {org: builders.key_pair() for org in builders.ORGANIZATIONS}
    configs, registry = builders.world_documents(pairs, inline=True)
    tag = secrets.token_hex(2)
    # BIRD in both modes, so that the routes below are the same set (a babeld node
    # also has an unreachable route for its own network: tests/vm/test_babeld_lab.py)
    configs[node]["daemon"].update(ifname=f"adr{tag}", tunnel_prefix=f"t{tag}-", mtu=MTU,
                                   route_table=VRF_TABLE, routing="bird")
    config = build_config(configs[node], f"{node}/config.json")
    assert config.settings.mode == mode
    desired = planner.desired(config, build_registry(registry, "registry.json"))
    s = config.settings
    return Node(node, s, desired, base, Netlink(s, base_ns=base), Nft(base_ns=base))


@pytest.fixture(scope="module", autouse=True)
def root_untouched():
    """The guest's root namespace looks the same after the module as before: no new
    devices, no protocol-211 routes, no nft table, the same per-namespace sysctls; and
    no namespace of these tests is left over."""

    def snapshot():
        return (set(links("")), aronet_routes(""), nft_tables(""),
                {n: read_sysctl("", n) for n in NS_SYSCTLS})

    before = snapshot()
    yield
    after = snapshot()
    assert after[0] == before[0], f"devices changed in the root namespace: {after[0] ^ before[0]}"
    assert after[1:] == before[1:], "routes, nft tables or sysctls changed in the root namespace"
    left = sorted(n for n in netns_names()
                  if n.startswith((f"{NETNS_PREFIX}-", "adr", "aronet-probe-")))
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def make_node(netns):
    """Factory: make_node(mode) -> a Node with a fresh base namespace (lo up). The
    router namespace (netns mode) is removed afterwards, whatever happened; the base
    namespace goes with the `netns` fixture."""
    made: list[Node] = []

    def make(mode: str) -> Node:
        base = netns(NETNS_PREFIX)
        ip(base, "link", "set", "lo", "up")
        node = plan_node(mode, base)
        made.append(node)
        return node

    yield make
    for node in made:
        if node.settings.mode == "netns" and node.settings.ifname in pr_netns.listnetns():
            with contextlib.suppress(OSError):
                pr_netns.remove(node.settings.ifname)


# ---------------------------------------------------------------- preflight


@pytest.mark.parametrize("mode", MODES)
def test_preflight_finds_nothing_missing_in_the_guest(netns, mode):
    base = netns(NETNS_PREFIX)
    s = Settings(mode=mode, ifname=f"adr{secrets.token_hex(2)}", tunnel_prefix="tpf-")
    assert Netlink(s, base_ns=base).preflight() == []
    assert not [n for n in netns_names() if n.startswith("aronet-probe-")]
    assert set(links(base)) == {"lo"}


# ---------------------------------------------------------------- VRF mode


def test_vrf_mode_converges_and_the_kernel_agrees(make_node):
    node = make_node("vrf")
    s, base, me = node.settings, node.base, builders.NODES["moon"]
    vrf = s.ifname
    node.converge()
    assert node.pending() == ()
    # All adds once more (EEXIST everywhere; nft replaces its table): still in sync.
    node.netlink.apply(diff(node.kernel, State()))
    node.nft.apply(diff(node.tables, State()))
    assert node.pending() == ()

    ls = links(base)
    # The VRF device, with its table.
    assert ls[vrf]["linkinfo"]["info_kind"] == "vrf"
    assert ls[vrf]["linkinfo"]["info_data"]["table"] == VRF_TABLE
    assert "UP" in ls[vrf]["flags"]
    assert addresses(base, vrf) == {f"{ip_interface(me['network']).ip}/128",
                                    *(f"{a}/32" for a in me["daemon"]["extra_ip"])}

    # One tunnel per peer (moon has one IPv4 endpoint; every peer has one IPv4
    # endpoint), each with its static if_id, MULTICAST, the MTU, in the VRF.
    tunnels = node.want(XfrmInterface)
    assert sorted(t.peer.split("/")[-1] for t in tunnels) == sorted(peers("moon"))
    assert {n for n in ls if n.startswith(s.tunnel_prefix)} == {t.name for t in tunnels}
    assert len({t.if_id for t in tunnels}) == len(tunnels)
    for t in tunnels:
        check_tunnel(ls[t.name], t, master=vrf)
        (ll,) = [a.address for a in node.want(Address) if a.dev == t.name]
        assert ip_address(ll.split("/")[0]).is_link_local
        assert addresses(base, t.name) == {ll}

    # Routes with protocol 211: exactly these, where they belong.
    routes = aronet_routes(base)
    sid_routes = {(VRF_TABLE, f"{end_sid(me)}/128"), (VRF_TABLE, f"{dx4_sid(me)}/128")}
    encap_routes = {(VRF_TABLE, p) for spec in peers("moon").values() for p in v4(spec["prefixes"])}
    host_routes = {(MAIN, str(ip_network(p))) for spec in peers("moon").values()
                   for p in (network_of(spec), *spec["prefixes"])}
    assert set(routes) == sid_routes | encap_routes | host_routes
    end = routes[(VRF_TABLE, f"{end_sid(me)}/128")]
    assert (end["encap"], end["action"], end["dev"]) == ("seg6local", "End", vrf)
    dx4 = routes[(VRF_TABLE, f"{dx4_sid(me)}/128")]
    assert (dx4["encap"], dx4["action"], dx4["nh4"], dx4["dev"]) == (
        "seg6local", "End.DX4", "0.0.0.0", vrf)
    for spec in peers("moon").values():
        for p in v4(spec["prefixes"]):
            r = routes[(VRF_TABLE, p)]
            assert (r["encap"], r["mode"], r["segs"], r["dev"]) == (
                "seg6", "encap", [dx4_sid(spec)], vrf), r
            # the tunnel's MTU: the kernel takes the encapsulation off it itself
            assert r["metrics"] == [{"mtu": MTU}], r
    for key in host_routes:
        r = routes[key]
        assert r["dev"] == vrf and "gateway" not in r and "via" not in r, r
        assert r.get("encap") is None, r

    # Sysctls, in the agent's (base) namespace.
    assert {x.name for x in node.sysctls} == {*ROUTER_SYSCTLS, *VRF_HOST_SYSCTLS, KERNEL_SYSCTL}
    assert all(x.ns == "" for x in node.sysctls)
    for name, value in {**ROUTER_SYSCTLS, **VRF_HOST_SYSCTLS, KERNEL_SYSCTL: "1"}.items():
        assert read_sysctl(base, name) == value, name

    # The nft table in the base namespace.
    assert (core_nft.FAMILY, core_nft.TABLE) in nft_tables(base)
    assert not [n for n in netns_names() if n == s.ifname]  # no router namespace in VRF mode


# ---------------------------------------------------------------- netns mode


def test_netns_mode_converges_and_the_kernel_agrees(make_node):
    node = make_node("netns")
    s, base, me = node.settings, node.base, builders.NODES["sun"]
    router = s.ifname
    host_end, ns_end = names.veth_names(s.ifname)
    node.converge()
    assert node.pending() == ()
    node.netlink.apply(diff(node.kernel, State()))
    node.nft.apply(diff(node.tables, State()))
    assert node.pending() == ()

    assert router in netns_names()
    base_links, router_links = links(base), links(router)

    # Tunnels: made in the base namespace (where charon's SAs live: the link-netns
    # is the base), moved into the router; none left in the base.
    tunnels = node.want(XfrmInterface)
    assert sorted(t.peer.split("/")[-1] for t in tunnels) == sorted(peers("sun"))
    assert not [n for n in base_links if n.startswith(s.tunnel_prefix)], base_links.keys()
    assert {n for n in router_links if n.startswith(s.tunnel_prefix)} == {t.name for t in tunnels}
    ids = netnsid_names(router)
    for t in tunnels:
        link = router_links[t.name]
        check_tunnel(link, t, master=None)
        assert ids.get(link.get("link_netnsid")) == base, (t.name, link.get("link_netnsid"), ids)
        (ll,) = [a.address for a in node.want(Address) if a.dev == t.name]
        assert addresses(router, t.name) == {ll}

    # The veth pair: the host end in the base, the other end in the router.
    host = base_links[host_end]
    assert host["linkinfo"]["info_kind"] == "veth" and "UP" in host["flags"]
    assert netnsid_names(base).get(host.get("link_netnsid")) == router
    peer = router_links[ns_end]
    assert peer["linkinfo"]["info_kind"] == "veth" and "UP" in peer["flags"]
    assert netnsid_names(router).get(peer.get("link_netnsid")) == base
    assert addresses(base, host_end) == {f"{names.VETH_HOST_LL}/64"}
    assert addresses(router, ns_end) == {f"{names.VETH_NS_LL}/64"}
    assert addresses(router, "lo") >= {f"{ip_interface(me['network']).ip}/128"}
    assert set(base_links) == {"lo", host_end}

    # Router side: defaults to the host (IPv4 via the IPv6 next hop), SIDs, encap.
    inside = aronet_routes(router)
    encap = {(MAIN, p) for spec in peers("sun").values() for p in v4(spec["prefixes"])}
    assert set(inside) == {(MAIN, "::/0"), (MAIN, "0.0.0.0/0"), (MAIN, f"{end_sid(me)}/128"),
                           (MAIN, f"{dx4_sid(me)}/128"), *encap}
    d6, d4 = inside[(MAIN, "::/0")], inside[(MAIN, "0.0.0.0/0")]
    assert (d6["gateway"], d6["dev"]) == (names.VETH_HOST_LL, ns_end)
    assert (d4["via"], d4["dev"]) == ({"family": "inet6", "host": names.VETH_HOST_LL}, ns_end)
    end = inside[(MAIN, f"{end_sid(me)}/128")]
    assert (end["encap"], end["action"], end["dev"]) == ("seg6local", "End", ns_end)
    dx4 = inside[(MAIN, f"{dx4_sid(me)}/128")]
    assert (dx4["encap"], dx4["action"], dx4["nh4"], dx4["dev"]) == (
        "seg6local", "End.DX4", "0.0.0.0", ns_end)
    for spec in peers("sun").values():
        for p in v4(spec["prefixes"]):
            r = inside[(MAIN, p)]
            assert (r["encap"], r["mode"], r["segs"], r["dev"]) == (
                "seg6", "encap", [dx4_sid(spec)], ns_end), r
            # the tunnel's MTU: the kernel takes the encapsulation off it itself
            assert r["metrics"] == [{"mtu": MTU}], r

    # Host side: every overlay prefix (the peers' and this node's own network) into
    # the namespace; IPv4 via the IPv6 link-local next hop.
    outside = aronet_routes(base)
    want = {str(ip_network(p)) for spec in peers("sun").values()
            for p in (network_of(spec), *spec["prefixes"])} | {network_of(me)}
    assert set(outside) == {(MAIN, p) for p in want}
    for (_, dst), r in outside.items():
        assert r["dev"] == host_end, r
        if ip_network(dst).version == 4:
            assert r["via"] == {"family": "inet6", "host": names.VETH_NS_LL}, r
        else:
            assert r["gateway"] == names.VETH_NS_LL, r

    # Sysctls: the router's in the router namespace; only the kernel-wide one at home.
    assert {(x.ns, x.name) for x in node.sysctls} == {
        *((router, n) for n in ROUTER_SYSCTLS), ("", KERNEL_SYSCTL)}
    for name, value in ROUTER_SYSCTLS.items():
        assert read_sysctl(router, name) == value, name
    assert read_sysctl(base, KERNEL_SYSCTL) == "1"

    # The nft table lives in the router namespace only.
    assert (core_nft.FAMILY, core_nft.TABLE) in nft_tables(router)
    assert (core_nft.FAMILY, core_nft.TABLE) not in nft_tables(base)


# ---------------------------------------------------------------- tunnel up/down


@pytest.mark.parametrize("mode", MODES)
def test_set_link_toggles_a_tunnel_and_link_states_follows(make_node, mode):
    node = make_node(mode)
    node.converge()
    ns, real = node.router, node.router_real
    tunnel, *others = node.want(XfrmInterface)
    assert others  # the others must stay as they are
    assert node.netlink.link_states(ns)[tunnel.name] is False  # created down

    node.netlink.set_link(ns, tunnel.name, True)
    states = node.netlink.link_states(ns)
    assert states[tunnel.name] is True
    assert all(states[t.name] is False for t in others)
    link = links(real)[tunnel.name]
    assert "UP" in link["flags"] and as_int(link["linkinfo"]["info_data"]["if_id"]) == tunnel.if_id

    node.netlink.set_link(ns, tunnel.name, False)
    assert node.netlink.link_states(ns)[tunnel.name] is False
    link = links(real)[tunnel.name]
    assert "UP" not in link["flags"]
    assert as_int(link["linkinfo"]["info_data"]["if_id"]) == tunnel.if_id  # the same device
    node.netlink.set_link(ns, tunnel.name, True)
    # Whatever the down took away, one pass of the agent's resync puts back; it does
    # not touch the administrative state.
    node.netlink.apply(diff(node.kernel, node.netlink.observe(node.sysctls)))
    assert node.pending() == ()
    assert node.netlink.link_states(ns)[tunnel.name] is True

    with pytest.raises(ApplyError) as e:
        node.netlink.set_link(ns, f"{node.settings.tunnel_prefix}nope", False)
    assert "ENODEV" in e.value.cause
    assert node.netlink.link_states("adapt-never-made") == {}


@pytest.mark.parametrize("mode", MODES)
def test_the_tunnel_link_local_is_back_as_soon_as_the_tunnel_is_up(make_node, mode):
    """Linux flushes link-local addresses on down (keep_addr_on_down keeps only global
    ones); set_link(up) puts the tunnel's back at once, because babel needs its next
    hop before the agent's next resync."""
    node = make_node(mode)
    node.converge()
    ns, real = node.router, node.router_real
    tunnel = node.want(XfrmInterface)[0]
    mine = [a for a in node.want(Address) if a.dev == tunnel.name]
    (ll,) = [a.address for a in mine]
    assert addresses(real, tunnel.name) == {ll}  # given while the device was down, and kept
    node.netlink.set_link(ns, tunnel.name, True)
    assert addresses(real, tunnel.name) == {ll}

    node.netlink.set_link(ns, tunnel.name, False)
    assert addresses(real, tunnel.name) == set()  # the kernel flushed it
    node.netlink.set_link(ns, tunnel.name, True, mine)
    assert node.netlink.link_states(ns)[tunnel.name] is True
    assert addresses(real, tunnel.name) == {ll}
    assert node.pending() == ()


# ---------------------------------------------------------------- removal


@pytest.mark.parametrize("mode", MODES)
def test_remove_all_leaves_nothing_and_restores_sysctls(make_node, mode):
    node = make_node(mode)
    s, base = node.settings, node.base
    before = {n: read_sysctl(base, n) for n in NS_SYSCTLS}
    node.converge()
    assert node.pending() == ()
    changed = [x for x in node.sysctls if x.ns == "" and x.restorable]
    if mode == "vrf":  # the restore below must be able to fail: values did change
        assert {x.name for x in changed} == {*ROUTER_SYSCTLS, *VRF_HOST_SYSCTLS}
        assert all(read_sysctl(base, x.name) != before[x.name] for x in changed)

    node.netlink.remove_all()
    node.nft.apply(diff(State(), node.nft.observe([node.router])))

    # What the adapters see of their own: nothing (no sysctl is "theirs" now).
    assert node.netlink.observe().resources == frozenset()
    assert node.nft.observe([node.router]).resources == frozenset()
    # What the kernel says.
    assert s.ifname not in netns_names()  # no router namespace
    ls = links(base)
    assert set(ls) == {"lo"}, ls.keys()  # no VRF, no veth, no tunnels
    assert not [n for n, link in ls.items()
                if link.get("linkinfo", {}).get("info_kind") in ("vrf", "xfrm")]
    assert aronet_routes(base) == {}
    assert (core_nft.FAMILY, core_nft.TABLE) not in nft_tables(base)
    # Sysctls: the base namespace's are back; the kernel-wide one cannot go back.
    assert {n: read_sysctl(base, n) for n in NS_SYSCTLS} == before
    assert read_sysctl(base, KERNEL_SYSCTL) == "1"

    # A second time finds nothing to do and does no harm.
    node.netlink.remove_all()
    assert node.netlink.observe().resources == frozenset()


@pytest.mark.parametrize("mode", MODES)
def test_a_fresh_agent_removes_what_a_crashed_one_left(make_node, mode):
    """diff(State(), observe()) from a new adapter object, as an agent restarting
    after kill -9 does: everything of aronet's goes, although the sysctls' old
    values died with the first agent (they stay set: nothing to restore them to)."""
    node = make_node(mode)
    node.converge()
    assert node.pending() == ()
    fresh = Netlink(node.settings, base_ns=node.base)
    seen = fresh.observe()
    assert seen.of(XfrmInterface) and seen.of(Route)
    assert bool(seen.of(Vrf)) == (mode == "vrf") and bool(seen.of(Veth)) == (mode == "netns")
    fresh.apply(diff(State(), seen))
    Nft(base_ns=node.base).apply(diff(State(), Nft(base_ns=node.base).observe([node.router])))

    assert fresh.observe().resources == frozenset()
    assert node.settings.ifname not in netns_names()
    assert set(links(node.base)) == {"lo"}
    assert aronet_routes(node.base) == {}
    assert (core_nft.FAMILY, core_nft.TABLE) not in nft_tables(node.base)
