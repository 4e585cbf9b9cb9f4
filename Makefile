# fedobs — every developer and CI entry point. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STACK ?= hub
STAMP := $(VENV)/.installed

.PHONY: help setup system-packages test lint typecheck unit real demo bench plan docs preview up clean

help:
	@echo "make setup            create .venv and install the pinned dependencies (+ PostgreSQL/MariaDB packages: root or sudo -n)"
	@echo "make test             setup, then ruff, mypy and the whole test suite (what CI runs)"
	@echo "make demo [KEEP=1]    a hub and an edge Vault for real on loopback, every step checked (KEEP=1: leave running)"
	@echo "make bench [QUICK=1]  measure the figures of docs/performance.md into bench/results.md (fails on a missed target)"
	@echo "make plan STACK=hub   offline plan: the resource tree of a stack, no cloud, no credentials"
	@echo "make docs             regenerate docs/vault-config.md from the shipped stacks"
	@echo "make preview STACK=…  pulumi preview (needs the Pulumi CLI, a backend, LINODE_TOKEN)"
	@echo "make up STACK=…       pulumi up"

# The in-pod programs' own environment, built as programs/Containerfile builds the image (the hashed lock,
# wheels only, nothing else): the rig runs every program and the pod rung's programs image from it, so a
# dependency the lock misses fails the tests instead of the pods (rig/programs_env.py).
PROGRAMS_VENV := build/programs-venv
PROGRAMS_STAMP := $(PROGRAMS_VENV)/.installed
$(PROGRAMS_STAMP): programs/requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	rm -rf $(PROGRAMS_VENV)
	$(PYTHON) -m venv $(PROGRAMS_VENV)
	$(PROGRAMS_VENV)/bin/pip install --quiet --no-cache-dir --require-hashes --only-binary=:all: -r programs/requirements.lock
	@touch $(PROGRAMS_STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	@touch $(STAMP)

# Real database servers for the Vault database-engine tests (PostgreSQL 15, MariaDB 10.11) and the
# tools some tests use, from Debian packages; installed only when missing: as root, or through `sudo -n` when
# not root and sudo needs no password (GitHub-hosted runners); otherwise it prints the apt-get line and fails.
# bubblewrap: the pod sandbox of rung 5 (rig/pod_sandbox.py; setpriv comes with util-linux).
SYSTEM_TOOLS := /usr/lib/postgresql/15/bin/initdb /usr/sbin/mariadbd /usr/bin/gpg /usr/bin/jq /usr/bin/bwrap /usr/bin/setpriv
system-packages:
	@missing=0; for tool in $(SYSTEM_TOOLS); do [ -x $$tool ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "missing Debian packages: sudo apt-get install postgresql mariadb-server gnupg jq bubblewrap util-linux"; exit 1; fi; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql mariadb-server gnupg jq bubblewrap util-linux >/dev/null; \
	fi

setup: $(STAMP) $(PROGRAMS_STAMP) system-packages

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m "not real" -q

real: setup
	$(BIN)/pytest -m real -q

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile

# The figures of docs/performance.md, measured here (several minutes; not part of `make test`).
# QUICK=1: one repetition each into build/bench/, to check the harness.
bench: $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick)

plan: setup
	$(BIN)/python -m offline.plan --stack $(STACK)

# The Vault side of a hub and one edge, for real on this machine (docs/demo.md). Needs the venv; the
# database step runs when PostgreSQL is installed (make setup). KEEP=1 leaves everything running until
# Ctrl-C; DEMO_ARGS=--no-database skips the database step.
demo: $(STAMP)
	$(BIN)/python -m demo $(if $(filter 1 true yes,$(KEEP)),--keep) $(DEMO_ARGS)

docs: setup
	$(BIN)/python -m offline.vault_config_doc

# The real deployment path: the Pulumi CLI with the local file backend by default
# (PULUMI_BACKEND_URL=file://./.pulumi-state); see README.md for Pulumi Cloud or S3.
PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi-state
export PULUMI_BACKEND_URL

# The policy pack (policy/) runs on every preview and up, as in CI, from its own virtual environment.
POLICY_STAMP := policy/venv/.installed
$(POLICY_STAMP): policy/requirements.txt
	$(PYTHON) -m venv policy/venv
	policy/venv/bin/pip install --quiet -r policy/requirements.txt
	@touch $(POLICY_STAMP)

preview: setup $(POLICY_STAMP)
	@command -v pulumi >/dev/null || { echo "the Pulumi CLI is not installed: https://www.pulumi.com/docs/install/"; exit 1; }
	@mkdir -p .pulumi-state
	pulumi preview --stack $(STACK) --diff --policy-pack policy

up: setup $(POLICY_STAMP)
	@command -v pulumi >/dev/null || { echo "the Pulumi CLI is not installed: https://www.pulumi.com/docs/install/"; exit 1; }
	@mkdir -p .pulumi-state
	pulumi up --stack $(STACK) --policy-pack policy

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache
