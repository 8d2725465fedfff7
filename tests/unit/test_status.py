"""The status document (aronet/core/status.py): JSON in and out, and the one table."""

from __future__ import annotations

import pytest

from aronet.core.status import LAB_COLUMNS, Status, render
from aronet.errors import AronetError

DOC = {"node": "o/a", "mode": "netns", "peers": [
    {"peer": "o/b",
     "tunnels": [{"name": "ar-1", "family": "ip4", "remote": "198.51.100.2", "initiator": True,
                  "ike": "ESTABLISHED", "child": "INSTALLED", "interface": "ar-1",
                  "interface_up": True, "babel_neighbor": "fe80::1", "babel_metric": 96}],
     "routes": [{"prefix": "fd10::/64", "via": "fe80::1", "interface": "ar-1", "metric": 96}]}]}


def test_json_round_trip_keeps_the_agents_shape():
    st = Status.from_json(DOC)
    assert st.to_json() == DOC
    (peer, tunnel), = st.tunnels().values()
    assert peer.peer == "o/b" and tunnel.up and [r.prefix for r in st.routes()] == ["fd10::/64"]


def test_a_malformed_document_is_an_aronet_error():
    with pytest.raises(AronetError, match="malformed"):
        Status.from_json({"peers": [{"tunnels": []}]})  # a peer without its name


def test_one_table_for_a_node_and_for_a_lab():
    st = Status.from_json(DOC)
    node = render({"o/a": st}).splitlines()
    assert node[0].split() == ["peer", "tunnel", "fam", "IKE", "CHILD", "if", "babel", "neighbour",
                               "metric", "routes"]
    assert node[1].split() == ["o/b", "ar-1", "ip4", "ESTABLISHED", "INSTALLED", "up", "fe80::1", "96",
                               "fd10::/64", "via", "ar-1"]
    lab = render({"a": st, "b": Status.unanswered("o/b", "no agent is running")}, LAB_COLUMNS)
    assert lab.splitlines()[1].startswith("a        o/b")
    assert lab.splitlines()[2] == "b        agent: no agent is running"
