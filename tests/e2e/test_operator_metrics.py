"""The operator's /metrics and kopf's liveness endpoint, scraped from a real operator on the local control plane.

One JobHandler (at most one worker pod, so its metrics port is free on this
host) drains a known workload while a far-future job and a cron stay in its
database: the operator's own counters show the reconciles (a CronSchedule
with a time zone that does not exist among them), the scale-up and the
scale-down; its database-wide gauges, labelled with the database, equal the
table; the worker pod it started serves its own metrics on the port the
operator gave it.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kubernetes import client

from jobstead import App
from tests.e2e.test_operator import (
    GROUP,
    VERSION,
    Operator,
    cron_schedule,
    custom,
    database_secret,
    deployment,
    job_handler,
    ready_condition,
    wait_until,
)
from tests.multiprocess.test_metrics import scrape, value
from tests.support.controlplane import Cluster
from tests.support.kubelet import FakeKubelet
from tests.support.postgres_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def kubelet(kube_api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubelet]:
    harness = FakeKubelet(kube_api, log_dir=tmp_path_factory.mktemp("pods")).start()
    yield harness
    harness.stop()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scraped(port: int) -> Samples | None:
    try:
        return scrape(port)
    except OSError:
        return None


def test_operator_metrics_count_reconciles_scaling_and_show_each_databases_gauges(
    kube_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    namespace: str,
    pg_url: str,
    tmp_path: Path,
    kubelet: FakeKubelet,
) -> None:
    from tests.apps import probes

    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    app = App(pg_url, schema=schema)
    app.handler(name="e2e_work")(probes.app.get_handler("e2e_work").func)
    app.migrate()
    database_secret(kube_api, namespace, pg_url, schema)
    port, health, worker_port = free_port(), free_port(), free_port()
    operator = Operator(
        kube_cluster,
        namespace,
        tmp_path / "operator.log",
        extra=[
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
            "--liveness-endpoint",
            f"http://127.0.0.1:{health}/healthz",
            "--worker-metrics-port",
            str(worker_port),
        ],
    )
    try:
        _scenario(kube_api, namespace, app, schema, pg_url, port, health, worker_port)
    finally:
        operator.stop()
        app.close()
        print(f"operator log: {tmp_path / 'operator.log'}")


def _scenario(
    api: client.ApiClient,
    ns: str,
    app: App,
    schema: str,
    pg_url: str,
    port: int,
    health: int,
    worker_port: int,
) -> None:
    objects = custom(api)
    objects.create_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", cron_schedule("probe"))
    objects.create_namespaced_custom_object(
        GROUP, VERSION, ns, "cronschedules", cron_schedule("elsewhere", timeZone="Mars/Olympus_Mons")
    )
    wait_until(lambda: ready_condition(api, ns, "cronschedules", "probe"), 30, "the operator to serve")
    with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=10) as response:
        assert response.status == 200, "kopf's liveness endpoint answers"

    later = app.get_handler("e2e_work").configure(delay=3600).defer(i=0)
    handler = job_handler("metered", concurrency=2, perPodConcurrency=2, maxReplicas=1)
    objects.create_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", handler)
    wait_until(lambda: deployment(api, ns, "metered"), 10, "the worker Deployment")
    n = 6
    jobs = app.get_handler("e2e_work").defer_many([{"i": i} for i in range(1, n + 1)])

    # the pod the operator started serves its own metrics on the port it was given
    worker = wait_until(
        lambda: (
            (s := scraped(worker_port)) is not None
            and value(s, "jobstead_jobs_finished_total", handler="e2e_work", queue="default", outcome="succeeded") == n
            and s
        ),
        60,
        "the worker pod's metrics to count every job",
    )
    assert value(worker, "jobstead_job_duration_seconds_count", handler="e2e_work", queue="default") == n
    assert all(j.refresh().status.value == "succeeded" for j in jobs)

    database = _label(pg_url, schema)
    samples = wait_until(lambda: scraped(port), 10, "the operator's metrics")
    total = "jobstead_operator_reconcile_total"
    assert value(samples, total, kind="JobHandler", result="success") >= 1
    assert value(samples, total, kind="CronSchedule", result="success") >= 1
    assert value(samples, total, kind="CronSchedule", result="InvalidTimeZone") >= 1
    decisions = "jobstead_operator_scale_decisions_total"
    assert value(samples, decisions, namespace=ns, jobhandler="metered", direction="up") >= 1
    assert value(samples, "jobstead_operator_databases") == 1
    assert value(samples, "jobstead_database_up", database=database) == 1
    where = {"database": database, "handler": "e2e_work", "queue": "default"}
    scheduled = value(samples, "jobstead_queue_jobs", **where, status="scheduled")
    assert scheduled == _count(pg_url, schema, "scheduled") == 1
    assert value(samples, "jobstead_handler_concurrency_limit", database=database, handler="e2e_work") == 2
    next_fire = value(samples, "jobstead_cron_next_fire_timestamp_seconds", database=database, cron="probe")
    assert next_fire > time.time(), "the probe cron fires in the future"
    assert not [key for key in samples if "s3cret" in str(key)]

    # idle past the cool-down: down to zero, counted, and the gauge says so
    wait_until(
        lambda: (
            value(scrape(port), "jobstead_operator_desired_replicas", namespace=ns, jobhandler="metered") == 0
            and value(scrape(port), decisions, namespace=ns, jobhandler="metered", direction="down") >= 1
        ),
        60,
        "the scale-down to be counted",
        every=0.5,
    )
    assert later.refresh().status.value == "scheduled"

    # a deleted JobHandler's series go with it
    objects.delete_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "metered")

    def gone() -> bool:
        return not [k for k in scrape(port) if k[0] == "jobstead_operator_desired_replicas" and ns in str(k[1])]

    wait_until(gone, 30, "the deleted JobHandler's gauge to go", every=0.5)


def _label(pg_url: str, schema: str) -> str:
    url = sa.make_url(pg_url)
    return f"postgresql://{url.host}:{url.port}/{url.database}?schema={schema}"


def _count(pg_url: str, schema: str, status: str) -> int:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            query = sa.text(f'SELECT count(*) FROM "{schema}".jobstead_jobs WHERE status = :status')
            return int(conn.execute(query, {"status": status}).scalar_one())
    finally:
        engine.dispose()
