"""A JobHandler's worker Pods on the local node: the test app's image, PostgreSQL over the Pod network, jobs run.

What only a real kubelet shows: the image's own entrypoint as PID 1, the
kubelet's SIGTERM and grace period, a forced deletion, a rolling update of the
image. PostgreSQL listens on the node's address too, and trusts the node's Pod
network, which is how the worker Pods reach it (``pod_reachable_pg``).

The operator is the chart's, a Pod installed once for the session with ``helm
install`` and watching one namespace per test (``chart_operator.py``): it
reaches PostgreSQL the same way, and none of these tests restarts it or cuts
its database.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from jobstead import App, JobStatus
from tests.e2e.chart_operator import ChartOperator
from tests.e2e.conftest import pod_database_url
from tests.e2e.test_operator import GROUP, VERSION, database_secret, job_handler, wait_until
from tests.support.controlplane import Cluster
from tests.support.node import ROLLOUT_IMAGE, image_archives, image_name
from tests.support.postgres_server import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def node_cluster(kube_cluster: Cluster) -> Cluster:
    if not kube_cluster.node or not kube_cluster.node_ip:
        pytest.skip("needs the local node: make e2e-node")
    return kube_cluster


@dataclass
class Setup:
    """One namespace's app: its database (reachable from Pods), its Secret, the chart's operator serving it."""

    cluster: Cluster
    api: client.ApiClient
    namespace: str
    app: App
    image: str
    operator: ChartOperator

    def job_handler(self, name: str, handler: str, **spec: Any) -> None:
        body = job_handler(name, image=self.image, **spec)
        body["spec"]["handler"] = handler
        client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "jobhandlers", body
        )

    def pods(self) -> list[dict[str, Any]]:
        items = json.loads(self.cluster.kubectl("get", "pods", "-n", self.namespace, "-o", "json").stdout)["items"]
        return list(items)

    def pod_running(self, job: Any) -> str:
        """The Pod whose worker holds ``job``'s lease (a worker's hostname is its Pod's name)."""
        holder = job.record.lease_owner
        return str(next(w["hostname"] for w in self.app.store.registry.workers() if w["id"] == holder))


@pytest.fixture
def setup(
    node_cluster: Cluster,
    kube_api: client.ApiClient,
    chart_operator: ChartOperator | None,
    pod_reachable_pg: PostgresServer,
    request: pytest.FixtureRequest,
) -> Iterator[Setup]:
    assert chart_operator, "the local node runs the chart's operator"
    namespace = chart_operator.take_namespace(request.node.nodeid)
    # One URL for all: the node's address is this machine's, for the tests as for the Pods.
    url = pod_database_url(pod_reachable_pg, node_cluster, namespace)
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    app = App(url, schema=schema)
    from tests.apps import probes

    for name in ("e2e_work", "e2e_long"):
        app.handler(name=name)(probes.app.get_handler(name).func)
    app.migrate()
    database_secret(kube_api, namespace, url, schema)
    try:
        yield Setup(node_cluster, kube_api, namespace, app, image_name(image_archives()["testapp"]), chart_operator)
    finally:
        chart_operator.finish(namespace)
        app.close()


def test_worker_pods_run_the_image_and_jobs_from_postgresql(setup: Setup) -> None:
    app = setup.app
    setup.job_handler("mailer", "e2e_work", minReplicas=2, maxReplicas=2)
    jobs = app.get_handler("e2e_work").defer_many([{"i": i} for i in range(40)])

    def finished() -> bool:
        load = app.store.queries.handler_load("e2e_work")
        return load.due == 0 and load.running == 0

    wait_until(finished, 180, "the worker Pods to run every job", every=0.5)
    results = [app.get_job(j.id) for j in jobs]
    assert all(r.status is JobStatus.SUCCEEDED for r in results)
    # Each worker is PID 1 of its container: no job ran as a process of this machine.
    assert {(r.result or {}).get("pid") for r in results} == {1}

    pods = setup.pods()
    assert len(pods) == 2
    # The chart's Pod is the operator that acts here (kopf's peering of this namespace names it).
    assert list(setup.operator.peers(setup.api, setup.namespace)) == [setup.operator.pod()["metadata"]["name"]]
    for pod in pods:
        assert pod["spec"]["nodeName"] == setup.cluster.node
        (status,) = pod["status"]["containerStatuses"]
        assert status["image"].endswith(setup.image.split("/", 1)[1]) and status["imageID"], status
        assert status["ready"], status


