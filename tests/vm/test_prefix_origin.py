"""daemon.babel.prefix_origin in the microVM: a prefix announced by a node that does
not own it is refused where the option is on, and taken where it is off.

The seed with a mix of daemons: moon and earth run BIRD (VRF mode), sun and mars
babeld (netns mode); moon also owns fd70::/64 and announces it. Only sun has
prefix_origin on. First, sun imports every prefix of the mesh, so the router ids it
expects are the ones BIRD and babeld really originate with. Then sun and mars are given
a registry in which fd70::/64 belongs to earth: moon still announces it, as a node
would by mistake. sun drops the route (moon is not fd70's owner now, and earth does
not announce it); mars, without the option, keeps it: the announcement a filter on
the prefix alone cannot tell from a good one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from test_babeld_lab import EXAMPLES, babel_kernel_routes
from test_faults import poll

from aronet.client import request
from aronet.core import names
from lab import run as labrun

PREFIX = "fd70::/64"


def routes_for(lab, node: str, prefix: str) -> str:
    """Every route for prefix in node's overlay table, whoever installed it (babeld's,
    and the agent's held copies across a babeld restart)."""
    view = next(v for v in labrun.node_views(lab) if v.name.endswith(f"/{node}"))
    ns = view.router_ns or view.ns
    return subprocess.run(["ip", "-n", ns, "-6", "route", "show", "table", str(view.desired.overlay_table),
                           prefix], capture_output=True, text=True, check=True).stdout.strip()


def moved_to(registry: list[dict], prefix: str, owner: str) -> list[dict]:
    """The registry with prefix taken from whichever node lists it and given to owner."""
    out = json.loads(json.dumps(registry))
    for org in out:
        for node in org["nodes"]:
            owned = node["remarks"]["prefixs"]
            if prefix in owned:
                owned.remove(prefix)
            if node["common_name"] == owner:
                owned.append(prefix)
    return out


@pytest.mark.stacks("debian12", "debian13")
def test_a_prefix_from_a_node_that_does_not_own_it_is_refused_with_prefix_origin(lab_up, tmp_path):
    doc = yaml.safe_load((EXAMPLES / "seed.yaml").read_text())
    doc["nodes"]["moon"].update(routing="bird", prefixes=["192.168.128.0/24", PREFIX])
    doc["nodes"]["earth"]["routing"] = "bird"
    doc["nodes"]["sun"].update(routing="babeld", babel={"prefix_origin": True})
    doc["nodes"]["mars"]["routing"] = "babeld"
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(doc))
    lab, report = lab_up(str(path), "origin")
    assert report.ok, report.as_text()

    # sun takes the other three networks and moon's fd70::/64 from their owners'
    # ids: BIRD's (moon, earth) and babeld's (mars)
    assert babel_kernel_routes(lab, "sun").count("\n") == 4, babel_kernel_routes(lab, "sun")
    conf = Path(lab.runtime_dir("sun"), "babeld.conf").read_text()
    moon = next(n for n in lab.plan.nodes if n.name == "moon")
    for rid in names.babel_router_ids((moon.organization, "moon")):
        assert f"in ip {PREFIX} eq 64 id {rid} allow" in conf

    with open(os.path.join(lab.directory, "registry.json")) as f:
        registry = moved_to(json.load(f), PREFIX, "earth")
    for node in ("sun", "mars"):
        # an error reply raises (aronet.client.request)
        request(lab.control_socket(node), {"cmd": "load", "file": "registry.json",
                                           "registry": registry}, timeout=60)

    # sun: no route for fd70::/64 left, babeld's or held (the hold ends within 20 s)
    poll(lambda: routes_for(lab, "sun", PREFIX) or None, timeout=60)
    # mars: still routes it to moon, which announces what it no longer owns
    assert "proto babel" in routes_for(lab, "mars", PREFIX)
    # and sun's restarted babeld has the rest of the mesh again
    poll(lambda: None if babel_kernel_routes(lab, "sun").count("\n") == 3
         else babel_kernel_routes(lab, "sun"), timeout=60)
