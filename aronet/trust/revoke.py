"""Revocation: the registry the planner sees once an accepted statement's
revocations apply. A revoked node, and every node of an organization whose key is
revoked, is left out, so its connections, SAs and routes go at the next sync. A key
revoked once stays revoked (TrustState keeps it) even when a later registry lists
it again. Names match ignoring case, as strongSwan compares identities. When this
node itself is revoked, it keeps no peer: it cuts itself off too.
"""

from __future__ import annotations

import dataclasses

from .. import keys
from ..model import Registry
from .signers import fingerprint
from .statement import Revocation


def effective(registry: Registry, revoked_keys: tuple[Revocation, ...],
              revoked_nodes: tuple[Revocation, ...], me: tuple[str, str]
              ) -> tuple[Registry, list[str]]:
    """(the registry without what is revoked, one line per node left out and why)."""
    if not revoked_keys and not revoked_nodes:
        return registry, []
    by_key = {r.subject: r for r in revoked_keys}
    by_node = {r.subject.casefold(): r for r in revoked_nodes}
    kept, dropped = [], []
    for node in registry.nodes:
        try:
            fp = fingerprint(keys.parse_public(node.public_key))
        except keys.KeyProblem:  # the loader refused such a registry already
            fp = ""
        why = None
        if fp in by_key:
            why = f"its organization's key {fp} is revoked: {by_key[fp].reason}"
        elif node.name.casefold() in by_node:
            why = f"revoked: {by_node[node.name.casefold()].reason}"
        if why is None:
            kept.append(node)
        else:
            dropped.append((node, why))
    lines = [f"{node.name}: left out; {why}" for node, why in dropped]
    if any(node.key == me for node, _ in dropped):
        lines.append("this node itself is revoked: it keeps no peer")
        kept = [n for n in registry.nodes if n.key == me]
    return dataclasses.replace(registry, nodes=tuple(kept)), lines
