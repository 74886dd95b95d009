# rayops: `make local` (the whole flow on the local cloud) and `make test` (everything CI runs).
# Both start with `make setup`, so on a fresh machine either one alone installs what it needs.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rayops-setup
# promtool's source: Debian 12's prometheus package (the version the cluster's nodes install).
PROMETHEUS_UPSTREAM := 2.42.0+ds-
PROMTOOL_DIR := .rayops/cache/prometheus
PROMTOOL := $(PROMTOOL_DIR)/usr/bin/promtool
APT_PACKAGES := python3-venv systemd-container debootstrap iptables iproute2 openssh-client chromium chromium-driver nftables

# Local cloud knobs (see README): make local-up WORKERS=3 SUBNET=10.213.8.0/24 S3_PORT=5600 RELEASE=bullseye
WORKERS ?= 2
RELEASE ?= bookworm
SUBNET ?= 10.213.7.0/24
S3_PORT ?= 5599
TARGET_ZONE ?= 1
LOCAL_INVENTORY := inventory/local.pulumi_stack.yml
# Extra ansible-playbook arguments for make site/train, e.g. make site EXTRA='-e ray_service_num_cpus=2'
EXTRA ?=
# make site/train without a local cloud: one sentence, not Ansible's inventory errors.
LOCAL_CHECK = test -f .rayops/local/outputs.json || { echo "$@: there is no local cloud here (.rayops/local/outputs.json is missing): run \`make local-up\` first" >&2; exit 1; }
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k plugin"
PYTEST_ARGS ?=

.PHONY: help setup lint test test-unit test-cluster bench molecule local local-up local-down local-status site train serve bench-serve tunnel clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) $(PROMTOOL) ## Install apt packages, the pinned Python environment in .venv, promtool for the tests

# promtool (the alert rules' unit tests) from the distribution's prometheus package, unpacked into a cache: no
# Prometheus server runs on the controller. The same upstream version as the cluster's (roles/monitoring).
$(PROMTOOL):
	@echo "setup: promtool from Debian's prometheus package into $(PROMTOOL_DIR)"
	@rm -rf $(PROMTOOL_DIR).tmp && mkdir -p $(PROMTOOL_DIR).tmp && cd $(PROMTOOL_DIR).tmp && \
	  apt-get download -qq prometheus 2>/dev/null && version=$$(dpkg-deb -f prometheus_*.deb Version) && \
	  case "$$version" in $(PROMETHEUS_UPSTREAM)*) ;; *) echo "setup: apt offers prometheus $$version, not $(PROMETHEUS_UPSTREAM) (the cluster's): run setup on Debian 12" >&2; exit 1;; esac && \
	  dpkg-deb -x prometheus_*.deb root && test -x root/usr/bin/promtool && rm root/usr/bin/prometheus
	@rm -rf $(PROMTOOL_DIR) && mv $(PROMTOOL_DIR).tmp/root $(PROMTOOL_DIR) && rm -rf $(PROMTOOL_DIR).tmp

$(STAMP): requirements.txt pyproject.toml
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "setup: missing apt packages: $$missing; run as root or apt-get install them" >&2; exit 1; fi; \
	  echo "setup: apt-get install $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: pip install -r requirements.txt (a few minutes the first time)"
	@$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	@$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

lint: setup ## ruff, mypy, yamllint, ansible-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/yamllint -s .
	ANSIBLE_INVENTORY=$(abspath ansible/lint-inventory.yml) ANSIBLE_INVENTORY_ENABLED=yaml PATH=$(abspath $(BIN)):$$PATH $(BIN)/ansible-lint

# In lanes (tests/lanes.py): lint; pytest's unit tier beside Molecule's scenarios; the machine tier once the unit
# tier ended (its timed modules wait for Molecule); the fault rows last, alone. Ends with each lane's time and
# the 30 slowest tests; logs in .rayops/ci/.
test: setup ## Run every test (lint, pytest incl. local cloud, faults and end to end, Molecule); needs root
	$(BIN)/python tests/lanes.py -- $(PYTEST_ARGS)

# Every role's scenario (1-2 machines each, ~4 min on an idle 2-core host with the wheel cache warm)
# and the whole-cluster scenario (3 machines), one after another, each on its own local cloud.
molecule: setup ## Molecule: every role's scenario and the whole-cluster scenario, each on its own local cloud
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/molecule test --all

test-cluster: setup ## pytest on a real 3-node cluster: role contracts, faults, train.yml end to end (root)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest tests/cluster $(PYTEST_ARGS)

bench: setup ## Benchmarks (root): site.yml cold/idempotent/wheelhouse and Ray Train vs plain xgboost
	$(BIN)/python bench/bench_site.py
	$(BIN)/python bench/bench_train.py

bench-serve: setup ## Serving benchmark on the local cloud after `make local`: Serve vs in-process predict vs plain uvicorn
	@$(LOCAL_CHECK)
	$(BIN)/python bench/bench_serve.py

test-unit: setup ## Only the tests that need no local cloud
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -m "not localcloud" $(PYTEST_ARGS)

local: setup local-up site train serve ## The whole flow on the local cloud: boot it, site.yml, train.yml, serve.yml

site: setup ## Run site.yml on the local cloud (a healthy Ray cluster under systemd; EXTRA='-e k=v ...')
	@$(LOCAL_CHECK)
	$(BIN)/ansible-playbook -i $(LOCAL_INVENTORY) site.yml $(EXTRA)

# DATASET=/path/to/powerconsumption.csv (or s3://, https://); default: the cache in data/, else the UCI download.
train: setup ## Run train.yml on the local cloud (DATASET=... TARGET_ZONE=1)
	@$(LOCAL_CHECK)
	@dataset=$$($(BIN)/python -m rayops.workflow resolve-dataset) || exit 1; \
	echo "train: dataset $$dataset"; \
	$(BIN)/ansible-playbook -i $(LOCAL_INVENTORY) train.yml -e "dataset=$$dataset" -e "target_zone=$(TARGET_ZONE)" $(EXTRA)

serve: setup ## Run serve.yml on the local cloud: the promoted model behind Ray Serve (EXTRA='-e serve_zones=[1,2]')
	@$(LOCAL_CHECK)
	$(BIN)/ansible-playbook -i $(LOCAL_INVENTORY) serve.yml $(EXTRA)

# CLUSTER: the cluster's name (the local cloud's is rayops; on AWS the stack's cluster_name).
CLUSTER ?= rayops
tunnel: ## One SSH tunnel to the head's dashboard, JupyterLab, Serve, Prometheus, Alertmanager, Grafana, MLflow (CLUSTER=rayops)
	@test -x .rayops/tunnel/$(CLUSTER).sh || { echo "tunnel: no tunnel for cluster $(CLUSTER) yet (.rayops/tunnel/$(CLUSTER).sh is written by site.yml): run \`make site\` (or ansible-playbook site.yml) first, or pass CLUSTER=<name>" >&2; exit 1; }
	@.rayops/tunnel/$(CLUSTER).sh

local-up: setup ## Boot the local cloud (WORKERS=2 SUBNET=10.213.7.0/24 S3_PORT=5599 RELEASE=bookworm|bullseye)
	$(BIN)/rayops-local up --workers $(WORKERS) --subnet $(SUBNET) --s3-port $(S3_PORT) --release $(RELEASE)

local-down: setup ## Remove the local cloud and everything it created
	$(BIN)/rayops-local down

local-status: setup ## Machines, IPs, state, S3 endpoint and contract path of the local cloud
	$(BIN)/rayops-local status

clean: ## Remove the venv and caches (the local cloud must be down)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
