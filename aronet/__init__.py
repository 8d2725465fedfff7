"""aronet: an auto-routed, full-mesh overlay network.

Layers (inner to outer):
  aronet.model, aronet.validate  load and check the two input files (pure, no system access)
  aronet.core                    compute a node's desired state and plans (pure)
  aronet.adapters                observe and change the system (netlink, nft, vici, bird)
  aronet.cli                     the command line
"""

__version__ = "0.2.0.dev0"
