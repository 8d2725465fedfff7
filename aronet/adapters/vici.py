"""strongSwan adapter: talks to one charon over its VICI socket (strongSwan's own
`vici` package).

Connections are loaded and unloaded one by one, so a registry change touches only
the peers it changed. charon cannot report back what it was given (public keys,
for one), so observe() takes the names from charon and the content from what this
adapter loaded into that same charon: after a charon restart the names are gone and
everything is loaded again.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import vici

from ..core import swan
from ..core.diff import Plan
from ..core.state import Connection, State
from ..errors import ApplyError

INITIATE_NOWAIT = -1  # VICI: "a timeout value of -1 returns a result immediately"
TERMINATE_TIMEOUT_MS = 2000


def _serialized(method):
    """A vici session is one request/response stream: the agent's threads (sync,
    status, event handling) must take turns on it."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._mutex:
            return method(self, *args, **kwargs)
    return wrapper


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Vici:
    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self._session: vici.Session | None = None
        self._sock: socket.socket | None = None
        self._loaded: dict[str, Connection] = {}
        self._mutex = threading.RLock()
        self.calls: Counter[str] = Counter()  # VICI commands sent, by name (load-conn, ...)

    # ------------------------------------------------------------ session

    @_serialized
    def connect(self, timeout: float = 10.0) -> None:
        """Wait for charon's socket (it appears a moment after charon starts)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.close()
                self._sock = self._socket()
                self._session = vici.Session(self._sock)
                self._session.version()
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise ApplyError("vici", self.socket_path, f"charon does not answer: {e}") from None
                time.sleep(0.05)

    def _socket(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        try:
            s.connect(self.socket_path)
        except OSError:
            s.close()
            raise
        return s

    @property
    def session(self) -> vici.Session:
        if self._session is None:
            self.connect()
        return self._session

    @_serialized
    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._session = None

    @_serialized
    def forget(self) -> None:
        """charon restarted: nothing we loaded is there any more."""
        self.close()
        self._loaded.clear()

    def _call(self, what: str, fn, *args):
        self.calls[fn.__name__.replace("_", "-")] += 1
        try:
            result = fn(*args)
            if isinstance(result, Iterator):
                result = list(result)  # streamed commands finish when consumed
            return result
        except vici.exception.CommandException as e:
            raise ApplyError("vici", what, str(e)) from None
        except (vici.exception.SessionException, OSError) as e:
            self._session = None
            raise ApplyError("vici", what, f"lost charon: {e}") from None

    # ------------------------------------------------------------ state

    @_serialized
    def version(self) -> str:
        v = self._call("version", self.session.version)
        return f"{_s(v['daemon'])} {_s(v['version'])}"

    @_serialized
    def load_key(self, pem: bytes) -> None:
        self._call("load-key", self.session.load_key, {"type": "any", "data": pem.decode()})

    @_serialized
    def observe(self, by_name: Iterable[Connection] = ()) -> State:
        """The connections charon holds. One this adapter loaded comes back as loaded;
        one it did not load (an earlier agent's) comes back with content that matches
        nothing, so the plan replaces or removes it, unless by_name has a connection of
        that name: a process that loaded nothing (`aronet check`) compares by name."""
        names = set()
        for conn in self._call("list-conns", self.session.list_conns):
            names |= {_s(k) for k in conn}
        named = {c.name: c for c in by_name}
        return State(frozenset(self._loaded.get(n) or named.get(n) or _unknown(n) for n in names))

    @_serialized
    def apply(self, plan: Plan) -> list[str]:
        """Returns the names of connections to initiate (added or changed, where this
        node initiates); initiate() starts them without waiting."""
        start = []
        for action in plan:
            conn = action.resource
            if not isinstance(conn, Connection):
                continue
            if action.op == "remove":
                # unload first: a peer that re-initiates the moment its SA is deleted
                # (a node behind NAT does) must find no config to match, or it is back
                self._call(str(action), self.session.unload_conn, {"name": conn.name})
                self._loaded.pop(conn.name, None)
                self.terminate(conn.name)
                continue
            old = action.old
            if old is not None and (old.remote_pubkey != conn.remote_pubkey
                                    or old.remote_id != conn.remote_id):
                self.terminate(conn.name)  # the peer's key changed: its SAs are not to be trusted
            self._call(str(action), self.session.load_conn, swan.load_conn_message(conn))
            self._loaded[conn.name] = conn
            if conn.initiate:
                start.append(conn.name)
        return start

    @_serialized
    def initiate(self, names: list[str]) -> None:
        for name in names:
            self._call(f"initiate {name}", self.session.initiate,
                       {"child": name, "ike": name, "timeout": INITIATE_NOWAIT})

    @_serialized
    def terminate(self, name: str) -> None:
        """Terminate the IKE_SA (and its CHILD_SA) of a connection, if any."""
        try:
            list(self.session.terminate({"ike": name, "timeout": TERMINATE_TIMEOUT_MS,
                                         "force": "yes"}))
        except vici.exception.CommandException:
            pass  # no SA: nothing to terminate
        except (vici.exception.SessionException, OSError) as e:
            self._session = None
            raise ApplyError("vici", f"terminate {name}", f"lost charon: {e}") from None

    @_serialized
    def terminate_all(self, timeout: float = 3.0) -> None:
        """Ask charon to delete every IKE_SA at once (each DELETE goes to its peer, so
        the peers reroute now rather than after DPD), then wait a little for them."""
        for name in list(self._loaded):
            with contextlib.suppress(vici.exception.CommandException):  # no SA
                list(self.session.terminate({"ike": name, "timeout": INITIATE_NOWAIT}))
        deadline = time.monotonic() + timeout
        while self.sas() and time.monotonic() < deadline:
            time.sleep(0.1)

    @_serialized
    def sas(self) -> dict[str, dict]:
        """IKE_SAs by connection name, as charon lists them (values decoded); where a
        connection has two (one replacing the other), the one with an installed
        CHILD_SA."""
        out: dict[str, dict] = {}
        for name, sa in self._listing():
            if name not in out or has_installed_child(sa) >= has_installed_child(out[name]):
                out[name] = sa
        return out

    @_serialized
    def installed(self) -> set[str]:
        """The connections that have an installed CHILD_SA in any of their IKE_SAs."""
        return {name for name, sa in self._listing() if has_installed_child(sa)}

    def _listing(self) -> Iterator[tuple[str, dict]]:
        for item in self._call("list-sas", self.session.list_sas):
            for name, sa in item.items():
                yield _s(name), _decode(sa)


def has_installed_child(sa: dict) -> bool:
    """An IKE_SA (list-sas, decoded) that is established and carries an installed
    CHILD_SA: its tunnel moves traffic."""
    return sa.get("state") == "ESTABLISHED" and any(
        c.get("state") == "INSTALLED" for c in (sa.get("child-sas") or {}).values())


def _decode(value):
    if isinstance(value, dict):
        return {_s(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return _s(value) if isinstance(value, bytes) else value


def _unknown(name: str) -> Connection:
    return Connection(name=name, peer="?", family="", if_id=0, local_addrs="", remote_addrs="",
                      local_port=0, remote_port=0, local_id="", remote_id="", remote_pubkey="")


def listen(socket_path: str, events=("ike-updown", "child-updown")):
    """A blocking generator of (event name, decoded message) from its own session; run
    it in a thread. if_id values arrive as hex strings."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(socket_path)
    session = vici.Session(s)
    for label, msg in session.listen(list(events)):
        yield _s(label), _decode(msg)

