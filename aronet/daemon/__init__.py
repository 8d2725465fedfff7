"""The agent daemon: supervises charon and BIRD, keeps the node in sync with the
desired state, and answers on a control socket."""
