"""aronet-lab inspect: what each node of a running lab is, in one view: its
namespaces and agent pid, mode and routing daemon, underlay and overlay addresses,
tunnels and their state (from the agents' status over their control sockets), its
files, and the impairments in force on the frames delivered to it; with interfaces,
every interface of the node's and its router's namespaces.

collect() reads the machine into one document; as_table, as_json and as_csv render
it and are pure.
"""

from __future__ import annotations

import csv
import io
import json
import os

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from aronet.model import DEFAULT_ROUTING

from . import impair
from . import run as labrun


def collect(lab: labrun.Lab, *, interfaces: bool = False) -> dict:
    statuses = labrun.statuses(lab)
    pids = labrun.agent_pids(lab)
    forced = impair.in_force(lab)
    present = set(pr_netns.listnetns()) if interfaces else set()
    nodes = []
    for n in lab.plan.nodes:
        st = statuses.get(f"{n.organization}/{n.name}")
        daemon = n.config["daemon"]
        pid = pids.get(n.name)
        doc = {
            "node": n.name, "organization": n.organization, "namespace": n.ns,
            "router_namespace": n.agent_ns, "pid": pid, "running": bool(pid and labrun.alive(pid)),
            "mode": n.mode, "routing": daemon.get("routing") or DEFAULT_ROUTING[n.mode],
            "underlay": [{"interface": i.name, "segment": i.segment,
                          "ipv4": str(i.ipv4) if i.ipv4 else None,
                          "ipv6": str(i.ipv6) if i.ipv6 else None} for i in n.interfaces],
            "overlay": {"network": n.network, "address": n.overlay_address, "extra_ip": list(n.extra_ip),
                        "prefixes": list(daemon.get("prefixs", []))},
            "agent_error": st.error if st else "no status",
            "tunnels": [{"name": t.name, "peer": p.peer, "family": t.family, "ike": t.ike,
                         "child": t.child, "interface_up": t.interface_up, "up": t.up,
                         "babel_metric": t.babel_metric}
                        for p in (st.peers if st else ()) for t in p.tunnels],
            "files": {"config": lab.config_file(n.name),
                      "registry": os.path.join(lab.directory, "registry.json"),
                      "log": lab.log(n.name), "runtime": lab.runtime_dir(n.name)},
            "impairments": [{"segment": seg, "impairment": str(imp), **imp.as_json()}
                            for seg, members in sorted(forced.items())
                            for m, imp in members.items() if m in (n.name, n.nat)],
        }
        if interfaces:
            doc["interfaces"] = {ns: _links(ns) if ns in present else []
                                 for ns in dict.fromkeys((n.ns, n.agent_ns))}
        nodes.append(doc)
    return {"lab": lab.plan.lab, "directory": lab.directory, "nodes": nodes,
            "impairments": [{"segment": seg, "toward": m, "impairment": str(imp), **imp.as_json()}
                            for seg, members in sorted(forced.items()) for m, imp in members.items()]}


def _links(ns: str) -> list[dict]:
    with IPRoute(netns=ns) as ipr:
        addrs: dict[int, list[str]] = {}
        for a in ipr.get_addr():
            addrs.setdefault(a["index"], []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        out = []
        for link in ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            out.append({"name": link.get_attr("IFLA_IFNAME"), "state": link.get_attr("IFLA_OPERSTATE"),
                        "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
                        "mtu": link.get_attr("IFLA_MTU"), "addresses": addrs.get(link["index"], [])})
    return sorted(out, key=lambda x: x["name"] or "")


# ---------------------------------------------------------------- rendering


def _underlay(node: dict) -> str:
    return " ".join(f"{u['interface']}:{a}" for u in node["underlay"] for a in (u["ipv4"], u["ipv6"]) if a)


def _tunnels(node: dict) -> str:
    tunnels = node["tunnels"]
    if node["agent_error"]:
        return f"agent: {node['agent_error']}"
    return f"{sum(t['up'] for t in tunnels)}/{len(tunnels)} up"


def as_table(doc: dict, *, interfaces: bool = False) -> str:
    head = ("node", "namespace", "pid", "mode", "routing", "underlay", "overlay", "tunnels")
    rows = [head]
    for n in doc["nodes"]:
        pid = "-" if n["pid"] is None else f"{n['pid']}" + ("" if n["running"] else " (dead)")
        rows.append((n["node"], n["namespace"], pid, n["mode"], n["routing"], _underlay(n),
                     " ".join([n["overlay"]["address"], *n["overlay"]["extra_ip"]]), _tunnels(n)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(f"{c!s:<{w}}" for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += ["", f"tunnels (lab {doc['lab']}):"]
    for n in doc["nodes"]:
        for t in n["tunnels"]:
            state = "up" if t["up"] else f"DOWN (IKE {t['ike']}, CHILD {t['child']}, " \
                f"interface {'up' if t['interface_up'] else 'down'})"
            metric = "" if t["babel_metric"] is None else f", metric {t['babel_metric']}"
            lines.append(f"  {n['node']:<8} {t['name']:<12} -> {t['peer']:<24} {state}{metric}")
    lines += ["", "files:"]
    for n in doc["nodes"]:
        f = n["files"]
        lines.append(f"  {n['node']:<8} config {f['config']}  log {f['log']}  runtime {f['runtime']}")
    lines.append(f"  registry {doc['nodes'][0]['files']['registry']}" if doc["nodes"] else "  no nodes")
    lines += ["", "impairments in force:" if doc["impairments"] else "impairments in force: none"]
    lines += [f"  {i['segment']} toward {i['toward']}: {i['impairment']}" for i in doc["impairments"]]
    if interfaces:
        for n in doc["nodes"]:
            for ns, links in n.get("interfaces", {}).items():
                lines += ["", f"{n['node']}: interfaces in {ns}:"]
                lines += [f"  {x['name']:<12} {x['state'] or '-':<8} {x['kind'] or '-':<8} "
                          f"mtu {x['mtu']}  {' '.join(x['addresses']) or '-'}" for x in links]
    return "\n".join(lines) + "\n"


def as_json(doc: dict, *, interfaces: bool = False) -> str:
    return json.dumps(doc, indent=2) + "\n"


CSV_COLUMNS = ("node", "organization", "namespace", "router_namespace", "pid", "running", "mode",
               "routing", "underlay", "overlay", "extra_ip", "tunnels", "tunnels_up", "config",
               "registry", "log", "impairments", "interfaces")


def as_csv(doc: dict, *, interfaces: bool = False) -> str:
    """One row per node; lists are space-separated in their cell."""
    out = io.StringIO()
    columns = CSV_COLUMNS if interfaces else CSV_COLUMNS[:-1]
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for n in doc["nodes"]:
        row = {
            **{k: n[k] for k in ("node", "organization", "namespace", "router_namespace", "mode", "routing")},
            "pid": "" if n["pid"] is None else n["pid"], "running": str(n["running"]).lower(),
            "underlay": _underlay(n), "overlay": n["overlay"]["address"],
            "extra_ip": " ".join(n["overlay"]["extra_ip"]), "tunnels": len(n["tunnels"]),
            "tunnels_up": sum(t["up"] for t in n["tunnels"]),
            **{k: n["files"][k] for k in ("config", "registry", "log")},
            "impairments": "; ".join(f"{i['segment']}: {i['impairment']}" for i in n["impairments"]),
            "interfaces": " ".join(f"{ns}:{x['name']}" for ns, links in n.get("interfaces", {}).items()
                                   for x in links),
        }
        w.writerow([row[c] for c in columns])
    return out.getvalue()


RENDER = {"table": as_table, "json": as_json, "csv": as_csv}
