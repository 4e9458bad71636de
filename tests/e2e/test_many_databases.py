"""One operator, many apps: each resource is reconciled into the database its Secret names.

Two PostgreSQL servers stand for two apps' databases (A and B), each behind a
URL with a password (the servers trust every local connection, and on the
local node the Pod network, so the password is only there to prove it is
never shown). Worker Pods run where ``tests/e2e/pods.py`` says. One operator runs with
NO database of its own and watches two namespaces; every check of a row is
an SQL query on the database it must (or must not) be in.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from jobstead import App, JobStatus
from tests.e2e.conftest import pod_reachable_server
from tests.e2e.pods import WorkerPods
from tests.e2e.test_operator import (
    GROUP,
    VERSION,
    Operator,
    custom,
    deployment,
    events_for,
    job_handler,
    ready_condition,
    wait_until,
)
from tests.multiprocess.test_crash_and_limits import _peak
from tests.support.controlplane import Cluster, ControlPlaneError
from tests.support.postgres_server import PostgresServer
from tests.support.processes import run_cli
from tests.support.scratch import server_root

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

PASSWORDS = {"a": "Pw-Alpha-7c1e94", "b": "Pw-Bravo-3f08d2"}


@dataclass
class AppDatabase:
    """One app's database: its URL (password included), and SQL on it."""

    server: PostgresServer
    url: str
    password: str

    def rows(self, query: str, **params: Any) -> list[Any]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(query), params))
        finally:
            engine.dispose()

    def app(self) -> App:
        """The app as its own pods see it: deferring into this database only."""
        from tests.apps import probes

        app = App(self.url)
        app.handler(name="e2e_work")(probes.app.get_handler("e2e_work").func)
        return app


def _database(server: PostgresServer, name: str, password: str, host: str | None) -> AppDatabase:
    bare = server.create_database(name)
    if host:  # the node's address: the worker Pods' way to this machine, and this machine's own
        bare = bare.replace("@127.0.0.1", f"@{host}", 1)
    return AppDatabase(server, bare.replace(f"{server.user}@", f"{server.user}:{password}@", 1), password)


@pytest.fixture(scope="module")
def servers(kube_cluster: Cluster) -> Iterator[dict[str, PostgresServer]]:
    """Two servers; on the local node they listen on its address too, where the worker Pods reach them."""
    started = {
        key: (
            pod_reachable_server(kube_cluster)
            if kube_cluster.node
            else PostgresServer(root=server_root("jobstead-pg-"))
        ).start()
        for key in PASSWORDS
    }
    try:
        yield started
    finally:
        for server in started.values():
            server.cleanup()


@pytest.fixture
def databases(servers: dict[str, PostgresServer], kube_cluster: Cluster) -> dict[str, AppDatabase]:
    """A fresh database on each server for this test (the operator creates the tables)."""
    suffix = uuid.uuid4().hex[:8]
    for server in servers.values():
        if server.process is None:  # a test stopped it
            server.restart_stopped()
    return {
        key: _database(servers[key], f"app_{key}_{suffix}", PASSWORDS[key], kube_cluster.node_ip) for key in PASSWORDS
    }


@pytest.fixture
def namespaces(kube_cluster: Cluster, kube_api: client.ApiClient, jobstead_crds: list[str]) -> Iterator[dict[str, str]]:
    core = client.CoreV1Api(kube_api)
    names = {key: f"e2e-{key}-{uuid.uuid4().hex[:8]}" for key in PASSWORDS}
    for name in names.values():
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        kube_cluster.wait_for_service_account(name)
    yield names
    for name in names.values():
        core.delete_namespace(name)


def put_secret(api: client.ApiClient, namespace: str, url: str, name: str = "app-db") -> None:
    """Create or replace the app's database Secret (a replace is a rotation)."""
    core = client.CoreV1Api(api)
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=name), data={"url": base64.b64encode(url.encode()).decode()}
    )
    try:
        core.replace_namespaced_secret(name, namespace, body)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_secret(namespace, body)


def handler_for(pods: WorkerPods, name: str, **spec: Any) -> dict[str, Any]:
    return job_handler(name, image=pods.image, database={"secretRef": {"name": "app-db"}}, **spec)


def cron_for(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CronSchedule",
        "metadata": {"name": name},
        "spec": {"schedule": "* * * * * *", "handler": "e2e_work", **spec},
    }


