"""The chaos schedule: which fault, where, for how long, in which order. Pure: the
same lab plan, seed and arguments give the same schedule, event for event.

Each event is a fault on named targets, held for `hold` seconds, then healed (the
faults that heal themselves, a killed charon or routing daemon that the agent's
supervisor restarts, a reload, a refused reload, have nothing to undo), followed by a
pause. The soak (soak.py) runs the events in order until its minutes are used up;
the schedule holds enough of them for that even if each took no time at all to
reconverge (make_schedule's count), so a run's events are always a prefix of it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ..topology import LabPlan

# fault -> what undoes it ("" : nothing, the mesh heals by itself)
FAULTS: dict[str, str] = {
    "link": "link up",
    "partition": "heal",
    "drop-esp": "heal",
    "kill-agent": "start the agent",
    "kill-charon": "",
    "kill-routing": "",
    "reload": "",
    "bad-reload": "",
    "impair": "clear",
}
DEFAULTS = {"hold": 10.0, "pause": (2.0, 8.0), "bound": 180.0, "rss_limit_mb": 200.0}
IMPAIR_DELAYS_MS = (5, 20, 50, 100)
IMPAIR_LOSSES = (0, 1, 5, 10)


@dataclass(frozen=True)
class Event:
    index: int
    kind: str
    targets: tuple[str, ...]  # nodes (and a segment for link and impair)
    hold: float  # seconds between the fault and its heal
    pause: float  # seconds after the mesh is whole again
    params: dict = field(default_factory=dict, hash=False, compare=True)  # impair: delay_ms, loss, to

    def __str__(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind} {' '.join(self.targets)}{extra}"

    def as_json(self) -> dict:
        doc = asdict(self)
        doc["targets"] = list(self.targets)
        return doc


@dataclass(frozen=True)
class Schedule:
    seed: int
    minutes: float
    faults: tuple[str, ...]
    events: tuple[Event, ...]

    def as_json(self) -> dict:
        return {"seed": self.seed, "minutes": self.minutes, "faults": list(self.faults),
                "events": [e.as_json() for e in self.events]}


def choices(plan: LabPlan) -> dict[str, list[tuple[str, ...]]]:
    """Per fault kind, every target it can take in this lab, in a fixed order."""
    nodes = [n.name for n in plan.nodes]
    faces = {n.name: n.nat or n.name for n in plan.nodes}
    pairs = [(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:]
             if faces[a] != faces[b] and plan.ports_of(a) and plan.ports_of(b)]
    links = []  # (member, segment): a node's attachment, pulled as a cable would be
    for n in plan.nodes:
        for s in plan.segments:
            if n.name in s.members:
                links.append((n.name, s.name))
    switched = [(s.name,) for s in plan.segments if s.bridge]
    one = [(x,) for x in nodes]
    return {"link": links, "partition": pairs, "drop-esp": pairs, "kill-agent": one,
            "kill-charon": one, "kill-routing": one, "reload": one, "bad-reload": one,
            "impair": switched}


def count(minutes: float, hold: float, pause: tuple[float, float]) -> int:
    """Events enough for the minutes even if reconvergence took no time."""
    shortest = max(min(hold, 1.0) + pause[0], 1.0)
    return int(minutes * 60 / shortest) + 1


def make_schedule(plan: LabPlan, *, minutes: float, seed: int, faults: Sequence[str] | None = None,
                  hold: float = DEFAULTS["hold"], pause: tuple[float, float] = DEFAULTS["pause"]
                  ) -> Schedule:
    kinds = tuple(faults or FAULTS)
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault {', '.join(unknown)}")
    if minutes <= 0 or hold < 0:
        raise ValueError("minutes must be positive and hold not negative")
    where = choices(plan)
    usable = [k for k in kinds if where[k]]
    rng = random.Random(seed)
    events = []
    for i in range(count(minutes, hold, pause) if usable else 0):
        kind = rng.choice(usable)
        targets = rng.choice(where[kind])
        params: dict = {}
        if kind == "impair":
            seg = plan.segment(targets[0])
            params = {"delay_ms": rng.choice(IMPAIR_DELAYS_MS), "loss": rng.choice(IMPAIR_LOSSES)}
            if rng.random() < 0.5:  # one direction only: babel's RTT metric sees the asymmetry
                params["to"] = rng.choice(seg.members)
        no_heal = FAULTS[kind] == ""
        events.append(Event(i, kind, tuple(targets), 0.0 if no_heal else round(hold, 3),
                            round(rng.uniform(*pause), 3), params))
    return Schedule(seed, minutes, kinds, tuple(events))
