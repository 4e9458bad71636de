"""The workflow metrics as families: the ended-workflows counter and the blocked-steps gauge (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY

from jobstead.metrics.database import DatabaseGauges
from jobstead.metrics.worker import workflows_ended
from jobstead.store.queries import MetricsSnapshot


def test_each_ended_workflow_counts_once_under_its_name_and_outcome() -> None:
    def count(name: str, outcome: str) -> float:
        return REGISTRY.get_sample_value("jobstead_workflows_total", {"name": name, "outcome": outcome}) or 0.0

    before = count("onboard", "succeeded"), count("onboard", "failed"), count("album", "succeeded")
    workflows_ended([("onboard", "succeeded"), ("onboard", "succeeded"), ("onboard", "failed")])
    workflows_ended([])
    after = count("onboard", "succeeded"), count("onboard", "failed"), count("album", "succeeded")
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 0]


def test_blocked_steps_are_summed_per_handler_and_queue_in_their_own_family() -> None:
    snapshot = MetricsSnapshot(
        datetime(2026, 12, 6, tzinfo=UTC),
        {
            ("ship", "default", "blocked"): 3,
            ("ship", "default", "queued"): 1,
            ("album", "images", "blocked"): 1,
        },
        {},
        0,
        {},
        [],
        {},
    )
    gauges = DatabaseGauges(extra=["database"])
    gauges.add(snapshot, ["orders"])
    blocked = {tuple(s.labels.values()): s.value for s in gauges.blocked.samples}
    assert blocked == {("orders", "album", "images"): 1, ("orders", "ship", "default"): 3}
    queue_jobs = {tuple(s.labels.values()): s.value for s in gauges.jobs.samples}
    assert queue_jobs[("orders", "ship", "default", "blocked")] == 3  # the status is listed there too
    assert gauges.blocked in gauges.families()
