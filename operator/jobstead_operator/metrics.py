"""The operator's Prometheus metrics: its own work, and the database-wide gauges of every database it manages.

Served on ``jobstead operator --metrics-port`` (or ``$JOBSTEAD_OPERATOR_METRICS_PORT``) from
prometheus-client's default registry, so the cron fires this operator's
schedulers defer (``jobstead_jobs_deferred_total``) show there too.

Its own:

* ``jobstead_operator_reconcile_total{kind,result}``: reconciles of a
  JobHandler or CronSchedule (on create, spec change, start, or when a tick
  finds the Secret moved); ``result`` is ``success``, the ``Ready`` reason
  that stood in the way (``DatabaseUnavailable``, ``InvalidSpec``, ...), or
  ``error`` for anything else (an API error kopf retries).
* ``jobstead_operator_desired_replicas{namespace,jobhandler}``: worker pods
  the scaler asked for at its last tick.
* ``jobstead_operator_scale_decisions_total{namespace,jobhandler,direction}``:
  replica changes made (``up`` or ``down``), by the tick or a wake-up from zero.

The database-wide gauges (``metrics.database``) carry one more label,
``database``: the operator may serve many apps' databases, whose handler and
queue names can be the same. Only databases this replica called within the
last ``FRESH_SECONDS`` are shown: a replica that peering paused stops its
ticks, so the same database is never reported by two replicas at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jobstead.config import DEFAULT_TABLE_PREFIX
from jobstead.metrics.database import DatabaseGauges
from jobstead.metrics.worker import package_version
from jobstead.store.drivers import driver_for
from jobstead.store.queries import MetricsSnapshot

from .binding import NotReady
from .databases import AppDatabase, Databases
from .targets import DatabaseTarget

logger = logging.getLogger("jobstead.operator")

#: A database not called for this long belongs to a paused replica (or no resource ticks on it).
FRESH_SECONDS = 30.0
#: A scrape waits this long for one database; a database that hangs shows ``jobstead_database_up`` 0.
SNAPSHOT_TIMEOUT_SECONDS = 10.0


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.reconciles = Counter(
            "jobstead_operator_reconcile",
            "Reconciles of a JobHandler or CronSchedule, by result (success, or the Ready reason against it).",
            ["kind", "result"],
            registry=registry,
        )
        self.desired = Gauge(
            "jobstead_operator_desired_replicas",
            "Worker pods the scaler asked for at its last tick.",
            ["namespace", "jobhandler"],
            registry=registry,
        )
        self.scale_decisions = Counter(
            "jobstead_operator_scale_decisions",
            "Replica changes of worker Deployments, up or down.",
            ["namespace", "jobhandler", "direction"],
            registry=registry,
        )
        self.info = Info("jobstead_operator", "This operator process.", registry=registry)
        self.info.info({"version": package_version()})

    @contextmanager
    def reconciling(self, kind: str) -> Iterator[None]:
        """Count one reconcile by how it ended; the exception goes on."""
        try:
            yield
        except NotReady as exc:
            self.reconciles.labels(kind=kind, result=exc.reason).inc()
            raise
        except Exception:
            self.reconciles.labels(kind=kind, result="error").inc()
            raise
        self.reconciles.labels(kind=kind, result="success").inc()

    def scaled(self, namespace: str, name: str, current: int, desired: int) -> None:
        self.desired.labels(namespace=namespace, jobhandler=name).set(desired)
        if desired != current:
            direction = "up" if desired > current else "down"
            self.scale_decisions.labels(namespace=namespace, jobhandler=name, direction=direction).inc()

    def forget(self, namespace: str, name: str) -> None:
        """A deleted JobHandler's series go (a gauge would otherwise report its last value for ever)."""
        with suppress(KeyError):
            self.desired.remove(namespace, name)
        for direction in ("up", "down"):
            with suppress(KeyError):
                self.scale_decisions.remove(namespace, name, direction)


OPERATOR_METRICS = OperatorMetrics()


def database_label(target: DatabaseTarget) -> str:
    """Which database, without user or password: ``postgresql://host:5432/app`` (every host of a multi-host
    URL), plus schema and prefix if set."""
    url = target.url
    label = f"{url.get_backend_name()}://{driver_for(url).server(url)}/{url.database or ''}"
    extras = []
    if target.schema:
        extras.append(f"schema={target.schema}")
    if target.table_prefix != DEFAULT_TABLE_PREFIX:
        extras.append(f"prefix={target.table_prefix}")
    return label + (f"?{'&'.join(extras)}" if extras else "")


class ManagedDatabasesCollector(Collector):
    """The database-wide gauges of each database this replica serves, labelled by ``database``."""

    def __init__(self, databases: Databases, *, fresh_seconds: float = FRESH_SECONDS) -> None:
        self._databases = databases
        self._fresh_seconds = fresh_seconds

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauges = DatabaseGauges(extra=["database"])
        managed = GaugeMetricFamily("jobstead_operator_databases", "App databases this replica serves now.")
        served = 0
        now = time.monotonic()
        for database in self._databases.open_databases():
            if database.closed or now - database.last_call > self._fresh_seconds:
                continue
            served += 1
            gauges.add(_snapshot(database), [database_label(database.target)])
        managed.add_metric([], served)
        yield managed
        yield from gauges.families()


def _snapshot(database: AppDatabase) -> MetricsSnapshot | None:
    """Read on the database's own threads (its connection bound holds), from the scrape's thread."""
    if not database.schema_current:
        return None
    future = database.executor.submit(database.store.queries.metrics_snapshot)
    try:
        return future.result(timeout=SNAPSHOT_TIMEOUT_SECONDS)
    except FutureTimeout:
        logger.warning("metrics: %s did not answer within %.0f s", database.target.masked, SNAPSHOT_TIMEOUT_SECONDS)
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        logger.warning("metrics: could not read %s (%s)", database.target.masked, database.target.scrub(text))
    return None


def serve(port: int, databases: Databases, *, host: str = "0.0.0.0") -> None:
    """Start the exporter on ``port``: the operator's metrics, the deferred counter, every managed database."""
    from jobstead.metrics.server import serve_metrics

    REGISTRY.register(ManagedDatabasesCollector(databases))
    serve_metrics(port, host=host)
