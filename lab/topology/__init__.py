"""aronet-lab topologies: load and check a YAML file, then plan the lab.

Three steps, like the agent's load / validate / plan:

- load_topology(path) reads YAML (syntax errors give line and column), checks it
  against lab/schema/topology.schema.json, then against the rules, and reports every
  problem at once, each with its path (aronet.errors.Problem). Values left out are
  assigned deterministically from the lab name and the file's order.
- plan_lab(topology) is pure: every namespace, veth, bridge, address, route, sysctl
  and nft ruleset of the underlay, and each node's config.json document.
- write_lab_files(plan, directory) is the only I/O: one Ed25519 key per organization,
  each node's config.json, and registry.json made by aronet.core.registry, the
  generator `aronet registry build` uses (the lab has no second one).

Where a change goes:
  model      the data: Topology (what a file says, completed) and LabPlan
  load       reading: YAML, the schema and its wording, load_topology
  rules      the checks the schema cannot make (names, NAT, members, overlaps...)
  addresses  the values left out: underlay, overlay and prefix addresses
  names      every name: namespaces, bridges, ports, agent_ifname, the nft table
  plan       plan_lab: the underlay and each node's config.json
  nft        the lab's nft rules: switch, NAT routers, loss, partitions, ESP drops
  files      keys, configs and registry.json on disk

Underlay model: every LAN and every link is a bridge in the switch namespace, so
loss, delay, blocks, partitions and ESP drops all happen there (table `bridge
aronet_lab`), and a node's own namespace holds nothing of the lab's but its veths.
A NAT router is a namespace with one outside leg (on a LAN or link) and a direct
veth to each node behind it; it masquerades what leaves the outside leg (table
`inet aronet_lab`). There is no underlay routing between segments: a node reaches
the members of its own LANs and links. The names are in lab.topology.names, the
automatic addresses in lab.topology.addresses.
"""

from __future__ import annotations

from .files import LabFiles, lab_configs, lab_registry, write_lab_files
from .load import SCHEMA_FILE, load_topology, parse_topology
from .model import (
    DEFAULT_MODE,
    KINDS,
    LAB_BABEL_HELLO,
    LAB_BABEL_UPDATE,
    Address,
    Bridge,
    EndpointSpec,
    Interface,
    LabPlan,
    Member,
    NatSpec,
    Netem,
    NodePlan,
    NodeSpec,
    Options,
    Prefix,
    Route,
    RouterPlan,
    Ruleset,
    Segment,
    SegmentPlan,
    Sysctl,
    Topology,
    Veth,
)
from .names import (
    IFNAMSIZ,
    SWITCH,
    TABLE,
    agent_ifname,
    bridge_name,
    key_reference,
    namespace,
    port_name,
    switch_namespace,
)
from .nft import (
    SWITCH_CHAINS,
    drop_esp_rules,
    loss_rule,
    nat_batch,
    partition_rules,
    port_loss_rule,
    switch_batch,
)
from .plan import config_doc, plan_lab

__all__ = [
    "DEFAULT_MODE",
    "IFNAMSIZ",
    "KINDS",
    "LAB_BABEL_HELLO",
    "LAB_BABEL_UPDATE",
    "SCHEMA_FILE",
    "SWITCH",
    "SWITCH_CHAINS",
    "TABLE",
    "Address",
    "Bridge",
    "EndpointSpec",
    "Interface",
    "LabFiles",
    "LabPlan",
    "Member",
    "NatSpec",
    "Netem",
    "NodePlan",
    "NodeSpec",
    "Options",
    "Prefix",
    "Route",
    "RouterPlan",
    "Ruleset",
    "Segment",
    "SegmentPlan",
    "Sysctl",
    "Topology",
    "Veth",
    "agent_ifname",
    "bridge_name",
    "config_doc",
    "drop_esp_rules",
    "key_reference",
    "lab_configs",
    "lab_registry",
    "load_topology",
    "loss_rule",
    "namespace",
    "nat_batch",
    "parse_topology",
    "partition_rules",
    "plan_lab",
    "port_loss_rule",
    "port_name",
    "switch_batch",
    "switch_namespace",
    "write_lab_files",
]
