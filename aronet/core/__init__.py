"""The pure core: desired state, plans and renderings computed from the model.

Nothing in this package reads files, the clock or the environment, or imports a
system library (pyroute2, vici, nftables, subprocess). tests/unit/test_layers.py
enforces that.
"""
