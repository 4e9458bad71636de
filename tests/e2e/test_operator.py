"""The operator against the local control plane: JobHandlers become handler rows and worker pods.

The worker Pods run on the local node when the session has one (containers of
the test app's image, a real kubelet's SIGTERM and restarts), else on the
kubelet harness as local ``jobstead worker`` processes (``tests/e2e/pods.py``):
what is measured here (replicas, the global limit, the queue draining) is what
a cluster would do either way.

Who runs the operator: the JobHandler tests take ``setup``, which on the local
node is a namespace watched by the chart's operator, a Pod installed once for
the session with ``helm install`` (``chart_operator.py``), and without a node a
``jobstead operator`` process started for the test. ``own_operator`` is the
same for a test whose operator needs other settings than the session's (a 30 s
scale tick, a 12 s cool-down): on the node a chart install of its own, its
settings as chart values. The rest start a local process:
- the CronSchedule tests (``local_setup``): no Pod runs for them, and one
  restarts its operator, which with a Pod means waiting for a new Pod to start
  and lead, for nothing the test is about;
- the database outage and the webhook tests start their own operator: the
  outage's PostgreSQL and the webhook listen on 127.0.0.1 of this machine,
  which no Pod reaches (the chart's webhook through its Service is in
  ``test_node_operator.py``).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobstead import App, JobStatus
from tests.e2e.chart_operator import (
    IDLE_COOLDOWN_SECONDS,
    SCALE_DOWN_WINDOW_SECONDS,
    WORKER_DEFAULTS,
    ChartOperator,
)
from tests.e2e.conftest import pod_database_url
from tests.e2e.pods import HARNESS_IMAGE, WorkerPods
from tests.multiprocess.test_crash_and_limits import _peak
from tests.support.controlplane import Cluster
from tests.support.postgres_server import PostgresServer
from tests.support.processes import spawn_cli, stop
from tests.support.scratch import server_root

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

GROUP, VERSION = "jobstead.io", "v1alpha1"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def pg_url(pg_url: str, worker_pods: WorkerPods, kube_cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """The session's database, or on the local node one the worker Pods reach (at the node's address)."""
    if worker_pods.harness:
        return pg_url
    return pod_database_url(request.getfixturevalue("pod_reachable_pg"), kube_cluster, "operator_tests")


class Operator:
    """``jobstead operator`` as a process, pointed at one namespace; by default with no database of its own."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log: Path,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = [
            "operator",
            "-n",
            namespace,
            "--standalone",
            "--scale-down-window",
            str(SCALE_DOWN_WINDOW_SECONDS),
            "--idle-cooldown",
            str(IDLE_COOLDOWN_SECONDS),
            *extra,
        ]
        self.env = {
            **cluster.env(),
            "JOBSTEAD_DATABASE_URL": "",  # none: every resource names its app's database
            "JOBSTEAD_CRON_REPUBLISH_SECONDS": "2",
            **(env or {}),
        }
        self.log = log
        self.process = spawn_cli(self.args, self.env, log)

    def restart(self) -> None:
        assert stop(self.process) == 0
        self.process = spawn_cli(self.args, self.env, self.log)

    def stop(self) -> None:
        stop(self.process)


def database_secret(
    api: client.ApiClient, namespace: str, url: str, schema: str | None = None, name: str = "jobs-db"
) -> None:
    """The app's database Secret: its URL and, when the app uses one, its schema (workers and operator read both)."""
    data = {"url": url, **({"schema": schema} if schema else {})}
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        ),
    )


def _test_app(api: client.ApiClient, namespace: str, pg_url: str) -> tuple[App, str]:
    """A schema of its own in the module's database, migrated, and the namespace's Secret naming it."""
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    app = App(pg_url, schema=schema)
    from tests.apps import probes

    app.handler(name="e2e_work")(probes.app.get_handler("e2e_work").func)
    app.migrate()
    database_secret(api, namespace, pg_url, schema)
    return app, schema


