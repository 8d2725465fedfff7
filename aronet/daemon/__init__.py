"""The agent daemon: supervises charon and the routing daemon (BIRD or babeld), keeps
the node in sync with the desired state, and answers on a control socket.

  agent       start (preflight, cleanup), the sync pass, the re-check, the clean stop
  links       charon's events, and the tunnel links that follow its CHILD_SAs
  handlers    the control commands: load, status, info, memory, stop
  control     the control socket's server (the client is aronet.client)
  supervisor  the children: start, restart with backoff, stop
  memory      what the agent's memory is made of, and keeping it flat
"""
