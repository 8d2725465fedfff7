"""The agent's parts that need no root: strongSwan rendering, BIRD output parsing,
the control protocol, child supervision and orphan cleanup (with real processes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from aronet import client
from aronet.adapters.bird import parse_neighbors, parse_routes
from aronet.adapters.files import write_atomic
from aronet.adapters.proc import tagged_processes
from aronet.adapters.vici import has_installed_child
from aronet.core import swan
from aronet.core.state import Connection, XfrmInterface
from aronet.daemon import control
from aronet.daemon.links import link_changes
from aronet.daemon.supervisor import Child, kill_orphans
from aronet.errors import AronetError, InputError, Problem
from aronet.paths import Paths

CONN = Connection(name="ar-0000abcd", peer="o/peer", family="ip4", if_id=0xABCD,
                  local_addrs="%any", remote_addrs="192.0.2.7", local_port=12025, remote_port=12026,
                  local_id="O=o, CN=me, serialNumber=0", remote_id="O=o, CN=peer, serialNumber=1",
                  remote_pubkey="PEER", local_pubkey="ME", initiate=True, dpd_delay=3)


def test_load_conn_message_carries_every_setting():
    (name, msg), = swan.load_conn_message(CONN).items()
    assert name == "ar-0000abcd"
    assert msg["version"] == "2" and msg["encap"] == "yes" and msg["mobike"] == "no"
    assert msg["unique"] == "replace" and msg["keyingtries"] == "0" and msg["dpd_delay"] == "3s"
    assert msg["remote_addrs"] == ["192.0.2.7"] and msg["remote_port"] == "12026"
    assert msg["local"] == {"auth": "pubkey", "id": CONN.local_id, "pubkeys": ["ME"]}
    assert msg["remote"] == {"auth": "pubkey", "id": CONN.remote_id, "pubkeys": ["PEER"]}
    child = msg["children"]["ar-0000abcd"]
    assert child["if_id_in"] == child["if_id_out"] == str(0xABCD)
    assert child["local_ts"] == child["remote_ts"] == ["0.0.0.0/0", "::/0"]
    assert (child["dpd_action"], child["close_action"]) == ("restart", "start")
    responder = swan.load_conn_message(Connection(**{**CONN.__dict__, "initiate": False}))
    assert responder["ar-0000abcd"]["children"]["ar-0000abcd"]["dpd_action"] == "clear"


def test_strongswan_conf_has_private_socket_and_nat_t_port_only():
    text = swan.strongswan_conf(vici_socket="/run/x/charon.vici", port=4500)
    assert "socket = unix:///run/x/charon.vici" in text
    assert "port = 0\n" in text and "port_nat_t = 4500" in text and "install_routes = no" in text
    assert "load_modular = no" in text and ";" not in text.replace("# ", "")  # newline syntax


BIRD_NEIGHBORS = """BIRD 2.0.12 ready.
aronet_babel:
IP address                Interface  Metric Routes Hellos Expires Auth
fe80::6c56:bfff:fe1a:4838 ar-0000000a     96      1      2   0.297 No
fe80::1                   ar-0000000b  65535      0     10   3.100 No
"""
BIRD_ROUTES = """BIRD 2.0.12 ready.
Table master6:
fd01::/64            unicast [aronet_babel 01:19:29.350] * (130/96) [00:00:00:00:0a:00:00:02]
\tvia fe80::6c56:bfff:fe1a:4838 on ar-0000000a
fd02::/64            unicast [aronet_babel 01:19:30.100] * (130/192) [00:00:00:00:0a:00:00:03]
\tvia fe80::6c56:bfff:fe1a:4838 on ar-0000000a
"""


def test_bird_output_parsers():
    assert parse_neighbors(BIRD_NEIGHBORS) == [
        {"address": "fe80::6c56:bfff:fe1a:4838", "interface": "ar-0000000a", "metric": 96,
         "routes": 1, "hellos": "2", "expires": 0.297},
        {"address": "fe80::1", "interface": "ar-0000000b", "metric": 65535, "routes": 0,
         "hellos": "10", "expires": 3.1},
    ]
    assert parse_routes(BIRD_ROUTES) == [
        {"prefix": "fd01::/64", "via": "fe80::6c56:bfff:fe1a:4838", "interface": "ar-0000000a",
         "metric": 96},
        {"prefix": "fd02::/64", "via": "fe80::6c56:bfff:fe1a:4838", "interface": "ar-0000000a",
         "metric": 192},
    ]


def test_write_atomic_reports_change_only(tmp_path):
    p = str(tmp_path / "bird.conf")
    assert write_atomic(p, "a\n") is True
    assert write_atomic(p, "a\n") is False
    assert write_atomic(p, "b\n") is True
    assert (tmp_path / "bird.conf").read_text() == "b\n"
    assert os.listdir(tmp_path) == ["bird.conf"]


def test_paths_are_per_instance():
    a, b = Paths.for_instance("aronet"), Paths.for_instance("ovl1", state_dir="/tmp/s")
    assert a.control_socket == "/run/aronet/aronet/control.sock"
    assert b.runtime_dir == "/run/aronet/ovl1" and b.registry == "/tmp/s/registry.json"
    assert a.instance_tag != b.instance_tag


def test_control_socket_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "c.sock")

    async def handler(req):
        if req["cmd"] == "bad":
            raise InputError([Problem("r.json", "$[0]", "nope")])
        if req["cmd"] == "boom":
            raise AronetError("it broke")
        return {"ok": True, "echo": req}

    async def main():
        server = await control.serve(path, handler)
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        try:
            ok = await asyncio.to_thread(client.request, path, {"cmd": "x", "n": 1})
            assert ok["echo"] == {"cmd": "x", "n": 1}
            with pytest.raises(InputError) as e:
                await asyncio.to_thread(client.request, path, {"cmd": "bad"})
            assert [str(p) for p in e.value.problems] == ["r.json: $[0]: nope"]
            with pytest.raises(AronetError, match="it broke"):
                await asyncio.to_thread(client.request, path, {"cmd": "boom"})
        finally:
            server.close()

    asyncio.run(main())
    with pytest.raises(AronetError, match="no agent is running"):
        client.request(str(tmp_path / "none.sock"), {"cmd": "info"})


def test_a_crashing_child_is_restarted_and_set_up_again(tmp_path):
    starts = []

    async def main():
        async def on_start():
            starts.append(time.monotonic())
        child = Child("crasher", [sys.executable, "-c", "print('hello'); raise SystemExit(3)"],
                      dict(os.environ), str(tmp_path / "c.pid"), on_start=on_start)
        child.start()
        deadline = time.monotonic() + 10
        while len(starts) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await child.stop()
        assert child.restarts >= 2

    asyncio.run(main())
    assert len(starts) >= 3
    assert starts[2] - starts[1] >= starts[1] - starts[0]  # backoff grows
    assert not (tmp_path / "c.pid").exists()


def test_orphans_are_found_by_tag_not_by_name(tmp_path):
    tag = f"ARONET_INSTANCE={tmp_path}"
    env = {**os.environ, "ARONET_INSTANCE": str(tmp_path)}
    mine = subprocess.Popen(["sleep", "60"], env=env)
    other = subprocess.Popen(["sleep", "60"])  # same name, no tag: must survive
    try:
        deadline = time.monotonic() + 5
        while mine.pid not in tagged_processes(tag) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kill_orphans(tag, [str(tmp_path / "x.pid")], timeout=5) == [mine.pid]
        assert mine.wait(timeout=5) is not None
        assert other.poll() is None
    finally:
        other.kill()
        mine.kill()
        other.wait()


def _agent(tmp_path) -> tuple:
    """An agent of one node "me" (not started), and its registry's raw data."""
    from aronet import keys
    from aronet.daemon.agent import Agent
    from aronet.load import build_config, build_registry

    key = keys.generate()
    ep = [{"address": "192.0.2.1", "port": 12025}]
    config = build_config({"private_key": keys.private_pem(key).decode(), "organization": "o",
                           "common_name": "me", "daemon": {"network": "fd10::1/64"},
                           "endpoints": ep}, "config.json")
    good = [{"public_key": keys.public_pem(key), "organization": "o",
             "nodes": [{"common_name": "me", "endpoints": ep, "remarks": {"network": "fd10::1/64"}}]}]
    agent = Agent(config, Paths.for_instance("t", str(tmp_path / "run"), str(tmp_path / "state")),
                  build_registry(good, "registry.json"))
    return agent, good


