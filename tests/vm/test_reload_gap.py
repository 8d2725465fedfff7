"""A reload that does not concern two nodes must not interrupt their traffic, in the
microVM: the seed with moon in netns mode with babeld and earth in VRF mode with BIRD
(the mix in which removing sun once cost moon <-> earth 12 s), sun removed from the
registry of every other node while moon pings earth every 10 ms in both families.

Removing sun changes the filters of moon's babeld, which restarts; its routes are
held meanwhile (aronet.adapters.netlink.hold). The gap is reported and bounded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from test_babeld_lab import EXAMPLES

from lab.reload_gap import reload_gap

# Measured: 0.72 s (Debian 13) and 0.84 s (Debian 12), once the neighbours take the
# restarted babeld's first hellos; 12.1 s before the hold, 3.3 to 4.2 s with the hold
# but without the quiet table. The bound leaves room for a loaded TCG guest.
BOUND_MS = 2000.0


@pytest.mark.stacks("debian12", "debian13")
def test_removing_one_node_leaves_the_traffic_between_two_others_flowing(lab_up, tmp_path):
    doc = yaml.safe_load((EXAMPLES / "seed.yaml").read_text())
    doc["nodes"]["moon"].update(mode="netns", routing="babeld")
    doc["nodes"]["earth"].update(mode="vrf", routing="bird")
    doc["nodes"]["sun"]["routing"] = "babeld"
    # aronet's own babel timers, not the lab's 150 ms hello: under TCG the reload's
    # burst of work (three agents, their daemons, nft) stalls the guest for longer
    # than three such hellos, and a neighbour lost to a stall is not the reload's doing
    doc.setdefault("options", {})["babel"] = {"hello_interval": 1.0, "update_interval": 4.0}
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(doc))
    lab, report = lab_up(str(path), "gap")
    assert report.ok, report.as_text()

    result = reload_gap(lab, "moon", "earth", "sun", say=print)
    out = os.environ.get("ARONET_VM_OUT")
    if out:
        with open(os.path.join(out, "reload-gap.json"), "w") as f:
            json.dump(result, f, indent=2)
    log = Path(lab.log("moon")).read_text()
    assert "holding its" in log and "has every held route" in log, "moon's babeld did not restart"
    for fam in ("ipv6", "ipv4"):
        r = result[fam]
        print(f"{fam}: longest gap {r['gap_ms']} ms, lost {r['lost']} of {r['sent']}")
        assert r["gap_ms"] is not None and r["gap_ms"] <= BOUND_MS, result
