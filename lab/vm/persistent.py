"""A persistent microVM: booted once, then driven from the host over a channel.

`aronet-lab up --vm` keeps its VM.  The host talks to it through a QEMU
virtio-serial port whose host end is a unix socket in the state directory
(vsock cannot be loaded on these hosts, 9p cannot hold sockets); in the
guest, `python -m lab.vm.guest` serves the port and runs the entry point it
was started with (aronet-lab's unless the caller names another) for every
request (protocol: lab/vm/channel.py).  The VM runs detached (own session and
process group, console into a file), so it outlives the command that booted
it; vm.json records the group and the socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import boot
from .boot import tail
from .channel import PORT_NAME, ChannelError, Decoder, encode, run_remote, shutdown
from .host import REPO_ROOT, VMError, VMTimeout, find_kernel, python_paths, tool_path

PERSISTENT_DIR = "/run/aronet-lab-vm"
BOOT_TIMEOUT = 300.0
_STATE_FILE = "vm.json"
_SOCKET_FILE = "channel.sock"
_LOCK_FILE = "channel.lock"
_CONSOLE_FILE = "vm-console.log"
_SERVE_SCRIPT = "vm-serve.sh"
_TAG_VAR = "ARONET_VM_STATE"  # in the environment of every process of the VM
_UNIX_PATH_MAX = 107

# What the guest serves unless the caller names another command: aronet-lab,
# whose forks stay valid while no source of aronet or the lab changed.  Names,
# never imports: lab.vm stands alone.
ENTRY = "lab.cli:main"
PROG = "aronet-lab"
WATCH = ("aronet", "lab")

# Popen objects of VMs this process started, so their leaders get reaped
# (and Popen does not warn about a child "still running" at exit).
_children: dict[int, subprocess.Popen] = {}


def _state_paths(state_dir: str | os.PathLike) -> tuple[Path, Path, Path, Path]:
    d = Path(state_dir).resolve()
    return d, d / _STATE_FILE, d / _SOCKET_FILE, d / _CONSOLE_FILE


def _read_state(state_dir: str | os.PathLike) -> dict | None:
    try:
        state = json.loads(_state_paths(state_dir)[1].read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pgid"), int) else None


def _write_state(state: dict) -> None:
    path = Path(state["state_dir"]) / _STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        del _children[pid]


def _group_members(pgid: int, tag: str) -> list[int]:
    """Live (non-zombie) processes of group `pgid` carrying `tag` in their environment.

    The tag makes sure a recycled group id is never taken for our VM: nothing is
    ever matched by name.
    """
    want = tag.encode()
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid or fields[0] in ("Z", "X"):
                continue
            if want in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                members.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return members


def _alive(state: dict) -> bool:
    _reap(state["pgid"])
    return bool(_group_members(state["pgid"], state["tag"]))


def _qemu_pid(state: dict) -> int | None:
    for pid in _group_members(state["pgid"], state["tag"]):
        with contextlib.suppress(OSError):
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("qemu-system"):
                return pid
    return None


def _kill_pgid(pgid: int, tag: str, grace: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_members(pgid, tag):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        if _wait_gone(pgid, tag, grace):
            return


def _wait_gone(pgid: int, tag: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(pgid)
        if not _group_members(pgid, tag):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _remove_state_files(state_dir: Path) -> None:
    for name in (_STATE_FILE, _SOCKET_FILE, _STATE_FILE.replace(".json", ".tmp")):
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()


@contextlib.contextmanager
def _channel_lock(state_dir: Path, timeout: float | None = None):
    """One host client at a time on the channel (the guest serves one request at once)."""
    fd = os.open(state_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("aronet-lab: waiting for another command in the VM to finish", file=sys.stderr, flush=True)
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError("another command holds the VM channel") from None
                    time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except BaseException:
        s.close()
        raise
    return s


def _console_tail(state: dict, lines: int = 30) -> str:
    try:
        return tail(Path(state["console_log"]).read_text(errors="replace"), lines)
    except OSError:
        return ""


def _boot_error(cls: type[VMError], what: str, state: dict) -> VMError:
    """A boot failure whose message says why: the console's last lines and where the log is."""
    console = _console_tail(state)
    short = tail(console, 15)
    msg = f"{what}; console log: {state['console_log']}"
    if short:
        msg += "\n--- last lines of the console ---\n" + short
    return cls(msg, Path(state["console_log"]), console)


