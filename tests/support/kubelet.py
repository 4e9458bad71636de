"""A test harness that plays the kubelet for one Node: each Pod bound to it runs as a local process.

Only for sessions without the local node (``make test NODE=0``, a user who is
not root, ``make e2e-kind``): there the control plane has the real scheduler and
controllers but no kubelet, and in kind a real kubelet's Pods could not reach
the tests' PostgreSQL on 127.0.0.1, so nothing would run the worker Pods the
operator asks for. With the node, ``tests/e2e/pods.py`` uses real containers.

The harness registers a Ready Node (and keeps its heartbeat Lease fresh, so the node
lifecycle controller does not evict anything), watches Pods scheduled to it,
runs each container's command with its environment resolved (Secrets,
``fieldRef``), reports the Pod Running and Ready, restarts a container that
exits (restartPolicy Always), and on deletion sends SIGTERM, waits up to the
Pod's grace period, SIGKILLs, and finalises the deletion as a kubelet does.

``jobstead`` at the head of a command runs as ``python -m jobstead`` from the
repository root, so worker Pods import test apps (``tests.apps...``).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger("tests.kubelet")
REPO = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _die_with_parent() -> None:
    os.setsid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    process: subprocess.Popen[bytes]
    command: list[str]
    env: dict[str, str]
    grace: int
    restarts: int = 0
    stopping: bool = False
    log: Path = field(default_factory=Path)


class FakeKubelet:
    def __init__(self, api: client.ApiClient, *, node: str = "jobstead-e2e-node", log_dir: Path) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.node = node
        self.log_dir = log_dir
        self.pods: dict[str, RunningPod] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> FakeKubelet:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._register_node()
        for target in (self._watch_pods, self._heartbeat, self._supervise):
            t = threading.Thread(target=target, name=f"kubelet-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            pods = list(self.pods.values())
        for pod in pods:
            self._terminate(pod, grace=2)
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.node)
        for t in self._threads:
            t.join(timeout=5)

    def running(self) -> list[RunningPod]:
        with self._lock:
            return [p for p in self.pods.values() if p.process.poll() is None and not p.stopping]

    # -- the node --------------------------------------------------------------

    def _register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux"},
            },
        }
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.node)
        self.core.create_node(body)
        self._report_node()

    def _report_node(self) -> None:
        now = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "500"}
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "test harness playing the kubelet",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        self.core.patch_node_status(
            self.node,
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "conditions": [ready],
                    "nodeInfo": _node_info(),
                }
            },
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(5):
            try:
                self._report_node()
                self._renew_lease()
            except Exception:
                logger.exception("node heartbeat failed")

    def _renew_lease(self) -> None:
        now = _now()
        body = {
            "metadata": {"name": self.node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": now},
        }
        try:
            self.coordination.patch_namespaced_lease(self.node, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    # -- pods ------------------------------------------------------------------

    def _watch_pods(self) -> None:
        selector = f"spec.nodeName={self.node}"
        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces, field_selector=selector, timeout_seconds=5
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    self._on_pod(event["type"], event["object"])
            except Exception:
                if not self._stop.is_set():
                    logger.exception("pod watch failed; restarting it")
                    time.sleep(0.5)

    def _on_pod(self, kind: str, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        with self._lock:
            known = self.pods.get(uid)
        if kind == "DELETED" or pod.metadata.deletion_timestamp is not None:
            if known is not None and not known.stopping:
                grace = pod.metadata.deletion_grace_period_seconds
                threading.Thread(target=self._delete, args=(known, pod, grace), daemon=True).start()
            elif known is None and kind != "DELETED":
                self._finalise(pod)
            return
        if known is None:
            self._start(pod)

    def _start(self, pod: client.V1Pod) -> None:
        container = pod.spec.containers[0]
        command = [*(container.command or []), *(container.args or [])]
        if command and command[0] == "jobstead":
            command = [sys.executable, "-m", "jobstead", *command[1:]]
        env = self._environment(pod, container)
        log = self.log_dir / f"{pod.metadata.namespace}_{pod.metadata.name}.log"
        running = RunningPod(
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
            process=self._spawn(command, env, log),
            command=command,
            env=env,
            grace=int(pod.spec.termination_grace_period_seconds or 30),
            log=log,
        )
        with self._lock:
            self.pods[pod.metadata.uid] = running
        self._report_pod(running, ready=True)

    def _spawn(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:  # the child gets its own copy of the descriptor
            return subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def _environment(self, pod: client.V1Pod, container: client.V1Container) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.value_from and var.value_from.secret_key_ref:
                ref = var.value_from.secret_key_ref
                secret = self.core.read_namespaced_secret(ref.name, pod.metadata.namespace)
                if ref.optional and ref.key not in (secret.data or {}):
                    continue  # an optional key the Secret does not have: the variable is not set
                env[var.name] = base64.b64decode(secret.data[ref.key]).decode()
            elif var.value_from and var.value_from.field_ref:
                path = var.value_from.field_ref.field_path
                env[var.name] = {
                    "metadata.name": pod.metadata.name,
                    "metadata.namespace": pod.metadata.namespace,
                    "spec.nodeName": self.node,
                }.get(path, "")
        return env

    def _report_pod(self, pod: RunningPod, *, ready: bool) -> None:
        now = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        flag = "True" if ready else "False"
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": now,
            "conditions": [
                {"type": t, "status": flag if t != "PodScheduled" else "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": "worker",
                    "ready": ready,
                    "started": ready,
                    "restartCount": pod.restarts,
                    "image": "local",
                    "imageID": "local",
                    "state": {"running": {"startedAt": now}},
                }
            ],
        }
        with contextlib.suppress(ApiException):
            self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})

    def _supervise(self) -> None:
        """restartPolicy Always: a container that exits on its own is started again."""
        while not self._stop.wait(0.5):
            with self._lock:
                pods = list(self.pods.values())
            for pod in pods:
                if not pod.stopping and pod.process.poll() is not None:
                    logger.warning("pod %s exited with %s; restarting", pod.name, pod.process.returncode)
                    pod.restarts += 1
                    pod.process = self._spawn(pod.command, pod.env, pod.log)
                    self._report_pod(pod, ready=True)

    def _delete(self, pod: RunningPod, body: client.V1Pod, grace: int | None) -> None:
        self._terminate(pod, grace=pod.grace if grace is None else grace)
        with self._lock:
            self.pods.pop(pod.uid, None)
        self._finalise(body)

    def _terminate(self, pod: RunningPod, *, grace: int) -> None:
        pod.stopping = True
        if pod.process.poll() is None:
            pod.process.send_signal(signal.SIGTERM)
            try:
                pod.process.wait(max(grace, 0))
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait()

    def _finalise(self, pod: client.V1Pod) -> None:
        """What the kubelet does last: delete the Pod object for good."""
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions={"uid": pod.metadata.uid}),
            )


def _node_info() -> dict[str, str]:
    return {
        "architecture": "amd64",
        "bootID": "",
        "containerRuntimeVersion": "local://process",
        "kernelVersion": os.uname().release,
        "kubeProxyVersion": "",
        "kubeletVersion": "v0.0.0-harness",
        "machineID": "",
        "operatingSystem": "linux",
        "osImage": "local processes",
        "systemUUID": "",
    }
