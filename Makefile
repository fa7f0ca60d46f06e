# Build and test harness for dirstorage.replication.
#
#   make demo    embedded demo (no root, no ssh server needed)
#   make test    `make check`, then the whole test suite (as root: installs missing Debian packages first)
#   make check   ecosystem checks: ansible-test sanity, ansible-lint, ruff, antsibull-docs, the docsite
#                (`make sanity`, `make lint`, `make docs`)
#   make docs    the collection docsite (modules, roles, guides) in build/docsite/build/html/
#   make pytest  only the test suite (no checks), for quick iterations
#   make bench   benchmarks          make soak   long-running tests (SOAK=1)
#   make real-engine-check   the model and replication against the REAL DirectoryStorage engine
#                (needs DS_REAL_ENGINE and DS_REAL_PYTHON: ../shared/real-engine/README.md; not in CI)
#   make clean   remove generated files

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Extend from the command line or another makefile, e.g. make test PYTEST_ARGS="tests/unit -x"
PYTEST_ARGS ?= tests -ra --durations=30
# Test files run on this many pytest-xdist workers, each file whole on one worker (a file's
# module fixtures, e.g. an E2E fleet, are made once), the longest files first (tests/conftest.py
# LONGEST_FIRST); 0 runs them one by one in this process.
PYTEST_WORKERS ?= 2

DEBIAN_PACKAGES := openssh-server openssh-client rsync cron tar strace e2fsprogs xfsprogs util-linux mount sudo \
	systemd systemd-container prometheus prometheus-node-exporter python3-paramiko

COLLECTION_LINK := .collections/ansible_collections/dirstorage/replication

.PHONY: all venv collections deps promtool test pytest check sanity lint docs demo soak bench real-engine-check clean

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

# Debian packages the tests use (real sshd, ssh client, rsync, cron, tar; strace kills a pull at
# each of its disk changes in tests/integration/test_crash_points.py; e2fsprogs, xfsprogs,
# util-linux (losetup) and mount put replicas on ext4 and xfs loop devices and cut their power in
# tests/integration/test_power_loss.py; systemd's systemd-analyze verifies the follow mode's units
# in tests/integration/test_follow_unit.py, which fails without it; prometheus and
# prometheus-node-exporter scrape the metrics files and evaluate the alert rules in
# tests/integration/test_prometheus.py; systemd-container boots a standby under systemd in
# tests/integration/test_systemd.py). Installing them starts no service where
# /usr/sbin/policy-rc.d forbids it (containers, CI); elsewhere Debian starts prometheus and
# node_exporter on their usual ports, which the tests do not use.
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

# promtool checks the alert rules (and their unit tests) and the metrics files the cron
# wrapper writes. Only the binary is taken from Debian's prometheus package (no server,
# no dependencies, no service started): apt-get download, no root needed.
PROMTOOL := build/tools/promtool
promtool: $(PROMTOOL)
$(PROMTOOL):
	@mkdir -p build/tools/deb
	@echo "==> promtool: extracting it from Debian's prometheus package"
	cd build/tools/deb && rm -f prometheus_*.deb && \
		{ apt-get download prometheus 2>/dev/null || { apt-get update -q && apt-get download prometheus; }; }
	dpkg-deb --fsys-tarfile build/tools/deb/prometheus_*.deb | tar -x -O ./usr/bin/promtool > $@.tmp
	chmod 0755 $@.tmp && mv $@.tmp $@ && rm -rf build/tools/deb
	$@ --version | head -1

test: check pytest

pytest: deps venv collections promtool
	$(VPY) -m pytest $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder) $(PYTEST_ARGS)

demo: venv collections
	$(VPY) testbed/demo.py

soak: deps venv collections
	SOAK=1 $(VPY) -m pytest tests/soak -ra

bench: venv collections
	$(VPY) bench/run.py

# The journal and snapshot scenarios of tests/real_engine/conformance.py played by the real engine
# (and the model), then follow, pull, clone and re-seed against the real engine's live_master.py.
real-engine-check: deps venv collections
	@if [ -z "$$DS_REAL_ENGINE" ] || [ -z "$$DS_REAL_PYTHON" ]; then \
		echo "real-engine-check: DS_REAL_ENGINE and DS_REAL_PYTHON are not set; set up the real engine as"; \
		echo "../shared/real-engine/README.md says (fetch, setup.sh) and run the export line it prints"; exit 2; fi
	REAL_ENGINE=1 $(VPY) -m pytest -p no:xdist -ra tests/real_engine
	$(VPY) -m tests.real_engine.live_checks

# --------------------------------------------------------------------------- checks
# `make check` runs every check even when one fails, then fails if any did.
check: deps venv collections
	@failed=""; \
	$(MAKE) --no-print-directory sanity || failed="$$failed sanity"; \
	$(MAKE) --no-print-directory lint || failed="$$failed lint"; \
	$(MAKE) --no-print-directory docs || failed="$$failed docs"; \
	if [ -n "$$failed" ]; then echo "==> check FAILED:$$failed"; exit 1; fi; \
	echo "==> check: all passed"

