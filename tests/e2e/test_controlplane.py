"""The local control plane itself: the pinned versions, real RBAC, a working scheduler, no strays.

The operator's e2e tests trust this cluster to behave like a real one; these
tests are why they may.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.controlplane import REPO, Cluster, pid_alive, pinned_versions

pytestmark = pytest.mark.e2e


@pytest.fixture
def local_cluster(kube_cluster: Cluster) -> Cluster:
    if not kube_cluster.local or kube_cluster.bindir is None:
        pytest.skip("checks the locally built control plane")
    return kube_cluster


def test_versions_are_the_pinned_ones(local_cluster: Cluster, kube_api: client.ApiClient) -> None:
    assert local_cluster.bindir
    pins = pinned_versions(local_cluster.bindir)
    server = client.VersionApi(kube_api).get_code()
    assert server.git_version == pins["kubernetes"]
    assert f"v{server.major}.{server.minor}." in pins["kubernetes"] + "."

    kubectl = json.loads(local_cluster.kubectl("version", "--client", "-o", "json").stdout)
    assert kubectl["clientVersion"]["gitVersion"] == pins["kubernetes"]

    etcd = subprocess.run([local_cluster.bindir / "etcd", "--version"], capture_output=True, text=True, check=True)
    assert f"etcd Version: {pins['etcd'].removeprefix('v')}" in etcd.stdout

    helm = subprocess.run(
        [local_cluster.bindir / "helm", "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        check=True,
        env=local_cluster.env(),
    )
    assert helm.stdout == pins["helm"]


def test_authorization_is_rbac(kube_cluster: Cluster, namespace: str) -> None:
    """A ServiceAccount may do nothing until a Role grants it; the admin may do everything."""
    stranger = f"system:serviceaccount:{namespace}:default"
    can_i = kube_cluster.kubectl(
        "auth", "can-i", "create", "deployments", "-n", namespace, "--as", stranger, check=False
    )
    assert can_i.stdout.strip() == "no"
    kube_cluster.kubectl("create", "role", "deployer", "-n", namespace, "--verb=create", "--resource=deployments")
    kube_cluster.kubectl("create", "rolebinding", "deployer", "-n", namespace, "--role=deployer", f"--user={stranger}")
    assert (
        kube_cluster.kubectl("auth", "can-i", "create", "deployments", "-n", namespace, "--as", stranger).stdout.strip()
        == "yes"
    )
    assert kube_cluster.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"


def test_scheduler_binds_pods_to_a_registered_node(kube_api: client.ApiClient, namespace: str) -> None:
    """No kubelet runs, but a Node object with capacity is enough for the scheduler to bind to it."""
    core = client.CoreV1Api(kube_api)
    node_name = f"e2e-node-{uuid.uuid4().hex[:8]}"
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node_name, labels={"jobstead.io/e2e": node_name})))
    try:
        capacity = {"cpu": "4", "memory": "8Gi", "pods": "10"}
        core.patch_node_status(node_name, {"status": {"capacity": capacity, "allocatable": capacity}})
        core.create_namespaced_pod(
            namespace,
            client.V1Pod(
                metadata=client.V1ObjectMeta(name="bound"),
                spec=client.V1PodSpec(
                    node_selector={"jobstead.io/e2e": node_name},
                    # A new Node is tainted not-ready until a kubelet reports; there is none.
                    tolerations=[client.V1Toleration(operator="Exists")],
                    containers=[client.V1Container(name="c", image="registry.example.com/any:1")],
                ),
            ),
        )
        deadline = time.monotonic() + 30
        while (pod := core.read_namespaced_pod("bound", namespace)).spec is None or not pod.spec.node_name:
            assert time.monotonic() < deadline, "the scheduler did not bind the pod"
            time.sleep(0.2)
        assert pod.spec.node_name == node_name
    finally:
        # A bound Pod waits for its kubelet to confirm deletion: there is none to wait for.
        core.delete_namespaced_pod("bound", namespace, grace_period_seconds=0)
        core.delete_node(node_name)


CHILD = """
import json, sys, time
from pathlib import Path
from tests.support.controlplane import ControlPlane
plane = ControlPlane(Path(sys.argv[1]))
plane.start()
print(json.dumps([p.pid for p in plane.processes.values()]), flush=True)
time.sleep(600)
"""


def test_processes_die_with_the_process_that_started_them(local_cluster: Cluster, tmp_path: Path) -> None:
    """kill -9 of the test process (no finalizer runs) still leaves no control plane behind."""
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "plane")],
        cwd=REPO,
        env=local_cluster.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pids: list[int] = json.loads(parent.stdout.readline() or "[]")
        assert len(pids) == 4 and all(pid_alive(pid) for pid in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while survivors := [pid for pid in pids if pid_alive(pid)]:
        assert time.monotonic() < deadline, f"still running: {survivors}"
        time.sleep(0.1)
