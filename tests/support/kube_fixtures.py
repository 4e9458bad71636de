"""The session's Kubernetes API as fixtures: the local control plane, our CRDs, namespaces.

A plugin of the root ``tests/conftest.py`` rather than fixtures of
``tests/e2e/conftest.py``, because the dashboard's tests use them too: a module
that imports a session fixture gets a definition of its own, so the session
started a second control plane (and with a node, a second node) for them and
kept both running to its end.

One control plane per test session (about 10 s to start), torn down in the
finalizer whatever the tests did; its workdir (logs, kubeconfig) is kept when a
test failed, and its path printed. Set ``JOBSTEAD_E2E_NODE=1`` to give it a real
node (containerd and a kubelet, ``make e2e-node``), or ``JOBSTEAD_E2E_KUBECONFIG``
to run the same tests against another cluster instead (kind, where Docker exists).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kubernetes import client

    from tests.support.controlplane import Cluster

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="session")
def kube_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The Kubernetes API of this session: kubeconfig, server URL, ``api_client()``, ``kubectl()``."""
    # Imported here: every test run loads this plugin, few of them need Kubernetes.
    from tests.support.controlplane import (
        Cluster,
        ControlPlane,
        ControlPlaneError,
        binary_dir,
        remove_workdir,
        session_workdir,
    )

    try:
        bindir: Path | None = binary_dir()
    except ControlPlaneError as exc:
        bindir = None
        reason = str(exc)
    external = os.environ.get("JOBSTEAD_E2E_KUBECONFIG")
    if external:
        yield Cluster.from_kubeconfig(Path(external), bindir)
        return
    if bindir is None:
        pytest.fail(reason, pytrace=False)

    workdir = session_workdir()
    plane = ControlPlane(workdir, bindir=bindir, node=os.environ.get("JOBSTEAD_E2E_NODE") == "1")
    cluster = plane.start()
    try:
        yield cluster
    finally:
        plane.stop()
        if request.session.testsfailed:
            print(f"\ncontrol plane logs kept in {workdir / 'logs'}")
        else:
            remove_workdir(workdir)


@pytest.fixture(scope="session")
def kube_api(kube_cluster: Cluster) -> Iterator[client.ApiClient]:
    """One admin ApiClient shared by the session's tests."""
    with kube_cluster.api_client() as api:
        yield api


@pytest.fixture(scope="session")
def jobstead_crds(kube_cluster: Cluster) -> list[str]:
    """Install crds/ the way a user would (kubectl apply) and wait until they are served."""
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    names = kube_cluster.kubectl("get", "-f", str(CRD_DIR), "-o", "name").stdout.split()
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return names


@pytest.fixture
def namespace(kube_cluster: Cluster, kube_api: client.ApiClient) -> Iterator[str]:
    """A namespace of this test's own, ready for Pods (its default ServiceAccount exists)."""
    from kubernetes import client

    name = f"e2e-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    kube_cluster.wait_for_service_account(name)
    yield name
    core.delete_namespace(name)
