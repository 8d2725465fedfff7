"""What an agent leaves when it or its charon is killed, against the host kernel in
throwaway namespaces: sysctl values from before aronet, persisted and set back by a
later run, and the XFRM entries of this node's if_ids, removed while others stay.

The host kernel has no ESP (so no XFRM states) and no XFRM interfaces: policies stand
in for the states here, and the VM tier (tests/vm/test_crash_state.py) runs the rest.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from aronet.adapters.netlink import Netlink
from aronet.adapters.netlink import iproute2 as nlmod
from aronet.core.diff import diff
from aronet.core.state import State, Sysctl

root = pytest.mark.root
pytestmark = pytest.mark.usefixtures("host_untouched")


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


def read_sysctl(ns: str, name: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", name], check=True,
                          capture_output=True, text=True).stdout.strip()


def write_sysctl(ns: str, name: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{name}={value}"], check=True)


def saved_doc(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def apply_sysctls(netlink: Netlink, sysctls: list[Sysctl]) -> None:
    netlink.apply(diff(State(frozenset(sysctls)), netlink.observe(sysctls)))


@root
def test_originals_survive_a_killed_agent_and_a_later_stop_restores_them(
        settings, base_ns, tmp_path):
    path = str(tmp_path / "sysctl-originals.json")
    fwd = Sysctl("", "net.ipv4.ip_forward", "1", "host")
    tcp = Sysctl("", "net.ipv4.tcp_l3mdev_accept", "1", "host")
    before = {s.name: read_sysctl(base_ns, s.name) for s in (fwd, tcp)}
    assert before == {fwd.name: "0", tcp.name: "0"}

    first = Netlink(settings, base_ns=base_ns)
    first.keep_originals(path)
    apply_sysctls(first, [fwd, tcp])
    assert {s.name: read_sysctl(base_ns, s.name) for s in (fwd, tcp)} == {fwd.name: "1",
                                                                         tcp.name: "1"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = {e["name"]: e["original"] for e in saved_doc(path)["sysctls"]}
    assert saved == before
    del first  # SIGKILL: no remove_all, the values stay changed

    # The next run applies again before it stops: the original from the first run
    # is kept, not the "1" it reads now.
    second = Netlink(settings, base_ns=base_ns)
    second.keep_originals(path)
    apply_sysctls(second, [fwd, tcp])
    saved = {e["name"]: e["original"] for e in saved_doc(path)["sysctls"]}
    assert saved == before

    second.remove_all()  # the clean stop
    assert {s.name: read_sysctl(base_ns, s.name) for s in (fwd, tcp)} == before
    assert not os.path.exists(path)


@root
def test_a_restart_that_cleans_up_first_restores_too(settings, base_ns, tmp_path):
    """What the agent's start does: keep_originals, remove_all (an earlier run's
    values go back at once), then apply again."""
    path = str(tmp_path / "o.json")
    fwd = Sysctl("", "net.ipv6.conf.all.forwarding", "1", "host")
    first = Netlink(settings, base_ns=base_ns)
    first.keep_originals(path)
    apply_sysctls(first, [fwd])
    del first

    again = Netlink(settings, base_ns=base_ns)
    again.keep_originals(path)
    again.remove_all()
    assert read_sysctl(base_ns, fwd.name) == "0"
    assert not os.path.exists(path)


@root
def test_a_sysctl_charon_changes_is_remembered_and_set_back(settings, base_ns, tmp_path):
    path = str(tmp_path / "o.json")
    name = "net.core.xfrm_acq_expires"
    before = read_sysctl(base_ns, name)
    first = Netlink(settings, base_ns=base_ns)
    first.keep_originals(path)
    first.remember_sysctl("", name)
    write_sysctl(base_ns, name, "14")  # as charon does
    first.remember_sysctl("", name)  # a restarted charon: the first value is kept
    del first

    later = Netlink(settings, base_ns=base_ns)
    later.keep_originals(path)
    later.remove_all()
    assert read_sysctl(base_ns, name) == before
    assert not os.path.exists(path)


@root
def test_values_of_a_namespace_that_went_are_dropped(settings, base_ns, make_netns, tmp_path):
    path = str(tmp_path / "o.json")
    other = make_netns("gone")
    first = Netlink(settings, base_ns=base_ns)
    first.keep_originals(path)
    apply_sysctls(first, [Sysctl(other, "net.ipv4.ip_forward", "1")])
    del first
    subprocess.run(["ip", "netns", "delete", other], check=True)

    later = Netlink(settings, base_ns=base_ns)
    later.keep_originals(path)
    later.remove_all()  # nothing to set back, no error
    assert not os.path.exists(path)


@root
def test_another_namespace_does_not_take_in_the_file(settings, base_ns, make_netns, tmp_path):
    """The file names the agent's namespace: a fresh one (a lab made again) whose
    values are its own defaults must not be 'restored' from another."""
    path = str(tmp_path / "o.json")
    first = Netlink(settings, base_ns=base_ns)
    first.keep_originals(path)
    apply_sysctls(first, [Sysctl("", "net.ipv4.ip_forward", "1", "host")])

    elsewhere = make_netns("elsewhere")
    write_sysctl(elsewhere, "net.ipv4.ip_forward", "1")
    other = Netlink(settings, base_ns=elsewhere)
    other.keep_originals(path)
    other.remove_all()
    assert read_sysctl(elsewhere, "net.ipv4.ip_forward") == "1"
    first.remove_all()


def add_policy(ns: str, direction: str, src: str, if_id: int | None, *, mark: int = 0) -> None:
    ip(ns, "xfrm", "policy", "add", "src", src, "dst", src, "dir", direction,
       *(["if_id", hex(if_id)] if if_id is not None else []),
       *(["mark", str(mark)] if mark else []),
       "tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "mode", "tunnel")


@root
def test_remove_sas_takes_only_this_nodes_if_ids(settings, base_ns):
    mine, theirs = 0x2A, 0x99
    add_policy(base_ns, "out", "10.1.0.0/16", mine)
    add_policy(base_ns, "fwd", "10.1.0.0/16", mine)
    add_policy(base_ns, "in", "10.2.0.0/16", mine, mark=7)
    add_policy(base_ns, "out", "10.3.0.0/16", theirs)
    add_policy(base_ns, "out", "10.4.0.0/16", None)
    assert len(nlmod.xfrm_policies(base_ns)) == 5

    netlink = Netlink(settings, base_ns=base_ns)
    assert netlink.remove_sas({mine}) == (0, 3)
    left = nlmod.xfrm_policies(base_ns)
    assert sorted((p.get("if_id", 0), p["src"]) for p in left) == [
        (0, "10.4.0.0/16"), (theirs, "10.3.0.0/16")]
    assert netlink.remove_sas({mine}) == (0, 0)  # nothing left: nothing to do
    assert netlink.remove_sas() == (0, 0)  # no if_id at all: nothing is touched
    assert len(nlmod.xfrm_policies(base_ns)) == 2
