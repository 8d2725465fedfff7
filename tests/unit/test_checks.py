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


class RecordingTransport(SlowTransport):
    """Answers at once, and records which nodes were asked what."""

    def __init__(self):
        super().__init__()
        self.asked: list[tuple[str, str]] = []

    def status(self, node):
        self.asked.append(("status", node.name))
        return Status(node=node.name)

    def run(self, node, argv):
        self.asked.append((argv[0], node.name))
        return subprocess.CompletedProcess(argv, 0, json.dumps({"nftables": []}), "")

    def check(self, node):
        self.asked.append(("check", node.name))
        return super().check(node)


def test_a_foreign_node_is_pinged_but_never_asked_what_only_aronet_answers():
    desired = SimpleNamespace(state=SimpleNamespace(of=lambda _kind: []), babel_routes=[],
                              sids={"End.DX4": "fd00::ffff:0:0:b"})
    ours = NodeView("o/a", "ns-a", "ns-a", "/sock-a", desired, sources={6: "fd00::1"},
                    targets={6: "fd00::1"})
    theirs = NodeView("o/b", "ns-b", "ns-b", "/sock-b", desired, sources={6: "aronet"},
                      targets={6: "fd01::1"}, foreign=True)
    transport = RecordingTransport()
    report = run_checks([ours, theirs], transport)
    assert report.ok, report.as_text()
    asked = set(transport.asked)
    assert ("ping", "o/a") in asked and ("ping", "o/b") in asked  # both directions
    assert not {q for q in asked if q[1] == "o/b" and q[0] != "ping"}  # no status, nft, check
    assert {("status", "o/a"), ("nft", "o/a"), ("check", "o/a")} <= asked
