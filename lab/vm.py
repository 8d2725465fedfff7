"""Run a command inside a throw-away microVM booted from a stock Debian kernel.

The host kernel of the machines aronet is built on has no VRF, kernel ESP or
XFRM interfaces and cannot load modules, so everything that needs those runs
in a virtme-ng (`vng`) guest under QEMU/TCG.  The guest sees the host's root
filesystem read-only (9p) with a writable overlay; one host directory
(`rwdir`) is shared read-write and is how results come back.

Used by the pytest VM tier (tests/vm/conftest.py) and meant for
`aronet-lab run --vm`; start_persistent() and friends keep a VM running and
drive it from the host (`aronet-lab up --vm`).  Deliberately self-contained: it must not import
aronet.*, so it keeps working while the package itself is broken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import json
import os
import re
import shlex
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

from . import vmserve

REPO_ROOT = Path(__file__).resolve().parent.parent

# Everything the data plane needs that the Debian kernel builds as modules.
GUEST_MODULES = (
    "xfrm_user",
    "xfrm_interface",
    "esp4",
    "esp6",
    "vrf",
    "veth",
    "bridge",
    "dummy",
    "nf_conntrack",  # registers net.netfilter.nf_hooks_lwtunnel
)

DEFAULT_TIMEOUT = 900.0

# Marker lines the guest wrapper prints, so a console log can be cut into
# "boot noise" and "the command's own output" when read later.
_BEGIN = "=== aronet-vm: command start ==="
_EXIT_FILE = ".vm-exit-status"


class VMError(RuntimeError):
    """The VM could not be booted or the guest never finished its command."""

    def __init__(self, message: str, log_path: Path | None = None, output: str = ""):
        super().__init__(message)
        self.log_path = log_path
        self.output = output


class VMTimeout(VMError):
    """The guest did not finish within the timeout; the VM has been killed."""


@dataclasses.dataclass
class VMResult:
    """Like subprocess.CompletedProcess, plus where the console log lives."""

    args: list[str]
    returncode: int
    stdout: str  # the whole console output (guest stdout and stderr merged)
    log_path: Path
    duration: float

    def check_returncode(self) -> None:
        if self.returncode != 0:
            raise subprocess.CalledProcessError(self.returncode, self.args, self.stdout)


def _version_key(path: str) -> list:
    # Natural sort, so that 6.10 sorts after 6.9.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def find_kernel() -> str:
    """Newest stock kernel image in /boot (or $ARONET_VM_KERNEL)."""
    override = os.environ.get("ARONET_VM_KERNEL")
    if override:
        if not os.access(override, os.R_OK):
            raise VMError(f"ARONET_VM_KERNEL={override} is not a readable file")
        return override
    if not os.access("/boot", os.R_OK | os.X_OK):
        raise VMError("/boot is not readable; the VM tier needs root")
    candidates = glob.glob("/boot/vmlinuz-*-amd64") or glob.glob("/boot/vmlinuz-*")
    if not candidates:
        raise VMError(
            "no kernel image in /boot (want /boot/vmlinuz-*-amd64): apt-get install -y linux-image-amd64"
        )
    kernel = max(candidates, key=_version_key)
    # Debian installs vmlinuz 0600 root, so a non-root user sees it but can't boot it.
    if not os.access(kernel, os.R_OK):
        raise VMError(f"{kernel} is not readable (it is root-only on Debian); run as root")
    return kernel


def _kernel_release(kernel: str) -> str:
    return os.path.basename(kernel).removeprefix("vmlinuz-")


def _tool_path() -> str:
    """PATH with this interpreter's bin dir first: vng execs `virtme-run` by name."""
    bindir = str(Path(sys.executable).parent)
    return os.pathsep.join([bindir, os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])


def _venv_bin() -> str:
    return str(Path(sys.executable).parent)


def python_paths() -> list[str]:
    """Where this interpreter's code lives: the venv, the stdlib, site dirs."""
    paths = {sysconfig.get_paths()["stdlib"], *site.getsitepackages()}
    if sys.prefix != sys.base_prefix:  # a venv; never bind all of /usr
        paths.add(sys.prefix)
    paths = {os.path.realpath(p) for p in paths if os.path.isdir(p)}
    # nested paths are covered by their ancestor's bind mount
    return sorted(p for p in paths if not any(p.startswith(q + "/") for q in paths))


