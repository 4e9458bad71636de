"""The chart's operator as the JobHandler tests' operator on the local node: one ``helm install`` per session.

On the local node the JobHandler tests (``test_operator.py``, ``test_node_workers.py``)
are served by what a user installs: the chart's Deployment running the
repository's image as a Pod, with the chart's ServiceAccount, Roles and
KopfPeerings, in-cluster configuration, probed by the kubelet. It reaches each
test's PostgreSQL at the node's address, as the worker Pods do
(``pod_database_url``).

One install serves the whole session, so its 7-15 s (``helm install --wait``)
are paid once: the chart watches a pool of namespaces created up front, one for
each test that asks for it (the chart grants its Roles per watched namespace,
and the operator cannot be told about a namespace after it started without
restarting its Pod). A test
takes the next namespace of the pool; when it ends its JobHandlers are deleted
(the operator, still running, removes their finalizers and the Deployments go
with them), and after the pool's last test the release is uninstalled. A
failed test's report carries the operator Pod's log from the test's start, as
``kubectl logs`` gives it (``conftest.py``).

The short timings the tests were written for (a 3 s scale-down window, a 4 s
idle cool-down) and the worker defaults one test checks are chart values here:
what a user sets, not an argument only a local process gets. A test that needs
other settings gets an install of its own (``own_operator`` in
``test_operator.py``), with one namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, cast

from kubernetes import client

from tests.support.controlplane import REPO, Cluster
from tests.support.node import image_archives, image_name

#: The timings every JobHandler test of the e2e suite runs with, local process or Pod alike.
SCALE_DOWN_WINDOW_SECONDS = 3
IDLE_COOLDOWN_SECONDS = 4
#: Merged under every worker Deployment (``test_operator.py`` checks that it arrives).
WORKER_DEFAULTS: dict[str, Any] = {"env": [{"name": "FROM_DEFAULTS", "value": "yes"}]}

PEERING = "jobstead"
#: The operator's name on the Events it posts (``runner.settings``); the instance is its Pod's name.
REPORTING_COMPONENT = "jobstead-operator"


class ChartOperatorError(AssertionError):
    """The install did not come up; the message carries what the Pods said."""


@dataclass
class ChartOperator:
    """A ``helm install`` of charts/jobstead watching a pool of namespaces, on the local node."""

    cluster: Cluster
    #: Where the release (and the operator's Pod) lives: none of the tests' namespaces.
    namespace: str
    release: str
    pool: list[str]
    helm_home: Path
    #: Values over the session's (``install``'s ``values``).
    values: dict[str, Any] = field(default_factory=dict)
    taken: list[str] = field(default_factory=list)
    #: The test using the namespace taken last, and since when: whose failure report gets the log.
    serving: str | None = None
    serving_since: datetime | None = None
    #: Every install still running, for the failure reports (``conftest.py``).
    installed: ClassVar[list[ChartOperator]] = []

    @classmethod
    def install(
        cls, cluster: Cluster, pool_size: int, helm_home: Path, values: dict[str, Any] | None = None
    ) -> ChartOperator:
        suffix = uuid.uuid4().hex[:6]
        operator = cls(
            cluster,
            namespace=f"e2e-operator-{suffix}",
            # Contains the chart's name: the release's full name (ServiceAccount, Deployment) is the release name.
            release=f"jobstead-{suffix}",
            pool=[f"e2e-{suffix}-{n}" for n in range(max(pool_size, 1))],
            helm_home=helm_home,
            values=values or {},
        )
        cls.installed.append(operator)
        operator._create_namespaces()
        try:
            operator._install()
        except BaseException:
            operator.uninstall()
            raise
        return operator

    # -- what a test uses ----------------------------------------------------------------

    def take_namespace(self, test: str) -> str:
        """The next namespace of the pool for ``test`` (its node id): watched since the operator started, by it only."""
        left = [ns for ns in self.pool if ns not in self.taken]
        assert left, f"the pool of {len(self.pool)} namespaces is used up: more tests asked than were collected"
        self.taken.append(left[0])
        self.serving, self.serving_since = test, now()
        return left[0]

    def finish(self, namespace: str) -> None:
        """The test is over: its JobHandlers go, and their worker Pods with them (the operator removes finalizers).

        After the pool's last test the operator goes too, rather than idle on
        the node through the rest of the session's tests.
        """
        self.cluster.kubectl("delete", "jobhandlers,cronschedules", "--all", "-n", namespace, "--wait=false")
        if len(self.taken) == len(self.pool):
            self.uninstall()

    def test_logs(self) -> str:
        """The operator Pod's log since the current test took its namespace (for its failure report)."""
        return self.logs(self.serving_since)

    def pod(self) -> dict[str, Any]:
        """The operator's Pod (the chart runs one replica here)."""
        pods = self._pods()
        running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        assert len(running) == 1, [p["metadata"]["name"] for p in pods]
        return running[0]

    def logs(self, since: datetime | None = None) -> str:
        args = ["logs", "-n", self.namespace, "-l", f"app.kubernetes.io/instance={self.release}", "--tail=-1"]
        if since is not None:
            args.append(f"--since-time={since.strftime('%Y-%m-%dT%H:%M:%SZ')}")
        done = self.cluster.kubectl(*args, check=False)
        return done.stdout + done.stderr

    def reporters(self, api: client.ApiClient, namespace: str) -> set[str]:
        """Which operators posted Events in ``namespace``: each names its Pod (the chart's POD_ID) or its host."""
        events = client.CoreV1Api(api).list_namespaced_event(namespace).items
        return {str(e.reporting_instance) for e in events if e.reporting_component == REPORTING_COMPONENT}

    def peers(self, api: client.ApiClient, namespace: str) -> dict[str, Any]:
        """The operators keeping the namespace's KopfPeering alive, by kopf's identity (the chart's POD_ID)."""
        peering = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", PEERING
        )
        return dict(cast(dict[str, Any], peering).get("status") or {})

    def assert_in_cluster(self, api: client.ApiClient) -> None:
        """What makes this the chart's operator: its Pod, ServiceAccount and peering, and no local process."""
        pod = self.pod()
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == self.cluster.node
        assert pod["spec"]["serviceAccountName"] == self.release, "the chart's ServiceAccount"
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and "running" in status["state"] and status["imageID"], status
        assert not any(e["name"] == "KUBECONFIG" for e in pod["spec"]["containers"][0].get("env", []))
        # kopf keeps its peering alive under its identity, POD_ID: the Pod is who acts in the tests' namespaces.
        deadline = time.monotonic() + 30
        while name not in (peers := self.peers(api, self.pool[0])):
            assert time.monotonic() < deadline, f"the Pod {name} is not in the KopfPeering of {self.pool[0]}: {peers}"
            time.sleep(0.2)
        # The process is the container's (its cgroup), none runs from this machine's own PID namespace.
        container = status["containerID"].split("://", 1)[1]
        serving = [pid for pid, cmdline in _processes_naming(self.pool[0]) if container in _cgroups(pid)]
        assert serving, f"no process of container {container} serves {self.pool[0]}"
        ours = os.readlink("/proc/self/ns/pid")
        local = [pid for pid, _ in _processes_naming(self.pool[0]) if _pid_namespace(pid) == ours]
        assert not local, f"local processes watch the pool's namespaces: {local}"

    # -- install and uninstall -----------------------------------------------------------

    def helm(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        binary = str(self.cluster.bindir / "helm") if self.cluster.bindir else "helm"
        env = {
            **self.cluster.env(),
            **{f"HELM_{kind}_HOME": str(self.helm_home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")},
        }
        return subprocess.run(
            [binary, "--kubeconfig", str(self.cluster.kubeconfig), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _create_namespaces(self) -> None:
        names = [self.namespace, *self.pool]
        body = "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n" for ns in names)
        self.cluster.kubectl("apply", "-f", "-", stdin=body)
        for ns in names:
            self.cluster.wait_for_service_account(ns)

    def _install(self) -> None:
        repository, tag = image_name(image_archives()["jobstead"]).rsplit(":", 1)
        values: dict[str, Any] = {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            # One replica: peering is tested elsewhere, and one Pod starts faster than two.
            "replicaCount": 1,
            "watchNamespaces": self.pool,
            "operator": {
                "peeringName": PEERING,
                "scaleDownWindowSeconds": SCALE_DOWN_WINDOW_SECONDS,
                "idleCooldownSeconds": IDLE_COOLDOWN_SECONDS,
            },
            "workerDefaults": WORKER_DEFAULTS,
        }
        for key, value in self.values.items():
            values[key] = {**values[key], **value} if isinstance(value, dict) else value
        values_file = self.helm_home / f"{self.release}.values.json"
        values_file.parent.mkdir(parents=True, exist_ok=True)
        values_file.write_text(json.dumps(values))
        began = time.monotonic()
        installed = self.helm(
            "install", self.release, "charts/jobstead", "--namespace", self.namespace,
            "--values", str(values_file), "--wait", "--timeout", "150s",
        )  # fmt: skip
        if installed.returncode != 0:
            described = self.cluster.kubectl("describe", "pods", "-n", self.namespace, check=False).stdout
            raise ChartOperatorError(f"helm install failed: {installed.stderr}\n{described}\n{self.logs()}")
        print(f"helm install of the operator: {time.monotonic() - began:.1f} s")

    def uninstall(self) -> None:
        """JobHandlers first, while the operator runs to remove their finalizers; then the release, the namespaces."""
        if self not in self.installed:
            return
        for ns in self.pool:
            self.cluster.kubectl("delete", "jobhandlers,cronschedules", "--all", "-n", ns, "--wait=false", check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._left_in_pool():
            time.sleep(0.5)
        self.helm("uninstall", self.release, "--namespace", self.namespace, timeout=120)
        self.cluster.kubectl("delete", "namespace", self.namespace, *self.pool, "--wait=false", check=False)
        self.installed.remove(self)

    def _left_in_pool(self) -> bool:
        done = self.cluster.kubectl("get", "jobhandlers,cronschedules", "-A", "-o", "json", check=False)
        items = json.loads(done.stdout or "{}").get("items", [])
        return any(i["metadata"]["namespace"] in self.pool for i in items)

    def _pods(self) -> list[dict[str, Any]]:
        done = self.cluster.kubectl(
            "get", "pods", "-n", self.namespace, "-l", f"app.kubernetes.io/instance={self.release}", "-o", "json"
        )
        return list(json.loads(done.stdout)["items"])


def _processes_naming(text: str) -> Iterator[tuple[int, str]]:
    """Processes of this machine (containers' included: the host sees them all) whose command line has ``text``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            yield int(entry.name), cmdline


def _cgroups(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def now() -> datetime:
    return datetime.now(UTC)
