"""aronet-lab bench: aronet's performance figures, measured, with one command.

Every row is a measurement, never a verdict: the targets live in the README, next to
the numbers. Rows that need kernel ESP, XFRM interfaces or VRF run in the microVM
(lab.vm: one boot per group of rows, stock Debian kernel under QEMU TCG) unless
--here says this kernel has them. `aronet-lab bench` prints a table and writes
everything to OUT/bench.json.

One module per row, whose docstring is that row's method:

planner    (this machine) load, plan and replan synthetic registries      planner.py
reload     (VM) incremental reloads of one agent with a large registry     reload.py
failover   (VM) outage of `measure failover` on a triangle                 failover.py
control    (VM) idle control traffic per tunnel                            control.py
mtu        (VM) largest DF echo and TCP MSS across the overlay             mtu.py
reload-gap (VM) a -> b's traffic gap while c is removed from the registry  lab/reload_gap.py
bringup    (VM) VM start until every check of a full mesh passes           bringup.py
footprint  (VM) memory of the agents and daemons, and its growth           footprint.py

What they share: common.py (the row registry, defaults, statistics, synthetic
registries and meshes), labs.py (a lab up for the length of a row, commands in its
namespaces), triangle.py (the VM group of failover, control and mtu), suite.py
(which rows run where: the host's `run`, one VM boot per group, the guest's
`inside`) and table.py (the table and bench.json).
"""

from .common import DEFAULTS, ROWS
from .suite import inside, run
from .table import as_table

__all__ = ["DEFAULTS", "ROWS", "as_table", "inside", "run"]
