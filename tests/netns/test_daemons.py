"""The agent's daemons on the host kernel, in throwaway namespaces joined by a veth:
two charons reach IKE_SA establishment through the vici adapter (the CHILD_SA needs
kernel ESP, which this kernel lacks, so it stops there), a killed charon is restarted
by the supervisor and set up again, BIRD's babel converges over the veth, two
babelds do too (and take interface changes over their local socket), and babeld and
BIRD interoperate."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from aronet import keys
from aronet.adapters import charon
from aronet.adapters.babeld import Babeld
from aronet.adapters.bird import Bird, installed_version
from aronet.adapters.netlink import Netlink
from aronet.adapters.nft import Nft
from aronet.adapters.vici import Vici
from aronet.core import babeld, bird, names, planner, swan
from aronet.core.diff import diff
from aronet.core.state import Connection, State
from aronet.daemon.supervisor import Child
from aronet.errors import ApplyError
from aronet.load import build_config, build_registry
from aronet.model import Settings

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(charon.find_charon() is None or shutil.which("bird") is None,
                                 reason="strongswan-charon and bird2 are installed by ci/install-deps")]


def poll(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while (problem := check()) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {problem}")
        time.sleep(0.05)


@pytest.fixture
def pair(make_netns):
    """Two namespaces joined by a veth: 10.77.0.1 and 10.77.0.2."""
    a, b = make_netns("a"), make_netns("b")
    ends = ("art-va", "art-vb")
    subprocess.run(["ip", "-n", a, "link", "add", ends[0], "type", "veth", "peer", ends[1],
                    "netns", b], check=True)
    for i, (ns, dev) in enumerate(zip((a, b), ends, strict=True)):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"10.77.0.{i + 1}/24", "dev", dev], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
    return a, b, ends


@pytest.fixture
def world():
    ks = [keys.generate(), keys.generate()]
    docs, reg = [], []
    for i in range(2):
        ep = [{"address": f"10.77.0.{i + 1}", "port": 12025}]
        docs.append({"private_key": keys.private_pem(ks[i]).decode(), "organization": f"o{i}",
                     "common_name": f"n{i}", "daemon": {"network": f"fd7{i}::1/64"}, "endpoints": ep})
        reg.append({"public_key": keys.public_pem(ks[i]), "organization": f"o{i}",
                    "nodes": [{"common_name": f"n{i}", "endpoints": ep,
                               "remarks": {"network": f"fd7{i}::1/64"}}]})
    registry = build_registry(reg, "registry.json")
    return [build_config(d, f"n{i}.json") for i, d in enumerate(docs)], registry


def charon_argv(ns: str, runtime: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", "--", *charon.command(charon.find_charon(), runtime)]


def write_conf(runtime: str) -> str:
    os.makedirs(runtime, exist_ok=True)
    conf = os.path.join(runtime, "strongswan.conf")
    with open(conf, "w") as f:
        f.write(swan.strongswan_conf(vici_socket=os.path.join(runtime, "charon.vici"), port=12025))
    return conf


@pytest.fixture
def runtime_dirs():
    dirs = [f"/run/aronet-test-{secrets.token_hex(4)}" for _ in range(2)]
    yield dirs
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def test_two_charons_establish_an_ike_sa_through_the_vici_adapter(pair, world, runtime_dirs):
    configs, registry = world
    procs, vicis = [], []
    try:
        for ns, runtime in zip(pair[:2], runtime_dirs, strict=True):
            env = charon.environment(write_conf(runtime))
            procs.append(subprocess.Popen(charon_argv(ns, runtime), env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            v = Vici(os.path.join(runtime, "charon.vici"))
            v.connect(timeout=15)
            vicis.append(v)
        starts = []
        for v, cfg in zip(vicis, configs, strict=True):
            v.load_key(cfg.private_key_pem)
            want = State(frozenset(planner.desired(cfg, registry).state.of(Connection)))
            starts.append(v.apply(diff(want, v.observe())))
            assert diff(want, v.observe()) == ()  # loaded exactly what the planner wants
        assert [bool(s) for s in starts] == [True, False]  # o0/n0 sorts first: it initiates
        for v, s in zip(vicis, starts, strict=True):
            v.initiate(s)

        def established():
            sas = vicis[1].sas()
            states = [sa.get("state") for sa in sas.values()]
            return None if "ESTABLISHED" in states else f"IKE_SAs: {states}"
        poll(established)
        (sa,) = vicis[1].sas().values()
        assert sa["remote-id"] == "O=o0, CN=n0, serialNumber=0"
        assert not os.path.exists("/run/charon.pid")  # each charon had a private /run
        # a changed plan touches only what changed: unloading terminates the SA
        vicis[1].apply(diff(State(), vicis[1].observe()))
        assert vicis[1].observe() == State() and vicis[1].sas() == {}
    finally:
        for v in vicis:
            v.close()
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def test_a_killed_charon_is_restarted_and_set_up_again(make_netns, world, runtime_dirs):
    ns, runtime = make_netns("c"), runtime_dirs[0]
    configs, _ = world
    vici = Vici(os.path.join(runtime, "charon.vici"))
    setups = []

    async def on_start():
        def connect():
            vici.forget()
            vici.connect(timeout=15)
            vici.load_key(configs[0].private_key_pem)
        await asyncio.to_thread(connect)
        setups.append(vici.version())

    async def main():
        child = Child("charon", charon_argv(ns, runtime), charon.environment(write_conf(runtime)),
                      os.path.join(runtime, "charon.pid"), on_start=on_start)
        child.start()
        try:
            await asyncio.wait_for(child.ready.wait(), 30)
            first = child.pid
            os.kill(first, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while (len(setups) < 2 or child.pid in (None, first)) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert child.restarts == 1 and child.pid not in (None, first)
        finally:
            await child.stop()
            vici.close()

    asyncio.run(main())
    assert len(setups) == 2 and setups[0].startswith("charon")


def test_bird_babel_converges_over_a_veth(pair, tmp_path):
    a, b, ends = pair
    version = installed_version()
    birds, procs = [], []
    try:
        for i, ns in enumerate((a, b)):
            text = bird.render(node_name=f"o/n{i}", router_id=f"10.0.0.{i + 1}",
                               own=[f"fd7{i}::/64"], others=[f"fd7{1 - i}::/64"],
                               babel=bird.BabelSettings("art-v*", 200, 1000, None), version=version)
            b_ = Bird(conf_path=str(tmp_path / f"bird{i}.conf"), socket_path=str(tmp_path / f"bird{i}.ctl"),
                      netns=ns)
            assert b_.write(text) is True and b_.write(text) is False
            procs.append(subprocess.Popen(b_.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            birds.append(b_)
        poll(lambda: None if all(os.path.exists(x.socket_path) for x in birds) else "no sockets")

        def converged():
            routes = birds[0].routes()
            return None if [r["prefix"] for r in routes] == ["fd71::/64"] else f"routes: {routes}"
        poll(converged)
        (nb,) = birds[0].neighbors()
        assert nb["interface"] == ends[0] and nb["address"].startswith("fe80::")
        kernel = subprocess.run(["ip", "-n", a, "-6", "route", "show", "fd71::/64"],
                                capture_output=True, text=True).stdout
        assert "proto bird" in kernel and ends[0] in kernel
        birds[0].configure()  # a reconfigure with an unchanged file is accepted
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


BABEL_TABLE = 254  # netns mode: the router namespace's main table


def _own_route(ns: str, prefix: str) -> None:
    """What the planner installs for a babeld node: its own network, unreachable,
    with aronet's protocol; babeld redistributes it from there."""
    subprocess.run(["ip", "-n", ns, "route", "add", "unreachable", prefix,
                    "proto", str(names.RTPROT_ARONET)], check=True)


