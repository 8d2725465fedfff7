"""The wire protocol between the host and a persistent microVM, and its host-side client.

The host reaches the guest through a QEMU virtio-serial port whose host end is
a unix socket (vsock cannot be loaded on these hosts and 9p cannot hold
sockets).  In the guest, lab/vm/guest.py serves that port; on the host,
lab.vm.persistent.forward() is the client, through run_remote() here.

Protocol: one JSON object per line (ASCII, so a payload never holds a raw
newline), every message carries the request's "id".

  host -> guest                                guest -> host
  {"id", "cmd": "ping"}                        {"id", "pong": true, "uptime": s}
  {"id", "argv": [...], "cwd"?, "env"?}        {"id", "out": text}*  {"id", "err": text}*
                                               then {"id", "exit": code}
  {"id", "cmd": "signal", "signal": n}         (none: the signal goes to the running command)
  {"id", "cmd": "shutdown"}                    {"id", "bye": true}, then the server exits
  anything else                                {"id", "error": text}

An "argv" request runs the guest server's command (the entry point its host
gave it, e.g. aronet-lab) with ARGV; its stdout and stderr come back as they
are produced, and "exit" follows the last of them.  One command runs at a
time; the host serialises its clients.

Stdlib only, like all of lab.vm: it must work while aronet itself is broken.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

PORT_NAME = "aronet.0"  # the virtio-serial port's name, on both ends
CHUNK = 65536
MAX_LINE = 4 << 20  # a request longer than this is garbage, not a request


class ChannelError(RuntimeError):
    """The other end went away or sent something that is not the protocol."""


# --------------------------------------------------------------------------
# framing (both ends)


def encode(msg: dict[str, Any]) -> bytes:
    """One message as one line. ensure_ascii keeps every payload newline escaped."""
    return (json.dumps(msg, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


class Decoder:
    """Bytes in, whole messages out; keeps a partial line until its newline arrives."""

    def __init__(self, max_line: int = MAX_LINE):
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        msgs = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line = bytes(self._buf[:nl]).strip()
            del self._buf[: nl + 1]
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError as e:
                raise ChannelError(f"not a protocol line ({e}): {line[:200]!r}") from None
            if not isinstance(msg, dict):
                raise ChannelError(f"not a protocol message: {line[:200]!r}")
            msgs.append(msg)
        if len(self._buf) > self._max:
            self._buf.clear()
            raise ChannelError(f"a line longer than {self._max} bytes")
        return msgs

    def reset(self) -> None:
        self._buf.clear()

    @property
    def pending(self) -> int:
        return len(self._buf)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# --------------------------------------------------------------------------
# the host's client


def messages(sock, decoder: Decoder | None = None) -> Iterator[dict[str, Any]]:
    """Messages from a connected socket until it closes."""
    decoder = decoder or Decoder()
    while True:
        data = sock.recv(CHUNK)
        if not data:
            if decoder.pending:
                raise ChannelError("the channel closed in the middle of a message")
            return
        yield from decoder.feed(data)


def _new_id() -> str:
    # Unique across clients: a client may see output of an interrupted
    # command of an earlier client, which it must ignore.
    return f"{os.getpid()}-{time.monotonic_ns()}"


def ping(sock, timeout: float | None = None) -> dict[str, Any]:
    """Send a ping and wait for its pong (sock.settimeout(timeout) meanwhile)."""
    req_id = _new_id()
    old = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        sock.sendall(encode({"id": req_id, "cmd": "ping"}))
        for msg in messages(sock):
            if msg.get("id") == req_id and msg.get("pong"):
                return msg
    finally:
        sock.settimeout(old)
    raise ChannelError("the channel closed before the guest answered the ping")


def shutdown(sock, timeout: float | None = None) -> bool:
    """Ask the guest server to stop; True once it said goodbye."""
    req_id = _new_id()
    sock.settimeout(timeout)
    sock.sendall(encode({"id": req_id, "cmd": "shutdown"}))
    with contextlib.suppress(ChannelError):
        for msg in messages(sock):
            if msg.get("id") == req_id and msg.get("bye"):
                return True
    return False


def run_remote(
    sock,
    argv: list[str],
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run the served command with ARGV on the other end; print its output as it
    arrives; return its exit code.

    Ctrl-C is passed on to the command (SIGINT); a second Ctrl-C gives up
    waiting (the guest then interrupts the command itself).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    req_id = _new_id()
    req: dict[str, Any] = {"id": req_id, "argv": list(argv)}
    if cwd is not None:
        req["cwd"] = cwd
    if env:
        req["env"] = env
    sock.sendall(encode(req))
    decoder = Decoder()
    interrupted = False
    while True:
        try:
            for msg in messages(sock, decoder):
                if msg.get("id") != req_id:
                    continue  # an earlier, interrupted client's leftovers
                if "out" in msg:
                    stdout.write(msg["out"])
                    stdout.flush()
                if "err" in msg:
                    stderr.write(msg["err"])
                    stderr.flush()
                if "error" in msg:
                    raise ChannelError(f"the guest refused the request: {msg['error']}")
                if "exit" in msg:
                    return int(msg["exit"])
            raise ChannelError("the channel closed before the command finished")
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            sock.sendall(encode({"id": req_id, "cmd": "signal", "signal": int(signal.SIGINT)}))
