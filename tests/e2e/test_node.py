"""The local node: a kubelet of the pinned release on Debian's containerd, running Pods for real.

These tests are why the others may trust a Pod on this node to be a container:
its own PID namespace, the image it names, the API reached the way a Pod in any
cluster reaches it (the ``kubernetes`` Service, its ServiceAccount token), and
nothing left behind when the node stops. ``make e2e-node`` runs them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.support.controlplane import REPO, Cluster, ControlPlane, pid_alive, pinned_versions, remove_workdir
from tests.support.node import (
    BRIDGE_PREFIX,
    NODE_NAME,
    Node,
    NodeNetwork,
    image_archives,
    image_name,
    mounts_under,
    node_binary_dir,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def node_cluster(kube_cluster: Cluster) -> Cluster:
    if not kube_cluster.node:
        pytest.skip("needs the local node: make e2e-node")
    return kube_cluster


@pytest.fixture(scope="module")
def image() -> str:
    """The repository's image: Debian with its Python, and jobstead (the entrypoint, replaced here)."""
    return image_name(image_archives()["jobstead"])


def _phase(cluster: Cluster, namespace: str, pod: str) -> str:
    return cluster.kubectl("get", "pod", pod, "-n", namespace, "-o", "jsonpath={.status.phase}").stdout


def run_pod(cluster: Cluster, namespace: str, image: str, script: str, timeout: float = 60) -> str:
    """``kubectl run`` a Pod that runs ``script`` with sh and exits; its log once it Succeeded."""
    cluster.kubectl(
        "run", "probe", "-n", namespace, f"--image={image}", "--image-pull-policy=Never",
        "--restart=Never", "--command", "--", "sh", "-c", script,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while (phase := _phase(cluster, namespace, "probe")) in ("", "Pending", "Running"):
        assert time.monotonic() < deadline, f"pod still {phase or 'unscheduled'} after {timeout} s"
        time.sleep(0.5)
    log = cluster.kubectl("logs", "probe", "-n", namespace).stdout
    assert phase == "Succeeded", f"pod {phase}: {log}"
    return log


def test_the_node_is_ready_with_the_pinned_kubelet(node_cluster: Cluster, kube_api: client.ApiClient) -> None:
    nodes = node_cluster.kubectl("get", "nodes", "-o", "json")
    (node,) = json.loads(nodes.stdout)["items"]
    assert node["metadata"]["name"] == NODE_NAME
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == pinned_versions(node_binary_dir())["kubernetes"]
    assert info["containerRuntimeVersion"].startswith("containerd://")


def test_a_pod_runs_in_a_container_of_its_own(node_cluster: Cluster, namespace: str, image: str) -> None:
    """PID 1 in a PID namespace that is not ours, the image's root: not a local process in disguise."""
    log = run_pod(
        node_cluster,
        namespace,
        image,
        # $$$$: the kubelet expands $(VAR) in commands and turns $$ into $.
        'echo "pid=$$$$"; echo "pidns=$(readlink /proc/self/ns/pid)"; . /etc/os-release; echo "os=$VERSION_CODENAME"',
    )
    values = dict(line.split("=", 1) for line in log.split())
    assert values["pid"] == "1"
    assert values["pidns"] != os.readlink("/proc/self/ns/pid")
    assert values["os"] == "bookworm"


IN_CLUSTER = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
url = "https://%s:%s/version" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
request = urllib.request.Request(url, headers={"Authorization": "Bearer " + open(sa + "/token").read()})
with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=sa + "/ca.crt"), timeout=10) as r:
    print(json.load(r)["gitVersion"])
"""


def test_a_pod_reaches_the_api_through_the_kubernetes_service(
    node_cluster: Cluster, namespace: str, image: str
) -> None:
    """What in-cluster configuration does: the Service's address, the mounted token and CA."""
    log = run_pod(node_cluster, namespace, image, f"python3 -c '{IN_CLUSTER}'")
    assert log.strip() == pinned_versions(node_binary_dir())["kubernetes"]


