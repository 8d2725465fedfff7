"""The control socket: one JSON object per line each way.

Requests: {"cmd": "load", "file": path, "registry": <registry JSON>},
{"cmd": "status"}, {"cmd": "info"}, {"cmd": "stop"}, {"cmd": "memory", ...} (see
memory.py). Replies: {"ok": true, ...} or
{"ok": false, "error": text, "problems": [[file, path, message], ...]}.
The socket is created with mode 0600: only root talks to the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable

from ..errors import AronetError, InputError, Problem

Handler = Callable[[dict], Awaitable[dict]]
MAX_REQUEST = 64 * 1024 * 1024


async def serve(path: str, handler: Handler) -> asyncio.AbstractServer:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    old = os.umask(0o177)  # the socket is born 0600: no window where others can connect
    try:
        server = await asyncio.start_unix_server(lambda r, w: _session(r, w, handler), path,
                                                 limit=MAX_REQUEST)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler):
    try:
        line = await reader.readline()
        try:
            request = json.loads(line)
            reply = await handler(request)
        except InputError as e:
            reply = {"ok": False, "error": "invalid input",
                     "problems": [[p.file, p.path, p.message] for p in e.problems]}
        except AronetError as e:
            reply = {"ok": False, "error": str(e)}
        except (ValueError, TypeError) as e:
            reply = {"ok": False, "error": f"bad request: {e}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def request(path: str, message: dict, timeout: float = 60.0) -> dict:
    """Client side, for the CLI. An error reply raises the matching AronetError."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        raise AronetError(f"no agent is running (no control socket at {path})") from None
    except ConnectionRefusedError:
        raise AronetError(f"no agent answers at {path} (stale socket?)") from None
    except PermissionError:
        raise AronetError(f"{path}: permission denied (the control socket is root's)") from None
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
