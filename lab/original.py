"""Lab nodes that run the original aronet 0.1b1 (`implementation: aronet-0.1b1`).

A federated mesh mixes implementations that share one registry. The lab proves
aronet against the original by running it as a node: its own `aronet daemon run`
with the charon and BIRD it bundles, from a venv of its own in the Debian 13 root
(ORIGINAL_VENV, made by lab/vm/roots.py; its binaries need glibc 2.38, so there is
none on Debian 12). Only VRF mode: the original's netns mode always names its
namespace `aronet`, so two of them cannot share one kernel.

What the lab does for such a node, and why:
- the same config.json as for an aronet node (the original ignores the keys it does
  not know), run from the node's directory (its key path is relative);
- RUNTIME_DIR: each instance's sockets, pid files and generated configs in the
  node's own run directory (the original defaults to /var/run/aronet for all);
- the sysctls its README asks the operator for, set in the node's namespace (the
  original sets none itself);
- once its control socket is up, `aronet load -r registry.json`, as its README says
  (its daemon does not read a registry at start).

The checks treat it as a foreign node: its peers' tunnels to it, their routes for its
prefixes and the pings to and from it are checked; what only aronet's control socket
says (its own tunnels, babel state, drift) and its SRv6 counter are not. Its stop is
its own: a SIGTERM, then the lab removes its namespace with whatever it left.
"""

from __future__ import annotations

import os
import subprocess
import time

from aronet.core.names import netns_path

from .vm.roots import ORIGINAL_VENV

IMPLEMENTATION = "aronet-0.1b1"
SOCKET_TIMEOUT = 120.0  # its start under TCG: Python, charon, BIRD
SYSCTLS = {  # its README's list: forwarding, and sockets in the VRF
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv4.tcp_l3mdev_accept": "1",
    "net.ipv4.udp_l3mdev_accept": "1",
}


class OriginalError(RuntimeError):
    """The original could not be started here."""


def command() -> str:
    return os.path.join(ORIGINAL_VENV, "bin", "aronet")


def available() -> str | None:
    """None if the original can run here, else why (and where it comes from)."""
    if not os.access(command(), os.X_OK):
        return (f"{command()} is missing: the original aronet 0.1b1 is installed only in the "
                "Debian 13 root (ci/build-root debian13), so such a lab runs in a microVM of the "
                "debian13 stack (tests/vm/test_original_peer.py)")
    return None


def environment(runtime_dir: str, base: dict[str, str]) -> dict[str, str]:
    return {**base, "RUNTIME_DIR": runtime_dir}


def _in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={netns_path(ns)}", "--", *argv]


def start(ns: str, node_dir: str, runtime_dir: str, config_file: str, registry_file: str,
          log_path: str, env: dict[str, str]) -> int:
    """Start the original's daemon in ns, load the registry into it, return its pid."""
    problem = available()
    if problem:
        raise OriginalError(problem)
    for key, value in SYSCTLS.items():
        subprocess.run(_in_ns(ns, ["sysctl", "-q", "-w", f"{key}={value}"]), check=True,
                       capture_output=True)
    os.makedirs(runtime_dir, exist_ok=True)
    env = environment(runtime_dir, env)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(_in_ns(ns, [command(), "daemon", "run", "-c", config_file]),
                                cwd=node_dir, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    socket = os.path.join(runtime_dir, "aronet.ctl")
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while not os.path.exists(socket):
        if proc.poll() is not None:
            raise OriginalError(f"the original aronet exited ({proc.returncode}) before its control "
                                f"socket came up; its log: {log_path}")
        if time.monotonic() > deadline:
            raise OriginalError(f"no control socket {socket} after {SOCKET_TIMEOUT:.0f} s; its log: "
                                f"{log_path}")
        time.sleep(0.2)
    with open(log_path, "ab") as log:
        r = subprocess.run(_in_ns(ns, [command(), "load", "-r", registry_file]), cwd=node_dir,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                           timeout=SOCKET_TIMEOUT)
    if r.returncode != 0:
        raise OriginalError(f"`aronet load` of the original failed ({r.returncode}); its log: {log_path}")
    return proc.pid