def _node_traces(workdir: Path) -> dict[str, object]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    needle = str(workdir.resolve()).encode()
    processes = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    processes.append(int(entry.name))
            except OSError:
                continue
    return {
        "mounts": mounts_under(workdir),
        "processes": processes,
        "bridges": [line.split(":")[1].strip() for line in links.splitlines() if f" {BRIDGE_PREFIX}" in line],
    }


@pytest.fixture
def second_node(node_cluster: Cluster, tmp_path: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path / "plane", bindir=node_cluster.bindir, node=True)
    try:
        yield plane
    finally:
        plane.stop()


def test_stopping_leaves_nothing_behind(second_node: ControlPlane, tmp_path: Path) -> None:
    """Containers, shims, mounts, cgroups, the bridge and its rule all go with the node."""
    before = _node_traces(tmp_path)
    cluster = second_node.start()
    assert second_node.node
    network = second_node.node.network
    namespace = "default"
    cluster.kubectl(
        "run", "sleeper", "-n", namespace, f"--image={image_name(image_archives()['jobstead'])}",
        "--image-pull-policy=Never", "--restart=Never", "--command", "--", "sleep", "3600",
    )  # fmt: skip
    cluster.kubectl("wait", "pod/sleeper", "-n", namespace, "--for=condition=Ready", "--timeout=60s")
    running = _node_traces(tmp_path)
    assert running["mounts"] and running["processes"] and network.bridge in running["bridges"]  # type: ignore[operator]

    second_node.stop()

    assert _node_traces(tmp_path) == before
    assert not any(Path(mount, network.cgroup_root.lstrip("/")).exists() for mount in Path("/sys/fs/cgroup").iterdir())
    rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
    assert network.bridge not in rules


