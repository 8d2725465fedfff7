"""The lab's names, written once: namespaces, bridges, switch ports, the agent's
router namespace, the lab's nft table, and where a node's key file is.

A lab name has no "-", so "<lab>-" prefixes are disjoint between labs:
  namespaces   node / NAT router  <lab>-<name>      the switch  <lab>-sw
  agent netns  netns-mode nodes:  daemon.ifname = ar<8 hex of sha256(lab/node)>
               (it names the agent's router namespace, which is global)
  interfaces   in a node or router: eth1, eth2, ... in the order of its attachments
               (LANs, then links, then NAT inside links, each in file order)
               in the switch: bridge br-<segment>, port <segment>-<member>
  links        named by `name:`, else l<index> (l1 is the first link)
Every interface name is checked to fit Linux's 15 bytes before anything is planned.
"""

from __future__ import annotations

import hashlib

IFNAMSIZ = 15
SWITCH = "sw"  # the switch namespace is f"{lab}-{SWITCH}"; no node may take the name
TABLE = "aronet_lab"  # the lab's nft table, in the switch (bridge) and NAT routers (inet)


def namespace(lab: str, name: str) -> str:
    return f"{lab}-{name}"


def switch_namespace(lab: str) -> str:
    return namespace(lab, SWITCH)


def bridge_name(segment: str) -> str:
    return f"br-{segment}"


def port_name(segment: str, member: str) -> str:
    return f"{segment}-{member}"


def agent_ifname(lab: str, node: str) -> str:
    """daemon.ifname of a netns-mode node: it names the agent's router namespace,
    which is global, so it is unique per lab and node (10 bytes, as the schema allows)."""
    return "ar" + hashlib.sha256(f"{lab}/{node}".encode()).hexdigest()[:8]


def key_reference(organization: str) -> str:
    """private_key in a node's config.json: relative to <dir>/<node>/."""
    return f"../keys/{organization}.pem"
