"""The metrics' two ways out: an HTTP listener for Prometheus and a textfile for
node_exporter's textfile collector. What they serve is a prometheus_client
CollectorRegistry (aronet/daemon/metrics.py); the exposition is prometheus_client's
own (make_wsgi_app, generate_latest).

The listener binds exactly one address (config.json's metrics.listen, which the
loader keeps off wildcards and overlay addresses) in the agent's own namespace, and
closes, unanswered, every connection whose source the caller refuses: the agent
refuses every address of the mesh's overlay, the only sources aronet's nft table
lets in from a tunnel. It serves in a thread of its own (one per request), so a slow
scraper never holds up the event loop.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app

from ..errors import ApplyError
from .files import write_atomic

log = logging.getLogger("aronet")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:
        pass  # a scrape every 15 s would drown the agent's log


def _server_class(family: int, refuse: Callable[[str], bool]) -> type[WSGIServer]:
    class Server(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True
        allow_reuse_address = True

        def verify_request(self, request, client_address) -> bool:
            if refuse(client_address[0]):
                log.warning("metrics: refused a connection from %s (inside the overlay)",
                            client_address[0])
                return False
            return True

    return Server


class Listener:
    """HTTP on host:port serving registry; start() binds (ApplyError when it cannot)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 refuse: Callable[[str], bool] = lambda _addr: False):
        self.host, self.port, self.registry, self.refuse = host, port, registry, refuse
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(self.host).version == 6 else socket.AF_INET
        try:
            self._server = make_server(self.host, self.port, make_wsgi_app(self.registry),
                                       server_class=_server_class(family, self.refuse),
                                       handler_class=_Quiet)
        except OSError as e:
            raise ApplyError("metrics", f"listen {self.where}", e.strerror or str(e)) from None
        self.port = self._server.server_port  # port 0: the one the kernel chose
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http",
                                        daemon=True)
        self._thread.start()

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None


def exposition(registry: CollectorRegistry) -> str:
    """The text format a scrape gets (Prometheus 0.0.4)."""
    return generate_latest(registry).decode()


def write_textfile(path: str, registry: CollectorRegistry) -> bool:
    """Atomically (node_exporter never reads half a file); False when unchanged."""
    try:
        return write_atomic(path, exposition(registry), mode=0o644)
    except OSError as e:
        raise ApplyError("metrics", f"textfile {path}", e.strerror or str(e)) from None
