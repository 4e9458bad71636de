"""Gauges read from the database at scrape time: collected by ONE process, not by every worker.

The operator serves them, or ``jobstead metrics --port P --database-url URL``.
Every figure comes from one grouped query per scrape over the partial indexes
the claim path already keeps (``jobs_active``: every job that is not a
success), so a scrape of a table with a million finished jobs reads only
the unfinished ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..cron.schedule import CronSchedule, InvalidSchedule
from ..store import Store

logger = logging.getLogger("jobstead.metrics")


class DatabaseCollector(Collector):
    def __init__(self, store: Store, *, tenant_labels: bool = False) -> None:
        self._store = store
        self._tenant_labels = tenant_labels

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            snapshot = self._store.queries.metrics_snapshot()
        except Exception as exc:  # a scrape must not fail: report the database as unreachable instead
            logger.warning("metrics: could not read the database (%s)", " ".join(str(exc).split())[:200])
            up = GaugeMetricFamily("jobstead_database_up", "1 if the last scrape could read the database.")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("jobstead_database_up", "1 if the last scrape could read the database.")
        up.add_metric([], 1)
        yield up
        now = snapshot.now
        jobs = GaugeMetricFamily(
            "jobstead_queue_jobs",
            "Jobs by handler, queue and status (succeeded: see finished_total).",
            labels=["handler", "queue", "status"],
        )
        for (handler, queue, status), n in sorted(snapshot.counts.items()):
            jobs.add_metric([handler, queue, status], n)
        yield jobs
        oldest = GaugeMetricFamily(
            "jobstead_queue_oldest_job_age_seconds",
            "Age of the oldest job that could run now but waits (0 when none waits).",
            labels=["handler", "queue"],
        )
        for (handler, queue), run_at in sorted(snapshot.oldest_ready.items()):
            oldest.add_metric([handler, queue], max(0.0, (now - run_at).total_seconds()))
        yield oldest
        workers = GaugeMetricFamily("jobstead_workers", "Worker processes with a recent heartbeat.")
        workers.add_metric([], snapshot.workers)
        yield workers
        limits = GaugeMetricFamily(
            "jobstead_handler_concurrency_limit",
            "Global concurrency limit of each limited handler.",
            labels=["handler"],
        )
        for handler, limit in sorted(snapshot.limits.items()):
            limits.add_metric([handler], limit)
        yield limits
        last = GaugeMetricFamily(
            "jobstead_cron_last_fire_timestamp_seconds", "When each cron last fired (Unix time).", labels=["cron"]
        )
        upcoming = GaugeMetricFamily(
            "jobstead_cron_next_fire_timestamp_seconds",
            "When each enabled cron fires next (Unix time); alert when it is in the past.",
            labels=["cron"],
        )
        for cron in snapshot.crons:
            if cron.last_fire_at is not None:
                last.add_metric([cron.name], cron.last_fire_at.timestamp())
            if cron.enabled:
                try:
                    schedule = CronSchedule.parse(cron.schedule, cron.timezone)
                except InvalidSchedule:
                    continue
                upcoming.add_metric([cron.name], schedule.next_after(max(cron.handled_until, now)).timestamp())
        yield last
        yield upcoming
        batches = GaugeMetricFamily(
            "jobstead_batches",
            "Batches by tenant and status (tenant is empty unless tenant labels were asked for).",
            labels=["tenant", "status"],
        )
        totals: dict[tuple[str, str], int] = {}
        for (tenant, status), n in snapshot.batches.items():
            key = ((tenant or "") if self._tenant_labels else "", status)
            totals[key] = totals.get(key, 0) + n
        for key, n in sorted(totals.items()):
            batches.add_metric(list(key), n)
        yield batches
