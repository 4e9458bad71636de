"""Fixtures for tests against a real Kubernetes API: worker Pods, the chart's operator, a PostgreSQL Pods reach.

The cluster itself (``kube_cluster``, ``kube_api``, ``jobstead_crds``,
``namespace``) comes from ``tests/support/kube_fixtures.py``, a plugin of the
root conftest, so the dashboard's tests share the session's one control plane.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from kubernetes import client

from tests.e2e.chart_operator import ChartOperator
from tests.e2e.pods import HARNESS_IMAGE, WorkerPods
from tests.support.controlplane import Cluster
from tests.support.kubelet import FakeKubelet
from tests.support.node import image_archives, image_name
from tests.support.postgres_server import PostgresServer
from tests.support.scratch import server_root

GROUP, VERSION = "jobstead.io", "v1alpha1"


def pod_reachable_server(cluster: Cluster) -> PostgresServer:
    """A PostgreSQL server (not started) on 127.0.0.1 and on the node's address, trusting the Pod network.

    The node's address is this machine's too, so the operator and the tests use
    the same URL as the worker Pods (``pod_database_url``).
    """
    assert cluster.node_ip
    pod_network = cluster.node_ip.rsplit(".", 1)[0] + ".0/24"
    server = PostgresServer(
        settings=[f"listen_addresses=127.0.0.1,{cluster.node_ip}"], root=server_root("jobstead-pg-")
    )
    hba = server.root / "pg_hba.conf"
    hba.write_text(f"local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all {pod_network} trust\n")
    server.settings.append(f"hba_file={hba}")
    return server


@pytest.fixture(scope="session")
def pod_reachable_pg(kube_cluster: Cluster) -> Iterator[PostgresServer]:
    """The session's PostgreSQL for worker Pods on the local node (``pod_reachable_server``)."""
    if not kube_cluster.node_ip:
        pytest.skip("needs the local node: make e2e-node")
    server = pod_reachable_server(kube_cluster).start()
    try:
        yield server
    finally:
        server.cleanup()


def pod_database_url(server: PostgresServer, cluster: Cluster, name: str) -> str:
    """A new database on ``server`` at the node's address, which Pods and this machine both reach."""
    assert cluster.node_ip
    return server.create_database(name).replace("127.0.0.1", cluster.node_ip)


@pytest.fixture(scope="module")
def worker_pods(
    kube_cluster: Cluster, kube_api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerPods]:
    """Who runs a JobHandler's worker Pods: the local node when the session has one, else the kubelet harness."""
    if kube_cluster.node:
        yield WorkerPods(kube_cluster, image_name(image_archives()["testapp"]))
        return
    harness = FakeKubelet(kube_api, log_dir=tmp_path_factory.mktemp("pods")).start()
    try:
        yield WorkerPods(kube_cluster, HARNESS_IMAGE, harness)
    finally:
        harness.stop()


@pytest.fixture(scope="session")
def chart_operator(
    kube_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChartOperator | None]:
    """The chart's operator as a Pod on the local node, for every test that asks (``chart_operator.py``).

    None without a node: those tests start ``jobstead operator`` as a local process, as they always did.
    """
    if not kube_cluster.node:
        yield None
        return
    # One namespace for each test of the session that will ask, so one install serves them all.
    askers = [item for item in request.session.items if "chart_operator" in getattr(item, "fixturenames", ())]
    operator = ChartOperator.install(kube_cluster, len(askers), tmp_path_factory.mktemp("chart-operator"))
    try:
        operator.assert_in_cluster(kube_api)
        yield operator
    finally:
        operator.uninstall()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test served by the chart's operator shows that Pod's log: the operator's side of the story."""
    report = yield
    if report.failed and report.when == "call":
        for operator in ChartOperator.installed:
            if operator.serving == item.nodeid:
                section = f"operator Pod's log (kubectl logs -n {operator.namespace})"
                report.sections.append((section, operator.test_logs()))
    return report
