"""Run a command inside a throw-away microVM booted from a stock Debian kernel.

The host kernel of the machines aronet is built on has no VRF, kernel ESP or
XFRM interfaces and cannot load modules, so everything that needs those runs
in a virtme-ng (`vng`) guest under QEMU/TCG.  The guest sees the host's root
filesystem read-only (9p) with a writable overlay; one host directory
(`rwdir`) is shared read-write and is how results come back.

Used by the pytest VM tier (tests/vm/conftest.py) and meant for
`aronet-lab run --vm`.  Deliberately self-contained: it must not import
aronet.*, so it keeps working while the package itself is broken.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

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


def _copy_stream(stream, log_path: Path) -> None:
    # Flushed chunk by chunk so `tail -f` on the log follows a long run live.
    with stream, open(log_path, "wb") as log:
        for chunk in iter(lambda: stream.read1(65536), b""):
            log.write(chunk)
            log.flush()


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

    args = [
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
        "--rwdir",
        str(rwdir),
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
        "--exec",
        f"sh {shlex.quote(str(script))}",
    ]
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
        proc.wait(timeout=timeout)
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