def _is_static(binary: str) -> bool:
    # A static ELF has no PT_INTERP; reading the program headers avoids
    # depending on file(1) just to answer this.
    try:
        with open(binary, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # only 64-bit matters here
                return False
            phoff = int.from_bytes(head[0x20:0x28], "little")
            phentsize = int.from_bytes(head[0x36:0x38], "little")
            phnum = int.from_bytes(head[0x38:0x3A], "little")
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    p_types = (int.from_bytes(table[i * phentsize : i * phentsize + 4], "little") for i in range(phnum))
    return all(t != 3 for t in p_types)  # 3 = PT_INTERP


def vm_available() -> str | None:
    """None if a VM can be booted here, else a human reason (with the fix)."""
    path = _tool_path()
    if not shutil.which("vng", path=path):
        return "vng (virtme-ng) not found: pip install -e '.[vm]' (or pip install virtme-ng)"
    if not shutil.which("virtme-run", path=path):
        return "virtme-run not found next to vng: reinstall virtme-ng"
    if not shutil.which("qemu-system-x86_64", path=path):
        return "qemu-system-x86_64 not found: apt-get install -y qemu-system-x86"
    try:
        kernel = find_kernel()
    except VMError as e:
        return str(e)
    if not os.path.isdir(f"/lib/modules/{_kernel_release(kernel)}"):
        return f"/lib/modules/{_kernel_release(kernel)} missing: reinstall linux-image-amd64"
    # The Debian kernel has virtio/9p as modules, so virtme builds an initramfs,
    # and that needs a *static* busybox; Debian's plain `busybox` is dynamic.
    busybox = next(
        (b for b in map(shutil.which, ("busybox-static", "busybox.static", "busybox")) if b),
        None,
    )
    if not busybox or not _is_static(busybox):
        return "no statically linked busybox for the initramfs: apt-get install -y busybox-static"
    if not shutil.which("file"):
        return "file(1) not found (virtme-run uses it): apt-get install -y file"
    return None


_GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CACHED_TAG = "aronet.root"
_CACHED_MNT = "/run/aronet-vm/root"


def _cache_script(cached_paths: list[str], rwdir: Path) -> str:
    # Each Python start does ~3000 stat/open calls; over virtme's root 9p
    # (no caching) under TCG that is seconds per interpreter (`import
    # pyroute2`: ~9 s).  A second read-only 9p view of the host root with
    # cache=loose, bind-mounted over the Python directories, cuts it ~3x.
    # Best effort: without it everything still works, only slower.
    binds = [p for p in cached_paths if not str(rwdir).startswith(p.rstrip("/") + "/")]
    if not binds:
        return ""
    lines = [
        f"mkdir -p {_CACHED_MNT}",
        f"if mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=524288,cache=loose"
        f" {_CACHED_TAG} {_CACHED_MNT}; then",
        *(f"  mount --bind {shlex.quote(_CACHED_MNT + p)} {shlex.quote(p)}" for p in binds),
        "else",
        '  echo "aronet-vm: no cached 9p view, Python starts will be slow" >&2',
        "fi",
    ]
    return "\n".join(lines) + "\n"


def _guest_script(command: str, cwd: str, env: dict[str, str], rwdir: Path, cached_paths: list[str]) -> str:
    # The guest starts with a minimal environment (no venv, no host variables),
    # so everything the command relies on is spelled out here.
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    modules = " ".join(GUEST_MODULES)
    return f"""\
# generated by lab/vm.py; runs inside the guest
{_cache_script(cached_paths, rwdir)}export PATH={shlex.quote(_venv_bin())}:{_GUEST_PATH}
# the repo is on the read-only root: writing .pyc files would only fail slowly
export PYTHONDONTWRITEBYTECODE=1
export ARONET_VM_RWDIR={shlex.quote(str(rwdir))}
{exports}
modprobe -a {modules} || echo "aronet-vm: modprobe -a {modules} failed" >&2
cd {shlex.quote(cwd)} || exit 125
echo {shlex.quote(_BEGIN)}
read -r up _ < /proc/uptime  # a builtin: shows boot cost without a fork
echo "aronet-vm: guest up $up s, modules loaded"
# subshell: an `exit` in the command must not skip writing the exit file
( {command} )
rc=$?
read -r up _ < /proc/uptime
echo "aronet-vm: command exit $rc at guest uptime $up s"
echo "$rc" > {shlex.quote(str(rwdir / _EXIT_FILE))}
exit "$rc"
"""


def _kill_group(proc: subprocess.Popen) -> None:
    # qemu is a grandchild of vng; killing the whole process group is the only
    # way to be sure it goes too without matching processes by name.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            proc.poll()  # reap vng, or its zombie keeps the group "alive"
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _wait_vm(proc: subprocess.Popen, deadline: float, cancel: threading.Event | None,
             log_path: Path) -> None:
    """Wait for the VM until the deadline (TimeoutExpired). `cancel`, set by another
    thread (signals reach only the main one), stops the wait with VMError."""
    while True:
        left = max(deadline - time.monotonic(), 0)
        try:
            proc.wait(timeout=left if cancel is None else min(left, 0.5))
            return
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                raise VMError(f"the VM was stopped before it finished; console log: {log_path}",
                              log_path, "") from None
            if time.monotonic() >= deadline:
                raise


def _copy_stream(stream, log_path: Path) -> None:
    # Flushed chunk by chunk so `tail -f` on the log follows a long run live.
    with stream, open(log_path, "wb") as log:
        for chunk in iter(lambda: stream.read1(65536), b""):
            log.write(chunk)
            log.flush()


def _vng_args(
    kernel: str,
    script: Path,
    *,
    rwdirs: list[Path],
    cwd: str | os.PathLike,
    cpus: int,
    memory: str,
    kvm: bool,
    cached: bool,
    qemu_opts: list[str] = (),
) -> list[str]:
    """The vng command line that boots `kernel` and runs `sh script` in the guest."""
    return [
        "vng",
        "--run",
        kernel,
        *([] if kvm else ["--disable-kvm"]),
        # 9p is the checked setup; virtiofs would add a virtiofsd per share.
        "--force-9p",
        "--cpus",
        str(cpus),
        "--memory",
        memory,
        *(a for d in rwdirs for a in ("--rwdir", str(d))),
        "--cwd",
        str(cwd),
        *(
            # `=` form: vng's argparse would take a leading "-fsdev" for an option.
            [
                f"--qemu-opts=-fsdev local,id=aronetfs,path=/,security_model=none,readonly=on,"
                f"multidevs=remap -device virtio-9p-pci,fsdev=aronetfs,mount_tag={_CACHED_TAG}"
            ]
            if cached
            else []
        ),
        # vng joins every --qemu-opts with spaces and splits the result again.
        *(f"--qemu-opts={o}" for o in qemu_opts),
        "--exec",
        f"sh {shlex.quote(str(script))}",
    ]


def run_in_vm(
    command: str,
    rwdir: str | os.PathLike,
    *,
    cpus: int = 2,
    memory: str = "2G",
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
    log_path: str | os.PathLike | None = None,
    cwd: str | os.PathLike = REPO_ROOT,
    kernel: str | None = None,
    kvm: bool = False,
    cached_paths: list[str] | None = None,
    cancel: threading.Event | None = None,
) -> VMResult:
    """Boot the VM, run `command` (a shell command line) in it, and shut it down.

    `rwdir` is shared read-write at the same path in the guest; the wrapper
    script and (by default) the console log `vm-console.log` go there.
    Raises VMError if the guest never ran the command to the end (boot failure,
    crash) and VMTimeout if it took longer than `timeout`.

    `cached_paths` (default: python_paths()) are served to the guest from a
    page-cached 9p view, so they must not change on the host during the run.

    KVM is off by default: on these machines /dev/kvm exists but QEMU aborts
    on it (nested virtualisation), so TCG is the only thing that works.
    """
    rwdir = Path(rwdir).resolve()
    rwdir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else rwdir / "vm-console.log"
    kernel = kernel or find_kernel()

    script = rwdir / "vm-run.sh"
    cached = python_paths() if cached_paths is None else list(cached_paths)
    script.write_text(_guest_script(command, str(cwd), dict(env or {}), rwdir, cached))
    exit_file = rwdir / _EXIT_FILE
    exit_file.unlink(missing_ok=True)

    args = _vng_args(kernel, script, rwdirs=[rwdir], cwd=cwd, cpus=cpus, memory=memory, kvm=kvm,
                     cached=bool(cached))
    host_env = dict(os.environ, PATH=_tool_path())
    start = time.monotonic()
    # The console goes through a pipe, never straight into the log file: QEMU
    # reopens /proc/self/fd/1 once per virtio console port with O_TRUNC and
    # its own offset, so with a regular file the ports overwrite each other.
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=host_env,
        start_new_session=True,  # own process group, see _kill_group
    )
    pump = threading.Thread(target=_copy_stream, args=(proc.stdout, log_path), daemon=True)
    pump.start()
    try:
        _wait_vm(proc, start + timeout, cancel, log_path)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        pump.join(timeout=10)
        raise VMTimeout(
            f"VM did not finish within {timeout:.0f} s (killed); console log: {log_path}",
            log_path,
            log_path.read_text(errors="replace"),
        ) from None
    except BaseException:
        # Ctrl-C in pytest must not orphan a qemu burning a core.
        _kill_group(proc)
        raise
    # EOF comes once every writer (qemu included) has gone.
    pump.join(timeout=10)
    duration = time.monotonic() - start
    output = log_path.read_text(errors="replace")

    # vng forwards the command's exit code, but a guest that panicked or never
    # booted can also exit non-zero (or zero); only the exit file proves the
    # command itself ran to the end.
    try:
        returncode = int(exit_file.read_text().strip())
    except (OSError, ValueError):
        raise VMError(
            f"the guest did not finish the command (vng exit code {proc.returncode}); "
            f"console log: {log_path}",
            log_path,
            output,
        ) from None
    return VMResult(args, returncode, output, log_path, duration)