@pytest.fixture
def setup(
    chart_operator: ChartOperator | None,
    kube_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    pg_url: str,
    tmp_path: Path,
    worker_pods: WorkerPods,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, Any]]:
    """A namespace with its app, served by the chart's operator Pod on the local node, else by a local process."""
    namespace = (
        chart_operator.take_namespace(request.node.nodeid) if chart_operator else request.getfixturevalue("namespace")
    )
    app, schema = _test_app(kube_api, namespace, pg_url)
    operator = None
    if not chart_operator:
        operator = Operator(
            kube_cluster,
            namespace,
            tmp_path / "operator.log",
            env={"JOBSTEAD_WORKER_DEFAULTS": json.dumps(WORKER_DEFAULTS)},
        )
    yield {
        "app": app,
        "schema": schema,
        "operator": operator,
        "chart": chart_operator,
        "namespace": namespace,
        "image": worker_pods.image,
    }
    if chart_operator:
        chart_operator.finish(namespace)
    else:
        assert operator is not None
        operator.stop()
        print(f"operator log: {tmp_path / 'operator.log'}")
    app.close()


@pytest.fixture
def local_setup(
    kube_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    namespace: str,
    pg_url: str,
    tmp_path: Path,
    worker_pods: WorkerPods,
) -> Iterator[dict[str, Any]]:
    """As ``setup``, always with ``jobstead operator`` as a local process (the module's docstring says who needs it)."""
    app, schema = _test_app(kube_api, namespace, pg_url)
    operator = Operator(
        kube_cluster,
        namespace,
        tmp_path / "operator.log",
        env={"JOBSTEAD_WORKER_DEFAULTS": json.dumps(WORKER_DEFAULTS)},
    )
    yield {"app": app, "schema": schema, "operator": operator, "namespace": namespace, "image": worker_pods.image}
    operator.stop()
    app.close()
    print(f"operator log: {tmp_path / 'operator.log'}")


