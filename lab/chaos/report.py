"""The chaos soak's summary and text, from its timeline. Pure."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter


def summarize(timeline: list[dict], violations: list[dict]) -> dict:
    """Faults injected per kind, reconvergence (seconds from the heal until every
    check passes) per kind as median and maximum, violations per invariant."""
    by_kind: dict[str, list[float]] = {}
    for row in timeline:
        by_kind.setdefault(row["kind"], [])
        if row.get("reconverged_s") is not None:
            by_kind[row["kind"]].append(row["reconverged_s"])
    return {
        "events": len(timeline),
        "faults": dict(sorted(Counter(r["kind"] for r in timeline).items())),
        "reconvergence_s": {k: {"n": len(v), "median": round(statistics.median(v), 1) if v else None,
                                "max": round(max(v), 1) if v else None}
                            for k, v in sorted(by_kind.items())},
        "violations": dict(sorted(Counter(v["invariant"] for v in violations).items())),
    }


def as_text(result: dict) -> str:
    s = result["summary"]
    lines = ["", f"chaos: {s['events']} faults in {result['seconds']:.0f} s "
             f"(seed {result['schedule']['seed']}, bound {result['bound_s']:g} s)", "",
             f"{'fault':<14} {'n':>4} {'median s':>9} {'max s':>7}"]
    for kind, r in s["reconvergence_s"].items():
        med = "-" if r["median"] is None else f"{r['median']:.1f}"
        mx = "-" if r["max"] is None else f"{r['max']:.1f}"
        lines.append(f"{kind:<14} {s['faults'].get(kind, 0):>4} {med:>9} {mx:>7}")
    peak = result.get("rss_peak_kb") or {}
    if peak:
        top = max(peak.values())
        lines += ["", f"largest agent RSS: {top / 1024:.1f} MB (limit {result['rss_limit_mb']:g} MB)"]
    if result["violations"]:
        lines += ["", f"{len(result['violations'])} violation(s):"]
        lines += [f"  #{v['event']}: {v['invariant']}: {v['detail']}" for v in result["violations"]]
    else:
        lines += ["", "no violations"]
    return "\n".join(lines) + "\n"


def write(result: dict, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return path
