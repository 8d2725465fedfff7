"""What the agent tells about itself: the event stream (events.py) and, when
config.json has a `metrics` block, the Prometheus metrics (metrics.py).

The rest of the agent calls the hooks here as things happen (charon's events, a
tunnel link set, a child daemon restarted, a reload accepted or refused, a sync
done). The watcher observes charon's SAs, babel's neighbours and routes, the tunnel
links and their counters (observe(): read-only, in a thread) only while someone
needs them: every metrics.interval seconds with metrics on, and at the fastest
"poll" a subscriber asked for while the event stream has one; never otherwise.
The babel events come from comparing two observations; the metrics read the
latest, so a scrape never observes anything.

Without a metrics block, prometheus_client is never imported: the agent's
footprint stays as it was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Protocol

from ..adapters.netlink.counters import tunnel_counters
from ..adapters.node import NodeAdapters
from ..core import events
from ..core.observed import Observation, Snapshot
from ..core.state import Connection, Route
from ..errors import AronetError, Problem
from ..model import Config
from .events import EventBus
from .supervisor import Child
from .trusted import Gate

log = logging.getLogger("aronet")


class Agent(Protocol):
    config: Config
    node: NodeAdapters
    router_ns: str
    children: dict[str, Child]
    rt: object  # agent.Runtime: registry, desired, ...
    trust: Gate


class Telemetry:
    def __init__(self, agent: Agent, clock=time.time):
        self.agent, self.clock = agent, clock
        self.bus = EventBus(agent.config.node.name, clock)
        self.updown: Counter[tuple[str, str]] = Counter()  # (conn, event) -> count
        self.latest: Observation | None = None
        self.build: dict[str, str] = {}
        self._wake: asyncio.Event | None = None
        self.bus.on_subscribe = self._poke
        self.metrics = None
        if agent.config.metrics is not None:
            from .metrics import Metrics  # only now: prometheus_client

            self.metrics = Metrics(self, agent.config.metrics)

    # ------------------------------------------------------------ hooks

    def charon_event(self, label: str, msg: dict) -> None:
        for ev in events.charon_events(label, msg):
            if ev["event"] in ("ike-up", "ike-down", "child-up", "child-down"):
                self.updown[(ev["conn"], ev["event"])] += 1
            self.bus.publish(ev)

    def link_set(self, ifname: str, up: bool) -> None:
        self.bus.publish(events.link_event(ifname, up))

    def child_exited(self, name: str, status: int | None, restarts: int) -> None:
        self.bus.publish(events.restart_event(name, status, restarts))

    def reloaded(self, file: str, accepted: bool, *, serial: int | None = None, changes: int = 0,
                 problems: tuple[Problem, ...] = ()) -> None:
        if not accepted and self.metrics is not None:
            self.metrics.load_refused(problems)
        self.bus.publish(events.reload_event(file, accepted, serial=serial, changes=changes,
                                             problems=tuple(str(p) for p in problems)))

    def reconciled(self, seconds: float, operations: dict | None) -> None:
        """A sync ended: operations as Agent.resync returns them; None when it failed."""
        if self.metrics is not None:
            self.metrics.reconciled(seconds, operations)

    # ------------------------------------------------------------ the watcher

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def period(self) -> float | None:
        """How often to observe now; None: nobody needs it."""
        wanted = [p for p in (self.bus.poll, self.metrics and self.metrics.settings.interval) if p]
        return min(wanted, default=None)

    async def run(self, stop: asyncio.Event) -> None:
        self._wake = asyncio.Event()
        self.bus.bind(asyncio.get_running_loop())
        if self.metrics is not None:
            self.metrics.start()
        try:
            while not stop.is_set():
                period = self.period()
                if period is not None:
                    await self._tick()
                else:  # nobody watches: the next subscriber's baseline is taken afresh
                    self.latest = None
                self._wake.clear()
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waits, timeout=period, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        finally:
            if self.metrics is not None:
                self.metrics.stop()

    async def _tick(self) -> None:
        try:
            obs = await asyncio.to_thread(self.observe)
        except Exception:  # a bug here must not stop the watcher
            log.exception("observing for the metrics and events failed")
            return
        for ev in events.observed_changes(self.latest, obs):
            self.bus.publish(ev)
        self.latest = obs
        if self.metrics is not None:
            self.metrics.observed(obs)

    def observe(self) -> Observation:
        """(blocking) One read of charon, the routing daemon and the tunnel links."""
        a, errors, sas, nbs, routes, links, counters = self.agent, {}, {}, [], [], {}, {}
        charon = a.children.get("charon")
        if charon is not None and charon.ready.is_set():
            try:
                sas = a.node.vici.sas()
                if "strongswan_version" not in self.build:
                    self.build["strongswan_version"] = a.node.vici.version()
            except AronetError as e:
                errors["vici"] = str(e)
        routing = a.children.get(a.node.routing.name)
        if routing is not None and routing.ready.is_set():
            try:
                nbs, routes = a.node.routing.babel_state()
            except AronetError as e:
                errors["routing"] = str(e)
        else:
            errors["routing"] = "not running"  # no babel events against an empty baseline
        try:
            links = a.node.netlink.link_states(a.router_ns)
            counters = tunnel_counters(a.router_ns, a.config.settings.tunnel_prefix,
                                       getattr(a.node.netlink, "base_ns", ""))
        except AronetError as e:
            errors["netlink"] = str(e)
        if "routing_daemon_version" not in self.build:
            self.build["routing_daemon_version"] = a.node.routing.version() or ""
        return Observation(at=self.clock(), sas=sas, neighbors=tuple(nbs), routes=tuple(routes),
                           links=links, counters=counters, errors=errors)

    def snapshot(self) -> Snapshot:
        """What a scrape shows: the latest observation and what the agent holds (no I/O)."""
        from .. import __version__

        a = self.agent
        d = a.rt.desired
        conns = d.state.of(Connection) if d else ()
        st = a.trust.verdict.statement if a.trust.verdict else None
        daemons = {name: (c.pid is not None and c.ready.is_set(), c.restarts)
                   for name, c in a.children.items()}
        for name in ("charon", a.node.routing.name):
            daemons.setdefault(name, (False, 0))
        return Snapshot(
            now=self.clock(), observation=self.latest, connections=tuple(conns),
            planned_routes=tuple(d.state.of(Route)) if d else (),
            peers_configured=sum(1 for n in a.rt.registry.nodes if n.key != a.config.node.key),
            build={"version": __version__, "routing_daemon": a.config.settings.routing, **self.build},
            daemons=daemons, updown=dict(self.updown),
            registry_serial=st.serial if st else None,
            registry_expires_at=st.expires_at if st else None)
