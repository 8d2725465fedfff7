"""The sysctl values from before aronet changed them, kept so that a stop sets them back,
also after the agent was killed (SIGKILL) and started again.

Originals maps (ns, name) to the Sysctl as aronet set it and the value it had before
aronet's FIRST change. A value already recorded is kept: it is never overwritten
with aronet's own. Once keep_in(path) was called, every change is written to that
file at once (JSON, through a temporary file and a rename, mode 0600), before the
sysctl itself is changed; the file is removed when nothing is left to restore.

The file names the boot and the agent's network namespace it was written in: sysctl
values last only as long as both, so a file from another boot (the state directory
outlives a reboot) or another namespace (a lab's node made again) is discarded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re

from ...core.names import netns_path
from ...core.state import Sysctl
from ...errors import ApplyError
from ..files import write_atomic

log = logging.getLogger(__name__)

BOOT_ID = "/proc/sys/kernel/random/boot_id"
NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+")
MAX_BYTES = 1 << 20


def identity(base_ns: str) -> dict[str, object]:
    """Where the values are valid: this boot and the agent's network namespace."""
    try:
        with open(BOOT_ID) as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    where = netns_path(base_ns) if base_ns else "/proc/self/ns/net"
    try:
        st = os.stat(where)
    except OSError as e:
        raise ApplyError("netns", where, e.strerror or str(e)) from e
    return {"boot_id": boot, "netns": f"{st.st_dev}:{st.st_ino}"}


class Originals:
    """(ns, name) -> (the Sysctl as aronet set it, the value before aronet)."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], tuple[Sysctl, str]] = {}
        self.file: str | None = None
        self._identity: dict[str, object] = {}

    def keep_in(self, path: str, where: dict[str, object]) -> None:
        """From now on, persist in path; first take in what an earlier run recorded
        there (where: identity() of this agent; a file from elsewhere is discarded).
        Those win over values recorded in memory so far: they are older."""
        self.file, self._identity = path, where
        for s, original in self._load(path, where):
            self._values[s.key] = (s, original)
        self._save()

    def record(self, s: Sysctl, before: str) -> None:
        """Remember before as s's original, unless one is recorded already."""
        if s.key not in self._values:
            self._values[s.key] = (s, before)
            self._save()

    def original(self, key: tuple[str, str]) -> str | None:
        entry = self._values.get(key)
        return entry[1] if entry else None

    def forget(self, key: tuple[str, str]) -> None:
        if self._values.pop(key, None) is not None:
            self._save()

    def forget_namespace(self, ns: str) -> None:
        """Drop the values of a namespace that is gone: they went with it."""
        for key in [k for k in self._values if k[0] == ns]:
            self.forget(key)

    def sysctls(self) -> list[Sysctl]:
        return [s for s, _ in self._values.values()]

    def namespaces(self) -> set[str]:
        return {ns for ns, _ in self._values if ns}

    def __len__(self) -> int:
        return len(self._values)

    # ------------------------------------------------------------------ the file

    def _save(self) -> None:
        if self.file is None:
            return
        if not self._values:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file)
            return
        doc = {"about": "aronet: sysctl values from before this agent changed them; "
                        "a clean stop sets them back and removes this file",
               **self._identity,
               "sysctls": [{"ns": s.ns, "name": s.name, "original": original,
                            "set": s.value, "scope": s.scope}
                           for (s, original) in sorted(self._values.values(),
                                                       key=lambda e: e[0].key)]}
        try:
            write_atomic(self.file, json.dumps(doc, indent=1) + "\n", mode=0o600)
        except OSError as e:
            raise ApplyError("sysctl", f"record the values from before aronet in {self.file}",
                             e.strerror or str(e)) from e

    @staticmethod
    def _load(path: str, where: dict[str, object]) -> list[tuple[Sysctl, str]]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        try:
            with os.fdopen(fd, "rb") as f:
                doc = json.loads(f.read(MAX_BYTES + 1)[:MAX_BYTES])
            if any(doc.get(k) != v for k, v in where.items()):
                log.info("%s is from another boot or network namespace; its values "
                         "do not apply here", path)
                return []
            out = []
            for e in doc["sysctls"]:
                if not (isinstance(e["ns"], str) and isinstance(e["original"], str)
                        and isinstance(e["set"], str) and NAME.fullmatch(e["name"])):
                    raise ValueError(f"bad entry {e!r}")
                out.append((Sysctl(e["ns"], e["name"], e["set"], str(e.get("scope", "netns"))),
                            e["original"]))
            return out
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("ignoring %s: not a file of sysctl values aronet wrote (%s)", path, e)
            return []
