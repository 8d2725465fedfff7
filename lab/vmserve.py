"""The channel between the host and a persistent microVM (see lab/vm.py).

The host reaches the guest through a QEMU virtio-serial port whose host end is
a unix socket (vsock cannot be loaded on these hosts and 9p cannot hold
sockets).  Inside the guest, `python -m lab.vmserve` serves that port; on the
host, lab.vm.forward() is the client.  Both ends are in this file.

Protocol: one JSON object per line (ASCII, so a payload never holds a raw
newline), every message carries the request's "id".

  host -> guest                                guest -> host
  {"id", "cmd": "ping"}                        {"id", "pong": true, "uptime": s}
  {"id", "argv": [...], "cwd"?, "env"?}        {"id", "out": text}*  {"id", "err": text}*
                                               then {"id", "exit": code}
  {"id", "cmd": "signal", "signal": n}         (none: the signal goes to the running command)
  {"id", "cmd": "shutdown"}                    {"id", "bye": true}, then the server exits
  anything else                                {"id", "error": text}

An "argv" request runs `aronet-lab ARGV...` (this interpreter's) in the guest;
its stdout and stderr come back as they are produced, and "exit" follows the
last of them.  One command runs at a time; the host serialises its clients.

Under TCG a fresh interpreter importing aronet costs many seconds (tens on a
busy host), so the server imports lab.cli once and runs each request in a
fork of itself.  When that import fails, or a source file of aronet/lab
changed since (someone is editing on the host), a request runs in a fresh
`aronet-lab` process instead.

A virtio-serial port is not a socket: when the host end is not connected, a
read returns EOF at once and a write blocks until a host connects.  So the
server treats EOF as "the host went away", drops a running command's output
until the next host connects, and interrupts that command (SIGINT, as Ctrl-C
on a local terminal would).  The guest misses the hang-up when the next
client connects at once, so a new request while a command still runs also
interrupts that command (SIGINT, then TERM, then KILL): the host lets one
client at a time at the channel, each with one request, so its client is gone.

Self-contained on purpose (stdlib only): it must start in the guest even
while aronet itself is broken.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

PORT_NAME = "aronet.0"
CHUNK = 65536
MAX_LINE = 4 << 20  # a request longer than this is garbage, not a request
STOP_GRACE = 5.0  # per signal (INT, TERM, KILL) when a command must stop


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
# guest side


def default_command() -> list[str]:
    """`aronet-lab` from this interpreter's environment (the venv)."""
    script = Path(sys.executable).parent / "aronet-lab"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lab.cli"]


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # as a shell reports a signal


def _preload(log: Callable[[str], None]) -> Callable[[list[str]], int] | None:
    """lab.cli.main, imported now (once), or None if aronet cannot be imported."""
    try:
        from lab import cli
    except Exception as e:
        log(f"cannot preload lab.cli ({type(e).__name__}: {e}); every request starts a fresh process")
        return None
    return cli.main


def _source_mtimes() -> dict[str, int]:
    """mtimes of the loaded modules of aronet and lab (what a fork would run)."""
    out = {}
    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] in ("aronet", "lab") and getattr(mod, "__file__", None):
            with contextlib.suppress(OSError):
                out[mod.__file__] = os.stat(mod.__file__).st_mtime_ns
    return out


class _Forked:
    """A fork of this process running main(argv); the subset of Popen the server uses."""

    def __init__(self, main: Callable[[list[str]], int], argv: list[str], *, cwd: str | None,
                 env: dict[str, str], close: tuple[int, ...] = ()):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code: Any = 1
            try:
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                for fd in {devnull, out_r, out_w, err_r, err_w, *close} - {0, 1, 2}:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                sys.stdin = open(0, closefd=False)  # noqa: SIM115
                sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if cwd:
                    os.chdir(cwd)
                os.environ.clear()
                os.environ.update(env)
                sys.argv = ["aronet-lab", *argv]
                code = main(argv)
            except SystemExit as e:
                code = e.code
            except KeyboardInterrupt:
                code = 130
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                if code is None:
                    code = 0
                elif not isinstance(code, int):
                    with contextlib.suppress(Exception):
                        print(code, file=sys.stderr)
                    code = 1
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code & 0xFF)
        os.close(out_w)
        os.close(err_w)
        self.pid = pid
        self.stdout = open(out_r, "rb")  # noqa: SIM115
        self.stderr = open(err_r, "rb")  # noqa: SIM115
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


class _Running:
    def __init__(self, req_id: Any, proc: subprocess.Popen | _Forked):
        self.id = req_id
        self.proc = proc
        self.done = threading.Event()


class Server:
    """Serves requests read from `rfd`, answering on `wfd` (the same fd for a port).

    `reconnecting`: EOF means "no host connected right now" (a virtio-serial
    port) rather than "the end" (a socket, in the tests).  With `main` (an
    imported lab.cli.main), requests run in a fork of this process, unless
    the sources changed since; otherwise, and then, as `command ARGV`.
    """

    def __init__(
        self,
        rfd: int,
        wfd: int,
        *,
        command: list[str] | None = None,
        main: Callable[[list[str]], int] | None = None,
        reconnecting: bool = False,
        idle_sleep: float = 0.2,
        log: Callable[[str], None] | None = None,
    ):
        self.rfd, self.wfd = rfd, wfd
        self.command = list(command) if command else default_command()
        self.main = main
        self._mtimes = _source_mtimes() if main else {}
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
                proc: subprocess.Popen | _Forked = _Forked(self.main, argv, cwd=cwd, env=env,
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
            self.send({"id": req_id, "err": f"aronet-lab (vm): cannot start {self.command[0]}: {e}\n"})
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
        if _source_mtimes() != self._mtimes:
            self.log("aronet/lab sources changed since the server started; running a fresh process")
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
# host side


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
    """Run `aronet-lab ARGV` on the other end; print its output as it arrives; its exit code.

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


# --------------------------------------------------------------------------
# the guest's entry point


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.vmserve",
                                description="serve aronet-lab requests on a virtio-serial port (in the VM)")
    p.add_argument("--port", default=PORT_NAME, help="the port's name (default %(default)s)")
    p.add_argument("--device", help="the port's device, instead of looking it up by name")
    p.add_argument("--wait", type=float, default=30.0, help="how long to wait for the port to appear")
    p.add_argument("--no-preload", action="store_true",
                   help="run every request in a fresh aronet-lab process (slow under TCG)")
    args = p.parse_args(argv)

    def log(line: str) -> None:
        print(f"vmserve: {line}", file=sys.stderr, flush=True)

    device = args.device or _wait_port(args.port, args.wait)
    main_fn = None if args.no_preload else _preload(log)
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    how = "in forks of this server" if main_fn else f"as {default_command()}"
    log(f"serving {device} (guest uptime {_uptime()} s); requests run {how}")
    try:
        Server(fd, fd, main=main_fn, reconnecting=True, log=log).serve()
    finally:
        os.close(fd)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
