"""Impairments at run time: delay, jitter, loss and rate on a LAN or link of a
running lab, both ways or toward one member, changed while the lab runs.

What LINK names: a LAN or link (its name as the topology and `inspect` give it:
`wan`, `l1`, `ab`), or two members `A B` for the link between them (the only one;
several links between them need a name). NAT inside links are no switched segment
and take no impairment: impair the router's outside leg. A segment's direction is
the switch port of one member: `--to B` shapes only the frames delivered to B, so
`impair a b --delay 10` then `impair a b --to b --delay 50` makes a->b 50 ms and
b->a 10 ms (babel's RTT metric sees it).

Where it acts: netem on the switch ports, where the kernel has it (the microVM);
where it has not, loss alone, as nftables rules per port (the lab's `loss`
mechanism, lab.underlay) and delay, jitter or rate are refused before anything
changes. What is in force per port is kept in the lab's directory (impair.json),
starting from the topology's own loss, delay and rate; `inspect` shows it. The model
and the parsing are pure; apply() and clear() do the work through lab.underlay.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from aronet.errors import ApplyError, InputError, Problem

from . import underlay
from .run import Lab
from .topology import LabPlan

STATE_FILE = "impair.json"


def usage(message: str) -> InputError:
    return InputError(Problem("aronet-lab impair", "LINK", message))


@dataclass(frozen=True)
class Impairment:
    delay_ms: float | None = None
    jitter_ms: float | None = None
    loss: int = 0
    rate: str | None = None

    @classmethod
    def of(cls, *, delay=None, jitter=None, loss=None, rate=None) -> Impairment:
        """From the command's options; bad combinations are an InputError."""
        if all(v is None for v in (delay, jitter, loss, rate)):
            raise usage("say what: --delay, --jitter, --loss, --rate, or --clear")
        if jitter and not delay:
            raise usage("--jitter varies a --delay: give both")
        if rate is not None:
            try:
                underlay.rate_bytes(rate)
            except ValueError as e:
                raise usage(str(e)) from None
        return cls(delay, jitter, loss or 0, rate)

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.rate is not None)

    @property
    def empty(self) -> bool:
        return not (self.needs_netem or self.loss)

    def __str__(self) -> str:
        parts = []
        if self.delay_ms:
            jitter = f" ± {self.jitter_ms:g} ms" if self.jitter_ms else ""
            parts.append(f"delay {self.delay_ms:g} ms{jitter}")
        if self.loss:
            parts.append(f"loss {self.loss}%")
        if self.rate is not None:
            parts.append(f"rate {self.rate}")
        return ", ".join(parts) or "none"

    def as_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, 0)}

    @classmethod
    def from_json(cls, doc: dict) -> Impairment:
        return cls(doc.get("delay_ms"), doc.get("jitter_ms"), int(doc.get("loss", 0)), doc.get("rate"))


@dataclass(frozen=True)
class Target:
    segment: str
    members: tuple[str, ...]  # the directions: frames delivered to each of them


def target(plan: LabPlan, link: str, peer: str | None = None, to: str | None = None) -> Target:
    """What `impair LINK [PEER] [--to MEMBER]` names, or an InputError saying why not."""
    switched = [s for s in plan.segments if s.bridge]
    names = ", ".join(s.name for s in switched)
    if peer is not None:
        between = [s for s in switched if s.kind == "link" and set(s.members) == {link, peer}]
        if not between:
            raise usage(f"no link joins {link!r} and {peer!r} (the LANs and links: {names})")
        if len(between) > 1:
            raise usage(f"{len(between)} links join {link!r} and {peer!r}: name one "
                        f"({', '.join(s.name for s in between)})")
        seg = between[0]
    else:
        seg = next((s for s in plan.segments if s.name == link), None)
        if seg is None:
            raise usage(f"{link!r} is not a LAN or link of lab {plan.lab} (they are: {names})")
        if not seg.bridge:
            raise usage(f"{link!r} is a NAT inside link, not on the switch; impair the NAT "
                        "router's outside LAN or link instead")
    if to is None:
        return Target(seg.name, seg.members)
    if to not in seg.members:
        raise usage(f"--to {to}: not on {seg.name!r} (its members: {', '.join(seg.members)})")
    return Target(seg.name, (to,))


