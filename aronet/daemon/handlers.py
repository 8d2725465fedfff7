"""The agent's control commands (see control.py for the wire format): load, status,
check, info, memory, metrics and stop (the event stream is events.py's). A `load` is
validated completely before anything changes: an invalid registry leaves the running
mesh as it is. A registry comes as its exact text
with its .sig's text (a signature covers the bytes), and passes the agent's gate
(trusted.py: signatures, rollback, expiry) before the planner sees it with its
revocations applied. One load at a time: two racing loads could otherwise both pass
the rollback check against the same serial."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from typing import Protocol

from .. import __version__
from ..adapters.node import NodeAdapters
from ..core.bird import Version
from ..core.diff import diff
from ..core.planner import Desired
from ..core.state import Connection
from ..core.status import Peer, Route, Status, Tunnel
from ..errors import AronetError, InputError, Problem
from ..load import Signed, build_registry, cross_problems, parse_json
from ..model import Config
from ..paths import Paths
from . import memory
from .supervisor import Child
from .telemetry import Telemetry
from .trusted import Gate

log = logging.getLogger("aronet")


class Agent(Protocol):
    """What the handlers need of the agent (aronet.daemon.agent.Agent)."""

    config: Config
    paths: Paths
    node: NodeAdapters
    router_ns: str
    bird_version: Version
    children: dict[str, Child]
    rt: object  # agent.Runtime: registry, desired, started, last_error
    trust: Gate
    telemetry: Telemetry

    async def resync(self, registry=None) -> dict[str, dict[str, int]]: ...

    async def drift(self) -> dict: ...  # {"in_sync", "differences"}

    def stop(self) -> None: ...


class Handlers:
    def __init__(self, agent: Agent):
        self.agent = agent
        self._load_lock = asyncio.Lock()

    async def handle(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "load":
            return await self.load(req.get("registry"), req.get("file") or "registry.json",
                                   req.get("signature"), req.get("signature_file"))
        if cmd == "status":
            return {"ok": True, "status": (await asyncio.to_thread(self.status)).to_json()}
        if cmd == "check":
            return {"ok": True, "node": self.agent.config.node.name, **await self.agent.drift()}
        if cmd == "info":
            return {"ok": True, "info": self.info()}
        if cmd == "memory":
            return {"ok": True, **await asyncio.to_thread(memory.handle, req)}
        if cmd == "metrics":
            m = self.agent.telemetry.metrics
            if m is None:
                raise AronetError("metrics are off: config.json has no \"metrics\" block")
            return {"ok": True, "text": await asyncio.to_thread(m.text)}
        if cmd == "stop":
            log.info("stop requested over the control socket")
            self.agent.stop()
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r}")

    async def load(self, data, file: str, signature: str | None = None,
                   signature_file: str | None = None) -> dict:
        """data: the registry's text (or, from older clients, its parsed JSON, which
        only a node that checks no signature takes)."""
        if not isinstance(data, str):
            if self.agent.trust.policy.checks:
                raise InputError(Problem(file, "$", "came as parsed JSON: a signed registry is "
                                         "checked on its exact bytes; send its text (aronet load does)"))
            data = json.dumps(data, indent=2) + "\n"
        if signature is not None and not isinstance(signature, str):
            raise InputError(Problem(signature_file or file + ".sig", "$", "not the .sig's text"))
        return await self.load_signed(Signed(file, data, signature_file or file + ".sig", signature))

    async def load_signed(self, signed: Signed) -> dict:
        """A load (or a fetch), told to the event stream and the metrics either way."""
        try:
            reply = await self._load_signed(signed)
        except InputError as e:
            self.agent.telemetry.reloaded(signed.file, False, problems=tuple(e.problems))
            raise
        self.agent.telemetry.reloaded(signed.file, True, serial=reply["registry"].get("serial"),
                                      changes=len(reply["changes"]))
        return reply

    async def _load_signed(self, signed: Signed) -> dict:
        a = self.agent
        async with self._load_lock:
            registry = build_registry(parse_json(signed.text, signed.file), signed.file)
            problems = cross_problems(a.config, registry)
            if problems:
                raise InputError(problems)
            verdict = a.trust.check(signed)
            verdict.raise_refused()
            planned = a.trust.planned(registry, verdict)
            before = a.rt.desired
            t0 = time.monotonic()
            operations = await a.resync(planned)
            seconds = time.monotonic() - t0
            a.trust.commit(verdict, signed)
        changes = diff(a.rt.desired.state, before.state) if before else ()
        serial = f", serial {verdict.statement.serial}" if verdict.statement else ""
        log.info("loaded %s%s: %d nodes, %d changes", signed.file, serial, len(registry.nodes),
                 len(changes))
        info = a.trust.info(planned)
        return {"ok": True, "nodes": len(registry.nodes), "changes": [str(c) for c in changes],
                "operations": operations, "seconds": round(seconds, 3),
                "registry": _registry_json(info), "notes": [str(n) for n in verdict.notes]}

    def info(self) -> dict:
        a = self.agent
        return {
            "version": __version__,
            "pid": os.getpid(),
            "node": a.config.node.name,
            "mode": a.config.settings.mode,
            "router_namespace": a.router_ns or None,
            "runtime_dir": a.paths.runtime_dir,
            "state_dir": a.paths.state_dir,
            "registry": {"file": a.rt.registry.file, "nodes": len(a.rt.registry.nodes)},
            "children": {n: {"pid": c.pid, "restarts": c.restarts} for n, c in a.children.items()},
            "routing": a.config.settings.routing,
            "bird_version": ".".join(map(str, a.bird_version)),
            "uptime": round(time.time() - a.rt.started, 1),
            "last_error": a.rt.last_error or None,
        }

    def status(self) -> Status:
        """(blocking) The status document, read from charon, babel and the kernel now."""
        a = self.agent
        d = a.rt.desired
        if d is None:
            return Status(node=a.config.node.name)
        try:
            sas = a.node.vici.sas()
        except AronetError as e:
            sas, a.rt.last_error = {}, str(e)
        try:
            nbs, routes = a.node.routing.babel_state()
        except AronetError:
            nbs, routes = [], []
        doc = status_document(a.config.node.name, a.config.settings.mode, d, sas,
                              {n["interface"]: n for n in nbs}, routes,
                              a.node.netlink.link_states(a.router_ns))
        return dataclasses.replace(doc, registry=a.trust.info(a.rt.registry))


def _registry_json(info) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(info).items()}


def status_document(node: str, mode: str, d: Desired, sas: dict[str, dict],
                    neighbors: dict[str, dict], routes: list[dict], links: dict[str, bool]) -> Status:
    """Per peer: each planned tunnel as charon, babel and the kernel see it, and the
    babel routes toward the prefixes that peer owns."""
    tunnels: dict[str, list[Tunnel]] = {}
    for c in d.state.of(Connection):
        sa = sas.get(c.name, {})
        children = list((sa.get("child-sas") or {}).values())
        nb = neighbors.get(c.name)
        tunnels.setdefault(c.peer, []).append(Tunnel(
            name=c.name, family=c.family, remote=c.remote_addrs, initiator=c.initiate,
            ike=sa.get("state", "NONE"), child=children[0].get("state", "NONE") if children else "NONE",
            interface=c.name, interface_up=links.get(c.name, False),
            babel_neighbor=nb["address"] if nb else None, babel_metric=nb["metric"] if nb else None))
    owner = dict(d.babel_routes)
    learned: dict[str, list[Route]] = {}
    for r in routes:
        if owner.get(r["prefix"]) in tunnels:
            learned.setdefault(owner[r["prefix"]], []).append(
                Route(r["prefix"], r.get("via"), r.get("interface"), r.get("metric")))
    return Status(node=node, mode=mode, peers=tuple(
        Peer(p, tuple(tunnels[p]), tuple(learned.get(p, ()))) for p in sorted(tunnels)))
