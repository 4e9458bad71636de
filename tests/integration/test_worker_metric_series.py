"""A process that runs worker after worker keeps one set of metric series, not one per worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobstead import App
from jobstead.metrics.worker import WORKER_METRICS


def finished(handler: str) -> float:
    text = generate_latest(REGISTRY).decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "jobstead_jobs_finished_total" and s.labels.get("handler") == handler
    )


def test_restarted_workers_fold_their_series_and_keep_every_count(app: App, running_worker: Callable[..., Any]) -> None:
    @app.handler
    def tick(n: int) -> int:
        return n

    def series() -> int:
        families = (WORKER_METRICS.finished, WORKER_METRICS.duration, WORKER_METRICS.claims)
        return sum(len(f._series) for f in families)

    before, counted = series(), finished("tick")
    sizes = []
    for run in range(6):
        with running_worker(app, concurrency=2):
            assert [tick.defer(n=i).wait(20) for i in range(3)] == [0, 1, 2]
        sizes.append(series())
        assert finished("tick") == counted + 3 * (run + 1)  # nothing a stopped worker counted is lost
    # The first stop leaves at most one folded set (none new if an earlier worker of this
    # process left one for these labels); later stops add to it, not beside it.
    assert before <= sizes[0] <= before + 4  # finished: succeeded and lost; duration; claims
    assert sizes[1:] == [sizes[0]] * 5, sizes
