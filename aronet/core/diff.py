"""diff(desired, observed) -> Plan: the small steps that bring a node in sync.

A Plan is a sorted tuple of frozen actions, each with a readable str. It is empty
when the node is in sync, so `not plan` is the drift check. Order: removals first,
most dependent first (a route before its interface before its namespace); then
changes and additions, least dependent first.
"""

from __future__ import annotations

from dataclasses import dataclass

from .state import Resource, State


@dataclass(frozen=True)
class Action:
    op: str  # "add" | "change" | "remove"
    new: Resource | None
    old: Resource | None

    @property
    def resource(self) -> Resource:
        return self.new if self.new is not None else self.old

    def sort_key(self):
        r = self.resource
        if self.op == "remove":
            return (0, -r.order, r.kind, r.key)
        return (1, r.order, r.kind, r.key)

    def __str__(self) -> str:
        sign = {"add": "+", "change": "~", "remove": "-"}[self.op]
        text = f"{sign} {self.resource}"
        if self.op == "change":
            text += f"  (was: {self.old})" if str(self.old) != str(self.new) else "  (content)"
        return text


Plan = tuple[Action, ...]


def diff(desired: State, observed: State) -> Plan:
    want, have = desired.index(), observed.index()
    actions = []
    for k, r in want.items():
        if k not in have:
            actions.append(Action("add", r, None))
        elif have[k] != r:
            actions.append(Action("change", r, have[k]))
    actions += [Action("remove", None, r) for k, r in have.items() if k not in want]
    return tuple(sorted(actions, key=Action.sort_key))


def render(plan: Plan) -> str:
    return "\n".join(map(str, plan)) + ("\n" if plan else "")
