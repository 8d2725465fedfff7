"""The runtime layout: every path an agent uses, derived in one place. All are
configurable, so several agents can share one kernel (the lab runs one per node
namespace). The agent, the command line and the lab all find an agent's files here."""

from __future__ import annotations

import os
from dataclasses import dataclass

RUNTIME_ROOT = "/run/aronet"  # default runtime directories: RUNTIME_ROOT/<ifname>
STATE_ROOT = "/var/lib/aronet"  # default state directories: STATE_ROOT/<ifname>


@dataclass(frozen=True)
class Paths:
    runtime_dir: str  # sockets, generated configs, pid files; removed on stop
    state_dir: str  # the last accepted registry, sysctl originals; kept across restarts

    @classmethod
    def for_instance(cls, ifname: str, runtime_dir: str | None = None,
                     state_dir: str | None = None) -> Paths:
        return cls(
            runtime_dir=os.path.abspath(runtime_dir or os.path.join(RUNTIME_ROOT, ifname)),
            state_dir=os.path.abspath(state_dir or os.path.join(STATE_ROOT, ifname)),
        )

    @property
    def control_socket(self) -> str:
        return os.path.join(self.runtime_dir, "control.sock")

    @property
    def charon_conf(self) -> str:
        return os.path.join(self.runtime_dir, "strongswan.conf")

    @property
    def vici_socket(self) -> str:
        return os.path.join(self.runtime_dir, "charon.vici")

    @property
    def bird_conf(self) -> str:
        return os.path.join(self.runtime_dir, "bird.conf")

    @property
    def bird_socket(self) -> str:
        return os.path.join(self.runtime_dir, "bird.ctl")

    @property
    def babeld_conf(self) -> str:
        return os.path.join(self.runtime_dir, "babeld.conf")

    @property
    def babeld_socket(self) -> str:
        return os.path.join(self.runtime_dir, "babeld.ctl")

    @property
    def babeld_pid(self) -> str:
        """babeld's own pid file (the supervisor's is child_pid("babeld"))."""
        return os.path.join(self.runtime_dir, "babeld.self.pid")

    @property
    def babeld_state(self) -> str:
        """babeld's sequence number and router id between runs: kept, like the registry."""
        return os.path.join(self.state_dir, "babeld.state")

    @property
    def sysctl_originals(self) -> str:
        """The sysctl values from before the agent changed them, so that a clean stop
        after a crash sets them back: kept, like the registry, until restored."""
        return os.path.join(self.state_dir, "sysctl-originals.json")

    @property
    def agent_pid(self) -> str:
        return os.path.join(self.runtime_dir, "aronet.pid")

    def child_pid(self, name: str) -> str:
        return os.path.join(self.runtime_dir, f"{name}.pid")

    @property
    def registry(self) -> str:
        return os.path.join(self.state_dir, "registry.json")

    @property
    def registry_sig(self) -> str:
        """The accepted registry's detached signature, beside it."""
        return self.registry + ".sig"

    @property
    def trust_state(self) -> str:
        """The highest accepted serial, its hashes and every key ever revoked
        (aronet.trust.TrustState): rollback protection across restarts."""
        return os.path.join(self.state_dir, "registry-trust.json")

    @property
    def instance_tag(self) -> str:
        """Put in every child's environment: stale children are found by this tag
        (or their pid file), never by process name."""
        return f"ARONET_INSTANCE={self.runtime_dir}"

