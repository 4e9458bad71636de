"""The chart's operator on the local node, as a user runs it: ``helm install``, then ``kubectl apply``.

Everything in the cluster is what a user's cluster would run: the operator is a
Pod of the repository's image with the chart's ServiceAccount and RBAC and
in-cluster configuration; the admission webhook is called by the API server
through the chart's Service; the JobHandler's worker Pods run the test app's
image and reach PostgreSQL over the Pod network. The test only installs,
applies and defers, and reads what happened.

There is no kube-proxy: the API server reaches the webhook Service at its
endpoint (the Pod's address, routed through the node's bridge) because the
local control plane runs it with ``--enable-aggregator-routing``.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from jobstead import App, JobStatus
from tests.e2e.conftest import pod_database_url
from tests.e2e.test_operator import database_secret, job_handler, wait_until
from tests.support.controlplane import REPO, Cluster
from tests.support.node import NODE_NAME, image_archives, image_name
from tests.support.postgres_server import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def node_cluster(kube_cluster: Cluster) -> Cluster:
    if not kube_cluster.node or not kube_cluster.node_ip:
        pytest.skip("needs the local node: make e2e-node")
    return kube_cluster


def _webhook_service(api: client.ApiClient) -> dict[str, Any] | None:
    """Where the API server sends JobHandlers for admission, once the operator has announced its webhook."""
    configs = client.AdmissionregistrationV1Api(api).list_validating_webhook_configuration(
        field_selector="metadata.name=jobstead.io"
    )
    for config in configs.items:
        for webhook in config.webhooks or []:
            if service := webhook.client_config.service:
                return {"namespace": service.namespace, "name": service.name}
    return None


def _what_the_pods_say(cluster: Cluster, namespace: str) -> str:
    """The namespace's Pods as ``kubectl describe`` shows them, and their logs: why an install did not get Ready."""
    described = cluster.kubectl("describe", "pods", "-n", namespace, check=False).stdout
    logs = cluster.kubectl(
        "logs", "-n", namespace, "--all-containers", "--tail=40", "-l", "app.kubernetes.io/name=jobstead", check=False
    )
    return f"\n{described}\n{logs.stdout}{logs.stderr}"


def test_the_charts_operator_runs_job_handlers_from_inside_the_cluster(
    node_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    namespace: str,
    pod_reachable_pg: PostgresServer,
) -> None:
    """One install: the webhook refuses through its Service; a JobHandler becomes a handler row and a Pod's job."""
    began = time.monotonic()
    url = pod_database_url(pod_reachable_pg, node_cluster, namespace)
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    app = App(url, schema=schema)
    from tests.apps import probes

    app.handler(name="e2e_work")(probes.app.get_handler("e2e_work").func)
    app.migrate()
    # The Secret holds the node's address: what the operator's Pod and the worker Pods connect to.
    database_secret(kube_api, namespace, url, schema)

    repository, tag = image_name(image_archives()["jobstead"]).rsplit(":", 1)
    worker_image = image_name(image_archives()["testapp"])
    release = f"jobstead-{namespace[-6:]}"
    helm = [
        str(node_cluster.bindir / "helm") if node_cluster.bindir else "helm",
        "--kubeconfig",
        str(node_cluster.kubeconfig),
    ]
    installed = subprocess.run(
        [
            *helm, "install", release, "charts/jobstead", "--namespace", namespace,
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
            # One replica: nothing here is about peering, and one Pod starts faster than two.
            "--set", "replicaCount=1", "--set", f"watchNamespaces={{{namespace}}}", "--set", "webhook.enabled=true",
            "--wait", "--timeout", "120s",
        ],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip

    def apply(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return node_cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(body), check=False)

    try:
        assert installed.returncode == 0, installed.stderr + _what_the_pods_say(node_cluster, namespace)
        print(f"helm install --wait: {time.monotonic() - began:.1f} s")
        (operator,) = json.loads(node_cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        assert operator["spec"]["nodeName"] == NODE_NAME
        assert operator["spec"]["serviceAccountName"] == release

        # The webhook, through the chart's Service: a Secret that does not exist is
        # something only the operator's code can refuse (the CRD's schema cannot).
        wait_until(
            lambda: _webhook_service(kube_api) == {"namespace": namespace, "name": f"{release}-webhook"},
            60,
            "the operator to announce its webhook Service",
        )
        missing = job_handler("no-secret", image=worker_image, database={"secretRef": {"name": "missing"}})
        refused: list[str] = []

        def refuses() -> bool:
            # failurePolicy is Ignore: an accepted apply means the webhook was not reached (yet).
            done = apply(missing)
            if done.returncode == 0:
                node_cluster.kubectl("-n", namespace, "delete", "jobhandler", "no-secret", "--wait=false")
                return False
            refused.append(done.stderr)
            return True

        wait_until(refuses, 30, "the webhook to refuse a JobHandler naming a missing Secret", every=1)
        assert "denied the request" in refused[0] and "Secret 'missing' does not exist" in refused[0], refused[0]

        # The operator, in the cluster, reconciles a JobHandler into the database and into worker Pods.
        done = apply(job_handler("mailer", image=worker_image, maxReplicas=1))
        assert done.returncode == 0, done.stderr

        def handler_row() -> Any:
            row = app.store.registry.handler("e2e_work")
            return row if row and row.source == "crd" else None

        row = wait_until(handler_row, 60, "the handler row the operator writes")
        assert row.concurrency == 6
        wait_until(
            lambda: (
                node_cluster.kubectl("get", "deployment", "mailer-worker", "-n", namespace, check=False).returncode == 0
            ),
            30,
            "the worker Deployment",
        )
        job = app.get_handler("e2e_work").defer(i=7)
        # minReplicas is 0: the operator scales the Deployment up for the waiting job.
        result = job.wait(180)
        assert job.refresh().status is JobStatus.SUCCEEDED
        assert result["pid"] == 1, "run by a worker that is PID 1 of its container"
        (attempt,) = job.attempts_log()
        (worker,) = [w for w in app.store.registry.workers() if w["id"] == attempt.worker_id]
        pod = json.loads(
            node_cluster.kubectl("get", "pod", str(worker["hostname"]), "-n", namespace, "-o", "json").stdout
        )
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert pod["spec"]["containers"][0]["image"] == worker_image
        print(f"install, refusal, reconcile, scale-up and a job: {time.monotonic() - began:.1f} s")
    finally:
        # The operator removes its finalizer while it still runs; then the chart goes, and
        # the webhook configuration kopf wrote (no Helm object: helm would leave it).
        kubectl = node_cluster.kubectl
        kubectl("-n", namespace, "delete", "jobhandlers", "--all", "--timeout=60s", check=False, timeout=90)
        subprocess.run(
            [*helm, "uninstall", release, "--namespace", namespace, "--wait"], capture_output=True, timeout=120
        )
        kubectl("delete", "validatingwebhookconfiguration", "jobstead.io", "--ignore-not-found", check=False)
        app.close()