def test_helm_install_with_defaults_runs_the_operator(node_cluster: Cluster, namespace: str, image: str) -> None:
    """The chart as a user installs it: its ServiceAccount and RBAC, in-cluster configuration, probes by the kubelet."""
    repository, tag = image.rsplit(":", 1)
    release = f"jobstead-{namespace[-6:]}"  # contains the chart name: the full name is the release name
    helm = [
        str(node_cluster.bindir / "helm") if node_cluster.bindir else "helm",
        "--kubeconfig",
        str(node_cluster.kubeconfig),
    ]
    installed = subprocess.run(
        [
            *helm, "install", release, "charts/jobstead", "--namespace", namespace,
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
            "--wait", "--timeout", "120s",
        ],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    try:
        assert installed.returncode == 0, installed.stderr
        pods = json.loads(node_cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        assert len(pods) == 2  # the chart's default replicaCount
        for pod in pods:
            assert pod["spec"]["nodeName"] == NODE_NAME
            assert pod["spec"]["serviceAccountName"] == release
            (status,) = pod["status"]["containerStatuses"]
            # Ready: its readiness probe passed; never restarted: no liveness probe failed.
            assert status["ready"] and "running" in status["state"] and status["restartCount"] == 0, status
            assert status["imageID"], "no image ID: not run by the container runtime"
            log = node_cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"]).stdout
            # Logged in with the Pod's ServiceAccount (in-cluster), probed by the kubelet.
            assert "Initial authentication has finished" in log
            assert "kube-probe/" in log
    finally:
        subprocess.run(
            [*helm, "uninstall", release, "--namespace", namespace, "--wait"], capture_output=True, timeout=120
        )


KILLED_SESSION = """
import json, sys, time
from pathlib import Path
from tests.support.controlplane import ControlPlane
plane = ControlPlane(Path(sys.argv[1]), node=True)
cluster = plane.start()
cluster.kubectl("run", "sleeper", "--image=" + sys.argv[2], "--image-pull-policy=Never", "--restart=Never",
                "--command", "--", "sleep", "3600")
cluster.kubectl("wait", "pod/sleeper", "--for=condition=Ready", "--timeout=90s", timeout=120)
print(json.dumps([p.pid for p in plane.processes.values()]), flush=True)
time.sleep(600)
"""


def test_a_killed_sessions_node_is_cleaned_up_by_the_next(node_cluster: Cluster, image: str, tmp_path: Path) -> None:
    """kill -9 of a test process: its kubelet and containerd die with it, the rest is removed by the next session."""
    workdir = tmp_path / "plane"
    parent = subprocess.Popen(
        [sys.executable, "-c", KILLED_SESSION, str(workdir), image],
        cwd=REPO,
        env=node_cluster.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pids: list[int] = json.loads(parent.stdout.readline() or "[]")
        assert len(pids) == 6, "etcd, the API server, controller manager, scheduler, containerd, kubelet"
        node = Node.adopt(workdir / "node")
        assert node is not None
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while survivors := [pid for pid in pids if pid_alive(pid)]:
        assert time.monotonic() < deadline, f"still running: {survivors}"
        time.sleep(0.1)
    # What no signal reaches: the container and its shim, its mounts, the bridge.
    left = _node_traces(workdir)
    assert left["processes"] and left["mounts"] and node.network.bridge in left["bridges"]  # type: ignore[operator]

    remove_workdir(workdir)  # what session_workdir() does for a dead session's workdir

    assert not workdir.exists()
    assert _node_traces(workdir) == {"mounts": [], "processes": [], "bridges": _node_traces(tmp_path)["bridges"]}
    assert node.network.bridge not in _node_traces(tmp_path)["bridges"]


def test_each_node_has_its_own_network_cgroups_and_state(tmp_path: Path) -> None:
    """What lets two nodes share a machine, read back from the files containerd, CNI and the kubelet get."""
    node = Node(tmp_path, NodeNetwork(7))
    config = tomllib.loads(node.write_containerd_config("localhost/jobstead/pause:k").read_text())
    assert all(config[key].startswith(str(tmp_path)) for key in ("root", "state"))
    assert config["grpc"]["address"] == str(node.socket)
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["sandbox_image"] == "localhost/jobstead/pause:k"
    assert "io.containerd.internal.v1.opt" in config["disabled_plugins"]

    (conflist,) = (tmp_path / "cni" / "net.d").iterdir()
    (bridge,) = json.loads(conflist.read_text())["plugins"]
    assert bridge["bridge"] == "jsn7" and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.7.0/24", "gateway": "10.244.7.1"}]]
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))

    kubelet = yaml.safe_load(
        node.write_kubelet_config(
            ca=tmp_path / "ca.crt",
            serving_cert=tmp_path / "s.crt",
            serving_key=tmp_path / "s.key",
            port=1,
            healthz_port=2,
        ).read_text()
    )
    assert (kubelet["cgroupRoot"], kubelet["cgroupDriver"], kubelet["failCgroupV1"]) == (
        "/jobstead-7",
        "cgroupfs",
        False,
    )
    assert kubelet["address"] == "10.244.7.1" and kubelet["containerRuntimeEndpoint"] == f"unix://{node.socket}"
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["imageGCHighThresholdPercent"] == 100


def test_the_bridge_keeps_its_address_when_a_pods_veth_goes(node_cluster: Cluster) -> None:
    """Pods cache the gateway's hardware address: if the bridge took a port's and changed it when that
    Pod went (Linux does, unless the address is set), the other Pods lost this machine for 30-60 s."""
    network = NodeNetwork.allocate()
    try:
        address = Path(f"/sys/class/net/{network.bridge}/address")
        before = address.read_text().strip()
        for n in (0, 1):
            subprocess.run(["ip", "link", "add", f"jsnt{n}", "type", "veth", "peer", "name", f"jsntp{n}"], check=True)
            subprocess.run(["ip", "link", "set", f"jsnt{n}", "master", network.bridge], check=True)
        lowest = min(Path(f"/sys/class/net/jsnt{n}/address").read_text().strip() for n in (0, 1))
        subprocess.run(["ip", "link", "del", "jsnt0"], check=True)
        assert before == network.mac and address.read_text().strip() == network.mac, (before, lowest)
    finally:
        for n in (0, 1):
            subprocess.run(["ip", "link", "del", f"jsnt{n}"], capture_output=True, check=False)
        network.release()
