"""The routing daemon, seen by the agent: one interface, two implementations
(aronet.adapters.bird.Bird and aronet.adapters.babeld.Babeld).

The agent writes the RoutingConfig the planner rendered, runs `command()` as a
supervised child (after `prepare()`, before every start), calls `reload()` when the
written config changed, restarts the child when reload() says the daemon cannot take
the change at run time, and reads babel's neighbours and routes for `status` in one
format: neighbours {address, interface, metric, routes, hellos, expires}, routes
{prefix, via, interface, metric}.
"""

from __future__ import annotations

from typing import Protocol


class RoutingDaemon(Protocol):
    name: str  # "bird" | "babeld": the child's name and log prefix
    conf_path: str
    socket_path: str  # private control socket, in the agent's runtime directory

    def command(self) -> list[str]: ...

    def write(self, text: str) -> bool: ...  # True when the file changed

    def runnable(self, text: str) -> bool: ...  # can the daemon start with this config?

    def prepare(self) -> None: ...

    def reload(self) -> bool: ...  # False: only a restart applies the written config

    def babel_state(self) -> tuple[list[dict], list[dict]]: ...  # (neighbours, routes)

    def files(self) -> list[str]: ...  # removed when the agent stops

    def version(self) -> str | None: ...
