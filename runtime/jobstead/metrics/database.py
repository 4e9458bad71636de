"""Gauges read from the database at scrape time: collected by ONE process, not by every worker.

The operator serves them, or ``jobstead metrics --port P --database-url URL``.
Every figure comes from one grouped query per scrape over the partial indexes
the claim path already keeps (``jobs_active``: every job that is not a
success), so a scrape of a table with a million finished jobs reads only
the unfinished ones.

``DatabaseGauges`` builds the families from one or several snapshots: the
operator, which serves every database it manages, adds a ``database`` label
so that their series stay apart (each family appears once per scrape, as the
exposition format requires).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..cron.schedule import CronSchedule, InvalidSchedule
from ..status import JobStatus
from ..store import Store
from ..store.queries import MetricsSnapshot

logger = logging.getLogger("jobstead.metrics")


class DatabaseGauges:
    """The database-wide families, filled by ``add`` once per database; ``extra`` labels come first."""

    def __init__(self, *, tenant_labels: bool = False, extra: Sequence[str] = ()) -> None:
        self._tenant_labels = tenant_labels
        extra = list(extra)
        self.up = GaugeMetricFamily(
            "jobstead_database_up", "1 if the last scrape could read the database.", labels=extra
        )
        self.jobs = GaugeMetricFamily(
            "jobstead_queue_jobs",
            "Jobs by handler, queue and status (succeeded: see finished_total).",
            labels=[*extra, "handler", "queue", "status"],
        )
        self.oldest = GaugeMetricFamily(
            "jobstead_queue_oldest_job_age_seconds",
            "Age of the oldest job that could run now but waits (0 when none waits).",
            labels=[*extra, "handler", "queue"],
        )
        self.workers = GaugeMetricFamily("jobstead_workers", "Worker processes with a recent heartbeat.", labels=extra)
        self.limits = GaugeMetricFamily(
            "jobstead_handler_concurrency_limit",
            "Global concurrency limit of each limited handler.",
            labels=[*extra, "handler"],
        )
        self.last = GaugeMetricFamily(
            "jobstead_cron_last_fire_timestamp_seconds",
            "When each cron last fired (Unix time).",
            labels=[*extra, "cron"],
        )
        self.upcoming = GaugeMetricFamily(
            "jobstead_cron_next_fire_timestamp_seconds",
            "When each enabled cron fires next (Unix time); alert when it is in the past.",
            labels=[*extra, "cron"],
        )
        self.batches = GaugeMetricFamily(
            "jobstead_batches",
            "Batches by tenant and status (tenant is empty unless tenant labels were asked for).",
            labels=[*extra, "tenant", "status"],
        )

        self.blocked = GaugeMetricFamily(
            "jobstead_jobs_blocked",
            "Workflow steps waiting for their dependencies (never claimed until released), by handler and queue.",
            labels=[*extra, "handler", "queue"],
        )

        self.concurrency_limit = GaugeMetricFamily(
            "jobstead_concurrency_limit",
            "Each concurrency limit of a handler: scope global (jobs running at once) or per_key (per key value).",
            labels=[*extra, "handler", "scope"],
        )
        self.concurrency_in_use = GaugeMetricFamily(
            "jobstead_concurrency_in_use",
            "Jobs running under each concurrency limit (per_key: those of the busiest key).",
            labels=[*extra, "handler", "scope"],
        )
        self.concurrency_keys_at_limit = GaugeMetricFamily(
            "jobstead_concurrency_keys_at_limit",
            "Keys of a limit per key that are at it now (their next jobs wait).",
            labels=[*extra, "handler"],
        )
        rate = [*extra, "handler", "name", "scope"]
        self.rate_limit = GaugeMetricFamily(
            "jobstead_rate_limit",
            "Starts each rate allows per period: a handler's own (scope global or per_key) or a shared one (name).",
            labels=rate,
        )
        self.rate_period = GaugeMetricFamily(
            "jobstead_rate_limit_period_seconds", "The period of each rate limit.", labels=rate
        )
        self.rate_used = GaugeMetricFamily(
            "jobstead_rate_limit_used",
            "Starts within each rate's last period (per_key: the busiest key's).",
            labels=rate,
        )
        self.rate_keys_at_limit = GaugeMetricFamily(
            "jobstead_rate_limit_keys_at_limit",
            "Keys of a rate per key whose window is full now (their next jobs wait).",
            labels=[*extra, "handler"],
        )

    def add(self, snapshot: MetricsSnapshot | None, extra: Sequence[str] = ()) -> None:
        """One database's figures; ``None``: it could not be read (``jobstead_database_up`` 0, nothing else)."""
        labels = list(extra)
        self.up.add_metric(labels, 0 if snapshot is None else 1)
        if snapshot is None:
            return
        now = snapshot.now
        for (handler, queue, status), n in sorted(snapshot.counts.items()):
            self.jobs.add_metric([*labels, handler, queue, status], n)
        blocked: dict[tuple[str, str], int] = {}
        for (handler, queue, status), n in snapshot.counts.items():
            if status == JobStatus.BLOCKED.value:
                blocked[(handler, queue)] = blocked.get((handler, queue), 0) + n
        for (handler, queue), n in sorted(blocked.items()):
            self.blocked.add_metric([*labels, handler, queue], n)
        for (handler, queue), run_at in sorted(snapshot.oldest_ready.items()):
            self.oldest.add_metric([*labels, handler, queue], max(0.0, (now - run_at).total_seconds()))
        self.workers.add_metric(labels, snapshot.workers)
        for handler, limit in sorted(snapshot.limits.items()):
            self.limits.add_metric([*labels, handler], limit)
        for cron in snapshot.crons:
            if cron.last_fire_at is not None:
                self.last.add_metric([*labels, cron.name], cron.last_fire_at.timestamp())
            if cron.enabled:
                try:
                    schedule = CronSchedule.parse(cron.schedule, cron.timezone)
                except InvalidSchedule:
                    continue
                self.upcoming.add_metric(
                    [*labels, cron.name], schedule.next_after(max(cron.handled_until, now)).timestamp()
                )
        self._add_flow(snapshot, labels)
        totals: dict[tuple[str, str], int] = {}
        for (tenant, status), n in snapshot.batches.items():
            key = ((tenant or "") if self._tenant_labels else "", status)
            totals[key] = totals.get(key, 0) + n
        for (tenant, status), n in sorted(totals.items()):
            self.batches.add_metric([*labels, tenant, status], n)

    def _add_flow(self, snapshot: MetricsSnapshot, labels: list[str]) -> None:
        """Each limit and its use, as ``jobstead stats`` shows them: one series per limit, never per key."""
        for use in snapshot.flow:
            handler = use.handler or ""
            if use.limit in ("concurrency", "concurrency_per_key"):
                scope = "global" if use.limit == "concurrency" else "per_key"
                self.concurrency_limit.add_metric([*labels, handler, scope], use.of)
                self.concurrency_in_use.add_metric([*labels, handler, scope], use.in_use)
                if use.at_limit is not None:
                    self.concurrency_keys_at_limit.add_metric([*labels, handler], use.at_limit)
                continue
            if use.limit.startswith("rate_limits:"):
                rate = [*labels, "", use.limit.removeprefix("rate_limits:"), "shared"]
            else:
                rate = [*labels, handler, "", "per_key" if use.limit == "rate_limit_per_key" else "global"]
            self.rate_limit.add_metric(rate, use.of)
            self.rate_period.add_metric(rate, use.per or 0.0)
            self.rate_used.add_metric(rate, use.in_use)
            if use.at_limit is not None:
                self.rate_keys_at_limit.add_metric([*labels, handler], use.at_limit)

    def families(self) -> list[GaugeMetricFamily]:
        return [
            self.up,
            self.jobs,
            self.oldest,
            self.workers,
            self.limits,
            self.last,
            self.upcoming,
            self.batches,
            self.blocked,
            self.concurrency_limit,
            self.concurrency_in_use,
            self.concurrency_keys_at_limit,
            self.rate_limit,
            self.rate_period,
            self.rate_used,
            self.rate_keys_at_limit,
        ]


def read_snapshot(store: Store, where: str) -> MetricsSnapshot | None:
    """The snapshot, or ``None`` with one warning: a scrape must not fail because one database is down."""
    try:
        return store.queries.metrics_snapshot()
    except Exception as exc:
        logger.warning("metrics: could not read %s (%s)", where, " ".join(str(exc).split())[:200])
        return None


class DatabaseCollector(Collector):
    """The gauges of one database, for ``jobstead metrics`` (no extra label: one process per database).

    ``store`` is None while the database is still starting (the process waits
    for it): the scrape says ``jobstead_database_up 0`` rather than failing.
    """

    def __init__(self, store: Store | None, *, tenant_labels: bool = False) -> None:
        self.store = store
        self._tenant_labels = tenant_labels

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauges = DatabaseGauges(tenant_labels=self._tenant_labels)
        store = self.store
        gauges.add(None if store is None else read_snapshot(store, "the database"))
        yield from gauges.families()
