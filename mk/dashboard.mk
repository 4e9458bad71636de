# The dashboard's browser tests drive Debian's Chromium through its matching
# chromedriver (issue 17): both come from Debian's packages, never a download
# at test time.

TEST_PREREQS += browser-deps

##@ Dashboard

.PHONY: browser-deps
browser-deps: ## Install Chromium and chromedriver from Debian packages when the machine lacks them.
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing Chromium and chromedriver from Debian packages"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

.PHONY: bench-dashboard
bench-dashboard: venv system-deps ## Dashboard page render times with 1,000,000 jobs, and the cost of 5 open tabs.
	$(PY) -m bench.dashboard