def create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    plural = "jobhandlers" if body["kind"] == "JobHandler" else "cronschedules"
    custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def ready(api: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    return ready_condition(api, namespace, plural, name) or {}


def wait_ready(api: client.ApiClient, namespace: str, plural: str, name: str, timeout: float = 30) -> None:
    wait_until(
        lambda: ready(api, namespace, plural, name).get("status") == "True",
        timeout,
        f"{plural}/{name} in {namespace} to be Ready (last: {ready(api, namespace, plural, name)})",
        every=0.3,
    )


def handler_rows(db: AppDatabase) -> dict[str, tuple[int, str]]:
    return {
        r.name: (r.concurrency, r.source) for r in db.rows("SELECT name, concurrency, source FROM jobstead_handlers")
    }


def cron_rows(db: AppDatabase) -> set[str]:
    return {r.name for r in db.rows("SELECT name FROM jobstead_crons")}


def cron_jobs(db: AppDatabase, cron: str) -> list[dict[str, Any]]:
    rows = db.rows("SELECT args FROM jobstead_jobs WHERE cron_name = :cron", cron=cron)
    return [r.args for r in rows]


def tables_exist(db: AppDatabase) -> bool:
    return bool(db.rows("SELECT 1 FROM information_schema.tables WHERE table_name = 'jobstead_jobs'"))


@pytest.fixture
def start_operator(kube_cluster: Cluster, tmp_path: Path) -> Iterator[Any]:
    started: list[Operator] = []

    def start(*namespaces: str, env: dict[str, str] | None = None) -> Operator:
        extra = ["--log-level=debug"]  # kopf's and the client's debug lines must not show a password either
        for ns in namespaces[1:]:
            extra += ["-n", ns]
        operator = Operator(kube_cluster, namespaces[0], tmp_path / f"operator-{len(started)}.log", extra, env)
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()
    print(f"operator logs in {tmp_path}")


def assert_no_password(api: client.ApiClient, namespaces: list[str], logs: list[Path]) -> None:
    """Neither password in the operator's log, in any Event, or in any resource's status."""
    texts = {str(log): log.read_text(errors="replace") for log in logs}
    for ns in namespaces:
        for event in client.CoreV1Api(api).list_namespaced_event(ns).items:
            texts[f"event {ns}/{event.metadata.name}"] = f"{event.reason} {event.message}"
        for plural in ("jobhandlers", "cronschedules"):
            for item in custom(api).list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]:
                texts[f"{plural} {ns}/{item['metadata']['name']}"] = json.dumps(item.get("status") or {})
    leaks = [where for where, text in texts.items() for pw in PASSWORDS.values() if pw in text]
    assert not leaks, f"a database password appears in: {leaks}"
    assert any("***" in text for text in texts.values()), "URLs are shown masked (***), not left out"


