"""The netlink adapter: the part of the agent that changes the kernel.

Netlink(settings, base_ns).observe() reads aronet's own kernel objects into the
planner's dataclasses (aronet.core.state), apply(plan) carries out a diff's actions,
remove_all() takes everything away again, and preflight() names the kernel features
that the configured mode needs but this kernel lacks. set_link() and link_states() let
the agent follow CHILD_SAs with their tunnel interfaces' up/down state.
xfrm_states(), xfrm_policies() and seg6local_counters() read what pyroute2 cannot.
What a crash leaves behind is handled too: keep_originals() persists the sysctl values
from before aronet, so remove_all() sets them back after the agent was killed, and
remove_sas() deletes the XFRM states and policies of this node's if_ids that a killed
charon left.

  observe    Observer: reading the kernel into core.state resources, link_states()
  apply      Netlink (an Observer): apply, remove_all, set_link, preflight
  rtnl       the pyroute2 codec, shared with the lab's underlay: sockets per namespace,
             link lookup, route/encap encoding, NetlinkError -> ApplyError (failing_as)
  probes     the public preflight probes (seg6, veth, link kinds, ESP, lwtunnel hooks)
  iproute2   `ip`: reads XFRM states and policies and seg6local counters, and deletes
             the XFRM states and policies of given if_ids (owned() is the filter)
  originals  the sysctl values from before aronet, persisted across a crash

Invariants:
- Only aronet's objects are seen or touched: the namespace and the devices named
  Settings.ifname, XFRM interfaces whose names start with Settings.tunnel_prefix, the
  addresses on those devices, routes with protocol RTPROT_ARONET (211), and the
  sysctls the caller asks about.
- In sync means equal. observe() returns the same dataclasses with the same field
  values as the planner, so diff(desired, observe()) is empty.
- apply() is idempotent. "Already there" on add (EEXIST) and "already gone" on remove
  (ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL, or a namespace that no longer exists) count
  as success. Any other failure stops apply() at that action with one ApplyError
  naming the system, the action and the cause, because later actions depend on it.
- Every device aronet creates has IPv6 addr_gen_mode "none", so each address on it is
  one that aronet put there; observe() never has to guess which link-local addresses
  the kernel made.
- Only pyroute2 changes the kernel, except for what it has no API for: `ip` deletes
  XFRM states and policies (only those carrying this node's if_ids). Otherwise `ip`
  runs only to read what pyroute2 cannot (XFRM states and policies, seg6local
  counters) and for the ESP probe, which adds a state in a namespace that is thrown
  away.
- A resource's ns "" is the agent's namespace: this process's own, or `base_ns` when
  given (the lab runs one agent per node namespace). Any other ns is a named network
  namespace (aronet.core.names.netns_path).
"""

from .apply import Netlink
from .iproute2 import seg6local_counters, xfrm_policies, xfrm_states

__all__ = ["Netlink", "seg6local_counters", "xfrm_policies", "xfrm_states"]
