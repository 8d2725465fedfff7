"""The microVM runner: stock Debian kernel under QEMU/TCG, for what the host kernel lacks.

One module per job:
  host.py        can this machine boot a VM (vm_available), which kernel, VMError
  roots.py       the stacks (debian12: the host's root; debian13: a root built here)
  boot.py        one throw-away VM per command: run_in_vm(), the guest's wrapper script
  persistent.py  a VM that stays up (`aronet-lab up --vm`): start/forward/stop
  channel.py     the host <-> guest wire protocol and the host's client (run_remote)
  guest.py       the server inside a persistent VM (`python -m lab.vm.guest --entry M:F`)
  fork.py        the guest's fork-per-request runner

Stands alone on purpose: nothing here imports aronet or the rest of the lab
(an import-linter contract), so it keeps working while they are broken.  What
the guest serves is its caller's to say: an entry point named as a string.
"""

from .boot import DEFAULT_TIMEOUT, GUEST_MODULES, VMResult, command_output, run_in_vm, tail
from .host import REPO_ROOT, VMError, VMTimeout, find_kernel, python_paths, vm_available
from .persistent import (
    BOOT_TIMEOUT,
    PERSISTENT_DIR,
    forward,
    persistent_state,
    start_persistent,
    stop_persistent,
)
from .roots import STACKS, available

__all__ = [
    "BOOT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "GUEST_MODULES",
    "PERSISTENT_DIR",
    "REPO_ROOT",
    "STACKS",
    "VMError",
    "VMResult",
    "VMTimeout",
    "available",
    "command_output",
    "find_kernel",
    "forward",
    "persistent_state",
    "python_paths",
    "run_in_vm",
    "start_persistent",
    "stop_persistent",
    "tail",
    "vm_available",
]
