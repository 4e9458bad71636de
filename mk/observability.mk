# What metrics and traces cost (issue 16): bench/observability.py, in .venv (no peer systems).

##@ Benchmarks

.PHONY: bench-observability
bench-observability: venv system-deps ## Metrics on/off drain, defer with OpenTelemetry absent/API/SDK, gauges at 1M rows.
	$(PY) -m bench.observability
