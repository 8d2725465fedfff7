"""aronet-lab save: a running lab's state into files, as a bug report needs it.

save(lab, base) writes base/save-<time>/ and points base/latest at it:

  lab/          lab.json, the topology, registry.json, impair.json, the switch's
                nft ruleset and qdiscs (tc -j), `inspect --format json`
  <node>/       config.json; agent-registry.json (the registry the agent holds);
                status.json (`aronet status --json`: the agent's status document);
                info.json (pid, children, uptime); agent.log; the routing daemon's
                config and state (babeld: `dump`; BIRD: babel neighbours, routes);
                sas.json (charon's IKE and CHILD SAs, vici list-sas on the node's
                socket); ip-<ns>-{links,addresses,routes}.json (`ip -j`) and
                nft-<ns>.json (`nft -j list ruleset`) for the node's namespace and
                its router namespace
  manifest.json every file written, and every part that could not be had and why

A part that fails (an agent that does not answer, a daemon not running) is noted in
the manifest and the rest is saved: a broken lab is what a bug report is for.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable

import vici

from aronet.adapters.babeld import Babeld
from aronet.adapters.bird import Bird
from aronet.client import request
from aronet.core.status import Status
from aronet.errors import AronetError
from aronet.model import DEFAULT_ROUTING

from . import impair, inspect
from . import run as labrun

LATEST = "latest"


def save(lab: labrun.Lab, base: str) -> str:
    """Everything of the lab into base/save-<time>/ (base/latest points at it);
    returns that directory."""
    os.makedirs(base, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"save-{stamp}"
    n = 1
    while os.path.exists(os.path.join(base, name)):
        n += 1
        name = f"save-{stamp}-{n}"
    where = os.path.join(base, name)
    os.makedirs(where)
    saver = _Saver(where)
    _lab_parts(lab, saver)
    for node in lab.plan.nodes:
        _node_parts(lab, node, saver)
    saver.json("manifest.json", {"lab": lab.plan.lab, "saved_at": stamp, "files": saver.files,
                                 "missing": saver.missing})
    link = os.path.join(base, LATEST)
    tmp = f"{link}.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(name, tmp)
    os.replace(tmp, link)
    return where


class _Saver:
    def __init__(self, where: str):
        self.where = where
        self.files: list[str] = []
        self.missing: dict[str, str] = {}

    def _path(self, rel: str) -> str:
        path = os.path.join(self.where, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.files.append(rel)
        return path

    def text(self, rel: str, make: Callable[[], str]) -> None:
        try:
            content = make()
        except (AronetError, OSError, ValueError, subprocess.SubprocessError, vici.exception.SessionException,
                vici.exception.CommandException) as e:
            self.missing[rel] = str(e) or type(e).__name__
            return
        with open(self._path(rel), "w") as f:
            f.write(content)

    def json(self, rel: str, doc) -> None:
        with open(self._path(rel), "w") as f:
            json.dump(doc, f, indent=2, default=str)
            f.write("\n")

    def json_of(self, rel: str, make: Callable[[], object]) -> None:
        self.text(rel, lambda: json.dumps(make(), indent=2, default=str) + "\n")

    def copy(self, rel: str, src: str) -> None:
        if not os.path.exists(src):
            self.missing[rel] = f"{src} does not exist"
            return
        shutil.copy(src, self._path(rel))


def _lab_parts(lab: labrun.Lab, s: _Saver) -> None:
    s.copy("lab/lab.json", lab.state_file)
    s.copy(f"lab/{os.path.basename(lab.topology_file)}", lab.topology_file)
    s.copy("lab/registry.json", os.path.join(lab.directory, "registry.json"))
    s.json_of("lab/impair.json", lambda: {seg: {m: imp.as_json() for m, imp in ms.items()}
                                          for seg, ms in impair.in_force(lab).items()})
    sw = lab.plan.switch_ns
    s.text(f"lab/nft-{sw}.json", lambda: _run(["nft", "-j", "list", "ruleset"], sw))
    s.text(f"lab/tc-{sw}.json", lambda: _run(["tc", "-j", "qdisc", "show"], sw))
    for r in lab.plan.routers:
        s.text(f"lab/nft-{r.ns}.json", lambda ns=r.ns: _run(["nft", "-j", "list", "ruleset"], ns))
        _ip(s, "lab", r.ns)
    s.json_of("lab/inspect.json", lambda: inspect.collect(lab, interfaces=True))


def _node_parts(lab: labrun.Lab, n, s: _Saver) -> None:
    d = n.name
    paths = lab.paths(n.name)
    sock = lab.control_socket(n.name)
    s.copy(f"{d}/config.json", lab.config_file(n.name))
    s.copy(f"{d}/agent-registry.json", paths.registry)
    s.copy(f"{d}/agent.log", lab.log(n.name))
    s.json_of(f"{d}/status.json",
              lambda: Status.from_json(request(sock, {"cmd": "status"}, timeout=30)["status"]).to_json())
    s.json_of(f"{d}/info.json", lambda: request(sock, {"cmd": "info"}, timeout=30)["info"])
    routing = n.config["daemon"].get("routing") or DEFAULT_ROUTING[n.mode]
    if routing == "babeld":
        s.copy(f"{d}/babeld.conf", paths.babeld_conf)
        babeld = Babeld(conf_path=paths.babeld_conf, socket_path=paths.babeld_socket,
                        pid_path=paths.babeld_pid, state_path=paths.babeld_state)
        s.text(f"{d}/babeld-dump.txt", lambda: "\n".join(babeld.request("dump")) + "\n")
    else:
        s.copy(f"{d}/bird.conf", paths.bird_conf)
        bird = Bird(conf_path=paths.bird_conf, socket_path=paths.bird_socket)
        s.text(f"{d}/bird-neighbors.txt", lambda: bird.birdc("show", "babel", "neighbors"))
        s.text(f"{d}/bird-routes.txt", lambda: bird.birdc("show", "route", "all"))
    s.json_of(f"{d}/sas.json", lambda: _sas(paths.vici_socket))
    for ns in dict.fromkeys((n.ns, n.agent_ns)):
        _ip(s, d, ns)
        s.text(f"{d}/nft-{ns}.json", lambda ns=ns: _run(["nft", "-j", "list", "ruleset"], ns))


def _ip(s: _Saver, d: str, ns: str) -> None:
    for what, argv in (("links", ["link", "show"]), ("addresses", ["address", "show"]),
                       ("routes", ["route", "show", "table", "all"]),
                       ("routes6", ["-6", "route", "show", "table", "all"])):
        s.text(f"{d}/ip-{ns}-{what}.json", lambda argv=argv: _run(["ip", "-j", *argv], ns))


def _run(argv: list[str], ns: str) -> str:
    """argv in the named namespace (ip -n / nsenter), its output; OSError on failure."""
    full = ["ip", "-n", ns, *argv[1:]] if argv[0] == "ip" else ["ip", "netns", "exec", ns, *argv]
    r = subprocess.run(full, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise OSError(f"{' '.join(full)}: {(r.stderr or r.stdout).strip() or r.returncode}")
    return r.stdout


def _sas(path: str) -> list:
    """charon's list-sas on the node's vici socket, bytes decoded."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        return [_decode(sa) for sa in vici.Session(sock).list_sas()]


def _decode(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {_decode(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
