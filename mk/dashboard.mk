# The dashboard's browser tests drive Debian's Chromium through its matching
# chromedriver (issue 17): both come from Debian's packages, never a download
# at test time.

TEST_PREREQS += browser-deps axe-deps

# axe-core, the accessibility checker the browser tests run in each page: a
# pinned npm dev dependency of the tests (tests/dashboard/package.json and its
# lockfile), installed with `npm ci` under the cache. Jobstead never loads it.
AXE_DIR := $(CACHE_DIR)/dashboard-npm
AXE := $(AXE_DIR)/node_modules/axe-core/axe.min.js

##@ Dashboard

.PHONY: browser-deps
browser-deps: ## Install Chromium and chromedriver from Debian packages when the machine lacks them.
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing Chromium and chromedriver from Debian packages"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

.PHONY: axe-deps
axe-deps: $(AXE) ## Install the tests' pinned axe-core (npm ci, into .cache/dashboard-npm).

$(AXE): tests/dashboard/package.json tests/dashboard/package-lock.json
	@if ! command -v npm >/dev/null; then \
	  echo "installing Node.js and npm from Debian packages (for the tests' axe-core)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	mkdir -p $(AXE_DIR)
	cp tests/dashboard/package.json tests/dashboard/package-lock.json $(AXE_DIR)/
	cd $(AXE_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: bench-dashboard
bench-dashboard: venv system-deps ## Dashboard page render times with 1,000,000 jobs, and the cost of 5 open tabs.
	$(PY) -m bench.dashboard