def test_two_apps_two_databases_one_operator_without_a_database(
    kube_api: client.ApiClient,
    namespaces: dict[str, str],
    databases: dict[str, AppDatabase],
    worker_pods: WorkerPods,
    start_operator: Any,
) -> None:
    a, b = databases["a"], databases["b"]
    ns_a, ns_b = namespaces["a"], namespaces["b"]
    put_secret(kube_api, ns_a, a.url)
    put_secret(kube_api, ns_b, b.url)
    operator = start_operator(ns_a, ns_b)

    # the same handler name in both apps, with different limits: each row lands in its own database
    create(kube_api, ns_a, handler_for(worker_pods, "work", concurrency=3, perPodConcurrency=1, maxReplicas=3))
    create(kube_api, ns_b, handler_for(worker_pods, "work", concurrency=5, perPodConcurrency=1, maxReplicas=2))
    wait_ready(kube_api, ns_a, "jobhandlers", "work")
    wait_ready(kube_api, ns_b, "jobhandlers", "work")
    assert handler_rows(a) == {"e2e_work": (3, "crd")}
    assert handler_rows(b) == {"e2e_work": (5, "crd")}
    message = ready(kube_api, ns_a, "jobhandlers", "work")["message"]
    assert "***" in message and a.password not in message, message

    # 500 jobs in A: A's Deployment scales up to its cap, B's stays at zero, the limit of 3 holds in A
    app_a = a.app()
    try:
        jobs = app_a.get_handler("e2e_work").defer_many([{"i": i} for i in range(500)])
        seen_a: list[int] = []
        seen_b: list[int] = []

        def drained() -> bool:
            seen_a.append(deployment(kube_api, ns_a, "work").spec.replicas)
            seen_b.append(deployment(kube_api, ns_b, "work").spec.replicas)
            load = app_a.store.queries.handler_load("e2e_work")
            return load.due == 0 and load.running == 0

        wait_until(drained, 180, "A's queue to drain", every=0.3)
        results = [app_a.get_job(j.id) for j in jobs]
    finally:
        app_a.close()
    assert all(r.status is JobStatus.SUCCEEDED for r in results)
    peak = _peak([(r.result["start"], r.result["end"]) for r in results])
    pods = {r.result["pod"] for r in results}
    print(f"A: replicas seen {sorted(set(seen_a))}, peak {peak} running at once over {len(pods)} worker pods")
    assert max(seen_a) == 3, f"A's replicas should reach ceil(3/1) = 3: {sorted(set(seen_a))}"
    assert set(seen_b) == {0}, f"B's Deployment must not follow A's queue: {sorted(set(seen_b))}"
    assert len(pods) > 1, "several worker pods took part"
    assert peak <= 3, f"the CR's global limit of 3 was exceeded: {peak} at once"

    # then a cron in each namespace (B's fires are work for B: not while B's replicas are watched above);
    # A's follows its JobHandler's database, B's names its own Secret
    create(kube_api, ns_a, cron_for("tick", args={"i": 1001}))
    create(kube_api, ns_b, cron_for("tick", args={"i": 2002}, database={"secretRef": {"name": "app-db"}}))
    wait_ready(kube_api, ns_a, "cronschedules", "tick")
    wait_ready(kube_api, ns_b, "cronschedules", "tick")
    wait_until(lambda: cron_jobs(a, "tick") and cron_jobs(b, "tick"), 20, "both crons to fire", every=0.5)

    # each cron fired into its own database only
    assert cron_rows(a) == {"tick"} and cron_rows(b) == {"tick"}
    assert {j["i"] for j in cron_jobs(a, "tick")} == {1001}
    assert {j["i"] for j in cron_jobs(b, "tick")} == {2002}
    assert_no_password(kube_api, [ns_a, ns_b], [operator.log])
    assert "failed with an exception" not in operator.log.read_text(), "a handler crashed (see the operator log)"


def test_a_rotated_secret_moves_the_resources_to_the_new_database(
    kube_api: client.ApiClient,
    namespaces: dict[str, str],
    databases: dict[str, AppDatabase],
    worker_pods: WorkerPods,
    start_operator: Any,
) -> None:
    a, b = databases["a"], databases["b"]
    ns = namespaces["a"]
    put_secret(kube_api, ns, a.url)
    operator = start_operator(ns)
    create(kube_api, ns, handler_for(worker_pods, "work", concurrency=4, minReplicas=1))
    create(kube_api, ns, cron_for("tick", args={"i": 7}))
    wait_ready(kube_api, ns, "jobhandlers", "work")
    wait_ready(kube_api, ns, "cronschedules", "tick")
    assert "e2e_work" in handler_rows(a) and cron_rows(a) == {"tick"}
    assert not tables_exist(b)
    wait_until(lambda: worker_pods.running(ns), 60, "a worker pod on A")

    put_secret(kube_api, ns, b.url)  # the app moved to database B
    rotated = time.monotonic()
    wait_until(lambda: tables_exist(b) and "e2e_work" in handler_rows(b), 30, "the handler row in B", every=0.3)
    took = time.monotonic() - rotated
    wait_until(lambda: cron_rows(b) == {"tick"}, 30, "the cron row in B", every=0.3)
    print(f"rotation followed {took:.1f} s after the Secret changed")
    assert took < 15, "the rotation should be followed at the next reconcile, within seconds"
    wait_until(lambda: cron_jobs(b, "tick"), 20, "the cron to fire into B", every=0.5)
    # A keeps only what is not the resources' (a row its old worker published from code)
    wait_until(
        lambda: all(source != "crd" for _, source in handler_rows(a).values()) and not cron_rows(a),
        15,
        "A to be left without the resources' rows",
        every=0.3,
    )

    def changed(name: str) -> list[str]:
        return [e.message for e in events_for(kube_api, ns, name) if e.reason == "DatabaseChanged"]

    wait_until(lambda: changed("work") and changed("tick"), 15, "DatabaseChanged Events")
    message = changed("work")[0]
    assert a.url.split("@")[1] in message and b.url.split("@")[1] in message, message
    assert "***" in message
    wait_ready(kube_api, ns, "jobhandlers", "work")
    assert b.url.split("@")[1] in ready(kube_api, ns, "jobhandlers", "work")["message"]

    # the worker pods follow too: the rotated Secret rolls them over to B
    app_b = b.app()
    try:
        job = app_b.get_handler("e2e_work").defer(i=99)
        assert job.wait(60)["pid"], "a worker on B ran the job"
    finally:
        app_b.close()

    def all_on_b() -> bool:
        """Every worker Pod left is on B. A Pod still on A is let go once its replacement runs, and a
        job run on B can come first: asked right then, one on A was still stopping (a full run, once)."""
        try:
            urls = [worker_pods.environment(ns, pod, "JOBSTEAD_DATABASE_URL") for pod in worker_pods.running(ns)]
        except ControlPlaneError:  # a Pod that ended while being asked
            return False
        return bool(urls) and all(url == b.url for url in urls)

    wait_until(all_on_b, 60, "every worker Pod on B (one stayed on A)", every=0.5)
    assert_no_password(kube_api, [ns], [operator.log])


