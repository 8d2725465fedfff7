"""The public client of a running agent: how the command line, the lab and tests talk
to an agent over its control socket (one JSON object per line each way; see
aronet/daemon/control.py for the server and the requests it takes)."""

from __future__ import annotations

import json
import socket

from .errors import AronetError, InputError, Problem
from .paths import Paths

__all__ = ["Paths", "request"]


def request(path: str, message: dict, timeout: float = 60.0) -> dict:
    """Send one request and return the reply. An error reply raises the matching AronetError."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        raise AronetError(f"no agent is running (no control socket at {path})") from None
    except ConnectionRefusedError:
        raise AronetError(f"no agent answers at {path} (stale socket?)") from None
    except PermissionError:
        raise AronetError(f"{path}: permission denied (only root and the agent's own user may "
                          "use the control socket)") from None
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
