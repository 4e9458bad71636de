# Fault tests (issue 13): PgBouncer and toxiproxy for `make test` (libfaketime
# comes from the dev extra, see tests/support/faketime.py),
# and `make chaos`, the long fault run that is not part of it.

TEST_PREREQS += reliability-deps toxiproxy

##@ Reliability

.PHONY: reliability-deps
reliability-deps: ## Install PgBouncer when the machine lacks it (Debian).
	@need=; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need=1; \
	if [ -n "$$need" ]; then \
	  echo "installing pgbouncer from Debian packages"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq pgbouncer >/dev/null; \
	fi

.PHONY: toxiproxy
toxiproxy: ## Build the toxiproxy fault proxy from its Go module (once per pin).
	@hack/toxiproxy/build.sh

CHAOS_ARGS ?=
# CHAOS_DATABASE=mariadb: the same run on MariaDB (restarts: a clean shutdown and a kill -9 of mariadbd).
CHAOS_DATABASE ?=
# CHAOS_FAILOVER=1: instead, a PostgreSQL primary killed under load, its standby promoted, a switchover back.
CHAOS_FAILOVER ?=
.PHONY: chaos
chaos: venv system-deps reliability-deps toxiproxy ## 10,000 jobs through kill -9, SIGSTOP, restarts, cuts and stalls (CHAOS_DATABASE=mariadb: on MariaDB).
	$(PY) -m tests.chaos $(if $(CHAOS_FAILOVER),--failover) $(if $(CHAOS_DATABASE),--database $(CHAOS_DATABASE)) $(CHAOS_ARGS)
