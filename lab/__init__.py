"""aronet-lab: build a mesh of real aronet agents in network namespaces on one
kernel, verify it end to end, break it on purpose, and tear it down.

  topology/   topology files: model, load, names, rules, addresses, plan, nft, files
  underlay    the underlay: namespaces, veths, bridges, NAT routers
  run         a running lab: its files, agents, statuses and teardown
  checks      the ordered checks, through a transport (local, or a command prefix)
  measure     failover measurement; graph: the live graph; doctor: the kernel's features
  bench/      aronet-lab bench, one module per row
  vm/         the microVM runner (imports nothing of aronet or the rest of the lab)
  multihost   the same checks across Vagrant VMs
  cli         the command line
"""