def _wait_ready(state: dict, deadline: float) -> dict:
    """Connect to the channel and wait for the guest server's pong."""
    req_id = f"boot-{os.getpid()}"
    sock = None
    try:
        while sock is None:
            if not _alive(state):
                raise _boot_error(VMError, "the VM exited while booting", state)
            try:
                sock = _connect(state["socket"])
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise _boot_error(VMTimeout, "QEMU never opened the channel socket", state) from None
                time.sleep(0.2)
        # One connection for the whole wait: the ping sits in the socket until
        # the guest server opens its end of the port.
        sock.settimeout(1.0)
        sock.sendall(encode({"id": req_id, "cmd": "ping"}))
        decoder = Decoder()
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                data = None
            if data == b"":
                raise _boot_error(VMError, "the VM closed the channel while booting", state)
            for msg in decoder.feed(data or b""):
                if msg.get("id") == req_id and msg.get("pong"):
                    return msg
            if not _alive(state):
                raise _boot_error(VMError, "the VM exited while booting", state)
            if time.monotonic() > deadline:
                raise _boot_error(VMTimeout, "the guest's channel server did not answer in time", state)
    finally:
        if sock is not None:
            sock.close()


def start_persistent(
    state_dir: str | os.PathLike = PERSISTENT_DIR,
    *,
    cpus: int = 2,
    memory: str = boot.DEFAULT_MEMORY,
    boot_timeout: float = BOOT_TIMEOUT,
    env: dict[str, str] | None = None,
    rwdirs: list[str | os.PathLike] = (),
    cwd: str | os.PathLike = REPO_ROOT,
    kernel: str | None = None,
    kvm: bool = False,
    cached_paths: list[str] | None = None,
    entry: str = ENTRY,
    prog: str = PROG,
    watch: Sequence[str] = WATCH,
) -> dict:
    """Boot a VM that stays up after this process exits; return its recorded state.

    The guest runs `python -m lab.vm.guest --entry ENTRY` on the channel: each
    request runs ENTRY(argv) ("module:function", named `prog`; `watch`: see
    lab/vm/guest.py).  This returns once the guest answered a ping (else the
    VM is killed and VMError/VMTimeout raised, with the console tail).
    `state_dir` (shared read-write with the guest) holds vm.json, channel.sock
    and vm-console.log; `rwdirs` are further host directories the guest may
    write (same paths).  Raises VMError if a VM recorded there is still running.
    """
    state_dir, state_file, sock_path, log_path = _state_paths(state_dir)
    running = persistent_state(state_dir)
    if running:
        raise VMError(f"a persistent VM is already running (process group {running['pgid']}, "
                      f"state {state_file}); stop it first")
    if len(str(sock_path)) > _UNIX_PATH_MAX:
        raise VMError(f"{sock_path}: too long for a unix socket path; use a shorter state directory")
    if re.search(r"[\s,=]", str(state_dir)):
        raise VMError(f"{state_dir}: the state directory must not contain blanks, ',' or '=' "
                      "(it goes into QEMU's option string)")
    state_dir.mkdir(parents=True, exist_ok=True)
    _remove_state_files(state_dir)  # a dead VM's leftovers
    extra = [Path(d).resolve() for d in rwdirs]
    for d in extra:
        d.mkdir(parents=True, exist_ok=True)
    kernel = kernel or find_kernel()
    cached = python_paths() if cached_paths is None else list(cached_paths)

    script = state_dir / _SERVE_SCRIPT
    command = shlex.join(["python", "-m", f"{__package__}.guest", "--port", PORT_NAME, "--entry", entry,
                          "--prog", prog, *(a for w in watch for a in ("--watch", w))])
    script.write_text(boot.guest_script(command, str(cwd), dict(env or {}), state_dir, cached))
    qemu_opts = [
        f"-chardev socket,id=aronetch,path={sock_path},server=on,wait=off"
        f" -device virtio-serial-pci -device virtserialport,chardev=aronetch,name={PORT_NAME}"
    ]
    args = boot.vng_args(kernel, script, rwdirs=[state_dir, *extra], cwd=cwd, cpus=cpus, memory=memory,
                         kvm=kvm, cached=bool(cached), qemu_opts=qemu_opts)
    tag = f"{_TAG_VAR}={state_dir}"
    host_env = dict(os.environ, PATH=tool_path(), **{_TAG_VAR: str(state_dir)})
    started = time.monotonic()
    # sh and cat stay in the VM's own session with vng and QEMU: the console
    # must go through a pipe (see run_in_vm), and nothing here may depend on
    # this process, which is about to exit.
    with _channel_lock(state_dir):
        proc = subprocess.Popen(
            ["sh", "-c", '"$@" 2>&1 | cat > "$0"', str(log_path), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=host_env,
            start_new_session=True,
        )
        _children[proc.pid] = proc
        state = {
            "pgid": proc.pid,
            "tag": tag,
            "state_dir": str(state_dir),
            "socket": str(sock_path),
            "console_log": str(log_path),
            "kernel": kernel,
            "cpus": cpus,
            "memory": memory,
            "rwdirs": [str(state_dir), *map(str, extra)],
            "started_at": time.time(),
        }
        _write_state(state)
        try:
            pong = _wait_ready(state, started + boot_timeout)
        except BaseException:
            _kill_pgid(proc.pid, tag)
            _remove_state_files(state_dir)
            raise
    state.update(qemu_pid=_qemu_pid(state), boot_seconds=round(time.monotonic() - started, 1),
                 guest_uptime=pong.get("uptime"))
    _write_state(state)
    return state


def persistent_state(state_dir: str | os.PathLike = PERSISTENT_DIR) -> dict | None:
    """The recorded state of the persistent VM in `state_dir`, or None if none is running.

    Always None inside one of our VMs (the guest's aronet-lab must run the
    command itself, never forward it to itself).
    """
    if os.environ.get("ARONET_VM_RWDIR"):
        return None
    state = _read_state(state_dir)
    return state if state is not None and _alive(state) else None


def forward(
    state_dir: str | os.PathLike,
    argv: list[str],
    *,
    stdout=None,
    stderr=None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run the served command (aronet-lab) with ARGV in the persistent VM; stream its
    output here; return its exit code.

    The command runs in the guest with this process's working directory (the
    guest sees the host's files read-only at the same paths) and no stdin.
    Raises VMError if no VM is running or the channel breaks.
    """
    state = persistent_state(state_dir)
    if state is None:
        raise VMError(f"no persistent VM is running (no live VM recorded in {state_dir})")
    with _channel_lock(Path(state["state_dir"])):
        try:
            sock = _connect(state["socket"])
        except OSError as e:
            raise VMError(f"cannot connect to the VM's channel {state['socket']}: {e}") from None
        try:
            return run_remote(sock, list(argv), stdout=stdout, stderr=stderr,
                              cwd=os.getcwd() if cwd is None else cwd, env=env)
        except (ChannelError, OSError) as e:
            alive = "the VM is still running" if _alive(state) else "the VM is gone"
            raise VMError(f"lost the channel to the VM ({e}); {alive}; console log: {state['console_log']}",
                          Path(state["console_log"]), _console_tail(state)) from None
        finally:
            sock.close()


def stop_persistent(state_dir: str | os.PathLike = PERSISTENT_DIR, *, timeout: float = 60.0) -> str:
    """Power the persistent VM off; returns how: "powered off", "killed" or "not running".

    Asks the guest server to stop (the guest then powers off), waits up to
    `timeout` for QEMU to exit, else kills the recorded process group.  The
    socket and vm.json are removed; the console log stays.
    """
    state_dir = _state_paths(state_dir)[0]
    state = _read_state(state_dir)
    how = "not running"
    if state is not None and _alive(state):
        pgid, tag = state["pgid"], state["tag"]
        deadline = time.monotonic() + timeout
        asked = False
        try:
            # A command still running holds the channel; don't wait long for it.
            with _channel_lock(state_dir, timeout=min(10.0, timeout)):
                sock = _connect(state["socket"])
                try:
                    asked = shutdown(sock, timeout=min(20.0, timeout))
                finally:
                    sock.close()
        except (OSError, TimeoutError, ChannelError):
            pass
        if asked and _wait_gone(pgid, tag, max(0.0, deadline - time.monotonic())):
            how = "powered off"
        else:
            _kill_pgid(pgid, tag)
            how = "killed"
    _remove_state_files(state_dir)
    return how
