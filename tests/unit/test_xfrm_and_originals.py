"""What the agent leaves after a crash, the parts that need no kernel: the filter that
picks this node's XFRM states and policies out of `ip xfrm` output (and the delete
lines for them), and the file that keeps the sysctl values from before aronet."""

from __future__ import annotations

import json
import os
import stat

from aronet.adapters.netlink import iproute2
from aronet.adapters.netlink.originals import Originals
from aronet.core.state import Sysctl

# `ip -s xfrm state` of iproute2 6.1: two of this node (if_ids 0x2a, 0x2b; one with a
# mark), one of another agent (0x99), one without an if_id.
STATES = """\
src 192.0.2.1 dst 192.0.2.2
\tproto esp spi 0x00001000(4096) reqid 7(0x00000007) mode tunnel
\treplay-window 0 seq 0x00000000 flag af-unspec (0x00100000)
\taead rfc4106(gcm(aes)) 0x00 (288 bits) 128
\tif_id 0x2a
\tlifetime current:
\t  840(bytes), 10(packets)
src 2001:db8::2 dst 2001:db8::1
\tproto esp spi 0x00002000(8192) reqid 8(0x00000008) mode tunnel
\treplay-window 0 seq 0x00000000 flag af-unspec (0x00100000)
\tmark 0x5/0xffffffff
\toutput-mark 0x9/0xffffffff
\taead rfc4106(gcm(aes)) 0x00 (288 bits) 128
\tif_id 0x2b
src 192.0.2.1 dst 192.0.2.3
\tproto esp spi 0x00003000(12288) reqid 9(0x00000009) mode tunnel
\tif_id 0x99
src 192.0.2.1 dst 192.0.2.4
\tproto esp spi 0x00004000(16384) reqid 10(0x0000000a) mode tunnel
"""

# `ip -s xfrm policy` of iproute2 6.1.
POLICIES = """\
src 0.0.0.0/0 dst 0.0.0.0/0 uid 0
\tdir out action allow index 1 priority 383615 ptype main share any flag  (0x00000000)
\tlifetime config:
\t  limit: soft (INF)(bytes), hard (INF)(bytes)
\tlifetime current:
\t  0(bytes), 0(packets)
\t  add 2026-01-01 00:00:00 use -
\ttmpl src 192.0.2.1 dst 192.0.2.2
\t\tproto esp spi 0x00000000(0) reqid 7(0x00000007) mode tunnel
\t\tlevel required share any
\t\tenc-mask ffffffff auth-mask ffffffff comp-mask ffffffff
\tif_id 0x2a
src ::/0 dst ::/0 uid 0
\tdir fwd action allow index 18 priority 383615 ptype main share any flag  (0x00000000)
\tmark 0x7/0xffffffff
\ttmpl src 2001:db8::2 dst 2001:db8::1
\t\tproto esp spi 0x00000000(0) reqid 8(0x00000008) mode tunnel
\tif_id 0x2b
src ::/0 dst ::/0 uid 0
\tdir in action allow index 8 priority 383615 ptype main share any flag  (0x00000000)
\ttmpl src 2001:db8::3 dst 2001:db8::1
\t\tproto esp spi 0x00000000(0) reqid 9(0x00000009) mode tunnel
\tif_id 0x99
src 0.0.0.0/0 dst 0.0.0.0/0 uid 0
\tsocket in action allow index 3 priority 0 ptype main share any flag  (0x00000000)
"""


def parsed():
    states = [iproute2._parse_state(b) for b in iproute2._blocks(STATES)]
    policies = [iproute2._parse_policy(b) for b in iproute2._blocks(POLICIES)]
    return states, policies


def test_owned_picks_only_this_nodes_if_ids():
    states, policies = parsed()
    mine = {0x2A, 0x2B}
    assert [s["spi"] for s in iproute2.owned(states, mine)] == [0x1000, 0x2000]
    assert [p["index"] for p in iproute2.owned(policies, mine)] == [1, 18]
    # another agent's if_id, none at all, a socket policy: never picked
    assert iproute2.owned(states, {0x99}) == [states[2]]
    assert iproute2.owned(states, set()) == [] and iproute2.owned(policies, set()) == []
    assert iproute2.owned(states + policies, {0}) == []


