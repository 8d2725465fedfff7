"""The public client of a running agent: how the command line, the lab and tests talk
to an agent over its control socket (one JSON object per line each way; see
aronet/daemon/control.py for the server and the requests it takes)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

from .errors import AronetError, InputError, Problem
from .paths import Paths

__all__ = ["Paths", "events", "request"]


def _connect(path: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        s.close()
        raise AronetError(f"no agent is running (no control socket at {path})") from None
    except ConnectionRefusedError:
        s.close()
        raise AronetError(f"no agent answers at {path} (stale socket?)") from None
    except PermissionError:
        s.close()
        raise AronetError(f"{path}: permission denied (only root and the agent's own user may "
                          "use the control socket)") from None
    return s


def events(path: str, poll: float | None = None, timeout: float = 20.0,
           stop: Callable[[], bool] | None = None) -> Iterator[dict]:
    """The agent's event stream (aronet/core/events.py): one dict per event, the first
    {"event": "subscribed"}, for as long as the agent runs and the caller iterates
    (closing the generator closes the connection). poll: how often the agent observes
    babel meanwhile (seconds). timeout bounds the connection and the first line;
    afterwards the stream waits as long as it takes, asking stop() (from another
    thread, say) twice a second whether to end."""
    s = _connect(path, timeout)
    with s:
        request = {"cmd": "events", **({"poll": poll} if poll is not None else {})}
        buf, first = b"", True
        try:
            s.sendall(json.dumps(request).encode() + b"\n")
            while True:
                while b"\n" not in buf:
                    try:
                        chunk = s.recv(1 << 16)
                    except TimeoutError:
                        if first:
                            raise
                        if stop is not None and stop():
                            return
                        continue
                    if not chunk:
                        return  # the agent stopped
                    buf += chunk
                line, buf = buf.split(b"\n", 1)
                doc = json.loads(line)
                if doc.get("ok") is False:
                    raise AronetError(doc.get("error", "the agent refused the stream"))
                if first:
                    first = False
                    s.settimeout(0.5)
                yield doc
        except TimeoutError:
            raise AronetError(f"the agent at {path} did not answer within {timeout:.0f} s") from None
        except OSError as e:
            raise AronetError(f"{path}: {e.strerror or e}") from None


def request(path: str, message: dict, timeout: float = 60.0) -> dict:
    """Send one request and return the reply. An error reply raises the matching AronetError."""
    s = _connect(path, timeout)
    with s:
        data = b""
        try:
            s.sendall(json.dumps(message).encode() + b"\n")
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise AronetError(f"the agent at {path} did not answer within {timeout:.0f} s") from None
        except OSError as e:
            raise AronetError(f"{path}: {e.strerror or e}") from None
    reply = json.loads(data or b"{}")
    if not reply.get("ok"):
        if reply.get("problems"):
            raise InputError([Problem(*p) for p in reply["problems"]])
        raise AronetError(reply.get("error", "the agent closed the connection"))
    return reply
