# Jobstead developer entry points. `make help` lists them.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE_DIR ?= .cache
export JOBSTEAD_CACHE_DIR ?= $(abspath $(CACHE_DIR))

# Other mk/ fragments append prerequisites of `make test` here.
TEST_PREREQS := venv system-deps
PYTEST_ARGS ?=

-include mk/*.mk

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

$(VENV)/.installed: pyproject.toml
	@# the mysql extra's mysqlclient builds against MariaDB's client library (no Linux wheels)
	@if ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then \
	  echo "installing MariaDB's client headers from Debian packages (mysqlclient builds against them)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libmariadb-dev pkg-config >/dev/null; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# PYTHONWARNINGS: setuptools' editable-install notice is a block of asterisks on every first run
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[operator,dashboard,mysql]' --group dev
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv and install Jobstead, its operator extra and the dev group.

.PHONY: system-deps
system-deps: ## Install the PostgreSQL and MariaDB server binaries when the machine lacks them (Debian).
	@if ! command -v pg_config >/dev/null || [ ! -x "$$(pg_config --bindir)/postgres" ]; then \
	  echo "installing PostgreSQL from Debian packages"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql postgresql-contrib >/dev/null; \
	fi
	@# the tests start their own server (tests/support/mariadb_server.py); the package's service stays off
	@if ! PATH="$$PATH:/usr/sbin" command -v mariadbd >/dev/null || ! command -v mariadb-install-db >/dev/null; then \
	  echo "installing MariaDB from Debian packages"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mariadb-server >/dev/null; \
	fi

.PHONY: run
run: venv ## Run the demo app: worker + scheduler on the embedded SQLite default (jobstead.db), and the dashboard.
	@$(VENV)/bin/jobstead migrate
	@$(VENV)/bin/jobstead defer seed_demo_jobs --app jobstead.demo:app >/dev/null
	@# The dashboard first, and its address set apart before the worker's first log line.
	@$(VENV)/bin/jobstead dashboard --app jobstead.demo:app >/dev/null & dashboard=$$!; \
	  trap 'kill $$dashboard 2>/dev/null' EXIT; \
	  for _ in $$(seq 100); do \
	    $(PY) -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:8780/healthz", timeout=1)' 2>/dev/null && break; \
	    kill -0 $$dashboard 2>/dev/null || break; sleep 0.1; \
	  done; \
	  if kill -0 $$dashboard 2>/dev/null; then \
	    printf '\n  Dashboard: http://127.0.0.1:8780/\n'; \
	  else \
	    printf '\n  The dashboard did not start (see its error above); the worker runs without it.\n'; \
	  fi; \
	  printf '\n  While it runs, try in another shell, in this directory:\n'; \
	  printf '    .venv/bin/jobstead stats\n    .venv/bin/jobstead jobs list --status dead,failed\n    .venv/bin/jobstead jobs show ID\n    .venv/bin/jobstead workflows list\n\n'; \
	  $(VENV)/bin/jobstead run --app jobstead.demo:app

.PHONY: test
test: $(TEST_PREREQS) ## Run every test (starts PostgreSQL and the local control plane itself).
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## ruff and mypy.
	$(VENV)/bin/ruff check runtime operator tests bench
	$(VENV)/bin/ruff format --check runtime operator tests bench
	$(VENV)/bin/mypy

.PHONY: format
format: venv ## Apply ruff's formatting and safe fixes.
	$(VENV)/bin/ruff check --fix runtime operator tests bench
	$(VENV)/bin/ruff format runtime operator tests bench

##@ Benchmarks

BENCH_VENV := $(CACHE_DIR)/bench-venv
# oban needs Python 3.12+: the first of python3.13/python3.12 on PATH, else pyenv's oldest 3.12+.
BENCH_PYTHON ?= $(shell for p in python3.13 python3.12; do $$p -c '' >/dev/null 2>&1 && command -v $$p && exit; done; \
  v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[2-9](\.[0-9]+)?$$' | sort -V | head -1); \
  [ -n "$$v" ] && echo "$$(pyenv root)/versions/$$v/bin/python")
.PHONY: bench
bench: system-deps venv ## Jobstead against pgqueuer, procrastinate, oban and chancy on one PostgreSQL (and Jobstead on MariaDB); prints the table.
	@# the peers live in their own venv, never in .venv or Jobstead's dependencies
	@if [ -z "$(BENCH_PYTHON)" ]; then \
	  echo "make bench: no Python 3.12+ found (oban needs it); set BENCH_PYTHON=/path/to/python3.12"; exit 1; fi
	@if [ ! -f $(BENCH_VENV)/.installed ] || [ bench/requirements-peers.txt -nt $(BENCH_VENV)/.installed ] \
	    || [ pyproject.toml -nt $(BENCH_VENV)/.installed ] \
	    || ! $(BENCH_VENV)/bin/python -c 'import MySQLdb' 2>/dev/null; then \
	  echo "creating $(BENCH_VENV) with $(BENCH_PYTHON) (Jobstead editable + bench/requirements-peers.txt)"; \
	  $(BENCH_PYTHON) -m venv --clear $(BENCH_VENV) && \
	  $(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip && \
	  $(BENCH_VENV)/bin/python -m pip install --quiet -e '.[mysql]' -r bench/requirements-peers.txt && \
	  touch $(BENCH_VENV)/.installed; \
	fi
	$(BENCH_VENV)/bin/python -m bench

.PHONY: clean
clean: ## Remove the venv and caches (not the control-plane build cache).
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
