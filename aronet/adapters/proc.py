"""Processes, read from /proc: which carry an agent's instance tag, and the kB
figures of a status file. Shared by the agent (its stale children, its own memory)
and the lab (what an agent left, the agents' memory)."""

from __future__ import annotations

import os

STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile")


def proc_status_kb(text: str, keys: tuple[str, ...] = STATUS_KEYS) -> dict[str, int]:
    """The kB fields named by keys from a /proc/PID/status (or /proc/meminfo) text."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in keys:
            out[key] = int(rest.split()[0])
    return out


def _has_tag(pid: int, tag: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return tag in f.read().split(b"\0")
    except OSError:
        return False


def tagged_processes(tag: str) -> list[int]:
    """Pids whose environment holds the instance tag (exactly, as one entry)."""
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and int(e) != me and _has_tag(int(e), tag.encode())]
