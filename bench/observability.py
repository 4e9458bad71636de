"""What observability costs: metrics on a draining worker, traces on defer, the database-wide gauges at 1M rows.

``make bench-observability`` (or ``.venv/bin/python -m bench.observability``):
needs only ``.venv`` (Jobstead, the OpenTelemetry SDK of the dev group) and
Debian's PostgreSQL, no peer systems. Writes ``bench/results/observability.md``.

* **Metrics on a worker.** A no-op drain of ``DRAIN_JOBS`` async jobs by one
  worker process (concurrency 50), from a paused handler resumed once the
  worker is up: without ``--metrics-port``, and with it while a scraper reads
  ``/metrics`` every 0.5 s (a Prometheus scrapes every 15-60 s). Runs
  interleaved, median of ``REPS``. The worker counts whether or not it serves
  (the counters are the same objects), so the per-job counting itself is
  timed apart: the exact metric calls one job makes, in a loop.
* **Traces on defer.** Single defers (each its own transaction) and
  ``defer_many`` with OpenTelemetry absent (the package hidden), with the API
  only (no SDK: OpenTelemetry's no-op spans), and with the SDK recording to an
  in-memory exporter. Each mode in a fresh process, interleaved, median of the
  best of five chunks each; on a database with ``synchronous_commit = off`` so
  that the disk's flush, the same in every mode, does not drown the difference.
* **Traces on a worker.** The same drain with the package hidden and with the
  API only (the common case of a dependency pulling it in without an SDK).
* **Database-wide gauges.** ``Queries.metrics_snapshot`` (one scrape of the
  operator or ``jobstead metrics``) on a table of 1,000,000 finished jobs and
  20,000 unfinished ones over 20 handlers, median of 7.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICK = os.environ.get("BENCH_QUICK") == "1"
DRAIN_JOBS = 4000 if QUICK else 20_000
REPS = 1 if QUICK else int(os.environ.get("BENCH_REPS", "3"))
DEFERS = 300 if QUICK else 2000
FINISHED_ROWS = 50_000 if QUICK else 1_000_000
RESULTS = REPO / "bench" / "results" / "observability.md"
#: Jobs not finished yet: two counts, each matching a partial index exactly.
REMAINING_SQL = (
    "SELECT (SELECT count(*) FROM jobstead_jobs WHERE status IN ('scheduled', 'queued', 'retrying'))"
    " + (SELECT count(*) FROM jobstead_jobs WHERE status = 'running')"
)


def hide_otel() -> None:
    """As if ``jobstead[otel]`` were not installed: every ``import opentelemetry`` fails."""
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]


def build_app(url: str) -> Any:
    from jobstead import App

    app = App(url)

    @app.handler(queue="bench")
    async def noop(i: int) -> None:
        return None

    return app


# -- child processes ----------------------------------------------------------------


def run_worker(url: str, metrics_port: int | None) -> None:
    app = build_app(url)
    worker = app.worker(concurrency=50, metrics_port=metrics_port, poll_interval=0.05)

    def announce() -> None:
        worker.started.wait()
        print("ready", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    worker.run()


def run_defers(url: str, mode: str, n: int) -> None:
    if mode == "sdk":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from jobstead import tracing

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        tracing.configure(tracer_provider=provider)
    app = build_app(url)
    noop = app.get_handler("noop")
    for i in range(50):  # warm the pool and the statement cache
        noop.defer(i=i)
    chunk = max(1, n // 5)
    singles = []
    for _ in range(5):  # the best of five chunks: the figure least disturbed by the rest of the machine
        started = time.process_time()
        for i in range(chunk):
            noop.defer(i=i)
        singles.append((time.process_time() - started) / chunk)
    single = min(singles)
    bulks = []
    for _ in range(5):
        batch = [{"i": i} for i in range(1000)]
        started = time.process_time()
        noop.defer_many(batch)
        bulks.append((time.process_time() - started) / 1000)
    bulk = min(bulks)
    print(json.dumps({"single_us": single * 1e6, "bulk_us": bulk * 1e6}), flush=True)
    app.close()


def child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.observability")
    parser.add_argument("role", choices=["worker", "defer"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=["absent", "api", "sdk"], default="api")
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("-n", type=int, default=DEFERS)
    args = parser.parse_args(argv)
    if args.mode == "absent":
        hide_otel()
    if args.role == "worker":
        run_worker(args.url, args.metrics_port)
    else:
        run_defers(args.url, args.mode, args.n)


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.observability", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


# -- the harness -------------------------------------------------------------------


class Harness:
    def __init__(self) -> None:
        sys.path.insert(0, str(REPO))
        from tests.support.postgres_server import PostgresServer, free_port

        self.free_port = free_port
        self.server = PostgresServer(durable=True).start()

    def database(self) -> str:
        url = self.server.create_database(f"obs_{uuid.uuid4().hex[:8]}")
        app = build_app(url)
        app.migrate()
        app.close()
        return url

    def drain(self, *, metrics: bool, mode: str) -> tuple[float, float]:
        """(seconds, worker CPU seconds) one worker takes to run DRAIN_JOBS no-op jobs, from its first claim."""
        import sqlalchemy as sa

        url = self.database()
        app = build_app(url)
        store = app.store
        store.control.pause("queue", "bench")
        app.get_handler("noop").defer_many([{"i": i} for i in range(DRAIN_JOBS)])
        engine = sa.create_engine(url)
        port = self.free_port() if metrics else None
        worker = spawn("worker", "--url", url, "--mode", mode, *(["--metrics-port", str(port)] if port else []))
        stop_scraping = threading.Event()
        scrapes = 0
        try:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            if port is not None:

                def scrape() -> None:
                    nonlocal scrapes
                    while not stop_scraping.wait(0.5):
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                            r.read()
                        scrapes += 1

                threading.Thread(target=scrape, daemon=True).start()
            started, cpu = time.perf_counter(), cpu_seconds(worker.pid)
            store.control.resume("queue", "bench")
            with engine.connect() as conn:  # counts over the partial indexes, as bench/systems/jobstead.py polls
                while conn.execute(sa.text(REMAINING_SQL)).scalar_one():
                    conn.commit()
                    time.sleep(0.02)
            took, cpu = time.perf_counter() - started, cpu_seconds(worker.pid) - cpu
        finally:
            stop_scraping.set()
            worker.terminate()
            worker.wait(30)
            app.close()
            engine.dispose()
        if port is not None:
            assert scrapes > 0 or took < 0.5, "the scraper never read /metrics"
        return took, cpu

    def defers(self, mode: str) -> dict[str, float]:
        """Per-job defer times; commits do not wait for the disk here, so the figure is the CPU the defer costs."""
        url = self.database()
        name = url.rsplit("/", 1)[1]
        self.server._psql("postgres", f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        process = spawn("defer", "--url", url, "--mode", mode, "-n", str(DEFERS))
        out, _ = process.communicate(timeout=600)
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def snapshot_at_a_million(self) -> tuple[float, float, int]:
        """Median ms of one metrics snapshot over 20,000 unfinished jobs, then with FINISHED_ROWS finished ones too."""
        import sqlalchemy as sa

        from jobstead.store import Store

        url = self.database()
        engine = sa.create_engine(url)
        store = Store.connect(url)

        def insert(sql: str, **params: int) -> None:
            with engine.begin() as conn:
                conn.execute(sa.text(sql), params)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE jobstead_jobs"))

        def timed() -> tuple[float, int]:
            store.queries.metrics_snapshot()  # warm
            times = []
            for _ in range(7):
                started = time.perf_counter()
                snapshot = store.queries.metrics_snapshot()
                times.append(time.perf_counter() - started)
            return statistics.median(times) * 1000, sum(snapshot.counts.values())

        try:
            insert(
                "INSERT INTO jobstead_jobs (handler, queue, priority, status, args, run_at, created_at, attempts)"
                " SELECT 'h' || (g % 20), 'q' || (g % 4), 0,"
                " (ARRAY['queued', 'scheduled', 'retrying', 'dead', 'failed'])[1 + g % 5],"
                " '{}', now() + (g % 2) * interval '1 hour', now(), 0"
                " FROM generate_series(1, 20000) g"
            )
            alone, counted = timed()
            insert(
                "INSERT INTO jobstead_jobs (handler, queue, priority, status, args, run_at, created_at,"
                " started_at, finished_at, attempts)"
                " SELECT 'h' || (g % 20), 'q' || (g % 4), 0, 'succeeded', '{}', now(), now(), now(), now(), 1"
                " FROM generate_series(1, :n) g",
                n=FINISHED_ROWS,
            )
            with_finished, _ = timed()
        finally:
            store.close()
            engine.dispose()
        return alone, with_finished, counted

    def close(self) -> None:
        self.server.cleanup()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux): robust where wall time is not, on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_job_metric_calls() -> float:
    """Microseconds of the metric updates one job costs a worker (the calls ``Worker`` makes per attempt)."""
    from prometheus_client import CollectorRegistry

    from jobstead.metrics.worker import JobSeries, WorkerMetrics
    from jobstead.status import AttemptOutcome, JobStatus

    metrics = WorkerMetrics(CollectorRegistry())
    series = JobSeries(metrics, "noop", "bench")
    metrics.add_slots(series, 50, lambda: 0)  # slots are read at scrape time: nothing per job

    def one_job() -> None:
        series.queue_wait.observe(0.01)
        series.finished(AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED).inc()
        series.duration.observe(0.001)

    return best_of(one_job, 100_000) * 1e6


def best_of(fn: Callable[[], None], n: int) -> float:
    runs = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(n):
            fn()
        runs.append((time.process_time() - started) / n)
    return min(runs)


def main() -> None:
    harness = Harness()
    rows: list[str] = []
    try:
        drains: dict[str, list[tuple[float, float]]] = {"off": [], "on": [], "otel-api": []}
        for _ in range(REPS):  # interleaved: a change in load hits every variant alike
            drains["off"].append(harness.drain(metrics=False, mode="absent"))
            drains["on"].append(harness.drain(metrics=True, mode="absent"))
            drains["otel-api"].append(harness.drain(metrics=False, mode="api"))
        rate = {k: DRAIN_JOBS / statistics.median(t for t, _ in v) for k, v in drains.items()}
        cpu_us = {k: statistics.median(c for _, c in v) / DRAIN_JOBS * 1e6 for k, v in drains.items()}
        metric_us = per_job_metric_calls()
        defers: dict[str, list[dict[str, float]]] = {"absent": [], "api": [], "sdk": []}
        for _ in range(REPS):
            for mode in defers:
                defers[mode].append(harness.defers(mode))
        defer_figures = {
            mode: {k: statistics.median(r[k] for r in runs) for k in ("single_us", "bulk_us")}
            for mode, runs in defers.items()
        }
        snapshot_alone, snapshot_ms, counted = harness.snapshot_at_a_million()
    finally:
        harness.close()

    def change(new: float, base: float) -> str:
        return f"{(new / base - 1) * 100:+.1f}%"

    rows += [
        f"Observability costs ({'QUICK, not comparable' if QUICK else f'median of {REPS}'}), "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end), "
        "PostgreSQL durable (defers: synchronous_commit off, best of 5 chunks)",
        "",
        "| what | figure | vs baseline |",
        "|---|---|---|",
        f"| no-op drain, {DRAIN_JOBS:,} jobs, 1 worker (c=50), no metrics port: worker CPU per job / throughput "
        f"| {cpu_us['off']:.0f} us / {rate['off']:,.0f} jobs/s | baseline |",
        f"| same, `--metrics-port` + scrape every 0.5 s | {cpu_us['on']:.0f} us / {rate['on']:,.0f} jobs/s "
        f"| {change(cpu_us['on'], cpu_us['off'])} / {change(rate['on'], rate['off'])} |",
        f"| same, no metrics port, opentelemetry-api installed (no SDK) "
        f"| {cpu_us['otel-api']:.0f} us / {rate['otel-api']:,.0f} jobs/s "
        f"| {change(cpu_us['otel-api'], cpu_us['off'])} / {change(rate['otel-api'], rate['off'])} |",
        f"| metric updates of one job (5 calls, CPU) | {metric_us:.2f} us | "
        f"{metric_us / cpu_us['off'] * 100:.1f}% of a job's worker CPU |",
    ]
    base = defer_figures["absent"]
    for mode, label in (("absent", "OpenTelemetry absent"), ("api", "API only (no SDK)"), ("sdk", "SDK recording")):
        f = defer_figures[mode]
        vs = (
            "baseline"
            if mode == "absent"
            else f"{change(f['single_us'], base['single_us'])} / {change(f['bulk_us'], base['bulk_us'])}"
        )
        rows.append(
            f"| defer, {label}: client CPU per job, single / defer_many(1000) "
            f"| {f['single_us']:.0f} us / {f['bulk_us']:.1f} us "
            f"| {vs} |"
        )
    rows.append(
        f"| metrics_snapshot (one scrape of the database-wide gauges), {counted:,} unfinished jobs "
        f"| {snapshot_alone:.1f} ms | baseline |"
    )
    rows.append(
        f"| same, with {FINISHED_ROWS:,} finished jobs beside them | {snapshot_ms:.1f} ms "
        f"| {change(snapshot_ms, snapshot_alone)} |"
    )
    text = "\n".join(rows) + "\n"
    print(text)
    if not QUICK:
        RESULTS.write_text(text)
        print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("worker", "defer"):
        child(sys.argv[1:])
    else:
        main()
