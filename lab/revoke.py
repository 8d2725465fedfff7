"""`aronet-lab revoke NODE` (issue 21): sign a registry that revokes NODE, give it to
every other node's agent, and measure until every one of them has cut NODE off:
no IKE SA with NODE's identity left in its charon.

The time is measured from the first load to the last peer without an SA, polled
(never slept), and reported per peer, so a VM test can hold it to a bound."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aronet.adapters.vici import Vici
from aronet.client import request
from aronet.errors import AronetError
from aronet.load import read_signed
from aronet.trust import decode_envelope

from . import signing

POLL = 0.2


@dataclass
class Revoked:
    node: str  # org/cn
    serial: int
    loaded: dict[str, float] = field(default_factory=dict)  # peer -> seconds to load
    cut_off: dict[str, float] = field(default_factory=dict)  # peer -> seconds until no SA with it
    waiting: list[str] = field(default_factory=list)  # peers that still had an SA at the deadline

    @property
    def ok(self) -> bool:
        return not self.waiting

    @property
    def seconds(self) -> float:
        return max(self.cut_off.values(), default=0.0)

    def as_text(self) -> str:
        lines = [f"revoked {self.node} (serial {self.serial})"]
        for peer in sorted(self.cut_off):
            lines.append(f"  {peer:<24} cut off after {self.cut_off[peer]:5.1f} s")
        for peer in self.waiting:
            lines.append(f"  {peer:<24} still has an SA with {self.node}")
        lines.append(f"PASS: every peer cut it off in {self.seconds:.1f} s" if self.ok
                     else "FAIL: not every peer cut it off")
        return "\n".join(lines)


def holds_sa_with(vici_socket: str, organization: str, common_name: str) -> bool:
    """Whether this charon has an IKE SA whose remote identity is that node's."""
    v = Vici(vici_socket)
    try:
        v.connect(timeout=5)
        sas = v.sas()
    finally:
        v.close()
    mark = (f"O={organization}", f"CN={common_name}")
    return any(all(m in str(sa.get("remote-id", "")) for m in mark) for sa in sas.values())


def revoke(lab, node: str, reason: str = "revoked in the lab", timeout: float = 120.0) -> Revoked:
    """lab: a lab.run.Lab whose registry is signed (signing.sign_lab)."""
    target = lab.plan.node(node)
    sig = signing.resign(lab.directory, revoke_nodes=((target.organization, node, reason),))
    signed = read_signed(signing.registry_file(lab.directory), sig)
    serial = decode_envelope(signed.sig_text, signed.sig_file)[0].serial
    result = Revoked(f"{target.organization}/{node}", serial)
    peers = [n for n in lab.plan.nodes if n.name != node]
    t0 = time.monotonic()
    for n in peers:
        request(lab.control_socket(n.name), {"cmd": "load", "file": signed.file, "registry": signed.text,
                                             "signature": signed.sig_text,
                                             "signature_file": signed.sig_file}, timeout=120)
        result.loaded[n.name] = round(time.monotonic() - t0, 2)
    pending = {n.name for n in peers}
    deadline = t0 + timeout
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            try:
                held = holds_sa_with(lab.paths(name).vici_socket, target.organization, node)
            except AronetError:
                continue  # charon busy; asked again
            if not held:
                result.cut_off[name] = round(time.monotonic() - t0, 2)
                pending.discard(name)
        if pending:
            time.sleep(POLL)
    result.waiting = sorted(pending)
    return result
