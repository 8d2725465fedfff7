"""Read and write sysctls in a named network namespace, and say why one failed.

The files under /proc/sys/net belong to the network namespace of the thread that
looks them up. So a value in another namespace is read or written by a short-lived
thread that joins that namespace first: setns() changes only the calling thread,
and the agent's own threads never leave their namespace.

`netns` is the name of a named network namespace (aronet.core.names.netns_path), or ""
for the caller's namespace.
Values are compared as the kernel prints them, with runs of whitespace made one
space ("4096\t87380" reads as "4096 87380").
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from pyroute2 import netns as pr_netns

from ..core.names import netns_path

T = TypeVar("T")


def path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """fn() run inside netns (directly when netns is "")."""
    if not netns:
        return fn()
    result: dict[str, object] = {}

    def run():
        try:
            pr_netns.setns(netns, flags=0)  # flags=0: never create a missing namespace
            result["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            result["error"] = e

    worker = threading.Thread(target=run, name=f"aronet-netns-{netns}")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def normalize(value: str) -> str:
    return " ".join(str(value).split())


def read(netns: str, name: str) -> str | None:
    """The current value, or None when this kernel (or namespace) has no such sysctl.
    Raises NoNamespace if the namespace itself is missing."""
    if netns:
        _require_netns(netns)

    def get():
        try:
            with open(path(name)) as f:
                return normalize(f.read())
        except FileNotFoundError:
            return None

    return in_netns(netns, get)


def write(netns: str, name: str, value: str) -> None:
    if netns:
        _require_netns(netns)

    def put():
        # One write() of the whole value: the kernel parses each write separately.
        fd = os.open(path(name), os.O_WRONLY)
        try:
            os.write(fd, normalize(value).encode())
        finally:
            os.close(fd)

    in_netns(netns, put)


class NoNamespace(FileNotFoundError):
    """The namespace itself is missing (as opposed to the sysctl in it)."""


def _require_netns(netns: str) -> None:
    where = netns_path(netns)
    if not os.path.exists(where):
        raise NoNamespace(errno.ENOENT, "no such network namespace", where)


def errno_name(code: int | None) -> str:
    """EOPNOTSUPP, not its alias ENOTSUP (errno.errorcode keeps the last one)."""
    if code == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(code, str(code))


def why(err: OSError, name: str, netns: str, value: str | None = None) -> str:
    """A sentence saying why `name` could not be read or set."""
    where = f" in netns {netns}" if netns else ""
    code = err.errno
    tag = f"{errno_name(code)}: {err.strerror or os.strerror(code or 0)}"
    if isinstance(err, NoNamespace):
        return f"network namespace {netns} does not exist ({tag})"
    if code == errno.ENOENT:
        extra = (" (some sysctls exist only in the root namespace)" if netns else "")
        return f"this kernel has no {name}{where}{extra}"
    if code == errno.EBUSY:
        return (f"the kernel refuses to change {name}{where} now ({tag}); some values "
                "cannot be changed back once set")
    if code in (errno.EPERM, errno.EACCES):
        return (f"not permitted to set {name}{where} ({tag}): aronet needs root "
                "(CAP_NET_ADMIN over the namespace)")
    if code == errno.EROFS:
        return (f"/proc/sys is read-only here ({tag}): a container may mount it read-only; "
                f"set {name} from outside or give the container write access")
    if code == errno.EINVAL:
        shown = f" {value!r}" if value is not None else ""
        return f"the kernel rejects the value{shown} for {name}{where} ({tag})"
    return f"cannot set {name}{where} ({tag})"
