"""A mixed mesh in the microVM: the original aronet 0.1b1 as one node of the seed, the
other three aronet (lab/original.py). Debian 13 only: the original's bundled charon and
BIRD need glibc 2.38.

earth runs the original (VRF mode, its own charon 6.0.0 and BIRD, its 20 s hellos);
moon, sun (behind NAT) and mars run aronet with BIRD 2.17, whose babel announces their
IPv4 prefixes with IPv6 next hops, the way the original routes IPv4 (aronet sends its
own IPv4 to the original's End.DX4 SID). All of the lab's checks must pass: every aronet
node's IKE and CHILD SAs to earth, its tunnel interface and babel neighbour, its babel
route for earth's network, and pings in both families from every node to every other,
earth included in both directions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_babeld_lab import EXAMPLES

from lab import run as labrun


@pytest.mark.stacks("debian13")
def test_the_original_aronet_is_a_full_peer_of_an_aronet_mesh(lab_up, tmp_path):
    doc = yaml.safe_load((EXAMPLES / "seed.yaml").read_text())
    doc["nodes"]["earth"].update(implementation="aronet-0.1b1", mode="vrf")
    for node in ("moon", "sun", "mars"):
        doc["nodes"][node]["routing"] = "bird"
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(doc))
    lab, report = lab_up(str(path), "mixed")
    log = Path(lab.log("earth"))
    assert report.ok, report.as_text() + "\n--- earth (the original) ---\n" + (
        log.read_text(errors="replace")[-4000:] if log.exists() else "no log")

    ping = next(s for s in report.steps if s.step == "ping")
    assert ping.detail["pairs"] == 4 * 3 * 2  # every ordered pair, both families, earth's too
    # the original's daemon is the one the lab started: it did not die on the way
    assert labrun.alive(labrun.agent_pids(lab)["earth"])
