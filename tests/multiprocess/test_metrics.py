"""Prometheus metrics scraped from real processes after a known workload (issue 16)."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobstead import App, JobStatus
from tests.conftest import Target
from tests.support.postgres_server import free_port
from tests.support.processes import spawn_cli, stop

pytestmark = pytest.mark.slow

WORKER = ["worker", "--app", "tests.apps.metered:app", "--lease-seconds", "1", "--poll-interval", "0.1"]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_worker_metrics_count_every_attempt_and_the_rescue(target: Target, tmp_path: Path) -> None:
    from tests.apps import metered

    app = App(target.url, schema=target.schema)
    for name in ("ok", "boom", "long_job"):
        h = metered.app.get_handler(name)
        app.handler(name=name, queue=h.queue, max_attempts=h.max_attempts, retry=h.retry)(h.func)
    long_job = app.get_handler("long_job").defer(seconds=1.0)
    first = spawn_cli(WORKER, target.env(), tmp_path / "first.log")
    wait_for(lambda: bool(long_job.refresh().record.checkpoint))
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    app.get_handler("ok").defer_many([{"n": i} for i in range(5)])
    app.get_handler("boom").defer_many([{"n": i} for i in range(2)])

    port = free_port()
    second = spawn_cli([*WORKER, "--concurrency", "7", "--metrics-port", str(port)], target.env(), tmp_path / "s.log")
    try:
        wait_for(lambda: all(j.status.is_final for j in app.jobs(limit=20)) and len(app.jobs(limit=20)) == 8)
        time.sleep(0.3)  # the last completion's counters
        samples = scrape(port)
    finally:
        assert stop(second) == 0
    finished = "jobstead_jobs_finished_total"
    assert value(samples, finished, handler="ok", queue="fast", outcome="succeeded") == 5
    assert value(samples, finished, handler="boom", queue="fast", outcome="retried") == 2
    assert value(samples, finished, handler="boom", queue="fast", outcome="dead") == 2
    assert value(samples, finished, handler="long_job", queue="slow", outcome="succeeded") == 1
    assert value(samples, "jobstead_jobs_rescued_total") == 1
    attempts = {"ok": 5, "boom": 4, "long_job": 1}
    for handler, n in attempts.items():
        queue = "slow" if handler == "long_job" else "fast"
        assert value(samples, "jobstead_job_duration_seconds_count", handler=handler, queue=queue) == n
        assert value(samples, "jobstead_job_queue_wait_seconds_count", handler=handler, queue=queue) == n
    busy = value(samples, "jobstead_worker_slots", state="busy")
    idle = value(samples, "jobstead_worker_slots", state="idle")
    assert busy + idle == 7
    assert value(samples, "jobstead_claims_total") >= 1
    assert value(samples, "jobstead_claim_duration_seconds_count") == value(samples, "jobstead_claims_total")
    assert any(name == "jobstead_worker_info" for name, _ in samples)
    assert app.get_job(long_job.id).status is JobStatus.SUCCEEDED
    app.close()


def test_database_gauges_equal_the_tables_counts(target: Target, tmp_path: Path) -> None:
    from tests.apps import metered

    app = App(target.url, schema=target.schema)
    for name in ("ok", "boom"):
        h = metered.app.get_handler(name)
        app.handler(name=name, queue=h.queue, concurrency=4 if name == "ok" else None)(h.func)
    app.get_handler("ok").defer_many([{"n": i} for i in range(6)])
    app.get_handler("boom").configure(delay=3600).defer(n=1)
    empty = app.defer_batch([], tenant="acme")
    port = free_port()
    exporter = spawn_cli(["metrics", "--port", str(port), "--host", "127.0.0.1"], target.env(), tmp_path / "m.log")
    try:
        wait_for(lambda: _up(port), timeout=30)
        samples = scrape(port)
    finally:
        stop(exporter)
    assert value(samples, "jobstead_queue_jobs", handler="ok", queue="fast", status="queued") == 6
    assert value(samples, "jobstead_queue_jobs", handler="boom", queue="fast", status="scheduled") == 1
    assert value(samples, "jobstead_handler_concurrency_limit", handler="ok") == 4
    assert value(samples, "jobstead_queue_oldest_job_age_seconds", handler="ok", queue="fast") >= 0
    assert value(samples, "jobstead_batches", tenant="", status=empty.status) == 1
    assert value(samples, "jobstead_database_up") == 1
    counts = app.stats().by_status
    assert counts.get("queued", 0) == 6 and counts.get("scheduled", 0) == 1
    app.close()


def _up(port: int) -> bool:
    """Serving, and reading the database (it serves ``jobstead_database_up 0`` while it waits for it)."""
    try:
        return scrape(port).get(("jobstead_database_up", ())) == 1
    except OSError:
        return False


def test_the_exporter_counts_blocked_workflow_steps(target: Target, tmp_path: Path) -> None:
    from tests.apps import metered

    app = App(target.url, schema=target.schema)
    h = metered.app.get_handler("ok")
    ok = app.handler(name="ok", queue=h.queue)(h.func)
    wf = app.workflow("fan")
    wf.add("first", ok.job(n=0))
    for i in range(3):
        wf.add(f"then-{i}", ok.job(n=i + 1), after=["first"])
    wf.add("last", ok.job(n=9), after=[f"then-{i}" for i in range(3)])
    wf.defer()
    port = free_port()
    exporter = spawn_cli(["metrics", "--port", str(port), "--host", "127.0.0.1"], target.env(), tmp_path / "m.log")
    try:
        wait_for(lambda: _up(port), timeout=30)
        samples = scrape(port)
    finally:
        stop(exporter)
    assert value(samples, "jobstead_jobs_blocked", handler="ok", queue="fast") == 4
    assert value(samples, "jobstead_queue_jobs", handler="ok", queue="fast", status="blocked") == 4
    assert value(samples, "jobstead_queue_jobs", handler="ok", queue="fast", status="queued") == 1
    app.close()


def test_the_worker_counts_each_workflow_that_ends_by_name_and_outcome(target: Target, tmp_path: Path) -> None:
    from tests.apps import metered

    app = App(target.url, schema=target.schema)
    for name in ("ok", "boom"):
        h = metered.app.get_handler(name)
        app.handler(name=name, queue=h.queue, max_attempts=h.max_attempts, retry=h.retry)(h.func)
    ok, boom = app.get_handler("ok"), app.get_handler("boom")
    runs = []
    for i in range(2):
        wf = app.workflow("pair")
        wf.add("first", ok.job(n=i))
        wf.add("second", ok.job(n=i), after=["first"])
        runs.append(wf.defer())
    broken = app.workflow("broken")
    broken.add("first", boom.job(n=0))
    broken.add("second", ok.job(n=1), after=["first"])
    runs.append(broken.defer())
    port = free_port()
    worker = spawn_cli([*WORKER, "--metrics-port", str(port)], target.env(), tmp_path / "w.log")
    try:
        for run in runs:
            run.wait(timeout=60)
        time.sleep(0.3)
        samples = scrape(port)
    finally:
        assert stop(worker) == 0

    def ended(name: str, outcome: str) -> float:  # ``name`` is a label here, not value()'s argument
        return samples.get(("jobstead_workflows_total", (("name", name), ("outcome", outcome))), 0.0)

    assert ended("pair", "succeeded") == 2
    assert ended("broken", "failed") == 1
    app.close()
