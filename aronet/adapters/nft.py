"""nftables adapter: replace or delete aronet's own table, and observe it.

Talks to libnftables through `nft -j -f -` (JSON in, JSON out). The python3-nftables
binding would do the same in-process, but Debian installs it for /usr/bin/python3
only, and the agent may run from any venv. A namespace other than the agent's own is
entered with nsenter, for the nft process alone.

Only aronet's table (`inet aronet`) is ever touched: replacing it is one atomic
transaction, so the kernel never holds half a ruleset.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter

from ..core import nft as core_nft
from ..core.diff import Plan
from ..core.names import netns_path
from ..core.state import NftTable, State
from ..errors import ApplyError


class Nft:
    def __init__(self, base_ns: str = "", *, binary: str = "nft"):
        """base_ns: the namespace the agent counts as its own ("" = where it runs)."""
        self.base_ns = base_ns
        self.binary = binary
        self.calls: Counter[str] = Counter()  # nft invocations: "list table", "transaction"

    def _cmd(self, ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        target = ns or self.base_ns
        argv = [self.binary, *args]
        if target:
            argv = ["nsenter", f"--net={netns_path(target)}", "--", *argv]
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            raise ApplyError("nft", argv[0], "not installed (Debian package nftables)") from None
        except subprocess.TimeoutExpired:
            raise ApplyError("nft", " ".join(args), "timed out after 30 s") from None

    def observe(self, namespaces: list[str]) -> State:
        """The aronet table in each given namespace ("" is the agent's own)."""
        found = []
        for ns in namespaces:
            self.calls["list table"] += 1
            r = self._cmd(ns, "-j", "list", "table", core_nft.FAMILY, core_nft.TABLE)
            if r.returncode != 0:
                if "No such file or directory" in r.stderr or "does not exist" in r.stderr:
                    continue  # no table: nothing of ours here
                raise ApplyError("nft", f"list table in {ns or 'host'}", r.stderr.strip())
            objects = json.loads(r.stdout).get("nftables", [])
            found.append(NftTable(ns, core_nft.FAMILY, core_nft.TABLE, core_nft.summary(objects)))
        return State(frozenset(found))

    def apply(self, plan: Plan) -> None:
        for action in plan:
            table = action.resource
            if not isinstance(table, NftTable):
                continue
            if action.op == "remove":
                self._run(table.ns, core_nft.delete_transaction(), str(action))
            else:
                self._run(table.ns, core_nft.transaction(json.loads(table.ruleset)), str(action))

    def delete(self, ns: str) -> None:
        self._run(ns, core_nft.delete_transaction(), f"delete table in {ns or 'host'}")

    def quiet(self, ns: str, tunnel_pattern: str) -> None:
        """Drop the babel packets this node sends on its tunnels (core.nft.quiet_transaction)."""
        self._run(ns, core_nft.quiet_transaction(tunnel_pattern), "quiet babel")

    def unquiet(self, ns: str) -> None:
        """Remove the quiet table, if there is one (also at start and stop)."""
        self._run(ns, core_nft.delete_transaction(core_nft.QUIET_TABLE), "unquiet babel")

    def _run(self, ns: str, payload: str, what: str) -> None:
        self.calls["transaction"] += 1
        r = self._cmd(ns, "-j", "-f", "-", stdin=payload)
        if r.returncode != 0:
            raise ApplyError("nft", what, r.stderr.strip() or f"exit status {r.returncode}")

    @staticmethod
    def available() -> bool:
        return shutil.which("nft") is not None
