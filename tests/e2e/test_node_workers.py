"""A JobHandler's worker Pods on the local node: the test app's image, PostgreSQL over the Pod network, jobs run.

The first of the operator's tests to run on real containers (``make e2e-node``);
the others still run on the kubelet harness (``tests/support/kubelet.py``).
PostgreSQL listens on the node's address too, and trusts the node's Pod network,
which is how the worker Pods reach it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobstead import App, JobStatus
from tests.e2e.test_operator import GROUP, VERSION, Operator, database_secret, job_handler, wait_until
from tests.support.controlplane import Cluster
from tests.support.node import image_archives, image_name
from tests.support.postgres_server import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def node_cluster(kube_cluster: Cluster) -> Cluster:
    if not kube_cluster.node or not kube_cluster.node_ip:
        pytest.skip("needs the local node: make e2e-node")
    return kube_cluster


@pytest.fixture(scope="module")
def pod_reachable_pg(node_cluster: Cluster) -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 and on the node's address, trusting the Pod network."""
    assert node_cluster.node_ip
    pod_network = node_cluster.node_ip.rsplit(".", 1)[0] + ".0/24"
    server = PostgresServer(settings=[f"listen_addresses=127.0.0.1,{node_cluster.node_ip}"])
    hba = server.root / "pg_hba.conf"
    hba.write_text(f"local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all {pod_network} trust\n")
    server.settings.append(f"hba_file={hba}")
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_worker_pods_run_the_image_and_jobs_from_postgresql(
    node_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    namespace: str,
    pod_reachable_pg: PostgresServer,
    tmp_path: Path,
) -> None:
    assert node_cluster.node_ip
    # One URL for all: the node's address is this machine's, for the operator as for the Pods.
    url = pod_reachable_pg.create_database("workers").replace("127.0.0.1", node_cluster.node_ip)
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    app = App(url, schema=schema)
    from tests.apps import probes

    app.handler(name="e2e_work")(probes.app.get_handler("e2e_work").func)
    app.migrate()
    database_secret(kube_api, namespace, url, schema)
    operator = Operator(node_cluster, namespace, tmp_path / "operator.log")
    try:
        image = image_name(image_archives()["testapp"])
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "jobhandlers", job_handler("mailer", image=image, minReplicas=2, maxReplicas=2)
        )
        jobs = app.get_handler("e2e_work").defer_many([{"i": i} for i in range(40)])

        def finished() -> bool:
            load = app.store.queries.handler_load("e2e_work")
            return load.due == 0 and load.running == 0

        wait_until(finished, 180, "the worker Pods to run every job", every=0.5)
        results = [app.get_job(j.id) for j in jobs]
        assert all(r.status is JobStatus.SUCCEEDED for r in results)
        # Each worker is PID 1 of its container: no job ran as a process of this machine.
        assert {(r.result or {}).get("pid") for r in results} == {1}

        pods: list[dict[str, Any]] = json.loads(
            node_cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout
        )["items"]
        assert len(pods) == 2
        for pod in pods:
            assert pod["spec"]["nodeName"] == node_cluster.node
            (status,) = pod["status"]["containerStatuses"]
            assert status["image"].endswith(image.split("/", 1)[1]) and status["imageID"], status
            assert status["ready"], status
    finally:
        operator.stop()
        app.close()
        print(f"operator log: {tmp_path / 'operator.log'}")
