"""A persistent microVM driven from the host (lab.vm.start_persistent / forward /
stop_persistent): boots a real VM (stock Debian kernel under QEMU TCG, 20 to 60 s),
runs aronet-lab in it over the virtio-serial channel, powers it off, and checks that
no QEMU of ours is left, whatever happened in between.

A host-side test that needs root (the kernel in /boot is root-only), so it lives
with the netns tier rather than in tests/vm (whose items run *inside* a VM).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
from pathlib import Path

import pytest

from lab import vm

pytestmark = pytest.mark.root


def _qemu_processes() -> dict[int, str]:
    """pid -> command line of every process `pgrep qemu` finds (other engineers' too).

    Not `pgrep -a`: a command line may hold newlines (another VM's -append), which
    would split one process over several lines.
    """
    out = subprocess.run(["pgrep", "qemu"], capture_output=True, text=True).stdout
    procs = {}
    for pid in map(int, out.split()):
        with contextlib.suppress(OSError):  # gone meanwhile
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            procs[pid] = cmdline.replace(b"\0", b" ").decode("utf-8", "replace")
    return procs


@pytest.fixture
def state_dir(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: boots the root-only kernel in /boot")
    reason = vm.vm_available()
    if reason:
        pytest.skip(f"VM not available: {reason}")
    d = tmp_path / "vm"
    yield d
    # Whatever the test did: nothing of ours may keep running.
    state = vm.persistent._read_state(d)
    vm.stop_persistent(d, timeout=30)
    if state:
        assert not vm.persistent._group_members(state["pgid"], state["tag"]), (
            "the VM's processes outlived the test")


def test_persistent_vm_runs_commands_from_the_host(state_dir, capsys):
    before = _qemu_processes()
    state = vm.start_persistent(state_dir)
    sock = state["socket"]
    print(f"booted in {state['boot_seconds']} s (guest uptime {state['guest_uptime']} s)")

    # QEMU runs detached, in the recorded process group, with our channel.
    qemu = state["qemu_pid"]
    assert qemu and os.getpgid(qemu) == state["pgid"]
    assert sock in _qemu_processes()[qemu]
    assert os.getsid(state["pgid"]) != os.getsid(0)
    assert vm.persistent_state(state_dir)["pgid"] == state["pgid"]
    # The pong came from the guest: its uptime is the VM's, not the host's.
    assert 0 < state["guest_uptime"] < state["boot_seconds"] + 5

    t0 = time.monotonic()
    out, err = io.StringIO(), io.StringIO()
    assert vm.forward(state_dir, ["--help"], stdout=out, stderr=err) == 0, err.getvalue()
    assert "usage: aronet-lab" in out.getvalue()

    t1 = time.monotonic()
    out, err = io.StringIO(), io.StringIO()
    rc = vm.forward(state_dir, ["check", "--dir", "/run/aronet-lab/no-such-lab"], stdout=out, stderr=err)
    assert rc != 0
    assert "aronet-lab:" in err.getvalue()

    t2 = time.monotonic()
    assert vm.stop_persistent(state_dir) == "powered off"
    print(f"--help {t1 - t0:.1f} s, failing check {t2 - t1:.1f} s, stop {time.monotonic() - t2:.1f} s")
    assert vm.persistent_state(state_dir) is None
    assert sock not in _qemu_processes().get(qemu, ""), f"QEMU {qemu} is still running"
    assert not vm.persistent._group_members(state["pgid"], state["tag"])
    # Other engineers' VMs may come and go meanwhile; none with our socket may remain.
    left = {pid: cmd for pid, cmd in _qemu_processes().items() if pid not in before and sock in cmd}
    assert not left, f"QEMU still running: {left}"
    assert not os.path.exists(sock) and not (state_dir / "vm.json").exists()
