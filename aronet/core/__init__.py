"""The pure core: desired state, plans and renderings computed from the model, and
the status document the agent sends.

Nothing in this package reads files, the clock or the environment, or imports a
system library (pyroute2, vici, nftables, subprocess, socket) or an adapter. The
import contracts in pyproject.toml (`make lint`) and tests/unit/test_layers.py
enforce that.
"""
