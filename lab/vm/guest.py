"""The server inside a persistent microVM: runs the host's requests on the channel.

`python -m lab.vm.guest --entry MODULE:FUNCTION` serves the virtio-serial port
(protocol: lab/vm/channel.py) and runs FUNCTION(argv) for every "argv"
request.  Which command it serves is the host's to say (lab.vm.persistent
starts it with aronet-lab's entry point): this module imports nothing of
aronet or the rest of the lab, so it starts in the guest even while they are
broken.

Under TCG a fresh interpreter importing aronet costs many seconds (tens on a
busy host), so the server imports the entry point once and runs each request
in a fork of itself.  When that import fails, or a source file of a watched
package (--watch) changed since (someone is editing on the host), a request
runs in a fresh interpreter instead.

A virtio-serial port is not a socket: when the host end is not connected, a
read returns EOF at once and a write blocks until a host connects.  So the
server treats EOF as "the host went away", drops a running command's output
until the next host connects, and interrupts that command (SIGINT, as Ctrl-C
on a local terminal would).  The guest misses the hang-up when the next
client connects at once, so a new request while a command still runs also
interrupts that command (SIGINT, then TERM, then KILL): the host lets one
client at a time at the channel, each with one request, so its client is gone.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import glob
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .channel import CHUNK, PORT_NAME, ChannelError, Decoder, encode, write_all
from .fork import Forked

STOP_GRACE = 5.0  # per signal (INT, TERM, KILL) when a command must stop

# A fresh interpreter running an entry point: python -c _RUN_ENTRY PROG MODULE:FUNCTION ARGV...
_RUN_ENTRY = ("import importlib, sys; prog, spec = sys.argv[1:3]; del sys.argv[1:3]; sys.argv[0] = prog; "
              "module, _, func = spec.partition(':'); "
              "sys.exit(getattr(importlib.import_module(module), func)(sys.argv[1:]))")


def resolve_entry(spec: str) -> Callable[[list[str]], int]:
    """The function a "module:function" string names, imported now."""
    module, sep, func = spec.partition(":")
    if not (module and sep and func):
        raise ValueError(f"{spec!r}: an entry point is MODULE:FUNCTION")
    return getattr(importlib.import_module(module), func)


def entry_command(spec: str, prog: str) -> list[str]:
    """The command line of a fresh interpreter that runs `spec` (argv follows it)."""
    return [sys.executable, "-c", _RUN_ENTRY, prog, spec]


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # as a shell reports a signal


def _preload(spec: str, log: Callable[[str], None]) -> Callable[[list[str]], int] | None:
    """The entry point, imported now (once), or None if it cannot be imported."""
    try:
        return resolve_entry(spec)
    except Exception as e:
        log(f"cannot preload {spec} ({type(e).__name__}: {e}); every request starts a fresh process")
        return None


def _source_mtimes(packages: Sequence[str]) -> dict[str, int]:
    """mtimes of the loaded modules of `packages` (what a fork would run)."""
    out = {}
    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] in packages and getattr(mod, "__file__", None):
            with contextlib.suppress(OSError):
                out[mod.__file__] = os.stat(mod.__file__).st_mtime_ns
    return out


class _Running:
    def __init__(self, req_id: Any, proc: subprocess.Popen | Forked):
        self.id = req_id
        self.proc = proc
        self.done = threading.Event()


class Server:
    """Serves requests read from `rfd`, answering on `wfd` (the same fd for a port).

    `reconnecting`: EOF means "no host connected right now" (a virtio-serial
    port) rather than "the end" (a socket, in the tests).  With `main` (the
    imported entry point), requests run in a fork of this process, unless a
    source of the `watch` packages changed since; otherwise, and then, as
    `command ARGV`.  `prog` names the command (its argv[0] in a fork).
    """

    def __init__(
        self,
        rfd: int,
        wfd: int,
        *,
        command: list[str],
        main: Callable[[list[str]], int] | None = None,
        prog: str | None = None,
        watch: Sequence[str] = (),
        reconnecting: bool = False,
        idle_sleep: float = 0.2,
        log: Callable[[str], None] | None = None,
    ):
        self.rfd, self.wfd = rfd, wfd
        self.command = list(command)
        self.main = main
        self.prog = prog or os.path.basename(self.command[0])
        self.watch = tuple(watch)
        self._mtimes = _source_mtimes(self.watch) if main else {}
        self.reconnecting = reconnecting
        self.idle_sleep = idle_sleep
        self.log = log or (lambda _line: None)
        self._wlock = threading.Lock()
        self._connected = True
        self._running: _Running | None = None
        self._rlock = threading.Lock()  # guards _running

    # -- output
    def send(self, msg: dict[str, Any]) -> None:
        """Write one message; dropped while no host is connected (it would block)."""
        if not self._connected:
            return
        with self._wlock:
            try:
                write_all(self.wfd, encode(msg))
            except OSError as e:
                self.log(f"write failed: {e}")
                self._connected = False

    # -- the loop
    def serve(self) -> str:
        """Serve until a shutdown request ("shutdown") or, unless reconnecting, EOF ("eof")."""
        decoder = Decoder()
        while True:
            try:
                data = os.read(self.rfd, CHUNK)
            except InterruptedError:
                continue
            except OSError as e:
                if not self.reconnecting:
                    raise
                self.log(f"read failed: {e}")
                data = b""
            if not data:
                if self._connected:
                    self._connected = False
                    decoder.reset()
                    self._host_gone()
                if not self.reconnecting:
                    self._wait_running(3 * STOP_GRACE)
                    return "eof"
                time.sleep(self.idle_sleep)
                continue
            if not self._connected:
                self.log("host connected")
                self._connected = True
            try:
                msgs = decoder.feed(data)
            except ChannelError as e:
                self.send({"id": None, "error": str(e)})
                continue
            for msg in msgs:
                if self.handle(msg) == "shutdown":
                    return "shutdown"

    def _host_gone(self) -> None:
        with self._rlock:
            running = self._running
        if running and not running.done.is_set():
            self.log(f"host went away; interrupting request {running.id}")
            with contextlib.suppress(ProcessLookupError):
                running.proc.send_signal(signal.SIGINT)

    def handle(self, msg: dict[str, Any]) -> str | None:
        req_id = msg.get("id")
        cmd = msg.get("cmd")
        if "argv" in msg and cmd is None:
            self._start(req_id, msg)
        elif cmd == "ping":
            self.send({"id": req_id, "pong": True, "uptime": _uptime()})
        elif cmd == "signal":
            with self._rlock:
                running = self._running
            if running and not running.done.is_set():
                with contextlib.suppress(ProcessLookupError, ValueError, TypeError):
                    running.proc.send_signal(int(msg.get("signal", signal.SIGINT)))
        elif cmd == "shutdown":
            self.log("shutdown requested")
            self._stop_running()
            self.send({"id": req_id, "bye": True})
            return "shutdown"
        else:
            self.send({"id": req_id, "error": f"unknown request: {json.dumps(msg)[:200]}"})
        return None

    # -- commands
    def _wait_running(self, timeout: float) -> bool:
        with self._rlock:
            running = self._running
        return running is None or running.done.wait(timeout)

    def _stop_running(self) -> None:
        with self._rlock:
            running = self._running
        if running is None:
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                running.proc.send_signal(sig)
            if running.done.wait(STOP_GRACE):
                return

    def _start(self, req_id: Any, msg: dict[str, Any]) -> None:
        argv = msg.get("argv")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            self.send({"id": req_id, "error": "argv must be a list of strings"})
            return
        with self._rlock:
            previous = self._running
        if previous is not None and not previous.done.is_set():
            # The host lets one client at a time at the channel, and a client
            # sends one request: so that command's client is gone (killed, or
            # it lost its connection before the guest noticed the hang-up).
            self.log(f"request {req_id} while request {previous.id} still runs: its client is gone; "
                     "interrupting it")
            self._stop_running()
        cwd = msg.get("cwd")
        if not (isinstance(cwd, str) and os.path.isdir(cwd)):
            cwd = None  # not in the guest's view: stay where the server runs
        env = dict(os.environ)
        if isinstance(msg.get("env"), dict):
            env.update({str(k): str(v) for k, v in msg["env"].items()})
        try:
            if self._use_fork():
                proc: subprocess.Popen | Forked = Forked(self.main, argv, prog=self.prog, cwd=cwd, env=env,
                                                        close=(self.rfd, self.wfd))
            else:
                proc = subprocess.Popen(
                    [*self.command, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd,
                    env=env,
                )
        except OSError as e:
            self.send({"id": req_id, "err": f"{self.prog} (vm): cannot start {self.command[0]}: {e}\n"})
            self.send({"id": req_id, "exit": 127})
            return
        self.log(f"request {req_id}: {argv}")
        running = _Running(req_id, proc)
        with self._rlock:
            self._running = running
        pumps = [
            threading.Thread(target=self._pump, args=(req_id, proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._pump, args=(req_id, proc.stderr, "err"), daemon=True),
        ]
        for t in pumps:
            t.start()
        threading.Thread(target=self._finish, args=(running, pumps), daemon=True).start()

    def _use_fork(self) -> bool:
        if self.main is None:
            return False
        if _source_mtimes(self.watch) != self._mtimes:
            self.log(f"{'/'.join(self.watch)} sources changed since the server started; "
                     "running a fresh process")
            self.main = None  # for good: the preloaded modules stay stale
            return False
        return True

    def _pump(self, req_id: Any, stream: IO[bytes], key: str) -> None:
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with stream:
            for chunk in iter(lambda: stream.read1(CHUNK), b""):
                out = text.decode(chunk)
                if out:
                    self.send({"id": req_id, key: out})
            rest = text.decode(b"", final=True)
            if rest:
                self.send({"id": req_id, key: rest})

    def _finish(self, running: _Running, pumps: list[threading.Thread]) -> None:
        code = _exit_code(running.proc.wait())
        for t in pumps:
            # A daemon the command left behind may hold its pipes open for good.
            t.join(timeout=5.0)
        self.log(f"request {running.id}: exit {code}")
        self.send({"id": running.id, "exit": code})
        with self._rlock:
            if self._running is running:
                self._running = None
        running.done.set()


def _uptime() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def find_port(name: str = PORT_NAME) -> str:
    """The guest device of the virtio-serial port called `name`."""
    link = f"/dev/virtio-ports/{name}"
    if os.path.exists(link):
        return link
    # No udev link (yet): the port's name is in sysfs.
    for path in glob.glob("/sys/class/virtio-ports/vport*/name"):
        with contextlib.suppress(OSError):
            if Path(path).read_text().strip() == name:
                dev = f"/dev/{Path(path).parent.name}"
                if os.path.exists(dev):
                    return dev
    raise FileNotFoundError(f"no virtio-serial port named {name} (is virtio_console loaded?)")


def _wait_port(name: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    tried_modprobe = False
    while True:
        try:
            return find_port(name)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            if not tried_modprobe:
                tried_modprobe = True
                subprocess.call(["modprobe", "virtio_console"], stderr=subprocess.DEVNULL)
            time.sleep(0.2)


# --------------------------------------------------------------------------
# the guest's entry point


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.vm.guest",
                                description="serve a command's requests on a virtio-serial port (in the VM)")
    p.add_argument("--entry", required=True, metavar="MODULE:FUNCTION",
                   help="what a request runs: FUNCTION(argv) -> exit code")
    p.add_argument("--prog", help="the command's name, its argv[0] (default: MODULE)")
    p.add_argument("--watch", action="append", default=[], metavar="PACKAGE",
                   help="stop forking once a loaded source of this top-level package changed (repeatable)")
    p.add_argument("--port", default=PORT_NAME, help="the port's name (default %(default)s)")
    p.add_argument("--device", help="the port's device, instead of looking it up by name")
    p.add_argument("--wait", type=float, default=30.0, help="how long to wait for the port to appear")
    p.add_argument("--no-preload", action="store_true",
                   help="run every request in a fresh process (slow under TCG)")
    args = p.parse_args(argv)

    def log(line: str) -> None:
        print(f"vm guest: {line}", file=sys.stderr, flush=True)

    prog = args.prog or args.entry.partition(":")[0]
    command = entry_command(args.entry, prog)
    device = args.device or _wait_port(args.port, args.wait)
    main_fn = None if args.no_preload else _preload(args.entry, log)
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    how = "in forks of this server" if main_fn else f"as {command}"
    log(f"serving {device} (guest uptime {_uptime()} s); requests run {args.entry} {how}")
    try:
        Server(fd, fd, command=command, main=main_fn, prog=prog, watch=args.watch, reconnecting=True,
               log=log).serve()
    finally:
        os.close(fd)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
