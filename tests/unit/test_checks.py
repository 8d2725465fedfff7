"""The lab's check rounds, against a fake transport (no lab, no kernel)."""

from __future__ import annotations

import json
import subprocess
import time
from types import SimpleNamespace

from aronet.core.status import Status
from lab.checks import NodeView, run_checks


class SlowTransport:
    """Status documents take a while to arrive; nft lists an empty table; the node is in sync."""

    def __init__(self):
        self.answered: list[float] = []

    def status(self, node):
        time.sleep(0.05)
        self.answered.append(time.monotonic())
        return Status(node=node.name)

    def run(self, node, argv):
        time.sleep(0.05)
        return subprocess.CompletedProcess(argv, 0, json.dumps({"nftables": []}), "")

    def check(self, node):
        return {"in_sync": True, "differences": []}


def test_each_step_is_stamped_when_its_evidence_was_gathered():
    desired = SimpleNamespace(state=SimpleNamespace(of=lambda _kind: []), babel_routes=[],
                              sids={"End.DX4": "fd00::ffff:0:0:b"})
    node = NodeView("o/a", "ns-a", "ns-a", "/sock", desired)
    transport = SlowTransport()
    t0 = time.monotonic()
    report = run_checks([node], transport)
    assert report.ok
    first_five = {s.at for s in report.steps[:5]}
    assert len(first_five) == 1  # steps 1-5 all read the same status documents
    (seen,) = first_five
    assert transport.answered[0] <= seen < report.steps[6].at  # srv6 read its counters later
    assert t0 < seen and report.steps[6].at <= t0 + report.seconds