def test_one_database_down_stalls_only_its_own_resources(
    kube_api: client.ApiClient,
    namespaces: dict[str, str],
    databases: dict[str, AppDatabase],
    worker_pods: WorkerPods,
    start_operator: Any,
) -> None:
    a, b = databases["a"], databases["b"]
    ns_a, ns_b = namespaces["a"], namespaces["b"]
    put_secret(kube_api, ns_a, a.url)
    put_secret(kube_api, ns_b, b.url)
    operator = start_operator(ns_a, ns_b)
    create(kube_api, ns_a, handler_for(worker_pods, "work"))
    create(kube_api, ns_a, cron_for("tick"))
    create(kube_api, ns_b, handler_for(worker_pods, "work", concurrency=2, perPodConcurrency=1, maxReplicas=2))
    for ns in (ns_a, ns_b):
        wait_ready(kube_api, ns, "jobhandlers", "work")
    wait_ready(kube_api, ns_a, "cronschedules", "tick")

    a.server.stop()
    try:
        for plural, name in (("jobhandlers", "work"), ("cronschedules", "tick")):
            wait_until(
                lambda plural=plural, name=name: (
                    ready(kube_api, ns_a, plural, name).get("reason") == "DatabaseUnavailable"
                ),
                30,
                f"A's {plural}/{name} to show DatabaseUnavailable",
                every=0.5,
            )
        # B keeps reconciling (a new resource) and scaling (its queue)
        create(kube_api, ns_b, handler_for(worker_pods, "more", handler="e2e_long", concurrency=1, perPodConcurrency=1))
        wait_ready(kube_api, ns_b, "jobhandlers", "more")
        assert set(handler_rows(b)) == {"e2e_work", "e2e_long"}
        app_b = b.app()
        try:
            jobs = app_b.get_handler("e2e_work").defer_many([{"i": i} for i in range(40)])
            wait_until(lambda: deployment(kube_api, ns_b, "work").spec.replicas == 2, 30, "B to scale up")
            for job in jobs:
                job.wait(60)
        finally:
            app_b.close()
        assert ready(kube_api, ns_a, "jobhandlers", "work")["reason"] == "DatabaseUnavailable"
        message = ready(kube_api, ns_a, "jobhandlers", "work")["message"]
        assert a.url.split("@")[1] in message and "***" in message, message
    finally:
        a.server.restart_stopped()

    # A comes back by itself, with the same operator process
    wait_ready(kube_api, ns_a, "jobhandlers", "work", timeout=60)
    wait_ready(kube_api, ns_a, "cronschedules", "tick", timeout=60)
    assert operator.process.poll() is None, "the operator was not restarted"
    before = len(cron_jobs(a, "tick"))
    wait_until(lambda: len(cron_jobs(a, "tick")) > before, 20, "A's cron to fire again", every=0.5)
    app_a = a.app()
    try:
        job = app_a.get_handler("e2e_work").defer(i=1)
        assert job.wait(60)["pid"], "A's workers run again"
    finally:
        app_a.close()
    assert_no_password(kube_api, [ns_a, ns_b], [operator.log])


