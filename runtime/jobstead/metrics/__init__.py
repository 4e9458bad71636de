"""Prometheus metrics: what workers and deferring processes count, and what the database holds.

* ``worker``: per-process counters, histograms and gauges of the jobs a
  worker runs (one count per attempt), its claims, its slots, its database
  errors. Served with ``--metrics-port`` / ``app.worker(metrics_port=...)``.
* ``jobstead_jobs_deferred_total``: counted wherever jobs are deferred, in
  prometheus-client's default registry, so an app that already exposes it
  shows it.
* ``database``: gauges read from the database at scrape time (queue depth,
  oldest waiting job, workers, limits, crons, batches), for ONE process to
  serve (the operator, or ``jobstead metrics``), never every worker.

Names follow Prometheus conventions: base units, ``_total`` counters,
``_seconds`` histograms; a job id is never a label; ``tenant`` only where
asked for.

Modules are imported by what uses them (``metrics.worker`` by the store and
the worker, ``metrics.database`` by the exporter), never from here: the store
imports ``metrics.worker``, and ``metrics.database`` imports the store.
"""