def test_an_invalid_load_is_refused_before_anything_changes(tmp_path):
    """The agent validates a new registry completely (schema, semantics, and against
    its own config) before it touches the system or its saved state."""
    from aronet import keys

    agent, good = _agent(tmp_path)
    before = agent.rt.registry

    async def must_not_run(*_a, **_k):
        raise AssertionError("an invalid registry reached the system")
    agent.resync = must_not_run

    other = keys.public_pem(keys.generate())
    cases = {
        "schema": [{"organization": "o"}],
        "semantics": [{**good[0], "nodes": [{**good[0]["nodes"][0],
                                            "remarks": {"network": "fd10::1/80"}}]}],
        "against the config": [{**good[0], "public_key": other}],
    }
    path = str(tmp_path / "control.sock")

    async def main():
        server = await control.serve(path, agent.handle)  # the agent's own socket handler
        try:
            for what, data in cases.items():
                with pytest.raises(InputError) as e:
                    await asyncio.to_thread(client.request, path,
                                            {"cmd": "load", "file": "new.json", "registry": data})
                assert e.value.problems, what
        finally:
            server.close()

    asyncio.run(main())
    assert agent.rt.registry is before
    assert not (tmp_path / "state" / "registry.json").exists()


def _sa(state: str, *children: str) -> dict:
    return {"state": state, "child-sas": {f"c-{i}": {"state": c} for i, c in enumerate(children)}}