def test_a_deleted_pod_gets_sigterm_and_hands_its_job_back(setup: Setup) -> None:
    """kubectl delete: the kubelet's SIGTERM, the worker's grace, the job handed back and run by the next Pod."""
    setup.job_handler("longrun", "e2e_long", concurrency=1, perPodConcurrency=1, maxReplicas=1, shutdownGraceSeconds=2)
    job = setup.app.get_handler("e2e_long").defer(seconds=20)
    wait_until(lambda: job.refresh().status is JobStatus.RUNNING, 120, "the job to start in a Pod")
    pod = setup.pod_running(job)
    setup.cluster.kubectl("delete", "pod", pod, "-n", setup.namespace, "--wait=false")
    job.wait(120)
    log = job.attempts_log()
    outcomes = [a.outcome.value for a in log]
    # Handed back once by the deleted Pod, then run to success by the next. A claim that comes back
    # too late to start safely (slower than its lease allows, as on a very loaded machine) is handed
    # back at once too, uncounted: allowed between the two, never instead of them.
    assert outcomes[0] == "released" and outcomes[-1] == "succeeded", log
    assert set(outcomes[1:-1]) <= {"released"}, log
    assert pod in (log[0].worker_id or ""), log
    assert all(pod not in (a.worker_id or "") for a in log[1:]), "the deleted Pod ran it once only"
    assert all(p["metadata"]["name"] != pod for p in setup.pods()), "the deleted Pod is gone"


def test_a_force_deleted_pod_releases_its_job_at_once(setup: Setup) -> None:
    """kubectl delete --grace-period=0 --force: the Pod object goes at once; its job does not wait for the lease."""
    setup.job_handler("podloss", "e2e_long", concurrency=1, perPodConcurrency=1, maxReplicas=1)
    job = setup.app.get_handler("e2e_long").defer(seconds=4)
    wait_until(lambda: job.refresh().status is JobStatus.RUNNING, 120, "the job to start in a Pod")
    pod = setup.pod_running(job)
    gone_at = time.monotonic()
    setup.cluster.kubectl("delete", "pod", pod, "-n", setup.namespace, "--grace-period=0", "--force")
    wait_until(lambda: job.refresh().status is not JobStatus.RUNNING or job.attempts > 1, 20, "the job to be released")
    assert time.monotonic() - gone_at < 15, "released at once, not after the 30 s lease"
    job.wait(120)
    outcomes = [a.outcome.value for a in job.attempts_log()]
    assert outcomes[-1] == "succeeded" and outcomes[0] in ("lost", "released"), outcomes


def test_a_rolling_update_of_the_image_loses_no_job(setup: Setup) -> None:
    """A new image: a new ReplicaSet, the old Pods drained by SIGTERM, every job run once to success."""
    setup.job_handler(
        "roller", "e2e_long", concurrency=2, perPodConcurrency=1, minReplicas=2, maxReplicas=2, shutdownGraceSeconds=2
    )
    jobs = setup.app.get_handler("e2e_long").defer_many([{"seconds": 2} for _ in range(10)])
    wait_until(lambda: any(j.refresh().status is JobStatus.RUNNING for j in jobs), 120, "the first jobs to run")
    old_pods = {p["metadata"]["name"] for p in setup.pods()}
    client.CustomObjectsApi(setup.api).patch_namespaced_custom_object(
        GROUP, VERSION, setup.namespace, "jobhandlers", "roller", {"spec": {"image": ROLLOUT_IMAGE}}
    )
    for job in jobs:
        job.wait(240)
    outcomes = [a.outcome.value for job in jobs for a in job.attempts_log()]
    assert outcomes.count("succeeded") == len(jobs) and set(outcomes) <= {"succeeded", "released"}, outcomes

    def rolled() -> bool:
        pods = setup.pods()
        return len(pods) == 2 and all(p["spec"]["containers"][0]["image"] == ROLLOUT_IMAGE for p in pods)

    wait_until(rolled, 120, "the new ReplicaSet's Pods to replace the old ones", every=0.5)
    assert not old_pods & {p["metadata"]["name"] for p in setup.pods()}
    replica_sets = json.loads(setup.cluster.kubectl("get", "replicasets", "-n", setup.namespace, "-o", "json").stdout)[
        "items"
    ]
    assert sorted(rs["spec"]["replicas"] for rs in replica_sets) == [0, 2]
