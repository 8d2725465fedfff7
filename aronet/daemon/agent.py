"""The agent: one asyncio process that keeps a node in its desired state.

Start: preflight the kernel, remove what a crashed earlier run of this instance left
(its namespace or VRF, XFRM interfaces, routes, nft table, tagged child processes),
apply the kernel side of the desired state, start charon and the routing daemon (BIRD
or babeld, `daemon.routing`) as children, then
load charon's connections. While running: apply a new registry given through the
control socket (validated first; an invalid one changes nothing), keep each
tunnel interface up exactly while its connection has an installed CHILD_SA (on every
ike/child-updown event, and at every re-check), and every few seconds re-check for
drift and re-initiate tunnels this node should hold. Stop
(SIGTERM, SIGINT): terminate the SAs, stop the children, remove everything.

Beside it: links.py (charon's events and the tunnel links), handlers.py (the control
commands and the status document), supervisor.py (the children), memory.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .. import __version__
from ..adapters import charon as charon_cmd
from ..adapters.files import ensure_private_dir, write_atomic
from ..adapters.node import NodeAdapters
from ..adapters.vici import listen
from ..core import babeld, planner, swan
from ..core.bird import Version
from ..core.planner import Desired
from ..core.state import Connection, RoutingConfig, XfrmInterface
from ..errors import ApplyError, AronetError, InputError
from ..load import Signed
from ..model import Config, Registry
from ..paths import Paths
from . import memory
from .control import serve
from .fetcher import Fetcher
from .handlers import Handlers
from .links import LinkFollower
from .supervisor import Child, kill_orphans
from .telemetry import Telemetry
from .trusted import Gate

log = logging.getLogger("aronet")

RECHECK_INTERVAL = 5.0
HOLD_FOR, HOLD_POLL = 20.0, 0.2  # routes held across a babeld restart: at most, poll
CHARON_SYSCTL = "net.core.xfrm_acq_expires"  # strongSwan sets it; restored at stop

EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_KERNEL, EXIT_RUNNING = 0, 1, 2, 3, 4


class AlreadyRunning(AronetError):
    exit_code = EXIT_RUNNING


@dataclass
class Runtime:
    """What the agent knows now (only the event loop thread writes it)."""

    registry: Registry
    desired: Desired | None = None
    started: float = field(default_factory=time.time)
    last_error: str = ""


class Agent:
    def __init__(self, config: Config, paths: Paths, registry: Registry | None = None,
                 signed: Signed | None = None):
        """signed: registry's exact text and .sig, verified at start (trusted.Gate)."""
        self.config, self.paths = config, paths
        self.trust, self._signed = Gate(config, paths), signed
        s = config.settings
        self.node = NodeAdapters(s, paths)
        self.router_ns = self.node.router_ns
        self.netlink, self.nft, self.vici = self.node.netlink, self.node.nft, self.node.vici
        self.routing = self.node.routing
        self._routing_stale = False  # the written config is newer than the daemon's
        self.bird_version: Version = self.node.bird_version
        self.rt = Runtime(registry or Registry(file="(none yet)", nodes=()))
        self.children: dict[str, Child] = {}
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: threading.Thread | None = None
        self.telemetry = Telemetry(self)  # events and metrics: telemetry.py
        self.links = LinkFollower(self.netlink, self.vici, self.router_ns,
                                  desired=lambda: self.rt.desired, charon_ready=self._charon_ready,
                                  on_charon=self.telemetry.charon_event, on_link=self.telemetry.link_set)
        self.handlers = Handlers(self)
        self.handle = self.handlers.handle

    # ------------------------------------------------------------ desired state

    def plan_desired(self, registry: Registry) -> Desired:
        return planner.desired(self.config, registry, bird_version=self.bird_version)

    def _kernel_sync(self, d: Desired) -> None:
        plan = self.node.netlink_plan(d)
        for action in plan:
            log.info("netlink %s", action)
        self.netlink.apply(plan)
        plan = self.node.nft_plan(d)
        for action in plan:
            log.info("nft %s", action)
        self.nft.apply(plan)

    def _routing_sync(self, d: Desired) -> None:
        """Write the routing daemon's config; apply a change at run time where the
        daemon can, restart it where it cannot; start or stop it when it becomes
        (un)able to run (babeld needs at least one tunnel)."""
        (conf,) = d.state.of(RoutingConfig)
        name = self.routing.name
        if self.routing.write(conf.text):
            self._routing_stale = True
        runnable = self.routing.runnable(conf.text)
        child = self.children.get(name)
        if self._loop is not None and (child is None) == runnable and "charon" in self.children:
            self._loop.call_soon_threadsafe(self._routing_child, runnable)
            return
        if not self._routing_stale or child is None or not child.ready.is_set():
            return  # a daemon (re)starting reads the file as it is
        log.info("%s: config changed; reloading", name)
        try:
            live = self.routing.reload()
        except ApplyError as e:  # e.g. still starting; the next check retries
            log.warning("%s", e)
            return
        self._routing_stale = False
        if not live:
            # babeld flushes its routes as it exits: hold them (aronet.adapters.netlink.hold)
            # for what the new config still imports, until the new babeld has them again.
            held = 0
            try:  # best effort: without them the restart still happens, only less smoothly
                held = self.netlink.hold_routes(self.router_ns, d.overlay_table,
                                                babeld.imported(conf.text).__contains__)
                # and the neighbours keep theirs: the old instance's retractions stay here
                self.nft.quiet(self.router_ns, f"{self.config.settings.tunnel_prefix}*")
            except ApplyError as e:
                log.warning("%s", e)
            log.info("%s: the change needs a restart (babeld takes only interface lines at "
                     "run time; its filters changed): restarting it, holding its %d routes "
                     "until the new instance has learned them", name, held)
            self._loop.call_soon_threadsafe(self._restart_holding, child, d.overlay_table)

    def _restart_holding(self, child: Child, table: int) -> None:
        """On the event loop: restart the routing daemon, then release the held routes
        as the new instance re-learns them."""
        old = child.pid
        child.restart()
        self._loop.create_task(self._release_held(child, old, table))

    async def _release_held(self, child: Child, old_pid: int | None, table: int) -> None:
        started = time.monotonic()
        deadline = started + HOLD_FOR + 10 * self.config.settings.babel_hello
        left = None
        while time.monotonic() < deadline and not self._stop.is_set():
            await asyncio.sleep(HOLD_POLL)
            if child.pid in (None, old_pid) or not child.ready.is_set():
                continue  # the old instance has not gone yet, or the new one is starting
            left = await asyncio.to_thread(self.netlink.release_held, self.router_ns, table)
            if left == 0:
                log.info("%s: the new instance has every held route after %.1f s; released",
                         child.name, time.monotonic() - started)
                return
        await asyncio.to_thread(self.netlink.release_held, self.router_ns, table, True)
        log.warning("%s: %s held routes not re-learned in %.0f s; released anyway",
                    child.name, "its" if left is None else left, time.monotonic() - started)

    def _routing_child(self, run: bool) -> None:
        """On the event loop: start or stop the routing daemon's child."""
        name = self.routing.name
        if run and name not in self.children:
            self.children[name] = self._routing_child_process()
            self.children[name].start()
        elif not run and name in self.children:
            log.info("%s: no tunnel to run on; stopping it until there is one", name)
            self._loop.create_task(self.children.pop(name).stop())

    def _vici_sync(self, d: Desired) -> None:
        plan = self.node.vici_plan(d)
        for action in plan:
            log.info("vici %s", action)
        self.vici.apply(plan)
        self._initiate_missing(d)

    def _initiate_missing(self, d: Desired) -> None:
        """Start every tunnel this node initiates and does not hold. charon retries on
        its own (keyingtries 0), but not after the peer refused us, e.g. because it did
        not know us yet; so the agent asks again, never waiting for the answer."""
        have = self.vici.sas()
        missing = [c.name for c in d.state.of(Connection) if c.initiate and c.name not in have]
        if missing:
            self.vici.initiate(missing)

    def sync(self, registry: Registry) -> Desired:
        """Bring the whole node to the desired state for registry (blocking)."""
        d = self.plan_desired(registry)
        self._kernel_sync(d)
        self._routing_sync(d)
        if self.children.get("charon") and self.children["charon"].ready.is_set():
            self._vici_sync(d)
        return d

    def _calls(self) -> dict[str, Counter]:
        return {"vici": Counter(self.vici.calls), "netlink": Counter(self.netlink.calls),
                "nft": Counter(self.nft.calls)}

    async def resync(self, registry: Registry | None = None,
                     recheck: bool = False) -> dict[str, dict[str, int]]:
        """Returns what the sync cost: VICI commands, netlink changes and state reads,
        nft invocations (anything else the agent did meanwhile counts too). recheck:
        the periodic one, on the registry in force once the lock is held (a load may
        have replaced it while this waited), as its expiry leaves it (trusted.py)."""
        async with self._lock:
            before, t0 = self._calls(), time.monotonic()
            reg = registry or self.rt.registry
            if recheck:
                reg = self.trust.tick(reg)
            try:
                d = await asyncio.to_thread(self.sync, reg)
            except Exception:
                self.telemetry.reconciled(time.monotonic() - t0, None)
                raise
            self.rt.registry, self.rt.desired = reg, d
            after = self._calls()
            ops = {k: dict(sorted((after[k] - before[k]).items())) for k in after}
            self.telemetry.reconciled(time.monotonic() - t0, ops)
            return ops

    async def drift(self) -> dict:
        """What differs now between the machine and the desired state (changes nothing;
        between two syncs, so it never sees one half done)."""
        async with self._lock:
            d = self.rt.desired
            if d is None:
                return {"in_sync": False, "differences": ["no desired state yet: the agent is starting"]}
            drift = await asyncio.to_thread(self.node.drift, d, loaded_here=True)
        return {"in_sync": drift.in_sync, "differences": drift.lines(self.routing.conf_path)}

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        try:  # both 0700 and the agent's user's, whatever an earlier run or hand left
            ensure_private_dir(self.paths.runtime_dir)
            ensure_private_dir(self.paths.state_dir)
        except AronetError as e:
            log.error("%s", e)
            return EXIT_FAILURE
        self._refuse_second_instance()
        try:  # before anything changes: a refused registry leaves the machine as it is
            if self._signed is not None:
                self.rt.registry = self.trust.start(self.rt.registry, self._signed)
        except InputError as e:
            for p in e.problems:
                log.error("%s", p)
            log.error("the registry is refused; nothing was changed")
            return EXIT_INPUT
        memory.settle()
        # pyroute2 runs its own asyncio loop inside: every netlink call goes to a thread
        problems = await asyncio.to_thread(self.netlink.preflight)
        if problems:
            for p in problems:
                log.error("kernel: %s", p)
            return EXIT_KERNEL
        await asyncio.to_thread(self.cleanup_stale)
        write_atomic(self.paths.agent_pid, f"{os.getpid()}\n")
        # Not loop.add_signal_handler: its wakeup fd is inherited by the processes
        # pyroute2 forks to work in other namespaces, and a SIGTERM that pyroute2 sends
        # to such a helper would arrive here as if it were ours.
        me = os.getpid()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: os.getpid() == me and self._loop.call_soon_threadsafe(
                self._on_signal, signal.Signals(s)))
        server = fetch = None
        links = asyncio.create_task(self.links.worker())
        watch = asyncio.create_task(self.telemetry.run(self._stop))
        try:
            await self.resync()  # kernel side first: the routing daemon needs the namespace
            write_atomic(self.paths.charon_conf, swan.strongswan_conf(
                vici_socket=self.paths.vici_socket, port=self.config.node.port))
            self._start_children()
            server = await serve(self.paths.control_socket, self.handle,
                                 {"events": self.telemetry.bus.stream})
            if self.config.registry.source:
                fetch = asyncio.create_task(Fetcher(
                    self.config.registry, self.handlers.load_signed,
                    lambda line: setattr(self.trust, "last_fetch", line)).run(self._stop))
            log.info("aronet %s: %s running (%s mode), %d peers in the registry", __version__,
                     self.config.node.name, self.config.settings.mode, len(self.rt.registry.nodes) - 1)
            await self._watch()
            return EXIT_OK
        except AronetError as e:
            log.error("%s", e)
            return e.exit_code
        except Exception:
            log.exception("aronet failed; cleaning up")
            return EXIT_FAILURE
        finally:
            links.cancel()
            watch.cancel()
            if fetch is not None:
                fetch.cancel()
            if server is not None:
                server.close()
            await self.shutdown()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s", sig.name)
        self.stop()

    def stop(self) -> None:
        """On the event loop: begin the clean stop."""
        self._stop.set()

    def _charon_ready(self) -> bool:
        charon = self.children.get("charon")
        return charon is not None and charon.ready.is_set()

    def _refuse_second_instance(self) -> None:
        from ..client import request

        try:
            request(self.paths.control_socket, {"cmd": "info"}, timeout=2)
        except AronetError:
            return
        raise AlreadyRunning(f"an agent already runs with {self.paths.control_socket}")

    def cleanup_stale(self) -> None:
        """Remove what an earlier run of this instance left; only aronet's own: its
        orphaned children, the XFRM states and policies of this node's if_ids (a killed
        charon's), its kernel objects and nft table. Set back the sysctls it changed:
        their values from before aronet are kept in the state directory
        (Paths.sysctl_originals), so this works after a SIGKILL too. Then record
        net.core.xfrm_acq_expires, which charon is about to change."""
        self.netlink.keep_originals(self.paths.sysctl_originals)
        pid_files = [self.paths.child_pid(n) for n in ("charon", "bird", "babeld")]
        killed = kill_orphans(self.paths.instance_tag, pid_files)
        if killed:
            log.warning("stopped %d orphaned child process(es) of an earlier run: %s", len(killed), killed)
        self._remove_sas("left by an earlier run")  # before remove_all: it finds the tunnels
        self.netlink.remove_all()  # in netns mode, the namespace takes its nft table along
        if not self.router_ns:  # (the quiet table too: a babeld restart's, netlink.hold)
            self.nft.delete("")
            self.nft.unquiet("")
        self.netlink.remember_sysctl("", CHARON_SYSCTL)

    def _remove_sas(self, why: str) -> None:
        """Delete the XFRM states and policies of this node's if_ids (its desired
        tunnels' and those in the kernel now); only while no charon of ours holds any.
        A failure is logged, never fatal."""
        try:
            d = self.rt.desired or self.plan_desired(self.rt.registry)
            if_ids = {x.if_id for x in d.state.of(XfrmInterface)}
        except AronetError as e:  # an unplannable registry: the tunnels in the kernel
            log.warning("%s", e)
            if_ids = set()
        try:
            states, policies = self.netlink.remove_sas(if_ids)
        except AronetError as e:  # never fatal: they expire, and the next start retries
            log.error("removing the XFRM states and policies %s: %s", why, e)
            return
        if states or policies:
            log.warning("removed %d XFRM state(s) and %d policy(ies) %s", states, policies, why)

    def _child_env(self) -> dict[str, str]:
        env = charon_cmd.environment(self.paths.charon_conf)
        tag_key, tag_value = self.paths.instance_tag.split("=", 1)
        env[tag_key] = tag_value
        return env

    def _start_children(self) -> None:
        env = self._child_env()
        charon = charon_cmd.find_charon()
        if charon is None:
            raise ApplyError("charon", "start", "not installed (Debian package strongswan-charon)")
        self.children["charon"] = Child(
            "charon", charon_cmd.command(charon, self.paths.runtime_dir), env,
            self.paths.child_pid("charon"), on_start=self._charon_started,
            on_exit=self.telemetry.child_exited)
        d = self.rt.desired
        conf = d.state.of(RoutingConfig)[0].text if d else ""
        if self.routing.runnable(conf):
            self.children[self.routing.name] = self._routing_child_process()
        else:
            log.info("%s: no tunnel to run on yet; it starts with the first peer", self.routing.name)
        for child in self.children.values():
            child.start()

    def _routing_child_process(self) -> Child:
        name = self.routing.name
        return Child(name, self.routing.command(), self._child_env(), self.paths.child_pid(name),
                     on_start=self._routing_started, prepare=self._routing_prepare,
                     on_exit=self.telemetry.child_exited)

    def _routing_prepare(self) -> None:
        """Before every start of the routing daemon: it reads the config as written,
        and may speak (a restart quieted the old instance: _routing_sync)."""
        self.routing.prepare()
        self._routing_stale = False
        try:
            self.nft.unquiet(self.router_ns)
        except ApplyError as e:
            log.warning("%s", e)

    async def _charon_started(self) -> None:
        def connect():
            # A charon that was killed left its SAs in the kernel; this one has loaded
            # nothing yet, so all of this node's if_ids are stale.
            self._remove_sas("left by a charon that died")
            self.vici.forget()
            self.vici.connect(timeout=15)
            self.vici.load_key(self.config.private_key_pem)
        await asyncio.to_thread(connect)
        self._start_listener()
        self.children["charon"].ready.set()
        async with self._lock:
            d = self.rt.desired or self.plan_desired(self.rt.registry)
            await asyncio.to_thread(self._vici_sync, d)

    async def _routing_started(self) -> None:
        deadline = time.monotonic() + 10
        while not os.path.exists(self.routing.socket_path):
            if time.monotonic() > deadline:
                raise ApplyError(self.routing.name, "start", "no control socket after 10 s")
            await asyncio.sleep(0.05)

    def _start_listener(self) -> None:
        def run():
            try:
                for label, msg in listen(self.paths.vici_socket):
                    self._loop.call_soon_threadsafe(self.links.on_event, label, msg)
            except Exception as e:  # charon went away; it is restarted with a new listener
                log.debug("vici event listener ended: %s", e)
        self._listener = threading.Thread(target=run, name="vici-events", daemon=True)
        self._listener.start()

    async def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), RECHECK_INTERVAL)
            except TimeoutError:
                try:
                    await self.resync(recheck=True)
                    self.rt.last_error = ""
                except AronetError as e:
                    self.rt.last_error = str(e)
                    log.error("re-check failed: %s", e)
                self.links.follow_all()  # a lost or late event, repaired
                memory.collect()  # see memory.py: what the re-check left in cycles

    async def shutdown(self) -> None:
        log.info("stopping: terminating SAs, stopping children, removing what aronet created")
        charon = self.children.get("charon")
        if charon and charon.ready.is_set():
            try:
                await asyncio.to_thread(self.vici.terminate_all)
            except AronetError as e:
                log.warning("%s", e)
        for child in self.children.values():
            try:
                await child.stop()
            except Exception:
                log.exception("stopping %s", child.name)
        self.vici.close()
        try:
            # charon is stopped: what it did not take away (an earlier, killed charon's
            # SAs, or all when terminating failed) goes now, then the rest; remove_all
            # also sets the sysctls back and removes Paths.sysctl_originals.
            await asyncio.to_thread(self._remove_sas, "left by charon")
            await asyncio.to_thread(self.netlink.remove_all)  # in netns mode, with the table
            if not self.router_ns:
                self.nft.delete("")
                self.nft.unquiet("")
        except AronetError as e:
            log.error("cleanup: %s", e)
        for path in (self.paths.control_socket, self.paths.charon_conf, *self.routing.files(),
                     self.paths.vici_socket, self.paths.agent_pid):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(self.paths.runtime_dir)
        log.info("stopped; what this agent created is removed")