@pytest.fixture
def own_operator(
    kube_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    pg_url: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    worker_pods: WorkerPods,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., dict[str, Any]]]:
    """``setup`` with an operator of the test's own settings: on the local node a chart install of its own.

    ``start(chart=VALUES, args=FLAGS, env=VARIABLES)`` says each setting the
    way its operator takes it: chart values for the Pod, flags and variables
    for the local process.
    """
    started: list[tuple[App, ChartOperator | Operator]] = []

    def start(
        chart: dict[str, Any] | None = None, args: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        operator: ChartOperator | Operator
        if kube_cluster.node:
            operator = ChartOperator.install(kube_cluster, 1, tmp_path_factory.mktemp("chart-operator"), chart)
            operator.assert_in_cluster(kube_api)
            namespace = operator.take_namespace(request.node.nodeid)
        else:
            namespace = request.getfixturevalue("namespace")
            defaults = {"JOBSTEAD_WORKER_DEFAULTS": json.dumps(WORKER_DEFAULTS)}
            operator = Operator(kube_cluster, namespace, tmp_path / "operator.log", args, {**defaults, **(env or {})})
        app, schema = _test_app(kube_api, namespace, pg_url)
        started.append((app, operator))
        return {"app": app, "schema": schema, "namespace": namespace, "image": worker_pods.image}

    yield start
    for app, operator in started:
        if isinstance(operator, ChartOperator):
            operator.uninstall()
        else:
            operator.stop()
            print(f"operator log: {operator.log}")
        app.close()


def job_handler(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobHandler",
        "metadata": {"name": name},
        "spec": {
            "handler": "e2e_work",
            "app": "tests.apps.probes:app",
            "image": HARNESS_IMAGE,
            "concurrency": 6,
            "perPodConcurrency": 2,
            "minReplicas": 0,
            "maxReplicas": 5,
            "database": {"secretRef": {"name": "jobs-db"}},
            "shutdownGraceSeconds": 5,
            **spec,
        },
    }


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def deployment(api: client.ApiClient, namespace: str, name: str) -> client.V1Deployment | None:
    try:
        return client.AppsV1Api(api).read_namespaced_deployment(f"{name}-worker", namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def ready_condition(api: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    obj = custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready":
            return condition  # type: ignore[no-any-return]
    return None


def events_for(api: client.ApiClient, namespace: str, name: str) -> list[client.CoreV1Event]:
    events = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return list(events.items)


def test_jobhandler_scales_workers_with_the_queue_within_the_limit(
    setup: dict[str, Any], kube_api: client.ApiClient, worker_pods: WorkerPods
) -> None:
    ns, app = setup["namespace"], setup["app"]
    # first make sure the operator is serving (a probe resource gets its condition), then time the apply;
    # suspended, the probe never fires (every 5 minutes it added a job to the 500 counted at the end)
    probe = cron_schedule("probe", suspend=True)
    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", probe)
    wait_until(lambda: ready_condition(kube_api, ns, "cronschedules", "probe"), 30, "the operator to serve")
    applied = time.monotonic()
    custom(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "jobhandlers", job_handler("mailer", image=setup["image"])
    )
    wait_until(lambda: deployment(kube_api, ns, "mailer"), 10, "the worker Deployment")
    wait_until(lambda: app.store.registry.handler("e2e_work") or None, 10, "the handler row")
    took = time.monotonic() - applied
    print(f"JobHandler -> handler row and Deployment in {took:.2f} s")
    assert took < 2, "handler row and Deployment should follow the resource within 2 s"
    row = app.store.registry.handler("e2e_work")
    assert row is not None and row.source == "crd" and row.concurrency == 6
    dep = deployment(kube_api, ns, "mailer")
    assert dep is not None and dep.spec.replicas == 0
    assert dep.metadata.owner_references[0].kind == "JobHandler"
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert env.get("FROM_DEFAULTS") == "yes", "the chart's workerDefaults reach every worker Deployment"
    wait_until(
        lambda: (ready_condition(kube_api, ns, "jobhandlers", "mailer") or {}).get("status") == "True", 15, "Ready=True"
    )

    jobs = app.get_handler("e2e_work").defer_many([{"i": i} for i in range(500)])
    seen: list[int] = []

    def drained() -> bool:
        d = deployment(kube_api, ns, "mailer")
        seen.append(d.spec.replicas if d else 0)
        return (
            app.store.queries.handler_load("e2e_work").due == 0
            and app.store.queries.handler_load("e2e_work").running == 0
        )

    wait_until(drained, 120, "the queue to drain", every=0.2)
    assert max(seen) == 3, f"replicas should reach the cap ceil(6/2) = 3 and never pass it: {sorted(set(seen))}"
    results = [app.get_job(j.id) for j in jobs]
    assert all(r.status is JobStatus.SUCCEEDED for r in results)
    spans = [(r.result["start"], r.result["end"]) for r in results]
    assert _peak(spans) <= 6, "the global concurrency limit was exceeded"
    assert len({r.result["pod"] for r in results}) > 1, "several worker pods took part"

    # back to minReplicas (0) after the window and the idle cool-down
    wait_until(lambda: deployment(kube_api, ns, "mailer").spec.replicas == 0, 40, "scale to zero")
    wait_until(lambda: not worker_pods.running(ns), 40, "the worker pods to stop")
    status = custom(kube_api).get_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "mailer")["status"]
    assert status["queued"] == 0 and status["running"] == 0 and status["replicas"] == 0
    if chart := setup["chart"]:
        # Every scaling Event here names the chart's Pod as the operator that posted it: no local process acted.
        assert chart.reporters(kube_api, ns) == {chart.pod()["metadata"]["name"]}

    # deleting the resource removes the Deployment (garbage collection), never the jobs
    custom(kube_api).delete_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "mailer")
    wait_until(lambda: deployment(kube_api, ns, "mailer") is None, 30, "the Deployment to be collected")
    assert sum(app.store.queries.stats().by_status.values()) == 500


def test_missing_secret_is_reported_and_other_resources_are_served(
    setup: dict[str, Any], kube_api: client.ApiClient, pg_url: str
) -> None:
    ns = setup["namespace"]
    broken = job_handler("broken", database={"secretRef": {"name": "nope"}})
    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", broken)
    condition = wait_until(lambda: ready_condition(kube_api, ns, "jobhandlers", "broken"), 20, "a condition")
    assert condition["status"] == "False" and condition["reason"] == "SecretNotFound"
    assert "spec.database.secretRef" in condition["message"] and "nope" in condition["message"]
    # kopf posts Events from a queue of its own: the status may land first
    wait_until(lambda: any(e.reason == "SecretNotFound" for e in events_for(kube_api, ns, "broken")), 10, "the Event")
    assert deployment(kube_api, ns, "broken") is None

    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", job_handler("fine"))
    wait_until(lambda: deployment(kube_api, ns, "fine"), 15, "the healthy resource's Deployment")

    # the Secret appears: the broken resource recovers on its own
    database_secret(kube_api, ns, pg_url, setup["schema"], name="nope")
    wait_until(
        lambda: (ready_condition(kube_api, ns, "jobhandlers", "broken") or {}).get("status") == "True",
        40,
        "recovery once the Secret exists",
        every=0.5,
    )


def test_operator_survives_a_database_outage(
    kube_cluster: Cluster, kube_api: client.ApiClient, jobstead_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    server = PostgresServer(root=server_root("jobstead-pg-")).start()
    try:
        url = server.create_database("outage")
        schema = "outage"
        App(url, schema=schema).migrate()
        database_secret(kube_api, namespace, url, schema)
        operator = Operator(kube_cluster, namespace, tmp_path / "operator.log")
        try:
            server.stop()
            custom(kube_api).create_namespaced_custom_object(
                GROUP, VERSION, namespace, "jobhandlers", job_handler("during-outage")
            )
            condition = wait_until(
                lambda: ready_condition(kube_api, namespace, "jobhandlers", "during-outage"),
                30,
                "a condition during the outage",
                every=0.5,
            )
            assert condition["status"] == "False" and condition["reason"] == "DatabaseUnavailable"
            assert operator.process.poll() is None, "the operator must keep running"
            server.restart_stopped()
            wait_until(
                lambda: (
                    (ready_condition(kube_api, namespace, "jobhandlers", "during-outage") or {}).get("status") == "True"
                ),
                60,
                "recovery after the database is back",
                every=0.5,
            )
            store = App(url, schema=schema).store
            assert store.registry.handler("e2e_work") is not None
        finally:
            operator.stop()
    finally:
        server.cleanup()


def _long_handler(name: str, image: str) -> dict[str, Any]:
    body = job_handler(name, image=image, concurrency=2, perPodConcurrency=1, maxReplicas=2)
    body["spec"]["handler"] = "e2e_long"
    return body


def _register_long(app: App) -> None:
    from tests.apps import probes

    app.handler(name="e2e_long")(probes.app.get_handler("e2e_long").func)


def test_scale_down_removes_the_idle_pod_and_spares_the_busy_one(
    setup: dict[str, Any], kube_api: client.ApiClient, worker_pods: WorkerPods
) -> None:
    ns, app = setup["namespace"], setup["app"]
    _register_long(app)
    custom(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "jobhandlers", _long_handler("longrun", setup["image"])
    )
    wait_until(lambda: deployment(kube_api, ns, "longrun"), 15, "the Deployment")
    long_job = app.get_handler("e2e_long").defer(seconds=14)
    short_job = app.get_handler("e2e_long").defer(seconds=0.3)
    wait_until(lambda: deployment(kube_api, ns, "longrun").spec.replicas == 2, 20, "two pods")
    short_job.wait(60)
    # one job left: after the 3 s window the operator goes down to one pod; the busy one must stay
    wait_until(lambda: deployment(kube_api, ns, "longrun").spec.replicas == 1, 20, "scale down to one pod")
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(ns, label_selector="jobstead.io/jobhandler=longrun").items
    costs = {
        p.metadata.name: (p.metadata.annotations or {}).get("controller.kubernetes.io/pod-deletion-cost") for p in pods
    }
    assert sorted(costs.values()) == ["0", "1"] or list(costs.values()) == ["1"], costs
    assert long_job.wait(60)["pid"]
    long_job.refresh()
    assert long_job.attempts == 1
    assert [a.outcome.value for a in long_job.attempts_log()] == ["succeeded"], "the busy pod was not spared"


def test_a_deleted_pod_hands_its_jobs_back_at_once(
    setup: dict[str, Any], kube_api: client.ApiClient, worker_pods: WorkerPods
) -> None:
    ns, app = setup["namespace"], setup["app"]
    _register_long(app)
    custom(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "jobhandlers", _long_handler("podloss", setup["image"])
    )
    job = app.get_handler("e2e_long").defer(seconds=3)
    wait_until(lambda: job.refresh().status is JobStatus.RUNNING, 60, "the job to start in a pod")
    holder = job.record.lease_owner
    assert holder is not None
    host = next(w["hostname"] for w in app.store.registry.workers() if w["id"] == holder)
    gone_at = time.monotonic()
    worker_pods.kill_and_delete(ns, host)  # the node dies with it: no graceful release
    wait_until(lambda: job.refresh().status is not JobStatus.RUNNING or job.attempts > 1, 15, "the job to be released")
    assert time.monotonic() - gone_at < 10, "released at once, not after the 30 s lease"
    result = job.wait(60)
    assert result["pod"] != host
    log = job.attempts_log()
    assert [a.outcome.value for a in log] == ["lost", "succeeded"], log
    assert log[0].error is not None and log[0].error.type == "jobstead.WorkerGone"


def cron_schedule(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CronSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": "*/5 * * * *",
            "handler": "e2e_work",
            "args": {"i": 1},
            "database": {"secretRef": {"name": "jobs-db"}},
            **spec,
        },
    }


def test_cronschedule_lifecycle_follows_the_resource_and_leaves_other_crons_alone(
    local_setup: dict[str, Any], kube_api: client.ApiClient
) -> None:
    from jobstead.store.records import CronDefinition

    ns, app = local_setup["namespace"], local_setup["app"]
    crons = app.store.crons
    # a hand-made cron, and one with the same name as a resource below: never touched
    crons.add(CronDefinition(name="by-hand", schedule="@daily", handler="e2e_work", source="database"))
    crons.add(CronDefinition(name="taken", schedule="@hourly", handler="e2e_work", source="database"))
    api = custom(kube_api)
    api.create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "cronschedules",
        cron_schedule("report", timeZone="Europe/Tallinn", concurrencyPolicy="Forbid"),
    )
    row = wait_until(lambda: crons.get("report"), 15, "the cron row")
    assert (row.source, row.schedule, row.timezone, row.overlap, row.args) == (
        "crd",
        "*/5 * * * *",
        "Europe/Tallinn",
        "skip",
        {"i": 1},
    )
    wait_until(
        lambda: (ready_condition(kube_api, ns, "cronschedules", "report") or {}).get("status") == "True",
        15,
        "Ready=True",
    )

    api.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "cronschedules", "report", {"spec": {"schedule": "0 6 * * 1-5"}}
    )
    wait_until(lambda: crons.get("report").schedule == "0 6 * * 1-5", 15, "the edit to reach the row")
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", "report", {"spec": {"suspend": True}})
    wait_until(lambda: not crons.get("report").enabled, 15, "suspend to disable the row")

    api.create_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", cron_schedule("taken"))
    condition = wait_until(lambda: ready_condition(kube_api, ns, "cronschedules", "taken"), 15, "a condition")
    assert condition["status"] == "False" and condition["reason"] == "NameTaken"
    assert crons.get("taken").source == "database"

    api.delete_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", "report")
    wait_until(lambda: crons.get("report") is None, 15, "the finalizer to remove the row")
    api.delete_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", "taken")
    wait_until(
        lambda: (
            not any(
                i["metadata"]["name"] == "taken"
                for i in api.list_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules")["items"]
            )
        ),
        15,
        "the resource to go",
    )
    assert crons.get("taken") is not None and crons.get("by-hand") is not None, "crons of other sources stay"