def test_marks_and_indexes_are_parsed():
    states, policies = parsed()
    assert "mark" not in states[0] and states[1]["mark"] == (5, 0xFFFFFFFF)
    assert policies[1]["mark"] == (7, 0xFFFFFFFF) and "mark" not in policies[0]
    assert [p.get("index") for p in policies] == [1, 18, 8, 3]
    assert [p["dir"] for p in policies] == ["out", "fwd", "in", "in"]
    assert policies[3]["socket"] is True


def test_delete_lines_name_each_entry_as_the_kernel_keys_it():
    states, policies = parsed()
    mine = {0x2A, 0x2B}
    lines = iproute2.delete_commands(iproute2.owned(states, mine), iproute2.owned(policies, mine))
    assert lines == [
        "xfrm state delete src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1000",
        "xfrm state delete src 2001:db8::2 dst 2001:db8::1 proto esp spi 0x2000 "
        "mark 0x5 mask 0xffffffff",
        "xfrm policy delete index 1 dir out ptype main if_id 0x2a",
        "xfrm policy delete index 18 dir fwd ptype main if_id 0x2b mark 0x7 mask 0xffffffff",
    ]
    # a socket policy is never deleted, even if asked
    assert iproute2.delete_commands([], [policies[3]]) == []


# ---------------------------------------------------------------- sysctl originals

def saved(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


HERE = {"boot_id": "b1", "netns": "4:1234"}
FWD = Sysctl("", "net.ipv4.ip_forward", "1", "host")
TCP = Sysctl("", "net.ipv4.tcp_l3mdev_accept", "1", "host")


def test_originals_are_saved_before_the_change_and_survive_a_crash(tmp_path):
    path = str(tmp_path / "sysctl-originals.json")
    first = Originals()
    first.keep_in(path, HERE)
    assert not os.path.exists(path)  # nothing recorded: no file
    first.record(FWD, "0")
    first.record(TCP, "0")
    first.record(FWD, "1")  # aronet's own value never overwrites the original
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = saved(path)
    assert doc["boot_id"] == "b1" and doc["netns"] == "4:1234"
    assert {(e["name"], e["original"], e["set"]) for e in doc["sysctls"]} == {
        ("net.ipv4.ip_forward", "0", "1"), ("net.ipv4.tcp_l3mdev_accept", "0", "1")}
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []

    # killed: a new run takes them in, and keeps them over what it reads now
    second = Originals()
    second.record(FWD, "1")  # as if it had read the changed value first
    second.keep_in(path, HERE)
    assert second.original(FWD.key) == "0" and second.original(TCP.key) == "0"
    assert set(second.sysctls()) == {FWD, TCP}

    second.forget(FWD.key)
    assert [e["name"] for e in saved(path)["sysctls"]] == [TCP.name]
    second.forget(TCP.key)
    assert not os.path.exists(path)  # all set back: the file goes


def test_a_file_from_another_boot_or_namespace_is_discarded(tmp_path):
    path = str(tmp_path / "o.json")
    first = Originals()
    first.keep_in(path, HERE)
    first.record(FWD, "0")
    for other in ({"boot_id": "b2", "netns": "4:1234"}, {"boot_id": "b1", "netns": "4:99"}):
        later = Originals()
        later.keep_in(path, other)
        assert len(later) == 0
        assert not os.path.exists(path)
        first._save()  # write it again for the next case


def test_a_damaged_file_is_ignored(tmp_path):
    path = tmp_path / "o.json"
    for text in ("{not json", json.dumps({**HERE, "sysctls": [{"ns": "", "name": "../x",
                                                               "original": "0", "set": "1"}]}),
                 json.dumps([1, 2])):
        path.write_text(text)
        o = Originals()
        o.keep_in(str(path), HERE)
        assert len(o) == 0


def test_a_namespace_that_went_takes_its_values_along(tmp_path):
    o = Originals()
    o.keep_in(str(tmp_path / "o.json"), HERE)
    o.record(Sysctl("router", "net.ipv4.ip_forward", "1"), "0")
    o.record(FWD, "0")
    assert o.namespaces() == {"router"}
    o.forget_namespace("router")
    assert o.sysctls() == [FWD]
