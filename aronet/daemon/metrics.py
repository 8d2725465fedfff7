"""The agent's Prometheus metrics (config.json's `metrics` block): a private
prometheus_client CollectorRegistry with

- one custom collector for the state (aronet.core.metrics.families), which reads the
  watcher's latest observation and what the agent holds: a scrape never observes;
- prometheus_client's own Histogram and Counters for what happens between scrapes
  (syncs and their actions, refused registries, failed observations);

served by the listener and/or written to the textfile (aronet/adapters/exporter.py)
after every observation. Imported only when the block is there (telemetry.py).
"""

from __future__ import annotations

import ipaddress
import logging

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

from ..adapters.exporter import Listener, exposition, write_textfile
from ..core.metrics import REFUSAL_REASONS, families, plan_actions, refusal_reason
from ..core.observed import Observation
from ..errors import AronetError
from ..model import MetricsSettings

log = logging.getLogger("aronet")

SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SOURCES = ("vici", "routing", "netlink", "textfile")


class StateCollector(Collector):
    def __init__(self, telemetry, per_peer: bool):
        self.telemetry, self.per_peer = telemetry, per_peer

    def collect(self):
        return families(self.telemetry.snapshot(), self.per_peer)


class Metrics:
    def __init__(self, telemetry, settings: MetricsSettings):
        self.telemetry, self.settings = telemetry, settings
        r = self.registry = CollectorRegistry(auto_describe=False)
        r.register(StateCollector(telemetry, settings.per_peer))
        self.sync_seconds = Histogram("aronet_reconcile_duration_seconds", "How long a sync of the "
                                      "node to its desired state took", buckets=SYNC_BUCKETS, registry=r)
        self.syncs = Counter("aronet_reconcile", "Syncs of the node to its desired state (every "
                             "re-check and every reload), by result", ["result"], registry=r)
        self.actions = Counter("aronet_plan_actions", "Changes the syncs made, by action",
                               ["action"], registry=r)
        self.load_errors = Counter("aronet_registry_load_errors", "Registries refused (loaded, "
                                   "fetched), by reason", ["reason"], registry=r)
        self.scrape_errors = Counter("aronet_scrape_errors", "Observations of a source that failed",
                                     ["source"], registry=r)
        for result in ("ok", "failed"):
            self.syncs.labels(result)
        for reason in REFUSAL_REASONS:
            self.load_errors.labels(reason)
        for source in SOURCES:
            self.scrape_errors.labels(source)
        self.listener = None
        if settings.listen is not None:
            self.listener = Listener(*settings.listen, self.registry, refuse=self.inside_overlay)
        self._told = False  # the listener's failure to bind was logged

    def inside_overlay(self, source: str) -> bool:
        """A source address of the mesh's overlay: any registry node's network or prefix."""
        try:
            addr = ipaddress.ip_address(source.split("%", 1)[0])
        except ValueError:
            return True
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        for n in self.telemetry.agent.rt.registry.nodes:
            if addr in n.network.network or any(addr.version == p.version and addr in p
                                                 for p in n.prefixes):
                return True
        return False

    def start(self) -> None:
        if self.listener is None or self.listener.running:
            return
        try:
            self.listener.start()
        except AronetError as e:
            if not self._told:
                log.error("%s (tried again after every observation)", e)
                self._told = True
            return
        log.info("metrics: serving http://%s/metrics (detail %s)", self.listener.where,
                 self.settings.detail)

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()

    def observed(self, obs: Observation) -> None:
        for source, why in obs.errors.items():
            if why != "not running":
                self.scrape_errors.labels(source).inc()
        self.start()  # a listener that could not bind yet
        if self.settings.textfile:
            try:
                write_textfile(self.settings.textfile, self.registry)
            except AronetError as e:
                self.scrape_errors.labels("textfile").inc()
                log.warning("%s", e)

    def reconciled(self, seconds: float, operations: dict | None) -> None:
        self.sync_seconds.observe(seconds)
        self.syncs.labels("ok" if operations is not None else "failed").inc()
        for action, n in plan_actions(operations or {}).items():
            self.actions.labels(action).inc(n)

    def load_refused(self, problems) -> None:
        self.load_errors.labels(refusal_reason(problems)).inc()

    def text(self) -> str:
        return exposition(self.registry)