@pytest.mark.parametrize(
    ("spec", "reason", "field"),
    [
        ({"schedule": "61 * * * *"}, "InvalidSchedule", "spec.schedule"),
        ({"schedule": "* * 31 2 *"}, "InvalidSchedule", "spec.schedule"),
        ({"timeZone": "Mars/Olympus_Mons"}, "InvalidTimeZone", "spec.timeZone"),
    ],
)
def test_what_the_schema_cannot_check_is_reported(
    local_setup: dict[str, Any], kube_api: client.ApiClient, spec: dict[str, Any], reason: str, field: str
) -> None:
    ns = local_setup["namespace"]
    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", cron_schedule("bad", **spec))
    condition = wait_until(lambda: ready_condition(kube_api, ns, "cronschedules", "bad"), 15, "a condition")
    assert condition["status"] == "False" and condition["reason"] == reason
    assert condition["message"].startswith(field), condition["message"]
    wait_until(lambda: any(e.reason == reason for e in events_for(kube_api, ns, "bad")), 10, "the Event")
    assert local_setup["app"].store.crons.get("bad") is None


def test_operator_schedules_crons_and_brings_back_deleted_code_crons(
    local_setup: dict[str, Any], kube_api: client.ApiClient, pg_url: str, tmp_path: Path
) -> None:
    ns, app = local_setup["namespace"], local_setup["app"]
    crons = app.store.crons
    api = custom(kube_api)
    api.create_namespaced_custom_object(
        GROUP, VERSION, ns, "cronschedules", cron_schedule("every-second", schedule="* * * * * *")
    )
    # the operator's own scheduler fires it (no app code needed) and reports it in the status
    status = wait_until(
        lambda: (
            (
                api.get_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", "every-second").get("status")
                or {}
            ).get("lastJobId")
            and api.get_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", "every-second")["status"]
        ),
        20,
        "a fire in the status",
    )
    assert status["lastScheduleTime"] and status["nextScheduleTime"]
    job = app.get_job(int(status["lastJobId"]))
    assert job.handler == "e2e_work" and job.record.args == {"i": 1}

    # a worker whose app defines a code cron publishes it; deleted, it comes back; a restart changes nothing
    worker = spawn_cli(
        ["worker", "--app", "tests.apps.crons:app", "--poll-interval", "0.2"],
        {"JOBSTEAD_DATABASE_URL": pg_url, "JOBSTEAD_SCHEMA": local_setup["schema"]},
        tmp_path / "w.log",
    )
    try:
        wait_until(lambda: crons.get("heartbeat"), 30, "the code cron to be published")
        assert crons.remove("heartbeat", source="code")
        back = wait_until(lambda: crons.get("heartbeat"), 20, "the deleted code cron to come back", every=0.3)
        assert back.source == "code"
        crons.set_enabled("heartbeat", False)
        local_setup["operator"].restart()
        time.sleep(4)  # two republish rounds of the restarted operator
        assert crons.get("heartbeat").enabled is False, "a disabled code cron stays disabled"
        assert crons.get("every-second") is not None
    finally:
        stop(worker)


