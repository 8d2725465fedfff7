"""A running lab's metrics and events: `aronet-lab metrics NODE` and `aronet-lab
events`, and the event recorder that `measure failover` runs beside its ping.

A node's scrape is a real HTTP GET of /metrics, made inside the node's namespace
(where its agent listens) when the node's config.json has metrics.listen, and the
agent's `metrics` control command otherwise. The events of every node are read at
once, one thread per node's stream (aronet.client.events), into one list in the
order they arrived, each tagged with the lab's name of its node.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from aronet.client import events as event_stream
from aronet.client import request
from aronet.core.names import netns_path
from aronet.errors import AronetError

from .run import Lab, restart_agent, stop_agents

DEFAULT_LISTEN = "127.0.0.1:9474"  # every node has a namespace (and a loopback) of its own

# what runs inside the node's namespace: the GET, its body on stdout
_GET = ("import sys, urllib.request\n"
        "with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:\n"
        "    sys.stdout.write(r.read().decode())\n")


def listen_of(lab: Lab, node: str) -> str | None:
    """The node's metrics.listen, as its config.json has it (None: no listener)."""
    with open(lab.config_file(node)) as f:
        return (json.load(f).get("metrics") or {}).get("listen")


def scrape(lab: Lab, node: str, timeout: float = 20.0) -> str:
    """The node's metrics, as Prometheus would get them."""
    n = lab.plan.node(node)
    listen = listen_of(lab, node)
    if listen is None:
        return request(lab.control_socket(node), {"cmd": "metrics"}, timeout=timeout)["text"]
    argv = ["nsenter", f"--net={netns_path(n.ns)}", "--", sys.executable, "-c", _GET,
            f"http://{listen}/metrics", str(timeout)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
    if r.returncode != 0:
        raise AronetError(f"{node}: GET http://{listen}/metrics failed: "
                          f"{(r.stderr.strip().splitlines() or ['no output'])[-1]}")
    return r.stdout


def enable_metrics(lab: Lab, node: str, listen: str = DEFAULT_LISTEN, detail: str = "peer") -> int:
    """Give the node a metrics listener: its config.json gets a metrics block and its
    agent is restarted (stopped cleanly, started again). Returns the new pid."""
    path = lab.config_file(node)
    with open(path) as f:
        doc = json.load(f)
    doc["metrics"] = {"listen": listen, "detail": detail}
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    stop_agents(lab, [node])
    return restart_agent(lab, node)


class Recorder:
    """Every node's events while it runs (a context manager): events, a list of
    (node, event) in arrival order; say(node, event) is called for each as it comes."""

    def __init__(self, lab: Lab, nodes: list[str] | None = None, poll: float | None = None,
                 say: Callable[[str, dict], None] | None = None):
        self.lab, self.poll, self.say = lab, poll, say
        self.nodes = nodes or [n.name for n in lab.plan.nodes]
        self.events: list[tuple[str, dict]] = []
        self.errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ready = threading.Semaphore(0)

    def __enter__(self) -> Recorder:
        for node in self.nodes:
            t = threading.Thread(target=self._follow, args=(node,), daemon=True, name=f"events-{node}")
            t.start()
            self._threads.append(t)
        for _ in self.nodes:  # every stream subscribed (or failed) before anything is measured
            self._ready.acquire(timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _follow(self, node: str) -> None:
        ready = False
        try:
            for event in event_stream(self.lab.control_socket(node), poll=self.poll,
                                      stop=self._stop.is_set):
                if not ready:
                    ready = True
                    self._ready.release()
                with self._lock:
                    self.events.append((node, event))
                if self.say is not None:
                    self.say(node, event)
        except (AronetError, OSError, ValueError) as e:
            self.errors[node] = str(e)
        finally:
            if not ready:
                self._ready.release()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._threads.clear()

    def wait_for(self, check: Callable[[list[tuple[str, dict]]], bool], timeout: float) -> bool:
        """Poll the recorded events until check(events) is true, or the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if check(list(self.events)):
                    return True
            time.sleep(0.05)
        return False


def line(node: str, event: dict) -> str:
    """One merged line: the event with the lab's name of its node first."""
    return json.dumps({"lab_node": node, **event}, separators=(",", ":"))
