"""Multi-host runs (lab/multihost.py, Vagrantfile, ci/multihost): rendering a topology
into the Vagrantfile's per-VM files, `vagrant validate` on the rendered seed, the
command-prefix transport of the checks, and the runner's refusal and failure paths.
No VM boots here: see tests/vm/test_multihost_checks.py for the checks over the transport
against a running lab, and README "Multi-host with Vagrant" for what runs only on a
machine with Vagrant and a provider."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from aronet.errors import AronetError, InputError
from aronet.load import load_both, read_json
from lab import multihost
from lab.checks import CommandTransport, NodeView
from lab.topology import load_topology, plan_lab

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "lab" / "examples"
SEED = EXAMPLES / "seed.yaml"


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    t = load_topology(SEED)
    return t, multihost.render(t, tmp_path_factory.mktemp("multihost") / "seed")


def _machines(rendered) -> dict[str, dict]:
    return {m["name"]: m for m in json.loads((rendered.directory / "machines.json").read_text())["machines"]}


def test_seed_renders_four_node_vms_and_one_nat_router(seed):
    _, rendered = seed
    machines = _machines(rendered)
    assert list(machines) == ["moon", "earth", "sun", "mars", "gw"]
    assert {n: m["role"] for n, m in machines.items()} == {
        "moon": "node", "earth": "node", "sun": "node", "mars": "node", "gw": "nat"}
    assert {n: m["nat"] for n, m in machines.items()} == {
        "moon": None, "earth": None, "sun": "gw", "mars": None, "gw": None}
    for m in machines.values():  # laptop-sized
        assert m["cpus"] == 1 and 768 <= m["memory"] <= 1024


def test_seed_vm_addresses_are_the_lab_plan(seed):
    t, rendered = seed
    plan = plan_lab(t)
    machines = _machines(rendered)
    for n in plan.nodes:
        nics = machines[n.name]["nics"]
        assert [(x["segment"], x["ipv4"], x["ipv6"]) for x in nics] == [
            (i.segment, str(i.ipv4.ip), str(i.ipv6)) for i in n.interfaces]
    gw = plan.router("gw")
    assert [(x["segment"], x["ipv4"]) for x in machines["gw"]["nics"]] == [
        ("wan", str(gw.outside.ipv4.ip)), ("gw:sun", str(gw.inside[0].ipv4.ip))]
    # one private network per segment, shared by its members; sun only sees gw
    networks = {x["network"]: x["segment"] for m in machines.values() for x in m["nics"]}
    assert networks == {"aronet-seed-wan": "wan", "aronet-seed-gw-sun": "gw:sun"}
    assert [x["network"] for x in machines["sun"]["nics"]] == ["aronet-seed-gw-sun"]
    # the libvirt host's address is free on its network (libvirt's default, .1, is moon's)
    for m in machines.values():
        for x in m["nics"]:
            net = ipaddress.ip_interface(f"{x['ipv4']}/{x['netmask']}").network
            assert ipaddress.ip_address(x["libvirt_host_ip"]) in net
            used = {y["ipv4"] for o in machines.values() for y in o["nics"] if y["network"] == x["network"]}
            assert x["libvirt_host_ip"] not in used


def test_seed_node_files_are_what_the_agent_loads(seed):
    t, rendered = seed
    plan = plan_lab(t)
    lab_registry = read_json(str(rendered.directory / "lab" / "registry.json"))
    for n in plan.nodes:
        d = rendered.machine_dir(n.name)
        assert sorted(p.name for p in d.iterdir()) == ["config.json", "key.pem", "registry.json",
                                                        "underlay.sh"]
        assert stat.S_IMODE(os.stat(d / "key.pem").st_mode) == 0o600
        doc = read_json(str(d / "config.json"))
        assert doc == {**n.config, "private_key": "key.pem"}  # /etc/aronet/key.pem in the VM
        assert read_json(str(d / "registry.json")) == lab_registry
        config, _ = load_both(str(d / "config.json"), str(d / "registry.json"))
        assert config.node.name == f"{n.organization}/{n.name}"
    assert sorted(p.name for p in rendered.machine_dir("gw").iterdir()) == ["underlay.sh"]


def test_seed_underlay_scripts_route_sun_through_its_nat_router(seed):
    t, rendered = seed
    plan = plan_lab(t)
    wan = next(s for s in t.segments if s.name == "wan")
    inside = plan.router("gw").inside[0]
    sun = (rendered.machine_dir("sun") / "underlay.sh").read_text()
    assert f"ip route replace {wan.ipv4} via {inside.ipv4.ip}\n" in sun
    assert f"ip route replace {wan.ipv6} via {inside.ipv6.ip}\n" in sun
    assert "NIC1=$(nic " + str(plan.node("sun").interfaces[0].ipv4.ip) + ")" in sun
    gw = (rendered.machine_dir("gw") / "underlay.sh").read_text()
    assert "net.ipv4.ip_forward=1" in gw and "OUTSIDE=$NIC1" in gw
    batch = json.loads(gw.split("<<EOF\n", 1)[1].split("\nEOF", 1)[0].replace("${OUTSIDE}", "eth9"))
    rules = [o["add"]["rule"] for o in batch["nftables"] if "rule" in o.get("add", {})]
    assert [r["comment"] for r in rules] == ["masquerade", "no unsolicited inbound"]
    assert all(r["expr"][0]["match"]["right"] == "eth9" for r in rules)
    for vm in ("moon", "earth", "mars"):
        assert "ip route" not in (rendered.machine_dir(vm) / "underlay.sh").read_text()
    for vm in _machines(rendered):  # every script is valid shell
        script = rendered.machine_dir(vm) / "underlay.sh"
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0


def test_seed_views_reach_the_agents_default_socket(seed):
    t, rendered = seed
    views = {v.name: v for v in rendered.views()}
    plan = plan_lab(t)
    moon, sun = views["example/moon"], views["example2/sun"]
    assert (moon.ns, moon.router_ns) == ("", "")  # VRF mode: the VM's own namespace
    assert (sun.ns, sun.router_ns) == ("", plan.node("sun").agent_ns)  # netns mode
    assert sun.control_socket == f"/run/aronet/{plan.node('sun').agent_ns}/control.sock"
    assert moon.control_socket == "/run/aronet/aronet/control.sock"


@pytest.mark.parametrize(("example", "path", "words"), [
    ("ring.yaml", "$.blocked", "blocked pairs need the lab's switch"),
    ("dualstack.yaml", "$.links[0]", "loss need the lab's switch"),
])
def test_switch_features_are_refused_with_their_path(example, path, words, tmp_path, capsys):
    with pytest.raises(InputError) as e:
        multihost.render(load_topology(EXAMPLES / example), tmp_path / "x")
    assert any(p.path == path and words in p.message for p in e.value.problems)
    assert not (tmp_path / "x").exists()
    assert multihost.main([str(EXAMPLES / example), "--render", "--dir", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and "nothing was started" in err


def test_bad_topology_file_is_a_clear_message(tmp_path, capsys):
    assert multihost.main([str(tmp_path / "nope.yaml"), "--render", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "Traceback" not in err


def test_ci_entry_renders_the_seed(tmp_path):
    r = subprocess.run([str(ROOT / "ci" / "multihost"), "--render", "seed", "--dir", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rendered lab seed (5 VMs)" in r.stdout
    assert (tmp_path / "r" / "machines.json").exists()


# ---------------------------------------------------------------- the transport


def _view(ns: str = "", router_ns: str = "", socket: str = "/nonexistent/control.sock") -> NodeView:
    return NodeView(name="example/moon", ns=ns, router_ns=router_ns, control_socket=socket,
                    desired=None, sources={}, targets={})  # type: ignore[arg-type]


def test_command_transport_builds_one_shell_line_per_command():
    ssh = CommandTransport(lambda n: ["ssh", "-F", "cfg", "moon"], aronet=("/opt/aronet/bin/aronet",),
                           sudo=True)
    netns_node = _view(router_ns="ar12345678")
    assert ssh.command(netns_node, ["ping", "-c", "1", "fd66::1"]) == [
        "ssh", "-F", "cfg", "moon", "sudo nsenter --net=/run/netns/ar12345678 -- ping -c 1 fd66::1"]
    vrf_node = _view()
    assert ssh.command(vrf_node, ["nft", "-j", "list", "table", "inet", "aronet"]) == [
        "ssh", "-F", "cfg", "moon", "sudo nft -j list table inet aronet"]
    # the lab: the prefix enters the node's namespace, where a VRF node's router is
    lab = CommandTransport(lambda n: ["nsenter", f"--net=/run/netns/{n.ns}", "--", "sh", "-c"])
    assert lab.command(_view("seed-moon", "seed-moon"), ["ping", "x y"]) == [
        "nsenter", "--net=/run/netns/seed-moon", "--", "sh", "-c", "ping 'x y'"]


def test_command_transport_runs_through_sh():
    t = CommandTransport(lambda n: ["sh", "-c"])
    r = t.run(_view(), ["printf", "%s|", "a b", "it's"])
    assert (r.returncode, r.stdout) == (0, "a b|it's|")


def test_command_transport_status_without_an_agent_says_so(tmp_path):
    aronet = (sys.executable, "-m", "aronet.cli")
    t = CommandTransport(lambda n: ["sh", "-c"], aronet=aronet)
    with pytest.raises(AronetError, match=r"`aronet status` failed: .*no agent is running"):
        t.status(_view(socket=str(tmp_path / "control.sock")))


# ---------------------------------------------------------------- vagrant itself

VAGRANT = shutil.which("vagrant")
needs_vagrant = pytest.mark.skipif(VAGRANT is None, reason="vagrant is not installed "
                                   "(ci/install-deps installs Debian's package)")


def _vagrant(args: list[str], rendered_dir: Path, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    # Vagrant's own state goes to tmp_path, not the working tree or ~/.vagrant.d.
    full_env = {**os.environ, "VAGRANT_CWD": str(ROOT), "ARONET_VAGRANT_DIR": str(rendered_dir),
                "VAGRANT_HOME": str(tmp_path / "home"), "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"),
                "VAGRANT_CHECKPOINT_DISABLE": "1", **env}
    return subprocess.run([VAGRANT, *args], capture_output=True, text=True, timeout=120,
                          env=full_env, cwd=ROOT)


def _has_libvirt_plugin(tmp_path: Path) -> bool:
    r = _vagrant(["plugin", "list"], tmp_path, tmp_path)
    return "vagrant-libvirt" in r.stdout


@needs_vagrant
def test_vagrant_validate_the_rendered_seed(seed, tmp_path):
    """Provider-independent: the box, the five machines, networks, provisioners.
    (VirtualBox is not installed here, so its provider block is not checked.)"""
    _, rendered = seed
    r = _vagrant(["validate", "--ignore-provider"], rendered.directory, tmp_path,
                 VAGRANT_DEFAULT_PROVIDER="virtualbox")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Vagrantfile validated successfully" in r.stdout
    for vm in ("moon", "earth", "sun", "mars", "gw"):
        assert f"==> {vm}: Ignoring provider config" in r.stdout


@needs_vagrant
def test_vagrant_validate_the_rendered_seed_with_libvirt(seed, tmp_path):
    """With the vagrant-libvirt plugin (Debian installs it with vagrant), the libvirt
    provider block is checked too: an unknown setting there fails."""
    if not _has_libvirt_plugin(tmp_path):
        pytest.skip("the vagrant-libvirt plugin is not installed")
    _, rendered = seed
    r = _vagrant(["validate"], rendered.directory, tmp_path, VAGRANT_DEFAULT_PROVIDER="libvirt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Vagrantfile validated successfully" in r.stdout


@needs_vagrant
def test_vagrantfile_without_rendered_files_says_what_to_run(tmp_path):
    r = _vagrant(["validate"], tmp_path / "empty", tmp_path)
    assert r.returncode != 0
    assert "no rendered topology" in r.stderr and "ci/multihost" in r.stderr


@needs_vagrant
def test_failed_vagrant_up_still_destroys_and_reports_json(tmp_path, capfd, monkeypatch):
    """The real runner with the real vagrant and vagrant-libvirt, where libvirtd does
    not run: `vagrant up` fails at once, and `vagrant destroy -f` is still called."""
    if os.path.exists("/var/run/libvirt/libvirt-sock"):
        pytest.skip("libvirtd runs here: this would really boot VMs")
    if not _has_libvirt_plugin(tmp_path):
        pytest.skip("the vagrant-libvirt plugin is not installed")
    for k, v in {"VAGRANT_HOME": tmp_path / "home", "VAGRANT_DOTFILE_PATH": tmp_path / "dot",
                 "VAGRANT_CHECKPOINT_DISABLE": "1"}.items():
        monkeypatch.setenv(k, str(v))
    code = multihost.main(["seed", "--provider", "libvirt", "--dir", str(tmp_path / "r"), "--json",
                           "--report", str(tmp_path / "report.json")])
    out, err = capfd.readouterr()
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and doc["steps"] == []
    assert doc["errors"][0] == "vagrant up failed (exit status 1)"
    assert doc["errors"][1].startswith("vagrant destroy -f failed")  # libvirtd is not there either
    assert json.loads((tmp_path / "report.json").read_text()) == doc
    assert "Bringing machine 'moon' up with 'libvirt' provider" in err and "Traceback" not in err
