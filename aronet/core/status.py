"""The status document: what `aronet status` shows of a running agent, per peer and
tunnel (IKE SA, CHILD_SA, XFRM interface, babel neighbour) with the babel routes to
that peer's prefixes.

The agent builds it (aronet/daemon/handlers.py), sends it as JSON over the control
socket, and every reader parses it back here: `aronet status`, `aronet-lab status`,
the lab's checks and graph. One renderer prints it as a table for both command lines.
The JSON keeps one shape: {"node", "mode", "peers": [{"peer", "tunnels": [...],
"routes": [...]}], "registry": {...}}; a status that could not be had carries "error"
instead; "registry" (the registry in force, its serial, signers, expiry and
revocations) is there when the agent has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from ..errors import AronetError

NONE = "NONE"  # the IKE or CHILD_SA state of a tunnel charon holds nothing for


@dataclass(frozen=True)
class Tunnel:
    name: str  # the connection, and its XFRM interface, of the same name
    family: str
    remote: str = ""  # the remote addresses as charon has them ("%any" for a responder)
    initiator: bool = False
    ike: str = NONE
    child: str = NONE
    interface: str = ""
    interface_up: bool = False
    babel_neighbor: str | None = None
    babel_metric: int | None = None

    @property
    def up(self) -> bool:
        """Carrying traffic: its CHILD_SA is installed and its interface is up."""
        return self.child == "INSTALLED" and self.interface_up


@dataclass(frozen=True)
class Route:
    """A route babel selected toward a prefix of this peer's."""

    prefix: str
    via: str | None = None
    interface: str | None = None
    metric: int | None = None


@dataclass(frozen=True)
class Peer:
    peer: str  # organization/common_name
    tunnels: tuple[Tunnel, ...] = ()
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class RegistryInfo:
    """The registry in force and its signed statement (aronet.trust), as the agent has it."""

    nodes: int = 0
    signature: str = "off"  # the node's policy: off, optional, required
    state: str = "unsigned"  # unsigned, valid, expired (frozen), expired (failed)
    mesh: str | None = None
    serial: int | None = None
    signers: tuple[str, ...] = ()  # fingerprints of the valid trusted signatures
    issued_at: str | None = None
    expires_at: str | None = None
    revoked: int = 0  # revoked keys and nodes in force
    left_out: tuple[str, ...] = ()  # the registry's nodes the planner does not see, and why
    source: str | None = None  # where the agent fetches from
    last_fetch: str | None = None  # what the last fetch did


@dataclass(frozen=True)
class Status:
    node: str
    mode: str = ""
    peers: tuple[Peer, ...] = ()
    error: str | None = None  # set (and peers empty) when the agent did not answer
    registry: RegistryInfo | None = None

    @classmethod
    def unanswered(cls, node: str, error: str) -> Status:
        return cls(node=node, error=error)

    def tunnels(self) -> dict[str, tuple[Peer, Tunnel]]:
        """Every tunnel by name, with its peer."""
        return {t.name: (p, t) for p in self.peers for t in p.tunnels}

    def routes(self) -> list[Route]:
        return [r for p in self.peers for r in p.routes]

    def to_json(self) -> dict:
        doc: dict = {"node": self.node}
        if self.error is not None:
            doc["error"] = self.error
        if self.mode:
            doc["mode"] = self.mode
        doc["peers"] = [{"peer": p.peer,
                         "tunnels": [asdict(t) for t in p.tunnels],
                         "routes": [asdict(r) for r in p.routes]} for p in self.peers]
        if self.registry is not None:
            doc["registry"] = {k: list(v) if isinstance(v, tuple) else v
                               for k, v in asdict(self.registry).items()}
        return doc

    @classmethod
    def from_json(cls, doc: object) -> Status:
        """The document an agent sent; AronetError when it is not one."""
        try:
            if not isinstance(doc, Mapping):
                raise TypeError("not an object")
            peers = tuple(Peer(peer=str(p["peer"]),
                               tunnels=tuple(_record(Tunnel, t) for t in p.get("tunnels", ())),
                               routes=tuple(_record(Route, r) for r in p.get("routes", ())))
                          for p in doc.get("peers", ()))
            reg = doc.get("registry")
            registry = None if reg is None else _record(RegistryInfo, {
                k: tuple(v) if isinstance(v, list) else v for k, v in reg.items()})
            return cls(node=str(doc.get("node", "")), mode=str(doc.get("mode", "")), peers=peers,
                       error=doc.get("error"), registry=registry)
        except (TypeError, KeyError, AttributeError, ValueError) as e:
            raise AronetError(f"the agent's status document is malformed: {e}") from None


def _record(kind, raw: Mapping):
    known = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in raw.items() if k in known})


# column -> width; the title is the column's name, and numbers are right-aligned
_WIDTHS = {"node": 8, "peer": 24, "tunnel": 12, "fam": 4, "IKE": 12, "CHILD": 10, "if": 4,
           "babel neighbour": 28, "metric": 6}
_RIGHT = {"metric"}
NODE_COLUMNS = ("peer", "tunnel", "fam", "IKE", "CHILD", "if", "babel neighbour", "metric")
LAB_COLUMNS = ("node", "peer", "tunnel", "IKE", "CHILD", "if", "metric")


def _row(columns: tuple[str, ...], values: Mapping[str, object], routes: str) -> str:
    cells = []
    for name in columns:
        v = values.get(name, "")
        text, width = "-" if v is None else str(v), _WIDTHS[name]
        cells.append(f"{text:>{width}}" if name in _RIGHT else f"{text:<{width}}")
    return " ".join(cells) + f"  {routes}"


def render(statuses: Mapping[str, Status], columns: tuple[str, ...] = NODE_COLUMNS) -> str:
    """One table of every tunnel of every status (keyed by node name), the routes of
    each peer on its first tunnel's line. A status that could not be had gets one line."""
    lines = [_row(columns, {name: name for name in columns}, "routes")]
    for node, st in statuses.items():
        if st.error is not None:
            lines.append(f"{node:<8} agent: {st.error}")
            continue
        for p in st.peers:
            routes = ", ".join(f"{r.prefix} via {r.interface}" for r in p.routes) or "-"
            for tun in p.tunnels:
                lines.append(_row(columns, {
                    "node": node, "peer": p.peer, "tunnel": tun.name, "fam": tun.family,
                    "IKE": tun.ike, "CHILD": tun.child, "if": "up" if tun.interface_up else "down",
                    "babel neighbour": tun.babel_neighbor, "metric": tun.babel_metric}, routes))
                routes = ""
    return "\n".join(lines) + "\n"