def _babeld(ns: str, i: int, dev: str, runtime: str, others=None) -> tuple[Babeld, str]:
    os.makedirs(runtime, exist_ok=True)
    b = Babeld(conf_path=f"{runtime}/babeld.conf", socket_path=f"{runtime}/babeld.ctl",
               pid_path=f"{runtime}/babeld.self.pid", state_path=f"{runtime}/babeld.state", netns=ns)
    text = babeld.render(node_name=f"o/n{i}", router_id=names.babel_router_id(("o", f"n{i}")),
                         own=[f"fd7{i}::/64"], others=others or [f"fd7{1 - i}::/64"],
                         babel=babeld.BabeldSettings((dev,), 200, 1000, BABEL_TABLE))
    return b, text


def _kernel_routes(ns: str, prefix: str) -> str:
    return subprocess.run(["ip", "-n", ns, "-6", "route", "show", "table", str(BABEL_TABLE), prefix],
                          capture_output=True, text=True).stdout


def _learned(b: Babeld, prefix: str):
    def check():
        try:
            routes = b.babel_state()[1]
        except ApplyError as e:
            return str(e)
        return None if [r["prefix"] for r in routes] == [prefix] else f"routes: {routes}"
    return check


@pytest.mark.skipif(shutil.which("babeld") is None, reason="babeld is installed by ci/install-deps")
def test_two_babelds_exchange_routes_reload_interfaces_and_clean_up(pair, runtime_dirs):
    a, b, ends = pair
    daemons, procs = [], []
    try:
        for i, ns in enumerate((a, b)):
            _own_route(ns, f"fd7{i}::/64")
            # fd79::/64 is on n1 but owned by no one: n0's filter must keep it out
            d, text = _babeld(ns, i, ends[i], runtime_dirs[i])
            if i == 1:
                _own_route(ns, "fd79::/64")
                text = text.replace("redistribute local deny", "redistribute ip fd79::/64 eq 64 "
                                    f"proto {names.RTPROT_ARONET} allow\nredistribute local deny")
            # stale files of a dead predecessor would stop babeld: prepare removes them
            for stale in (d.pid_path, d.socket_path):
                open(stale, "w").close()
            assert d.write(text) is True and d.write(text) is False
            d.prepare()
            procs.append(subprocess.Popen(d.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            daemons.append(d)
        poll(_learned(daemons[0], "fd71::/64"))
        poll(_learned(daemons[1], "fd70::/64"))
        (nb,) = daemons[0].babel_state()[0]
        assert nb["interface"] == ends[0] and nb["address"].startswith("fe80::")
        poll(lambda: None if daemons[0].babel_state()[0][0]["metric"] < 65535 else "cost 65535")
        kernel = _kernel_routes(a, "fd71::/64")
        assert "proto babel" in kernel and ends[0] in kernel  # babeld has no protocol option
        assert _kernel_routes(a, "fd79::/64") == ""  # the in filter denied it
        assert not os.path.exists("/var/lib/babel-state")  # its state file is the private one

        # an interface added at run time goes over the local socket, no restart
        pid = procs[0].pid
        # (the interface need not exist yet: babeld waits for it, as for a new tunnel)
        text = daemons[0].loaded.replace(f"interface {ends[0]} ", "interface art-extra type tunnel "
                                         "hello-interval 0.2 update-interval 1\n"
                                         f"interface {ends[0]} ")
        assert daemons[0].write(text) and daemons[0].reload() is True and procs[0].pid == pid
        assert procs[0].poll() is None
        # a filter change cannot be made at run time: reload says restart
        assert daemons[0].write(text.replace("in deny", "in ip fd79::/64 eq 64 allow\nin deny"))
        assert daemons[0].reload() is False

        procs[0].terminate()
        procs[0].wait(timeout=10)
        # babeld removes its routes, socket and pid file when stopped; it keeps its state
        assert _kernel_routes(a, "fd71::/64") == ""
        assert not os.path.exists(daemons[0].socket_path) and not os.path.exists(daemons[0].pid_path)
        assert os.path.exists(daemons[0].state_path)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)


@pytest.mark.skipif(shutil.which("babeld") is None, reason="babeld is installed by ci/install-deps")
def test_babeld_and_bird_exchange_routes(pair, runtime_dirs, tmp_path):
    """A mixed mesh: the babeld node and the BIRD node learn each other's network."""
    a, b, ends = pair
    procs = []
    try:
        _own_route(a, "fd70::/64")
        bd, text = _babeld(a, 0, ends[0], runtime_dirs[0])
        bd.write(text)
        bd.prepare()
        procs.append(subprocess.Popen(bd.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        conf = bird.render(node_name="o/n1", router_id="10.0.0.2", own=["fd71::/64"], others=["fd70::/64"],
                           babel=bird.BabelSettings("art-v*", 200, 1000, None), version=installed_version())
        bi = Bird(conf_path=str(tmp_path / "bird.conf"), socket_path=str(tmp_path / "bird.ctl"), netns=b)
        bi.write(conf)
        procs.append(subprocess.Popen(bi.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        poll(_learned(bd, "fd71::/64"))
        poll(lambda: None if os.path.exists(bi.socket_path) else "no BIRD socket")
        poll(lambda: None if [r["prefix"] for r in bi.babel_state()[1]] == ["fd70::/64"]
             else f"BIRD routes: {bi.babel_state()[1]}")
        assert "proto bird" in _kernel_routes(b, "fd70::/64")
        assert "proto babel" in _kernel_routes(a, "fd71::/64")
        (nb,) = bi.babel_state()[0]
        assert nb["interface"] == ends[1] and nb["metric"] < 65535
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


@pytest.mark.skipif(shutil.which("babeld") is None, reason="babeld is installed by ci/install-deps")
def test_routes_held_across_a_babeld_restart_keep_the_destination_reachable(pair, runtime_dirs):
    """What the agent does when a filter change restarts babeld: its routes are held
    (another protocol, a worse metric) while it restarts, so a lookup never fails, and
    released once the new babeld has installed its own again; a prefix the new config
    does not import is not held. The babel it sends is dropped while the old instance
    exits, so its neighbour never hears it retract its routes and keeps its own."""
    a, b, ends = pair
    hold = Netlink(Settings(mode="vrf", ifname="art-none", route_table=BABEL_TABLE), base_ns=a)
    quiet = Nft(base_ns=a)
    procs, daemons = [], []

    def start(i: int) -> None:
        daemons[i].prepare()
        procs[i] = subprocess.Popen(daemons[i].command(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    try:
        for i, ns in enumerate((a, b)):
            _own_route(ns, f"fd7{i}::/64")
            others = ["fd71::/64", "fd72::/64"] if i == 0 else None
            d, text = _babeld(ns, i, ends[i], runtime_dirs[i], others=others)
            if i == 1:  # n1 also owns fd72::/64, which n0's new config will no longer import
                _own_route(ns, "fd72::/64")
                text = text.replace("redistribute local deny", "redistribute ip fd72::/64 eq 64 "
                                    f"proto {names.RTPROT_ARONET} allow\nredistribute local deny")
            d.write(text)
            daemons.append(d)
            procs.append(None)
            start(i)
        poll(lambda: None if _kernel_routes(a, "fd72::/64") and _kernel_routes(a, "fd71::/64")
             else "n0 has not learned fd71::/64 and fd72::/64")

        assert hold.hold_routes("", BABEL_TABLE, {"fd71::/64"}.__contains__) == 1
        held = _kernel_routes(a, "fd71::/64")
        assert f"proto {names.RTPROT_HOLD}" in held and "proto babel" in held
        lost, stop = [], threading.Event()

        def lookups():  # n0's route to n1, and n1's back to n0 (n0's retractions dropped)
            with IPRoute(netns=a, flags=0) as ipa, IPRoute(netns=b, flags=0) as ipb:
                while not stop.is_set():
                    for ipr, dst in ((ipa, "fd71::1"), (ipb, "fd70::1")):
                        try:
                            ipr.route("get", dst=dst, table=BABEL_TABLE)
                        except NetlinkError as e:
                            lost.append((dst, e.code, round(time.monotonic() - t0, 2)))
                    time.sleep(0.01)
        watcher = threading.Thread(target=lookups)
        t0 = time.monotonic()
        marks = {}
        watcher.start()
        try:
            quiet.quiet("", "art-v*")
            procs[0].terminate()
            procs[0].wait(timeout=10)
            marks["exited"] = round(time.monotonic() - t0, 2)
            quiet.unquiet("")
            # babeld removed its own routes as it stopped; the held copy stays
            assert "proto babel" not in _kernel_routes(a, "fd71::/64")
            assert f"proto {names.RTPROT_HOLD}" in _kernel_routes(a, "fd71::/64")
            assert _kernel_routes(a, "fd72::/64") == ""  # not held: no longer imported
            assert hold.release_held("", BABEL_TABLE) == 1  # the new babeld has not learned it yet
            start(0)
            marks["started"] = round(time.monotonic() - t0, 2)
            poll(lambda: None if hold.release_held("", BABEL_TABLE) == 0 else _kernel_routes(a, "fd71::/64"))
        finally:
            stop.set()
            watcher.join()
        # n0's own lookups never fail (the held routes). n1 may miss some for a moment
        # while n0's babeld restarts (a neighbour whose hello sequence starts again);
        # with 200 ms hellos here that is tens of ms. What the quiet table saves (the
        # neighbours' routes to n0 across the old instance's exit, seconds at
        # aronet's 1 s hello under TCG) the VM tier measures: test_reload_gap.py.
        assert not [x for x in lost if x[0] == "fd71::1"], (lost, marks)
        spans = [t for _dst, _code, t in lost]
        assert not spans or max(spans) - min(spans) <= 0.5, (lost, marks)
        routes = _kernel_routes(a, "fd71::/64")
        assert "proto babel" in routes and f"proto {names.RTPROT_HOLD}" not in routes
    finally:
        for p in procs:
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
