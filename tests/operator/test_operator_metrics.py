"""The operator's metrics without a cluster: counts, worker pods' metrics port, and gauges per managed database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobstead import App
from jobstead_operator.binding import NotReady
from jobstead_operator.databases import Databases
from jobstead_operator.deployment import build_deployment
from jobstead_operator.metrics import ManagedDatabasesCollector, OperatorMetrics, database_label
from jobstead_operator.reasons import Reason
from jobstead_operator.spec import JobHandlerSpec
from jobstead_operator.targets import parse_target

BASE: dict[str, Any] = {
    "handler": "send_email",
    "app": "shop.jobs:app",
    "image": "shop:1",
    "database": {"secretRef": {"name": "shop-db"}},
    "concurrency": 4,
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def worker(operator_default: int | None, **metrics: Any) -> dict[str, Any]:
    spec = JobHandlerSpec.parse({**BASE, **({"metrics": metrics} if metrics else {})})
    pod = build_deployment("mailer", "shop", spec, replicas=1, metrics_port=operator_default)["spec"]["template"]
    return pod  # type: ignore[no-any-return]


def test_worker_pods_serve_metrics_where_the_resource_or_the_operator_says() -> None:
    off = worker(None)
    assert "--metrics-port" not in off["spec"]["containers"][0]["command"]
    assert "ports" not in off["spec"]["containers"][0]
    assert "annotations" not in off["metadata"]

    on = worker(9090)
    container = on["spec"]["containers"][0]
    assert container["command"][-2:] == ["--metrics-port", "9090"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert on["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}

    own_port = worker(9090, port=9300)["spec"]["containers"][0]
    assert own_port["command"][-2:] == ["--metrics-port", "9300"]
    assert "--metrics-port" not in worker(9090, enabled=False)["spec"]["containers"][0]["command"]
    opted_in = worker(None, enabled=True)["spec"]["containers"][0]
    assert opted_in["command"][-2:] == ["--metrics-port", "9090"], "the default port when nobody names one"


def test_reconciles_and_scaling_decisions_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)

    async def reconcile(outcome: BaseException | None) -> None:
        with metrics.reconciling("JobHandler"):
            if outcome is not None:
                raise outcome

    for outcome in (None, None, NotReady(Reason.DATABASE_UNAVAILABLE, "down"), RuntimeError("API")):
        with contextlib.suppress(NotReady, RuntimeError):
            asyncio.run(reconcile(outcome))
    metrics.scaled("shop", "mailer", 0, 3)
    metrics.scaled("shop", "mailer", 3, 3)
    metrics.scaled("shop", "mailer", 3, 1)
    found = samples(registry)
    total = "jobstead_operator_reconcile_total"
    assert value(found, total, kind="JobHandler", result="success") == 2
    assert value(found, total, kind="JobHandler", result="DatabaseUnavailable") == 1
    assert value(found, total, kind="JobHandler", result="error") == 1
    assert value(found, "jobstead_operator_desired_replicas", namespace="shop", jobhandler="mailer") == 1
    decisions = "jobstead_operator_scale_decisions_total"
    assert value(found, decisions, namespace="shop", jobhandler="mailer", direction="up") == 1
    assert value(found, decisions, namespace="shop", jobhandler="mailer", direction="down") == 1
    assert value(found, "jobstead_operator_info", version=_version(found)) == 1

    metrics.forget("shop", "mailer")
    assert value(samples(registry), "jobstead_operator_desired_replicas", namespace="shop", jobhandler="mailer") is None


def _version(found: Samples) -> str:
    ((_, labels),) = [key for key in found if key[0] == "jobstead_operator_info"]
    return dict(labels)["version"]


def test_a_database_label_names_the_database_never_its_credentials() -> None:
    target = parse_target(
        "postgresql+psycopg://shop:s3cret-pw@db.internal:5433/shop",
        schema="jobs",
        table_prefix="shop_",
        where="x",
    )
    label = database_label(target)
    assert label == "postgresql://db.internal:5433/shop?schema=jobs&prefix=shop_"
    assert "s3cret" not in label and "shop:" not in label


@pytest.mark.parametrize("fresh", [True, False])
def test_managed_databases_are_labelled_and_a_paused_replicas_are_not_shown(tmp_path: Path, fresh: bool) -> None:
    urls = {key: f"sqlite:///{tmp_path / key}.db" for key in ("a", "b")}
    for key, url in urls.items():
        app = App(url)
        app.handler(name="work", queue="default", concurrency=2)(lambda: None)
        app.migrate()
        app.get_handler("work").defer_many([{} for _ in range(3 if key == "a" else 5)])
        app.close()

    async def scenario() -> Samples:
        pool = Databases(republish_every=3600)
        try:
            for key, url in urls.items():
                target = parse_target(url, schema=None, table_prefix=None, where="x")
                database, _ = await pool.use(("JobHandler", "ns", key), target)
                await pool.ready(database)
                await database.call(database.store.registry.handler, "work")  # a tick of this replica
                if not fresh:
                    database.last_call = time.monotonic() - 3600  # paused: its ticks stopped long ago
            registry = CollectorRegistry()
            registry.register(ManagedDatabasesCollector(pool))
            return await asyncio.get_running_loop().run_in_executor(None, samples, registry)
        finally:
            await pool.close_all()

    found = asyncio.run(scenario())
    labels = {key: f"sqlite:///{tmp_path / key}.db" for key in urls}
    if not fresh:
        assert value(found, "jobstead_operator_databases") == 0
        assert not [k for k in found if k[0] == "jobstead_queue_jobs"]
        return
    assert value(found, "jobstead_operator_databases") == 2
    for key, n in (("a", 3), ("b", 5)):
        where = labels[key]
        assert value(found, "jobstead_database_up", database=where) == 1
        queued = value(found, "jobstead_queue_jobs", database=where, handler="work", queue="default", status="queued")
        assert queued == n
        assert value(found, "jobstead_handler_concurrency_limit", database=where, handler="work") == 2