def test_webhook_refuses_what_the_schema_cannot_check(
    kube_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    namespace: str,
    pg_url: str,
    tmp_path: Path,
) -> None:
    from tests.support.postgres_server import free_port

    port = free_port()
    database_secret(kube_api, namespace, pg_url, f"wh_{uuid.uuid4().hex[:8]}")
    operator = Operator(
        kube_cluster,
        namespace,
        tmp_path / "operator.log",
        extra=["--webhook-host", "127.0.0.1", "--webhook-port", str(port)],
    )
    admission = client.AdmissionregistrationV1Api(kube_api)
    try:
        wait_until(
            lambda: any(
                w.metadata.name == "jobstead.io" for w in admission.list_validating_webhook_configuration().items
            ),
            30,
            "the webhook config",
        )

        def apply(body: dict[str, Any]) -> Any:
            return kube_cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(body), check=False)

        refused = [
            (cron_schedule("bad-minute", schedule="61 * * * *"), "spec.schedule"),
            (cron_schedule("feb-31", schedule="0 0 31 2 *"), "spec.schedule"),
            (cron_schedule("mars", timeZone="Mars/Olympus_Mons"), "spec.timeZone"),
            (job_handler("no-secret", database={"secretRef": {"name": "missing"}}), "spec.database.secretRef"),
            (
                job_handler("no-key", database={"secretRef": {"name": "jobs-db", "key": "nope"}}),
                "spec.database.secretRef",
            ),
        ]
        for body, field in refused:
            done = apply(body)
            assert done.returncode != 0, f"{body['metadata']['name']} was accepted"
            assert "denied the request" in done.stderr and field in done.stderr, done.stderr
        for body in (cron_schedule("good", timeZone="Europe/Tallinn"), job_handler("good")):
            done = apply(body)
            assert done.returncode == 0, done.stderr
        # kopf's own writes to a resource (annotations, status) are never refused
        wait_until(lambda: ready_condition(kube_api, namespace, "cronschedules", "good"), 20, "the operator's status")
    finally:
        operator.stop()


