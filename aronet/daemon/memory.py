"""The agent's memory: keeping it flat, and the `memory` control command.

Keeping it flat: every pyroute2 request leaves a few hundred objects in reference
cycles (frames, tracebacks, request processors), which only CPython's cyclic garbage
collector frees. Left to its own thresholds it lets them pile up between full
collections, and the high-water mark stays in RSS (pymalloc cannot return partly used
arenas): several MB of growth over a 30-minute run. So the agent freezes what it
imported at start (the collector no longer scans it) and runs a full collection after
every re-check, which then scans only the agent's runtime objects (90 ms with the
trim below, in the 12-node TCG lab; README, Benchmarks).

With the Python heap flat, RSS still grew in netns mode, by about 0.2 MB a minute:
memory glibc's malloc held free (the work runs on executor threads, and glibc gives
threads arenas of their own, up to eight per core, whose free space fragmented), which
malloc_trim gave back. So the collection after every re-check ends with
malloc_trim(0), and at start, before any thread, glibc is held to two arenas
(`limit_arenas`): the agent's few worker threads need no more.

The footprint benchmark asks for this while it samples RSS, so that RSS growth can be
split into live Python objects, memory the C allocator holds free, threads and file
descriptors. On request it also starts tracemalloc (from then on, so a later `top`
lists exactly the live blocks allocated since, by where they were allocated), and it
can collect garbage and hand free memory back to the kernel (malloc_trim) to show how
much of RSS was only retained by the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
import time
import tracemalloc

from ..adapters.proc import proc_status_kb

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2
_collections = {"runs": 0, "seconds": 0.0, "last_s": 0.0, "freed": 0}
_arena_max: int | None = None


def settle() -> None:
    """At start, before any thread: at most ARENAS malloc arenas; collect, then move
    everything alive now (modules, config) out of the collector's sight for good."""
    limit_arenas(ARENAS)
    gc.collect()
    gc.freeze()


def limit_arenas(n: int) -> bool:
    """Let glibc's malloc make at most n arenas (False: not glibc, or refused). Threads
    started afterwards share them."""
    global _arena_max
    fn = getattr(_LIBC, "mallopt", None)
    if fn is None or not fn(M_ARENA_MAX, n):
        return False
    _arena_max = n
    return True


def collect() -> int:
    """A full collection, then the free heap memory handed back to the kernel (after
    every re-check); returns the objects it freed."""
    t0 = time.perf_counter()
    freed = gc.collect()
    _trim()
    took = time.perf_counter() - t0
    _collections["runs"] += 1
    _collections["seconds"] += took
    _collections["last_s"] = took
    _collections["freed"] += freed
    return freed


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def _status_kb() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return proc_status_kb(f.read())


def _anon_kb() -> dict[str, int]:
    """Resident anonymous memory by mapping: glibc's main heap (brk), thread stacks
    (8 MB mappings), and every other anonymous mapping (pymalloc's arenas, glibc's
    per-thread arenas, anything a C library maps)."""
    out = {"heap": 0, "thread_stacks": 0, "other": 0, "other_mappings": 0}
    kind = None
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=6)
            if "-" in first[0] and len(first) >= 5:  # a mapping's header line
                start, _, end = first[0].partition("-")
                size_kb = (int(end, 16) - int(start, 16)) // 1024
                name = first[5].strip() if len(first) > 5 else ""
                kind = ("heap" if name == "[heap]" else None if name else
                        "thread_stacks" if size_kb == 8192 else "other")
                if kind == "other":
                    out["other_mappings"] += 1
            elif kind and first[0] == "Anonymous:":
                out[kind] += int(first[1])
    return out


def _malloc_kb() -> dict[str, int] | None:
    """glibc's heap: bytes in use and held free (all arenas), and mmapped chunks."""
    fn = getattr(_LIBC, "mallinfo2", None)
    if fn is None:  # not glibc, or older than 2.33
        return None
    fn.restype = _Mallinfo2
    m = fn()
    return {"heap": m.arena // 1024, "in_use": m.uordblks // 1024, "free": m.fordblks // 1024,
            "mmapped": m.hblkhd // 1024, "arena_max": _arena_max}


def usage() -> dict:
    tracing = tracemalloc.is_tracing()
    out = {
        "rss_kb": _status_kb(),
        "malloc_kb": _malloc_kb(),
        "anon_kb": _anon_kb(),
        "python_blocks": sys.getallocatedblocks(),
        # not len(gc.get_objects()): it hands out tuples another thread is still
        # building, and that thread then fails (SystemError from _PyTuple_Resize)
        "gc": {"frozen": gc.get_freeze_count(), "full_collections": gc.get_stats()[2]["collections"],
               "agent_collections": {"runs": _collections["runs"], "freed": _collections["freed"],
                                     "ms": round(_collections["seconds"] * 1000),
                                     "last_ms": round(_collections["last_s"] * 1000, 1)}},
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "tracing": tracing,
    }
    if tracing:
        current, peak = tracemalloc.get_traced_memory()
        out["traced_kb"] = {"current": current // 1024, "peak": peak // 1024,
                            "tracemalloc_itself": tracemalloc.get_tracemalloc_memory() // 1024}
    return out


def start_tracing(frames: int) -> None:
    if not tracemalloc.is_tracing():
        tracemalloc.start(max(1, min(frames, 50)))


def top(limit: int) -> list[dict]:
    """The live blocks allocated since tracing started, grouped by where they were
    allocated (innermost frame first), largest first."""
    if not tracemalloc.is_tracing():
        return []
    snapshot = tracemalloc.take_snapshot().filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, __file__),
    ))
    stats = snapshot.statistics("traceback")
    return [{"kb": round(s.size / 1024, 1), "blocks": s.count,
             "where": [f"{f.filename}:{f.lineno}" for f in s.traceback]}
            for s in stats[:limit]]


def _trim() -> None:
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def release() -> dict:
    """Collect garbage and return free heap memory to the kernel; RSS before and after."""
    before = _status_kb()
    collected = gc.collect()
    _trim()
    return {"collected": collected, "before_kb": before, "after_kb": _status_kb()}


def handle(req: dict) -> dict:
    """{"cmd": "memory", "trace": frames?, "top": n?, "release": bool?}"""
    if req.get("trace"):
        start_tracing(int(req["trace"]))
    out = {"usage": usage()}
    if req.get("top"):
        out["top"] = top(int(req["top"]))
    if req.get("release"):
        out["release"] = release()
    return out
