"""The nft adapter against the real kernel, in a throwaway namespace."""

from __future__ import annotations

import json
import subprocess
import uuid
from ipaddress import ip_network

import pytest

from aronet.adapters.nft import Nft
from aronet.core import nft as core_nft
from aronet.core.diff import diff
from aronet.core.state import NftTable, State
from aronet.errors import ApplyError

pytestmark = pytest.mark.root


@pytest.fixture
def ns():
    name = f"aronet-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def table(owned4=("192.168.128.0/24",), mss4=1296) -> NftTable:
    rules = core_nft.ruleset(tunnel_pattern="ar-*", owned4=[ip_network(p) for p in owned4],
                             owned6=[ip_network("fd66::/64"), ip_network("fd67::/64")],
                             mss4=mss4, mss6=1340)
    return NftTable("", "inet", "aronet", core_nft.summary(rules), json.dumps(rules))


def nft_list(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                          capture_output=True, text=True, check=True).stdout


def test_apply_observe_is_in_sync_and_replace_is_atomic(ns):
    nft = Nft(base_ns=ns)
    want = State(frozenset({table()}))
    assert nft.observe([""]) == State()
    nft.apply(diff(want, nft.observe([""])))
    assert diff(want, nft.observe([""])) == ()
    assert "udp dport 6696" in nft_list(ns)
    # a changed registry: the table is replaced in one transaction, not appended to
    want2 = State(frozenset({table(owned4=("192.168.128.0/24", "10.9.0.0/16"), mss4=1200)}))
    plan = diff(want2, nft.observe([""]))
    assert [a.op for a in plan] == ["change"]
    nft.apply(plan)
    assert diff(want2, nft.observe([""])) == ()
    text = nft_list(ns)
    assert "10.9.0.0/16" in text and text.count("chain prerouting") == 1 and "1296" not in text


def test_drift_is_seen(ns):
    nft = Nft(base_ns=ns)
    want = State(frozenset({table()}))
    nft.apply(diff(want, State()))
    subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "element", "inet", "aronet",
                    "owned6", "{ fd67::/64 }"], check=True)
    assert [a.op for a in diff(want, nft.observe([""]))] == ["change"]


def test_remove_leaves_nothing_and_is_idempotent(ns):
    nft = Nft(base_ns=ns)
    nft.apply(diff(State(frozenset({table()})), State()))
    nft.apply(diff(State(), nft.observe([""])))
    assert nft.observe([""]) == State()
    assert nft_list(ns).strip() == ""
    nft.delete("")  # deleting what is gone is success


def test_other_tables_are_untouched(ns):
    subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "user"], check=True)
    nft = Nft(base_ns=ns)
    nft.apply(diff(State(frozenset({table()})), State()))
    nft.delete("")
    assert nft_list(ns).strip().startswith("table inet user")


def test_a_refused_ruleset_is_one_clear_error(ns):
    bad = NftTable("", "inet", "aronet", (), json.dumps([{"rule": {"family": "inet", "table": "aronet",
                                                                   "chain": "nope", "expr": []}}]))
    with pytest.raises(ApplyError) as e:
        Nft(base_ns=ns).apply(diff(State(frozenset({bad})), State()))
    assert str(e.value).startswith("nft: + nft table inet aronet (host): ")