def test_new_work_wakes_a_handler_at_zero_without_waiting_for_the_tick(
    own_operator: Callable[..., dict[str, Any]], kube_api: client.ApiClient
) -> None:
    # a 30 s scale tick: only the NOTIFY wake-up can explain a pod within a few seconds
    slow = {"name": "JOBSTEAD_SCALE_INTERVAL", "value": "30"}
    setup = own_operator(chart={"operator": {"extraEnv": [slow]}}, env={slow["name"]: slow["value"]})
    ns, app = setup["namespace"], setup["app"]
    custom(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "jobhandlers", job_handler("sleepy", image=setup["image"])
    )
    wait_until(lambda: deployment(kube_api, ns, "sleepy"), 15, "the Deployment")
    time.sleep(2)  # the first scale tick has run (and found nothing to do)
    assert deployment(kube_api, ns, "sleepy").spec.replicas == 0
    deferred = time.monotonic()
    job = app.get_handler("e2e_work").defer(i=7)
    wait_until(lambda: deployment(kube_api, ns, "sleepy").spec.replicas >= 1, 5, "a pod for the new work")
    print(f"0 -> 1 pod {time.monotonic() - deferred:.2f} s after the defer")
    assert job.wait(60)["pid"]


def test_the_status_says_what_the_scaler_decided_and_why(
    own_operator: Callable[..., dict[str, Any]], kube_api: client.ApiClient
) -> None:
    """``status.scaling`` carries the inputs and the reason; ``recentDecisions`` the changes, newest first."""
    # a cool-down (12 s) well past the window (3 s): several ticks keep one warm pod, and say so
    setup = own_operator(chart={"operator": {"idleCooldownSeconds": 12}}, args=["--idle-cooldown", "12"])
    _register_long(setup["app"])
    _scaling_status_through_a_burst(kube_api, setup["namespace"], setup["app"], setup["image"])


