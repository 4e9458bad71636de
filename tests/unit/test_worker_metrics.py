"""The worker's lock-free series expose what prometheus-client's own metrics would."""

from __future__ import annotations

import random
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobstead.metrics.worker import DURATION_BUCKETS, ClaimSeries, JobSeries, WorkerMetrics
from jobstead.status import AttemptOutcome, JobStatus


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_buckets_match_prometheus_histograms_including_values_on_a_bound() -> None:
    ours = CollectorRegistry()
    theirs = CollectorRegistry()
    metrics = WorkerMetrics(ours)
    reference = Histogram(
        "jobstead_job_duration_seconds", "x", ["handler", "queue"], buckets=DURATION_BUCKETS, registry=theirs
    ).labels(handler="h", queue="q")
    series = JobSeries(metrics, "h", "q")
    rng = random.Random(7)
    values = [*DURATION_BUCKETS, 0.0, 1e9, *(rng.expovariate(2.0) for _ in range(2_000))]
    for v in values:
        series.duration.observe(v)
        reference.observe(v)
    mine = {k: v for k, v in samples(ours).items() if k[0].startswith("jobstead_job_duration_seconds")}
    expected = samples(theirs)
    assert mine.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(mine[key] - value) < 1e-6, key


def test_series_of_several_workers_add_up_per_label_set() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    done = (AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED)
    failed = (AttemptOutcome.FAILED, JobStatus.RETRYING)

    def one_worker(n: int) -> None:  # each worker its own series, written from its own thread
        series = JobSeries(metrics, "h", "q")
        claims = ClaimSeries(metrics)
        for i in range(n):
            series.finished(*(failed if i % 10 == 0 else done)).inc()
            series.queue_wait.observe(0.002)
            claims.observe(0.001)

    threads = [threading.Thread(target=one_worker, args=(50_000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other = JobSeries(metrics, "h", "other")
    other.finished(*done).inc()
    got = samples(registry)
    finished = "jobstead_jobs_finished_total"
    assert got[(finished, (("handler", "h"), ("outcome", "succeeded"), ("queue", "q")))] == 4 * 45_000
    assert got[(finished, (("handler", "h"), ("outcome", "retried"), ("queue", "q")))] == 4 * 5_000
    assert got[(finished, (("handler", "h"), ("outcome", "succeeded"), ("queue", "other")))] == 1
    assert got[(finished, (("handler", "h"), ("outcome", "lost"), ("queue", "q")))] == 0
    assert got[("jobstead_job_queue_wait_seconds_count", (("handler", "h"), ("queue", "q")))] == 200_000
    assert got[("jobstead_job_queue_wait_seconds_bucket", (("handler", "h"), ("le", "0.001"), ("queue", "q")))] == 0
    assert got[("jobstead_job_queue_wait_seconds_bucket", (("handler", "h"), ("le", "0.0025"), ("queue", "q")))] == (
        200_000
    )
    assert got[("jobstead_claims_total", ())] == 200_000
    assert got[("jobstead_claim_duration_seconds_count", ())] == 200_000


def test_an_unlabelled_counter_reads_zero_before_any_worker_counts() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    assert samples(registry)[("jobstead_claims_total", ())] == 0


def test_names_stay_unique_in_a_registry() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    try:
        Counter("jobstead_jobs_finished", "clash", registry=registry)
    except ValueError as exc:
        assert "Duplicated timeseries" in str(exc)
    else:
        raise AssertionError("a second jobstead_jobs_finished was accepted")


def test_a_stopped_workers_series_fold_into_the_totals_and_are_not_kept() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    done = (AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED)
    live = JobSeries(metrics, "h", "q")
    live.finished(*done).inc(5)
    for _ in range(100):  # worker after worker in one process, each with its own series
        series, claims = JobSeries(metrics, "h", "q"), ClaimSeries(metrics)
        series.finished(*done).inc(2)
        series.duration.observe(0.003)
        claims.observe(0.001)
        metrics.retire(claims, [series])
    got = samples(registry)
    assert got[("jobstead_jobs_finished_total", (("handler", "h"), ("outcome", "succeeded"), ("queue", "q")))] == 205
    assert got[("jobstead_job_duration_seconds_count", (("handler", "h"), ("queue", "q")))] == 100
    assert got[("jobstead_job_duration_seconds_bucket", (("handler", "h"), ("le", "0.005"), ("queue", "q")))] == 100
    assert got[("jobstead_job_duration_seconds_sum", (("handler", "h"), ("queue", "q")))] == pytest.approx(0.3)
    assert got[("jobstead_claims_total", ())] == 100
    # What is kept: the live worker's series and one folded series per label values, not 100 of each.
    assert len(metrics.finished._series) == 2 + 2  # live and folded: succeeded and lost each
    assert len(metrics.duration._series) == 2
    assert len(metrics.claims._series) == 1
    live.finished(*done).inc()  # the live worker's series still count
    assert (
        samples(registry)[
            ("jobstead_jobs_finished_total", (("handler", "h"), ("outcome", "succeeded"), ("queue", "q")))
        ]
        == 206
    )