# --------------------------------------------------------------------------
# a persistent VM: booted once, then driven from the host over a channel
#
# `aronet-lab up --vm` keeps its VM.  The host talks to it through a QEMU
# virtio-serial port whose host end is a unix socket in the state directory
# (vsock cannot be loaded on these hosts, 9p cannot hold sockets); in the
# guest, `python -m lab.vmserve` serves the port and runs `aronet-lab ARGV`
# for every request (protocol: lab/vmserve.py).  The VM runs detached (own
# session and process group, console into a file), so it outlives the
# command that booted it; vm.json records the group and the socket.

PERSISTENT_DIR = "/run/aronet-lab-vm"
BOOT_TIMEOUT = 300.0
CHANNEL_NAME = "aronet.0"
_STATE_FILE = "vm.json"
_SOCKET_FILE = "channel.sock"
_LOCK_FILE = "channel.lock"
_CONSOLE_FILE = "vm-console.log"
_SERVE_SCRIPT = "vm-serve.sh"
_TAG_VAR = "ARONET_VM_STATE"  # in the environment of every process of the VM
_UNIX_PATH_MAX = 107

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
        sock.sendall(vmserve.encode({"id": req_id, "cmd": "ping"}))
        decoder = vmserve.Decoder()
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
    memory: str = "2G",
    boot_timeout: float = BOOT_TIMEOUT,
    env: dict[str, str] | None = None,
    rwdirs: list[str | os.PathLike] = (),
    cwd: str | os.PathLike = REPO_ROOT,
    kernel: str | None = None,
    kvm: bool = False,
    cached_paths: list[str] | None = None,
) -> dict:
    """Boot a VM that stays up after this process exits; return its recorded state.

    The guest runs `python -m lab.vmserve` on the channel; this returns once
    it answered a ping (else the VM is killed and VMError/VMTimeout raised,
    with the console tail).  `state_dir` (shared read-write with the guest)
    holds vm.json, channel.sock and vm-console.log; `rwdirs` are further host
    directories the guest may write (same paths).  Raises VMError if a VM
    recorded there is still running.
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
    command = f"python -m lab.vmserve --port {CHANNEL_NAME}"
    script.write_text(_guest_script(command, str(cwd), dict(env or {}), state_dir, cached))
    qemu_opts = [
        f"-chardev socket,id=aronetch,path={sock_path},server=on,wait=off"
        f" -device virtio-serial-pci -device virtserialport,chardev=aronetch,name={CHANNEL_NAME}"
    ]
    args = _vng_args(kernel, script, rwdirs=[state_dir, *extra], cwd=cwd, cpus=cpus, memory=memory,
                     kvm=kvm, cached=bool(cached), qemu_opts=qemu_opts)
    tag = f"{_TAG_VAR}={state_dir}"
    host_env = dict(os.environ, PATH=_tool_path(), **{_TAG_VAR: str(state_dir)})
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
    """Run `aronet-lab ARGV` in the persistent VM; stream its output here; its exit code.

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
            return vmserve.run_remote(sock, list(argv), stdout=stdout, stderr=stderr,
                                      cwd=os.getcwd() if cwd is None else cwd, env=env)
        except (vmserve.ChannelError, OSError) as e:
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
                    asked = vmserve.shutdown(sock, timeout=min(20.0, timeout))
                finally:
                    sock.close()
        except (OSError, TimeoutError, vmserve.ChannelError):
            pass
        if asked and _wait_gone(pgid, tag, max(0.0, deadline - time.monotonic())):
            how = "powered off"
        else:
            _kill_pgid(pgid, tag)
            how = "killed"
    _remove_state_files(state_dir)
    return how


def command_output(console: str) -> str:
    """The part of a console log printed by the command itself (after boot)."""
    _, sep, rest = console.partition(_BEGIN)
    return rest.lstrip("\n") if sep else console


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


if __name__ == "__main__":
    # Handy by hand: python -m lab.vm 'ip -j link' [rwdir]
    reason = vm_available()
    if reason:
        sys.exit(f"VM not available: {reason}")
    out = sys.argv[2] if len(sys.argv) > 2 else str(REPO_ROOT / "out" / f"vm-{os.getpid()}")
    res = run_in_vm(sys.argv[1] if len(sys.argv) > 1 else "uname -a", out)
    sys.stdout.write(command_output(res.stdout))
    sys.exit(res.returncode)