def _scaling_status_through_a_burst(kube_api: client.ApiClient, ns: str, app: App, image: str) -> None:
    spec = {"image": image, "handler": "e2e_long", "concurrency": 6, "perPodConcurrency": 1, "maxReplicas": 2}
    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", job_handler("why", **spec))

    def status() -> dict[str, Any]:
        obj = custom(kube_api).get_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "why")
        return obj.get("status") or {}

    idle = wait_until(lambda: status().get("scaling"), 60, "a first decision")
    assert idle["reason"] == "idle: nothing due or running" and idle["desiredReplicas"] == 0
    jobs = app.get_handler("e2e_long").defer_many([{"seconds": 2.0} for _ in range(5)])
    capped = wait_until(lambda: _limited_by(status(), "maxReplicas"), 30, "held at max")
    scaling = capped["scaling"]
    print("status.scaling:", json.dumps(scaling))
    assert scaling["desiredReplicas"] == 2 and scaling["maxReplicas"] == 2 and scaling["limitCap"] == 6
    assert scaling["perPodConcurrency"] == 1 and scaling["concurrency"] == 6
    assert scaling["due"] + scaling["running"] == 5 and scaling["neededReplicas"] == 5
    assert scaling["reason"].startswith("held at max 2: ")
    first = capped["recentDecisions"][0]
    assert (first["from"], first["to"]) == (0, 2) and first["reason"].startswith("scale up, held at max 2: ")
    for job in jobs:
        job.wait(60)
    # the drain: the window holds, a warm pod is kept for the cool-down (with its end), then zero
    cooling = wait_until(lambda: _limited_by(status(), "coolDown"), 30, "the cool-down")
    assert cooling["scaling"]["coolDownUntil"] and "cool-down" in cooling["scaling"]["reason"]
    wait_until(lambda: status()["scaling"]["desiredReplicas"] == 0, 30, "zero pods")
    final = status()
    print("status.recentDecisions:", json.dumps(final["recentDecisions"], indent=1))
    assert [(d["from"], d["to"]) for d in final["recentDecisions"]][:2] == [(1, 0), (2, 1)]
    assert final["recentDecisions"][0]["reason"] == "scale down: nothing due or running"
    assert "coolDownUntil" not in final["scaling"] and "limitedBy" not in final["scaling"], "stale keys removed"
    scaled = [e.message for e in events_for(kube_api, ns, "why") if e.reason == "Scaled"]
    assert "1 -> 0 worker pod(s): scale down: nothing due or running" in scaled


