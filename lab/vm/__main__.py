"""By hand: `python -m lab.vm 'ip -j link' [rwdir]` runs one command in a throw-away VM."""

import os
import sys

from .boot import command_output, run_in_vm
from .host import REPO_ROOT, vm_available

reason = vm_available()
if reason:
    sys.exit(f"VM not available: {reason}")
out = sys.argv[2] if len(sys.argv) > 2 else str(REPO_ROOT / "out" / f"vm-{os.getpid()}")
res = run_in_vm(sys.argv[1] if len(sys.argv) > 1 else "uname -a", out)
sys.stdout.write(command_output(res.stdout))
sys.exit(res.returncode)
