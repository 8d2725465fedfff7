"""The reload row (VM).

A one-node lab whose agent is given a registry of N nodes (N-1 synthetic peers that
initiate towards it, so it only loads connections and creates their interfaces,
routes and table entries), then three reloads over the control socket: nothing
changed; one peer gained a prefix; one peer's endpoint moved. Each reload reports the
agent's own count of VICI commands, netlink changes and state reads, and nft
invocations during it (the `operations` of `aronet load`), and which objects changed,
split into the changed peer's own, shared (the nft table, the routing daemon's
config) and any other peer's (there must be none).
"""

from __future__ import annotations

import json
import os

from aronet import keys
from aronet.client import request
from aronet.core import planner
from aronet.core.diff import diff
from aronet.errors import AronetError
from aronet.load import build_registry, load_both

from .common import Say, classify, synthetic_nodes, with_change
from .labs import running


def _load(lab, node: str, registry: list[dict], timeout: float = 1800) -> dict:
    reply = request(lab.control_socket(node), {"cmd": "load", "file": "bench-registry.json",
                                               "registry": registry}, timeout=timeout)
    return {"seconds": reply.get("seconds"), "changes": reply["changes"],
            "operations": reply.get("operations", {})}


def guest_reload(out: str, nodes: int, say: Say) -> dict:
    """One agent, a registry of `nodes` nodes, three reloads (see the module doc)."""
    topo = {"name": "reload", "nodes": {"solo": {"organization": "zz-solo"}},
            "lans": {"wan": {"members": ["solo"], "ipv6": False}}}
    res: dict = {"nodes": nodes}
    try:
        with running(topo, out, say) as (lab, _report):
            with open(os.path.join(lab.directory, "registry.json")) as f:
                base = json.load(f)
            key = keys.generate()
            peers = synthetic_nodes(nodes - 1)
            registry = [*base, {"public_key": keys.public_pem(key), "organization": "bench",
                                "nodes": peers}]
            say(f"  loading a registry of {nodes} nodes")
            res["initial"] = _load(lab, "solo", registry)
            say(f"  first load: {res['initial']['seconds']} s, {len(res['initial']['changes'])} changes")
            target = peers[len(peers) // 2]["common_name"]
            config, _ = load_both(os.path.join(lab.node_dir("solo"), "config.json"),
                                  os.path.join(lab.directory, "registry.json"))
            current = registry
            before = planner.desired(config, build_registry(current, "registry.json"))
            for case in ("unchanged", "prefix", "endpoint"):
                new = current if case == "unchanged" else with_change(current, "bench", target, case)
                after = planner.desired(config, build_registry(new, "registry.json"))
                r = _load(lab, "solo", new)
                r["touched"] = classify(diff(after.state, before.state), f"bench/{target}", after.state)
                res[case] = r
                say(f"  {case}: {r['seconds']} s, operations {r['operations']}")
                current, before = new, after
    except AronetError as e:
        res["error"] = str(e)
    return res