def test_a_cron_for_an_unknown_handler_says_so_and_fires_once_it_appears(
    kube_api: client.ApiClient,
    namespaces: dict[str, str],
    databases: dict[str, AppDatabase],
    worker_pods: WorkerPods,
    start_operator: Any,
) -> None:
    a = databases["a"]
    ns = namespaces["a"]
    put_secret(kube_api, ns, a.url)
    start_operator(ns)
    create(kube_api, ns, cron_for("early", database={"secretRef": {"name": "app-db"}}))
    wait_until(
        lambda: ready(kube_api, ns, "cronschedules", "early").get("reason") == "HandlerUnknown", 30, "HandlerUnknown"
    )
    condition = ready(kube_api, ns, "cronschedules", "early")
    assert condition["status"] == "False" and "e2e_work" in condition["message"]
    assert cron_rows(a) == {"early"} and not cron_jobs(a, "early"), "stored, but not fired"
    create(kube_api, ns, handler_for(worker_pods, "work"))  # the app publishes the handler (its JobHandler)
    wait_ready(kube_api, ns, "cronschedules", "early")
    wait_until(lambda: cron_jobs(a, "early"), 20, "the cron to fire", every=0.5)


def test_a_cron_with_no_database_to_go_to_is_database_unknown(
    kube_api: client.ApiClient, namespaces: dict[str, str], start_operator: Any
) -> None:
    ns = namespaces["a"]
    start_operator(ns)
    create(kube_api, ns, cron_for("lost"))
    wait_until(
        lambda: ready(kube_api, ns, "cronschedules", "lost").get("reason") == "DatabaseUnknown", 30, "DatabaseUnknown"
    )
    assert "spec.database.secretRef" in ready(kube_api, ns, "cronschedules", "lost")["message"]
    wait_until(lambda: any(e.reason == "DatabaseUnknown" for e in events_for(kube_api, ns, "lost")), 10, "the Event")


def test_an_operator_told_not_to_migrate_reports_schema_missing_with_the_fix(
    kube_api: client.ApiClient,
    namespaces: dict[str, str],
    databases: dict[str, AppDatabase],
    worker_pods: WorkerPods,
    start_operator: Any,
) -> None:
    a = databases["a"]
    ns = namespaces["a"]
    put_secret(kube_api, ns, a.url)
    start_operator(ns, env={"JOBSTEAD_OPERATOR_MIGRATE": "false"})
    create(kube_api, ns, handler_for(worker_pods, "work"))
    wait_until(lambda: ready(kube_api, ns, "jobhandlers", "work").get("reason") == "SchemaMissing", 30, "SchemaMissing")
    message = ready(kube_api, ns, "jobhandlers", "work")["message"]
    assert "jobstead migrate" in message and a.password not in message, message
    assert not tables_exist(a)
    done = run_cli(["migrate"], {"JOBSTEAD_DATABASE_URL": a.url})
    assert done.returncode == 0, done.stderr
    wait_ready(kube_api, ns, "jobhandlers", "work")
    assert handler_rows(a) == {"e2e_work": (6, "crd")}


def test_the_operators_own_database_is_the_default_for_a_cron_that_names_none(
    kube_api: client.ApiClient, namespaces: dict[str, str], databases: dict[str, AppDatabase], start_operator: Any
) -> None:
    b = databases["b"]
    app_b = b.app()
    try:
        app_b.migrate()  # the app has run: its handler is published in its database
    finally:
        app_b.close()
    ns = namespaces["a"]
    operator = start_operator(ns, env={"JOBSTEAD_DATABASE_URL": b.url})
    create(kube_api, ns, cron_for("fallback", args={"i": 5}))
    wait_ready(kube_api, ns, "cronschedules", "fallback")
    wait_until(lambda: cron_jobs(b, "fallback"), 20, "the cron to fire into the default database", every=0.5)
    assert b.url.split("@")[1] in ready(kube_api, ns, "cronschedules", "fallback")["message"]
    assert_no_password(kube_api, [ns], [operator.log])
