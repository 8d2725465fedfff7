"""The guest's stacks: which Debian release the microVM boots, and the roots it boots.

Two stacks matter (README, "Platforms"):

  debian12  the host's own root, read-only over 9p, and its newest /boot kernel
            (kernel 6.1, BIRD 2.0.12, babeld 1.12, strongSwan 5.9.8, Python 3.11)
  debian13  a root built here by debootstrap from the mirror apt uses, booted with its
            own kernel (kernel 6.12, BIRD 2.17, babeld 1.13, strongSwan 6.0, Python 3.13)

`build(stack)` (also `ci/build-root debian13`) makes a root once and keeps it: the
root's directory name carries a hash of everything that goes into it (the release,
the package list, the Python requirements, this builder's version), so a change of
any of them builds a new root and an unchanged one is reused. A root is built in a
temporary directory and renamed into place only when complete, so an interrupted
build never passes for a root.

Inside a root: the Debian packages of PACKAGES, and a venv at VENV (with the system
site packages, for python3-nftables) holding the requirements, installed offline from
wheels that pip on the host downloaded for the root's Python (pip inside the chroot
cannot verify the registry's certificate here). aronet itself is not installed in
the root: the guest runs the checkout it is given (PYTHONPATH), as the host does.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .host import VMError, _version_key, vm_available

BUILDER_VERSION = "1"
MIRROR = os.environ.get("ARONET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("ARONET_ROOT_CACHE", "/var/cache/aronet-vm/roots"))
VENV = "/opt/aronet/venv"

PACKAGES = (
    "iproute2", "nftables", "python3-nftables", "bird2", "babeld",
    "strongswan-charon", "strongswan-swanctl", "libcharon-extra-plugins",
    "python3", "python3-venv", "kmod", "procps", "iputils-ping", "util-linux",
    "linux-image-amd64", "busybox-static", "file", "tcpdump", "iperf3",
)
# aronet's dependencies and what the VM tier runs with (pyproject.toml's, pinned to
# what the host's venv is tested with where a newer release would change behaviour)
REQUIREMENTS = ("pyroute2>=0.9.7", "cryptography>=38", "jsonschema>=4.17", "vici>=5.9",
                "PyYAML>=6", "prometheus_client>=0.16", "pytest>=7.2", "hypothesis>=6.60")


@dataclasses.dataclass(frozen=True)
class Stack:
    name: str
    suite: str | None  # the Debian suite debootstrap builds; None: the host's own root
    python: str = ""  # the root's Python, for pip download (major.minor)

    @property
    def key(self) -> str:
        text = "\n".join([BUILDER_VERSION, self.suite or "", self.python, MIRROR,
                          *PACKAGES, *REQUIREMENTS])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def root(self) -> Path | None:
        return None if self.suite is None else CACHE / f"{self.name}-{self.key}"


STACKS = {"debian12": Stack("debian12", None), "debian13": Stack("debian13", "trixie", "3.13")}
DEFAULT = "debian12"


def stack(name: str) -> Stack:
    try:
        return STACKS[name]
    except KeyError:
        raise VMError(f"unknown stack {name!r}: choose one of {', '.join(STACKS)}") from None


def ready(s: Stack) -> bool:
    """The stack can boot without building anything."""
    return s.root is None or (s.root / ".aronet-root").is_file()


def available(name: str) -> str | None:
    """None if a VM of this stack can be booted here, else the reason, with the fix."""
    try:
        s = stack(name)
        if s.root is None:
            return vm_available()
        if not ready(s):
            return f"the {name} root is not built: ci/build-root {name}"
        return vm_available(kernel_of(s.root), s.root)
    except VMError as e:
        return str(e)


def kernel_of(root: Path) -> str:
    """The root's own kernel image (the newest, if there are several)."""
    found = sorted(glob.glob(str(root / "boot" / "vmlinuz-*")), key=_version_key)
    if not found:
        raise VMError(f"{root} has no kernel in /boot: rebuild it (ci/build-root)")
    return found[-1]


def python_dirs(root: Path) -> list[str]:
    """The guest paths of the root's Python code (served from a page-cached 9p view)."""
    libs = sorted(p.name for p in (root / "usr" / "lib").glob("python3.*") if p.is_dir())
    return [f"/usr/lib/{libs[-1]}" if libs else "/usr/lib/python3", "/usr/lib/python3", VENV]


def _run(argv: list[str], say, **kw) -> None:
    say("  $ " + " ".join(argv[:6]) + (" ..." if len(argv) > 6 else ""))
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise VMError(f"{argv[0]} failed (exit {r.returncode}):\n{(r.stderr or r.stdout)[-3000:]}")


def build(s: Stack, say=print) -> Path:
    """The stack's root, built unless it is there already (see the module doc)."""
    if s.root is None:
        raise VMError(f"{s.name} boots the host's own root: nothing to build")
    if ready(s):
        return s.root
    if os.geteuid() != 0:
        raise VMError("building a root needs root (debootstrap, chroot)")
    for tool in ("debootstrap", "chroot"):
        if shutil.which(tool) is None:
            raise VMError(f"{tool} not found: apt-get install -y debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{s.name}-", dir=CACHE))
    try:
        say(f"building the {s.name} root ({s.suite}) in {s.root}")
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", s.suite,
              str(tmp), MIRROR], say)
        wheels = tmp / "opt" / "aronet" / "wheels"
        wheels.mkdir(parents=True)
        # manylinux wheels for the root's CPython (glibc 2.41 takes them all)
        platforms = [a for p in ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
                     for a in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
              "--python-version", s.python, "--implementation", "cp", *platforms,
              "-d", str(wheels), *REQUIREMENTS], say)
        _run(["chroot", str(tmp), "/usr/bin/python3", "-m", "venv", "--system-site-packages", VENV], say)
        _run(["chroot", str(tmp), f"{VENV}/bin/pip", "install", "-q", "--no-index",
              "--find-links", "/opt/aronet/wheels", *REQUIREMENTS], say)
        shutil.rmtree(wheels)
        (tmp / ".aronet-root").write_text(f"{s.name} {s.key}\n")
        os.rename(tmp, s.root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"built {s.root} in {time.monotonic() - started:.0f} s")
    for old in CACHE.glob(f"{s.name}-*"):
        if old != s.root and old.is_dir():
            say(f"removing the outdated root {old}")
            shutil.rmtree(old, ignore_errors=True)
    return s.root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ci/build-root",
                                description="build (once) the root a microVM stack boots")
    p.add_argument("stack", choices=[n for n, s in STACKS.items() if s.suite])
    p.add_argument("--print", action="store_true", help="only print where the root is (or would be)")
    args = p.parse_args(argv)
    s = stack(args.stack)
    if args.print:
        print(s.root)
        return 0
    try:
        print(build(s))
    except VMError as e:
        print(f"ci/build-root: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
