"""Adapters: the only code that observes and changes the system.

Each adapter is named after what it talks to, has observe() and apply(), and turns its
library's errors into one aronet.errors.ApplyError naming the system, the object and
the cause. The core (aronet.core) never imports them.

  netlink/  namespaces, VRF, veth and XFRM devices, addresses, routes (pyroute2):
            observe, apply, rtnl (the codec the lab's underlay shares), probes
            (preflight), iproute2 (what pyroute2 cannot read: XFRM state, counters)
  sysctl    reading and writing /proc/sys inside a given network namespace
  nft       nftables tables
  vici      charon's connections and SAs; charon: running charon itself
  routing   the interface the agent uses for either routing daemon:
  bird      BIRD's configuration and control socket
  babeld    babeld's configuration and local socket
  node      one node's adapters together, and the drift against the desired state
  proc      processes by their instance tag, and /proc status figures
  files     the agent's own files: atomic writes, the private runtime and state dirs

Nothing is imported here, so using one adapter does not load the others' libraries.
"""