def test_an_ike_sa_moves_traffic_only_established_with_an_installed_child():
    assert has_installed_child(_sa("ESTABLISHED", "INSTALLED"))
    assert has_installed_child(_sa("ESTABLISHED", "REKEYED", "INSTALLED"))
    assert not has_installed_child(_sa("ESTABLISHED"))
    assert not has_installed_child(_sa("ESTABLISHED", "INSTALLING"))
    assert not has_installed_child(_sa("CONNECTING", "INSTALLED"))
    assert not has_installed_child({"state": "ESTABLISHED", "child-sas": None})


def test_tunnel_links_follow_installed_child_sas_not_the_order_of_events():
    """A replaced IKE_SA's 'down' arriving after its successor's 'up' must not leave the
    interface down: the links follow what charon has installed now."""
    x = {n: XfrmInterface(ns="r", name=n, if_id=i, mtu=1400)
         for i, n in enumerate(("ar-a", "ar-b", "ar-c", "ar-d"), 1)}
    links = {"ar-a": False, "ar-b": True, "ar-c": True}  # ar-d: not in the kernel (yet)
    changes = link_changes(list(x.values()), installed={"ar-a", "ar-c", "ar-d"}, links=links)
    assert changes == [(x["ar-a"], True), (x["ar-b"], False)]
    assert link_changes(list(x.values()), {"ar-a", "ar-c"}, {"ar-a": True, "ar-c": True}) == []


def test_the_links_worker_outlives_a_failed_round(tmp_path):
    """An unexpected error while matching links is logged; the worker goes on with the
    next request (the next event or re-check) instead of dying unseen."""
    agent, _ = _agent(tmp_path)
    rounds = []

    def match(names, _desired):
        rounds.append(names)
        if len(rounds) == 1:
            raise RuntimeError("a bug")

    agent.links.match = match

    async def until(n):
        while len(rounds) < n:
            await asyncio.sleep(0.01)

    async def main():
        worker = asyncio.create_task(agent.links.worker())
        try:
            for i, name in enumerate(("ar-a", "ar-b"), 1):
                agent.links.pending |= {name}
                agent.links.wakeup.set()
                await asyncio.wait_for(until(i), 5)
            assert not worker.done()
        finally:
            worker.cancel()

    asyncio.run(main())
    assert rounds == [{"ar-a"}, {"ar-b"}]