def describe_target(t: Target) -> str:
    return t.segment + (f" toward {t.members[0]}" if len(t.members) == 1 else "")


# ---------------------------------------------------------------- what is in force


def declared(plan: LabPlan) -> dict[str, dict[str, Impairment]]:
    """segment -> member -> what the topology puts on it (loss, delay, rate)."""
    out: dict[str, dict[str, Impairment]] = {}
    for s in plan.segments:
        imp = Impairment(s.delay_ms, None, s.loss, s.rate)
        if s.bridge and not imp.empty:
            out[s.name] = dict.fromkeys(s.members, imp)
    return out


def in_force(lab: Lab) -> dict[str, dict[str, Impairment]]:
    """What is in force now: the lab's record, or the topology's while there is none."""
    try:
        with open(os.path.join(lab.directory, STATE_FILE)) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return declared(lab.plan)
    return {seg: {m: Impairment.from_json(v) for m, v in members.items()} for seg, members in doc.items()}


def updated(current: dict[str, dict[str, Impairment]], t: Target, wanted: Impairment
            ) -> dict[str, dict[str, Impairment]]:
    """The record after setting wanted (empty: clearing) on the target's directions."""
    out = {seg: dict(members) for seg, members in current.items()}
    seg = out.setdefault(t.segment, {})
    for m in t.members:
        if wanted.empty:
            seg.pop(m, None)
        else:
            seg[m] = wanted
    return {s: m for s, m in out.items() if m}


def _record(lab: Lab, state: dict[str, dict[str, Impairment]]) -> None:
    path = os.path.join(lab.directory, STATE_FILE)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({s: {m: imp.as_json() for m, imp in ms.items()} for s, ms in state.items()}, f, indent=2)
    os.replace(tmp, path)


# ---------------------------------------------------------------- doing it


def apply(lab: Lab, t: Target, wanted: Impairment) -> str:
    """Put wanted on the target (replacing what was there); returns how ("netem" or
    "nftables loss"). Without netem, delay, jitter and rate are refused first."""
    plan = lab.plan
    no_netem = underlay.netem_available(plan)
    if no_netem and wanted.needs_netem:
        raise ApplyError("lab", f"impair {describe_target(t)}",
                                  f"{no_netem}; --loss works here (nftables)")
    state = updated(in_force(lab), t, wanted)
    _enforce(plan, t.segment, state.get(t.segment, {}), netem=no_netem is None)
    _record(lab, state)
    return "netem" if no_netem is None else "nftables loss: this kernel has no netem"


def clear(lab: Lab, t: Target) -> bool:
    """Remove what is in force on the target's directions; False when nothing was."""
    current = in_force(lab)
    had = any(m in current.get(t.segment, {}) for m in t.members)
    state = updated(current, t, Impairment())
    no_netem = underlay.netem_available(lab.plan)
    _enforce(lab.plan, t.segment, state.get(t.segment, {}), netem=no_netem is None)
    _record(lab, state)
    return had


def restore(lab: Lab, segment: str, state: dict[str, dict[str, Impairment]]) -> None:
    """Put back on the segment what `state` (an earlier in_force) held there."""
    current = in_force(lab)
    if current.get(segment, {}) == state.get(segment, {}):
        return
    no_netem = underlay.netem_available(lab.plan)
    _enforce(lab.plan, segment, state.get(segment, {}), netem=no_netem is None)
    current = {s: m for s, m in current.items() if s != segment}
    if state.get(segment):
        current[segment] = state[segment]
    _record(lab, current)


def _enforce(plan: LabPlan, segment: str, members: dict[str, Impairment], *, netem: bool) -> None:
    """Make the segment's ports hold exactly `members` (the others nothing)."""
    seg = plan.segment(segment)
    if netem:
        underlay.set_segment_loss(plan, segment, {})
        for m, port in zip(seg.members, seg.ports, strict=True):
            imp = members.get(m, Impairment())
            underlay.set_netem(plan.switch_ns, port, delay_ms=imp.delay_ms, jitter_ms=imp.jitter_ms,
                               loss=imp.loss, rate=imp.rate)
    else:
        underlay.set_segment_loss(plan, segment, {m: imp.loss for m, imp in members.items()})
