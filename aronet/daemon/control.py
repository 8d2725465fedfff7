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
from collections.abc import Awaitable, Callable

from ..errors import AronetError, InputError

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
