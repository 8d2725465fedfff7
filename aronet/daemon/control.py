"""The control socket: one JSON object per line each way.

Requests: {"cmd": "load", "file": path, "registry": <registry JSON>},
{"cmd": "status"}, {"cmd": "check"} (drift: {"in_sync", "differences"}), {"cmd": "info"},
{"cmd": "stop"}, {"cmd": "memory", ...} (see memory.py), {"cmd": "metrics"} (the
scrape as text). Replies: {"ok": true, ...} or {"ok": false, "error": text,
"problems": [[file, path, message], ...]}. A streaming command ({"cmd": "events"}:
events.py) gets no reply object: its handler keeps the connection and writes lines
until the client closes it. The client side is aronet/client.py.

Who may talk: the socket is created with mode 0600 in the 0700 runtime directory, and
each connection's peer credentials (SO_PEERCRED) are checked as well: only root and
the agent's own user get an answer; anyone else gets "permission denied". Every
request gets a reply: one that is not a JSON object (invalid UTF-8 or JSON, a list,
a number) or a line over MAX_REQUEST bytes gets {"ok": false, "error": "bad request:
..."}, and the server goes on serving the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable

from ..errors import AronetError, InputError

Handler = Callable[[dict], Awaitable[dict]]
# a streaming command: (request, reader, writer); it writes until the client leaves
Streamer = Callable[[dict, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MAX_REQUEST = 64 * 1024 * 1024
DENIED_READ_TIMEOUT = 5.0  # s
_UCRED = "3i"  # struct ucred: pid, uid, gid

log = logging.getLogger("aronet")


async def serve(path: str, handler: Handler,
                streams: dict[str, Streamer] | None = None) -> asyncio.AbstractServer:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    old = os.umask(0o177)  # the socket is born 0600: no window where others can connect
    try:
        server = await asyncio.start_unix_server(lambda r, w: _session(r, w, handler, streams or {}),
                                                 path, limit=MAX_REQUEST)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


def peer_allowed(uid: int, euid: int | None = None) -> bool:
    """Root and the agent's own user (euid) may use the control socket."""
    return uid == 0 or uid == (os.geteuid() if euid is None else euid)


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(_UCRED))
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = struct.unpack(_UCRED, raw)
    return uid


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler,
                   streams: dict[str, Streamer]):
    try:
        uid = _peer_uid(writer)
        if uid is None or not peer_allowed(uid):
            log.warning("control socket: refused a client with uid %s", uid)
            # take (and ignore) its request first: a client whose request found the
            # socket closed would see a broken pipe instead of this answer
            with contextlib.suppress(ValueError, TimeoutError):
                await asyncio.wait_for(reader.readline(), DENIED_READ_TIMEOUT)
            reply = {"ok": False, "error": "permission denied: only root and uid "
                     f"{os.geteuid()} may use this control socket"}
        else:
            reply = await _answer(reader, handler, streams, writer)
            if reply is None:  # a stream, served to its end
                return
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def _json_kind(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


def _bad(why: str) -> dict:
    return {"ok": False, "error": f"bad request: {why}"}


async def _answer(reader: asyncio.StreamReader, handler: Handler, streams: dict[str, Streamer],
                  writer: asyncio.StreamWriter) -> dict | None:
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError, re-raised by readline
        return _bad(f"the request is longer than {MAX_REQUEST} bytes")
    try:
        request = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return _bad("not UTF-8 text")
    except RecursionError:
        return _bad("invalid JSON: nested too deeply")
    except ValueError as e:  # JSONDecodeError, or an integer literal too long
        return _bad(f"invalid JSON: {e}")
    if not isinstance(request, dict):
        return _bad(f"not a JSON object but {_json_kind(request)}")
    try:
        stream = streams.get(request.get("cmd"))
        if stream is not None:
            await stream(request, reader, writer)
            return None
        return await handler(request)
    except InputError as e:
        return {"ok": False, "error": "invalid input",
                "problems": [[p.file, p.path, p.message] for p in e.problems]}
    except AronetError as e:
        return {"ok": False, "error": str(e)}
    except (ValueError, TypeError) as e:
        return _bad(str(e))
    except Exception as e:
        log.exception("control socket: the request failed")
        return {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
