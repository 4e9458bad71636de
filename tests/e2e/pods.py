"""Where a JobHandler's worker Pods run in the e2e tests: the local node, or the kubelet harness without one.

On the local node (``make test`` with ``JOBSTEAD_NODE=1``, ``make e2e-node``) a
worker Pod is a container of the test app's image, started, probed, stopped and
restarted by a real kubelet, and it reaches PostgreSQL over the Pod network
(``pod_reachable_pg`` in ``conftest.py``). Without a node (no root, or the node
left out to keep a run short) ``tests/support/kubelet.py`` plays the kubelet and
runs each Pod's command as a local process. The tests ask this class only what
both can answer, so the same test runs on either.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.controlplane import Cluster
from tests.support.kubelet import FakeKubelet

#: What a JobHandler names as its image when the harness runs its Pods (it runs any image as local code).
HARNESS_IMAGE = "local"


@dataclass
class WorkerPods:
    cluster: Cluster
    #: The image a JobHandler names: the test app's image on the node, anything for the harness.
    image: str
    harness: FakeKubelet | None = None

    def running(self, namespace: str) -> list[str]:
        """Names of the namespace's Pods whose containers have not stopped (terminating ones included)."""
        if self.harness:
            return [p.name for p in self.harness.running() if p.namespace == namespace]
        pods = json.loads(self.cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        return [p["metadata"]["name"] for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")]

    def environment(self, namespace: str, name: str, variable: str) -> str:
        """A variable as the Pod's worker sees it (Secrets resolved when its container started)."""
        if self.harness:
            pod = next(p for p in self.harness.running() if p.namespace == namespace and p.name == name)
            return pod.env[variable]
        # Through the API server to the kubelet, into the container: as `kubectl exec` does anywhere.
        return self.cluster.kubectl("exec", "-n", namespace, name, "--", "printenv", variable).stdout.strip()

    def kill_and_delete(self, namespace: str, name: str) -> None:
        """The Pod's node dies: its worker gets SIGKILL (no graceful release) and the Pod object goes at once.

        On the local node the kubelet lives on, and would restart a killed
        container whose Pod still exists: that new worker could claim the job
        its predecessor lost, and lose it again when the deletion reaches it
        (the operator releases what a Pod holds when it goes, not what a
        worker claims after). Deleting the Pod first did not close that: a
        force deletion reaches the kubelet later, and a container killed
        meanwhile was restarted (``lost, lost, succeeded``). So the worker is
        frozen first (SIGSTOP: it does nothing more, as on a dead node, and a
        stopped container is not restarted), the Pod deleted, and the worker
        killed once the kubelet has begun to stop the container (its SIGTERM
        is pending: the kubelet knows the Pod is gone and restarts nothing; a
        stopped process hands nothing back), or after 20 s at most.
        """
        if self.harness:
            pod = next(p for p in self.harness.running() if p.namespace == namespace and p.name == name)
            os.kill(pod.process.pid, signal.SIGKILL)
            self._delete_now(namespace, name)
            return
        status = json.loads(self.cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)["status"]
        (container,) = status["containerStatuses"]
        container_id = container["containerID"].split("://", 1)[1]
        pids = container_pids(container_id)
        assert pids, f"no process of container {container_id} on this machine"
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self._delete_now(namespace, name)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(_terminating(pid) for pid in pids):
            time.sleep(0.1)
        for pid in container_pids(container_id):
            os.kill(pid, signal.SIGKILL)

    def _delete_now(self, namespace: str, name: str) -> None:
        self.cluster.kubectl("delete", "pod", name, "-n", namespace, "--grace-period=0", "--force", "--wait=false")


def _terminating(pid: int) -> bool:
    """Whether a SIGTERM waits for the (stopped) process, or it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    pending = next((line.split()[1] for line in status.splitlines() if line.startswith("ShdPnd:")), "0")
    return bool(int(pending, 16) & (1 << (signal.SIGTERM - 1)))


def container_pids(container_id: str) -> list[int]:
    """The host's pids in a container's cgroup (cgroupfs names the cgroup after the container's ID)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if container_id in (entry / "cgroup").read_text():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids
