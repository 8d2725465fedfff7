"""The event stream: the mapping from what the agent saw to events
(aronet/core/events.py), the bounded per-subscriber queues, and the stream itself
over a real control socket (aronet/daemon/events.py, control.py, client.events)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from aronet import client
from aronet.core import events
from aronet.core.observed import Observation
from aronet.daemon import control
from aronet.daemon.events import EventBus
from aronet.errors import AronetError

T0 = 1_900_000_000.0


def obs(neighbors=(), routes=(), errors=None) -> Observation:
    return Observation(at=T0, neighbors=tuple(neighbors), routes=tuple(routes), errors=errors or {})


def nb(ifname: str, cost: int | None, address: str = "fe80::2") -> dict:
    return {"address": address, "interface": ifname, "metric": cost}


def rt(prefix: str, ifname: str, via: str = "fe80::2", metric: int = 96) -> dict:
    return {"prefix": prefix, "via": via, "interface": ifname, "metric": metric}


def kinds(evs: list[dict]) -> list[tuple]:
    return [(e["event"], e.get("ifname"), e.get("prefix")) for e in evs]


def test_the_first_observation_is_the_baseline():
    assert events.observed_changes(None, obs([nb("ar-1", 96)], [rt("fd67::/64", "ar-1")])) == []


@pytest.mark.parametrize(("before", "after", "expect"), [
    ([nb("ar-1", 96)], [], [("neighbor-down", "ar-1", None)]),
    ([nb("ar-1", 96)], [nb("ar-1", 65535)], [("neighbor-down", "ar-1", None)]),
    ([nb("ar-1", 65535)], [nb("ar-1", 96)], [("neighbor-up", "ar-1", None)]),
    ([], [nb("ar-1", 96)], [("neighbor-up", "ar-1", None)]),
    ([nb("ar-1", 96)], [nb("ar-1", 256)], [("neighbor-cost", "ar-1", None)]),
    ([nb("ar-1", 96)], [nb("ar-1", 96)], []),
    ([nb("ar-1", 65535)], [], []),  # unreachable, then gone: nothing new
])
def test_neighbor_changes(before, after, expect):
    assert kinds(events.observed_changes(obs(before), obs(after))) == expect


def test_a_cost_change_carries_both_costs():
    (ev,) = events.observed_changes(obs([nb("ar-1", 96)]), obs([nb("ar-1", 256)]))
    assert (ev["cost"], ev["old_cost"], ev["address"]) == (256, 96, "fe80::2")


def test_route_changes():
    before = obs(routes=[rt("fd67::/64", "ar-1"), rt("fd68::/64", "ar-1")])
    after = obs(routes=[rt("fd67::/64", "ar-2", via="fe80::3"), rt("fd69::/64", "ar-2")])
    evs = events.observed_changes(before, after)
    assert kinds(evs) == [("route-changed", "ar-2", "fd67::/64"), ("route-removed", "ar-1", "fd68::/64"),
                          ("route-added", "ar-2", "fd69::/64")]
    assert (evs[0]["old_ifname"], evs[0]["old_via"], evs[0]["via"]) == ("ar-1", "fe80::2", "fe80::3")


def test_a_failed_routing_read_reports_nothing_rather_than_everything_gone():
    good = obs([nb("ar-1", 96)], [rt("fd67::/64", "ar-1")])
    failed = obs(errors={"routing": "birdc: timeout"})
    assert events.observed_changes(good, failed) == []
    assert events.observed_changes(failed, good) == []


def test_charon_events():
    msg = {"up": "yes", "ar-1": {"remote-host": "192.0.2.7", "child-sas": {"ar-1-3": {}}}}
    assert events.charon_events("ike-updown", msg) == [{"event": "ike-up", "conn": "ar-1",
                                                        "remote": "192.0.2.7"}]
    assert events.charon_events("child-updown", {**msg, "up": "no"}) == [{"event": "child-down",
                                                                          "conn": "ar-1"}]


def test_stamp_puts_time_and_node_first():
    ev = events.stamp({"event": "link-up", "ifname": "ar-1"}, "o/me", T0 + 0.1234)
    assert list(ev)[:3] == ["time", "ts", "node"]
    assert ev["time"] == "2030-03-17T17:46:40.123Z" and ev["ts"] == T0 + 0.123
    assert ev["event"] in events.KINDS


def test_reload_and_restart_events():
    ev = events.reload_event("r.json", False, problems=("r.json.sig: $.signatures: none valid",))
    assert ev["result"] == "refused" and ev["problems"] == ["r.json.sig: $.signatures: none valid"]
    assert events.restart_event("charon", -9, 2) == {"event": "daemon-restart", "daemon": "charon",
                                                     "status": -9, "restarts": 2}


# ------------------------------------------------------------------ the bus


def test_a_slow_subscriber_loses_the_newest_events_not_the_agents_memory():
    async def main():
        bus = EventBus("o/me", clock=lambda: T0, limit=3)
        bus.bind(asyncio.get_running_loop())
        sub = bus.subscribe(1.0)
        for i in range(10):
            bus.publish({"event": "link-up", "ifname": f"ar-{i}"})
        assert sub.queue.qsize() == 3 and sub.lost == 7
        assert [sub.queue.get_nowait()["ifname"] for _ in range(3)] == ["ar-0", "ar-1", "ar-2"]
    asyncio.run(main())


def test_without_subscribers_publishing_does_nothing():
    async def main():
        bus = EventBus("o/me", clock=lambda: (_ for _ in ()).throw(AssertionError("stamped")))
        bus.bind(asyncio.get_running_loop())
        bus.publish({"event": "link-up", "ifname": "ar-1"})
        assert bus.poll is None
    asyncio.run(main())


def _serve_bus(tmp_path, bus: EventBus, body):
    """Run a control socket with the bus's stream, then body(socket path, loop) in a thread."""
    path = str(tmp_path / "control.sock")
    result = {}

    async def main():
        loop = asyncio.get_running_loop()
        bus.bind(loop)

        async def handler(_req):
            return {"ok": True}
        server = await control.serve(path, handler, {"events": bus.stream})
        try:
            result["value"] = await asyncio.to_thread(body, path, loop)
        finally:
            server.close()
    asyncio.run(main())
    return result["value"]


def test_the_stream_over_the_control_socket(tmp_path):
    bus = EventBus("o/me", clock=lambda: T0)

    def body(path, loop):
        stream = client.events(path, poll=0.5, timeout=10)
        first = next(stream)
        assert first["event"] == "subscribed" and first["poll"] == 0.5 and bus.poll == 0.5
        threading.Thread(target=lambda: [bus.publish({"event": "link-down", "ifname": f"ar-{i}"})
                                         for i in range(3)]).start()  # from another thread
        got = [next(stream) for _ in range(3)]
        stream.close()
        return got

    got = _serve_bus(tmp_path, bus, body)
    assert [e["ifname"] for e in got] == ["ar-0", "ar-1", "ar-2"]
    assert all(e["node"] == "o/me" and e["ts"] == T0 for e in got)


def test_a_subscriber_that_fell_behind_is_told_how_much_it_lost(tmp_path):
    bus = EventBus("o/me", clock=lambda: T0, limit=2)

    def body(path, loop):
        stream = client.events(path, timeout=10)
        next(stream)
        (sub,) = bus.subscribers
        # the stream's writer waits on the queue; fill it past its bound at once, on the loop
        done = threading.Event()

        def burst():
            for i in range(5):
                sub.put(events.stamp({"event": "link-up", "ifname": f"ar-{i}"}, "o/me", T0))
            done.set()
        loop.call_soon_threadsafe(burst)
        assert done.wait(10)
        got = [next(stream) for _ in range(3)]
        loop.call_soon_threadsafe(sub.put, events.stamp({"event": "link-up", "ifname": "ar-9"},
                                                        "o/me", T0))
        got.append(next(stream))
        stream.close()
        return got

    got = _serve_bus(tmp_path, bus, body)
    # the queue held two (the writer had not taken the first yet); three were dropped
    assert [e.get("ifname") for e in got] == ["ar-0", "ar-1", None, "ar-9"]
    assert got[2] == {**got[2], "event": "lost", "count": 3, "node": "o/me"}


def test_a_closed_stream_unsubscribes(tmp_path):
    bus = EventBus("o/me", clock=lambda: T0)

    def body(path, loop):
        stream = client.events(path, timeout=10)
        next(stream)
        assert len(bus.subscribers) == 1
        stream.close()
        for _ in range(200):
            if not bus.subscribers:
                return True
            threading.Event().wait(0.05)
        return False

    assert _serve_bus(tmp_path, bus, body)


@pytest.mark.parametrize("poll", [0.01, 1000, "1", True])
def test_a_bad_poll_is_refused(tmp_path, poll):
    bus = EventBus("o/me", clock=lambda: T0)

    def body(path, loop):
        with pytest.raises(AronetError, match="poll must be"):
            next(iter(client.events(path, poll=poll, timeout=10)))
        return True
    assert _serve_bus(tmp_path, bus, body)


def test_the_stream_is_ndjson(tmp_path):
    """One compact JSON object per line, as a log shipper reads it."""
    import socket

    bus = EventBus("o/me", clock=lambda: T0)

    def body(path, loop):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(path)
        s.sendall(b'{"cmd": "events"}\n')
        f = s.makefile("rb")
        line = f.readline()
        s.close()
        return line

    line = _serve_bus(tmp_path, bus, body)
    assert line.endswith(b"\n") and b" " not in line
    assert json.loads(line)["event"] == "subscribed"


# ------------------------------------------------------------------ the watcher


def test_the_watcher_observes_only_while_someone_listens(world, tmp_path):
    """No metrics and no subscriber: no observation at all. A subscriber: the watcher
    observes at its poll, and babel's changes between two observations reach it."""
    from test_metrics import agent_with

    agent = agent_with(world, tmp_path, None)
    t = agent.telemetry
    seen = [obs([nb("ar-1", 96)], [rt("fd67::/64", "ar-1")]),
            obs([nb("ar-1", 65535)], [rt("fd67::/64", "ar-2", via="fe80::3")])]
    calls = []

    def observe():
        calls.append(1)
        return seen[min(len(calls), len(seen)) - 1]
    t.observe = observe

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(t.run(stop))
        await asyncio.sleep(0.3)
        assert calls == [] and t.period() is None
        sub = t.bus.subscribe(0.2)
        got = []
        while len(got) < 2:
            got.append(await asyncio.wait_for(sub.queue.get(), 10))
        stop.set()
        await asyncio.wait_for(task, 10)
        return got

    got = asyncio.run(main())
    assert [e["event"] for e in got] == ["neighbor-down", "route-changed"]
    assert all(e["node"] == "example/moon" for e in got)
