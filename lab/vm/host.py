"""Can this machine boot the microVM, and with what: the kernel, the tools, VMError.

vm_available() answers "can a VM be booted here" with the fix when it cannot;
find_kernel() picks the stock kernel; python_paths() says which directories
hold this interpreter's code (the guest gets a page-cached view of them).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import site
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class VMError(RuntimeError):
    """The VM could not be booted or the guest never finished its command."""

    def __init__(self, message: str, log_path: Path | None = None, output: str = ""):
        super().__init__(message)
        self.log_path = log_path
        self.output = output


class VMTimeout(VMError):
    """The guest did not finish within the timeout; the VM has been killed."""



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


def tool_path() -> str:
    """PATH with this interpreter's bin dir first: vng execs `virtme-run` by name."""
    bindir = str(Path(sys.executable).parent)
    return os.pathsep.join([bindir, os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])



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


def vm_available(kernel: str | None = None, root: Path | None = None) -> str | None:
    """None if a VM can be booted here, else a human reason (with the fix): with the
    newest stock kernel on the host's root, or the given kernel on a root of its own
    (lab.vm.roots.available says which for a stack)."""
    path = tool_path()
    if not shutil.which("vng", path=path):
        return "vng (virtme-ng) not found: pip install -e '.[vm]' (or pip install virtme-ng)"
    if not shutil.which("virtme-run", path=path):
        return "virtme-run not found next to vng: reinstall virtme-ng"
    if not shutil.which("qemu-system-x86_64", path=path):
        return "qemu-system-x86_64 not found: apt-get install -y qemu-system-x86"
    try:
        kernel = kernel or find_kernel()
    except VMError as e:
        return str(e)
    modules = f"{root or ''}/lib/modules/{_kernel_release(kernel)}"
    if not os.path.isdir(modules):
        return f"{modules} missing: " + ("rebuild the root (ci/build-root)" if root
                                         else "reinstall linux-image-amd64")
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
