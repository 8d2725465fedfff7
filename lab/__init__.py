"""aronet-lab: build a mesh of real aronet agents in network namespaces on one
kernel, verify it end to end, break it on purpose, and tear it down."""