def _limited_by(status: dict[str, Any], bound: str) -> dict[str, Any] | None:
    return status if (status.get("scaling") or {}).get("limitedBy") == bound else None


def test_a_rate_limited_handler_gets_no_more_pods_than_its_rate_can_keep_busy(
    setup: dict[str, Any], kube_api: client.ApiClient, worker_pods: WorkerPods
) -> None:
    """1 start per 2 s of 3 s jobs keeps ceil(0.5 x 3 / 1) = 2 pods busy: 8 jobs never get a third."""
    ns, app = setup["namespace"], setup["app"]
    _register_long(app)
    spec = {
        "image": setup["image"],
        "handler": "e2e_long",
        "concurrency": 6,
        "perPodConcurrency": 1,
        "maxReplicas": 5,
        "rateLimit": {"limit": 1, "periodSeconds": 2},
    }
    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", job_handler("rated", **spec))
    wait_until(lambda: deployment(kube_api, ns, "rated"), 15, "the Deployment")
    jobs = app.get_handler("e2e_long").defer_many([{"seconds": 3.0} for _ in range(8)])
    seen: list[int] = []

    def status() -> dict[str, Any]:
        d = deployment(kube_api, ns, "rated")
        seen.append(d.spec.replicas if d else 0)
        obj = custom(kube_api).get_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "rated")
        return obj.get("status") or {}

    def capped_at_two() -> dict[str, Any] | None:
        scaling = status().get("scaling") or {}
        return scaling if scaling.get("limitedBy") == "rateCap" and scaling.get("rateCap") == 2 else None

    scaling = wait_until(capped_at_two, 60, "the rate cap from the measured run time", every=0.3)
    print("status.scaling:", json.dumps(scaling))
    assert scaling["ratePerSecond"] == 0.5 and 2.0 < scaling["meanRunSeconds"] <= 4.0
    assert "held at the rate cap 2 (rate 0.5/s x " in scaling["reason"], scaling["reason"]
    assert scaling["neededReplicas"] > 2 and scaling["desiredReplicas"] == 2
    for job in jobs:
        job.wait(90)
        status()
    assert max(seen) == 2, f"never more pods than the rate can keep busy: {sorted(set(seen))}"


def test_a_key_naming_no_parameter_is_reported_and_an_edit_heals_it(
    setup: dict[str, Any], kube_api: client.ApiClient
) -> None:
    ns, app = setup["namespace"], setup["app"]
    api = custom(kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", job_handler("keyed", sequenceBy="customer"))

    def condition() -> dict[str, Any]:
        return ready_condition(kube_api, ns, "jobhandlers", "keyed") or {}

    reported = wait_until(lambda: condition().get("reason") == "UnknownParameter" and condition(), 20, "the reason")
    assert reported["status"] == "False"
    assert reported["message"] == (
        "spec.sequenceBy names 'customer', which is not a parameter of handler 'e2e_work' "
        "(its parameters: i; or tenant)"
    )
    assert deployment(kube_api, ns, "keyed") is not None, "the workers run meanwhile"
    assert app.store.registry.handler("e2e_work").source == "crd"
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "keyed", {"spec": {"sequenceBy": "i"}})
    healed = wait_until(lambda: condition().get("status") == "True" and condition(), 20, "Ready=True")
    assert healed["reason"] == "Reconciled" and "in sequence by i" in healed["message"]
