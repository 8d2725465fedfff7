# The two commands a newcomer needs (see README):
#   make demo   set everything up, then run the main job
#   make test   set everything up, then run every test tier
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARONET := $(VENV)/bin/aronet
SEED   := examples/seed
NODES  := moon earth sun mars

.PHONY: deps venv example demo test lint clean multihost roots
deps:
	ci/install-deps

$(VENV)/.installed: pyproject.toml
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q -e '.[test,vm]'
	touch $@
venv: deps $(VENV)/.installed

# The example's keys are made here, never committed (git checks files out 0644).
$(SEED)/keys/%.pem: | $(VENV)/.installed
	mkdir -p $(SEED)/keys
	$(ARONET) key generate $@ >/dev/null
$(SEED)/registry.json: $(SEED)/keys/example.pem $(SEED)/keys/example2.pem $(foreach n,$(NODES),$(SEED)/$(n)/config.json)
	$(ARONET) registry build $(foreach n,$(NODES),$(SEED)/$(n)/config.json) -o $@
example: venv $(SEED)/registry.json

# The main job: the seed mesh (4 nodes, 2 organizations, one behind NAT) with the real
# agent on every node, in a microVM with a stock Debian kernel, checked end to end. The
# VM and the lab keep running for `aronet-lab check|status|graph|measure|...` until
# `.venv/bin/aronet-lab down`.
demo: example
	$(VENV)/bin/aronet-lab up --vm seed

# The Debian 13 root the VM tier's second stack boots (lab/vm/roots.py): built once,
# cached in /var/cache/aronet-vm/roots, rebuilt when what goes into it changes.
roots: venv
	ci/build-root debian13 >/dev/null

test: example roots
	$(PY) -m pytest

# The seed across Vagrant VMs (README, "Multi-host with Vagrant"): needs vagrant and a
# provider (libvirt or VirtualBox) on this machine; the VMs are destroyed afterwards.
multihost: $(VENV)/.installed
	ci/multihost seed

# ruff, then the architecture: the import contracts in pyproject.toml (import-linter)
lint: venv
	$(VENV)/bin/ruff check aronet lab tests
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) $(SEED)/keys $(SEED)/registry.json
