"""aronet: an auto-routed, full-mesh overlay network.

Layers, outer to inner (each imports only the ones below it; the contracts in
pyproject.toml, checked by `make lint`, enforce this):
  aronet.cli                     the command line
  aronet.daemon                  the agent: lifecycle, sync, charon's events, control commands
  aronet.adapters, aronet.client observe and change the system / talk to a running agent
  aronet.core                    a node's desired state, plans, renderings, the status document (pure)
  aronet.load                    read and check the two input files into the model (no system access)
  aronet.schema, aronet.model    the strict JSON Schema checker; the immutable model
  aronet.keys, errors, paths     keys, the error types, the runtime layout
"""

__version__ = "0.2.0.dev0"