# ansible-test must run from .../ansible_collections/dirstorage/replication, in a tree that
# is not inside another git checkout (else it sees no files): a copy of the tracked and
# new, not ignored, files under build/ with its own empty `git init`.
SANITY_ROOT := build/ansible_collections/dirstorage/replication
# Every sanity test runs, pylint included: action-plugin-docs, ansible-doc, changelog, compile,
# empty-init, ignores, import, line-endings, no-*, pep8, pslint, pylint, replace-urlopen,
# runtime-metadata, shebang, shellcheck, symlinks, use-*, validate-modules, yamllint.
SANITY_SKIP :=
SANITY_ARGS ?= --venv --python 3.11 --color no $(addprefix --skip-test ,$(SANITY_SKIP))
# --venv bootstraps pip in each venv with a get-pip.py that ansible-test would download from
# its own CI host; this machine reaches only the package registries, so the cache always gets
# tests/sanity/get_pip_offline.py (ensurepip, then pip install from PyPI) and nothing else is
# fetched from outside.
PIP_BOOTSTRAP_VERSION = $(shell sed -n "s/^ *pip='\([0-9.]*\)',/\1/p" \
	$(VENV)/lib/python3.11/site-packages/ansible_test/_internal/python_requirements.py)
PIP_BOOTSTRAP = $(HOME)/.ansible/test/cache/get_pip_$(subst .,_,$(PIP_BOOTSTRAP_VERSION)).py

sanity: venv
	@mkdir -p $(SANITY_ROOT) $(dir $(PIP_BOOTSTRAP))
	@cmp -s tests/sanity/get_pip_offline.py $(PIP_BOOTSTRAP) || cp tests/sanity/get_pip_offline.py $(PIP_BOOTSTRAP)
	@echo "==> sanity: copying the collection to $(SANITY_ROOT)"
	@git ls-files -z --cached --others --exclude-standard | \
		rsync -a --from0 --files-from=- ./ $(SANITY_ROOT)/
	@# drop files deleted from the checkout since the last copy (rsync --files-from does not)
	@cd $(SANITY_ROOT) && git init -q . 2>/dev/null; \
		comm -13 <(cd $(CURDIR) && git ls-files --cached --others --exclude-standard | sort) \
		         <(git ls-files --cached --others --exclude-standard | sort) | xargs -r -d '\n' rm -f --
	cd $(SANITY_ROOT) && $(CURDIR)/$(VENV)/bin/ansible-test sanity $(SANITY_ARGS)

# ruff, ansible-lint, then the docs lint that collections run before the Ansible docsite takes
# them (plugin and role docs: schema, semantic markup, references; changelog; galaxy.yml), each
# even if the one before failed; fails if any did. antsibull-docs calls ansible-doc from PATH.
lint: venv collections
	@rc=0; \
	echo "==> ruff check plugins tests testbed bench"; \
	$(VENV)/bin/ruff check --output-format concise plugins tests testbed bench || rc=1; \
	echo "==> ansible-lint --profile production roles playbooks"; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/ansible-lint --profile production roles playbooks || rc=1; \
	echo "==> antsibull-docs lint-collection-docs --plugin-docs ."; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/antsibull-docs lint-collection-docs --plugin-docs . || rc=1; \
	exit $$rc

# The collection docsite, as antsibull-docs builds it for the Ansible docs: a page for every
# module, filter and role (from their documentation) and the guides of docs/docsite/rst/ (listed
# in docs/docsite/extra-docs.yml). sphinx-init writes the Sphinx project into build/docsite/
# afresh each time (nothing of it is kept in git); docs/docsite/conf_extra.py, appended to its
# conf.py, keeps the build off the network; the guides' pictures are copied where they point.
# Sphinx runs with -W: any warning fails.
DOCSITE := build/docsite
DOCS_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ANSIBLE_COLLECTIONS_PATH="$(CURDIR)/.collections"
docs: venv collections
	@echo "==> docs: antsibull-docs sphinx-init, then build.sh, into $(DOCSITE)"
	@rm -rf $(DOCSITE) && mkdir -p $(DOCSITE)
	@$(DOCS_ENV) $(VENV)/bin/antsibull-docs sphinx-init --use-current --squash-hierarchy --fail-on-error \
		--title dirstorage.replication --project dirstorage.replication --copyright "dirstorage.replication contributors" \
		--dest-dir $(DOCSITE) dirstorage.replication >/dev/null
	@cat docs/docsite/conf_extra.py >> $(DOCSITE)/conf.py
	@# the monitoring guide's picture, at the path the guide names (../../grafana/ of rst/docsite/)
	@mkdir -p $(DOCSITE)/grafana && cp docs/grafana/dirstorage-replication.png $(DOCSITE)/grafana/
	cd $(DOCSITE) && $(DOCS_ENV) ./build.sh
	@echo "==> docs: open $(DOCSITE)/build/html/index.html"

clean:
	rm -rf $(VENV) .collections .pytest_cache .ruff_cache build *.egg-info tests/output demo
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
