# Build and test harness for dirstorage.replication.
#
#   make demo    embedded demo (no root, no ssh server needed)
#   make test    whole test suite (as root: installs missing Debian packages first)
#   make bench   benchmarks          make soak   long-running tests (SOAK=1)
#   make lint    ruff                make clean  remove generated files

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Extend from the command line or another makefile, e.g. make test PYTEST_ARGS="tests/unit -x"
PYTEST_ARGS ?= tests -ra

DEBIAN_PACKAGES := openssh-server openssh-client rsync cron tar

COLLECTION_LINK := .collections/ansible_collections/dirstorage/replication

.PHONY: all venv collections deps test demo soak bench lint clean

all: test

venv: $(STAMP)

# Re-run only when the requirements or the project metadata change.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@echo "==> creating $(VENV) and installing requirements-dev.txt + editable engine"
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(VPY) -m pip install --disable-pip-version-check -q -e .
	touch $@

# Lets ansible (with ./ansible.cfg) find this checkout as dirstorage.replication.
collections:
	@mkdir -p $(dir $(COLLECTION_LINK))
	@if [ "$$(readlink $(COLLECTION_LINK) 2>/dev/null)" != "../../.." ]; then \
		echo "==> linking $(COLLECTION_LINK) -> checkout root"; \
		rm -rf $(COLLECTION_LINK); ln -s ../../.. $(COLLECTION_LINK); \
	fi

# Debian packages the tests use (real sshd, ssh client, rsync, cron, tar).
deps:
	@missing=""; \
	for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then \
		echo "==> deps: Debian packages present ($(DEBIAN_PACKAGES))"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "==> deps: missing:$$missing (not root: skipping install; tests needing them will skip or fail)"; \
	elif ! command -v apt-get >/dev/null; then \
		echo "==> deps: missing:$$missing (no apt-get: skipping install)"; \
	else \
		echo "==> deps: installing$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

test: deps venv collections
	$(VPY) -m pytest $(PYTEST_ARGS)

demo: venv collections
	$(VPY) tests/support/demo.py

soak: deps venv collections
	SOAK=1 $(VPY) -m pytest tests/soak -ra

bench: venv collections
	$(VPY) bench/run.py

lint: venv
	$(VENV)/bin/ruff check plugins tests bench

clean:
	rm -rf $(VENV) .collections .pytest_cache .ruff_cache build *.egg-info tests/output demo
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
