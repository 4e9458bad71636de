"""A real node for the local control plane: Debian's containerd and a kubelet of the control plane's release.

``tests/support/controlplane.py`` starts it after the control plane when asked
(``ControlPlane(node=True)``, ``make node-up``); this module holds what is the
node's own: its network, its cgroup root, the configuration files of containerd,
CNI and the kubelet, the images it imports, and the clean-up that leaves the
machine as it was. ``hack/node/README.md`` says why each choice was made.

Several nodes may run on one machine (one per test session), so everything
global is named after the node's index: the bridge ``jsn<N>`` with the pod
network 10.244.<N>.0/24, the cgroup root ``/jobstead-<N>``, and the iptables
rule that carries the ``kubernetes`` Service to the API server.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "node" / "build.sh"
IMAGES_SCRIPT = REPO / "hack" / "node" / "images.sh"
NODE_NAME = "jobstead-node"
CONTAINERD = Path("/usr/bin/containerd")
CTR = Path("/usr/bin/ctr")
CNI_BIN_DIR = Path("/usr/lib/cni")
POD_NETWORKS = ipaddress.ip_network("10.244.0.0/16")
BRIDGE_PREFIX = "jsn"
CRI_NAMESPACE = "k8s.io"
# The testapp image under a second name, so a test can roll a JobHandler from one image to another.
ROLLOUT_IMAGE = "localhost/jobstead/testapp:rollout"
# Machine-wide: two sessions starting at once must not pick the same index.
_ALLOCATION_LOCK = Path("/run/jobstead-node.lock")
_MNT_DETACH = 2
_CAP_SYS_RESOURCE = 24


def _has_capability(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


class NodeError(RuntimeError):
    """The node could not be built, started or cleaned up; the message says which."""


def _script_output(script: Path, command: str) -> str:
    result = subprocess.run([str(script), command], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NodeError(result.stderr.strip() or f"{script.name} {command} failed")
    return result.stdout.strip()


def node_binary_dir() -> Path:
    """Folder holding ``kubelet`` and ``pause`` for the current pins (``make node`` builds it)."""
    return Path(_script_output(BUILD_SCRIPT, "bindir"))


def image_archives() -> dict[str, Path]:
    """``base``, ``pause``, ``jobstead``, ``testapp``: the archives hack/node/images.sh built for the current inputs."""
    lines = _script_output(IMAGES_SCRIPT, "archives").splitlines()
    return {name: Path(path) for name, path in (line.split("=", 1) for line in lines)}


def image_name(archive: Path) -> str:
    """The reference an archive was saved under (``localhost/jobstead/<name>:<key>``)."""
    name, key = archive.stem.rsplit("-", 1)
    return f"localhost/jobstead/{name}:{key}"


# -- the network ----------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NodeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    with open(_ALLOCATION_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _links() -> set[str]:
    return {line.split()[0].split("@")[0] for line in _run("ip", "-o", "-br", "link").stdout.splitlines()}


@dataclass(frozen=True)
class NodeNetwork:
    """The node's pod network: a bridge whose address is also the node's, the API server's and PostgreSQL's."""

    index: int

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{POD_NETWORKS.network_address + (self.index << 8)}/24")

    @property
    def gateway(self) -> str:
        """The host side of the bridge: what Pods reach the machine's services at."""
        return str(self.subnet.network_address + 1)

    @property
    def mac(self) -> str:
        """The bridge's own hardware address: locally administered, one per network, never a port's."""
        return f"02:4a:53:00:{self.index:02x}:01"

    @property
    def cgroup_root(self) -> str:
        return f"/jobstead-{self.index}"

    @property
    def _comment(self) -> str:
        return f"jobstead node {self.bridge}"

    @classmethod
    def allocate(cls) -> NodeNetwork:
        """Take the first free index and create its bridge, up, with the gateway address.

        The bridge exists before anything starts because the API server and the
        kubelet listen on its address; the CNI bridge plugin adopts it.
        """
        with _allocation_lock():
            taken = _links()
            for index in range(1, 255):
                network = cls(index)
                if network.bridge not in taken:
                    # A fixed address: a bridge without one takes its lowest port's and changes it when
                    # that Pod's veth goes, so every other Pod's cached gateway address goes stale and it
                    # cannot reach this machine (its database) until ARP gives up on it, 30-60 s later.
                    _run("ip", "link", "add", network.bridge, "address", network.mac, "type", "bridge")
                    _run("ip", "addr", "add", f"{network.gateway}/24", "dev", network.bridge)
                    _run("ip", "link", "set", network.bridge, "up")
                    return network
        raise NodeError("no free pod network left in 10.244.0.0/16")

    def forward_service(self, cluster_ip: str, port: int, target: str, target_port: int) -> None:
        """DNAT a Service's address as seen from Pods to one endpoint: what kube-proxy would do for it."""
        _run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        _run("iptables", "-t", "nat", "-A", "PREROUTING", *self._service_rule(cluster_ip, port, target, target_port))

    def _service_rule(self, cluster_ip: str, port: int, target: str, target_port: int) -> list[str]:
        return [
            "-i", self.bridge, "-d", f"{cluster_ip}/32", "-p", "tcp", "--dport", str(port),
            "-m", "comment", "--comment", self._comment,
            "-j", "DNAT", "--to-destination", f"{target}:{target_port}",
        ]  # fmt: skip

    def release(self) -> None:
        """Remove the rules and the bridge; what is already gone is fine."""
        rules = subprocess.run(["iptables", "-t", "nat", "-S", "PREROUTING"], capture_output=True, text=True).stdout
        for rule in rules.splitlines():
            if f'"{self._comment}"' in rule:
                args = rule.replace(f'"{self._comment}"', "\0").split()
                args = [self._comment if a == "\0" else a for a in args]
                subprocess.run(["iptables", "-t", "nat", "-D", *args[1:]], capture_output=True, check=False)
        # Two sessions may clean up after the same dead one: deleting twice is fine.
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        if self.bridge in _links():
            raise NodeError(f"could not delete the bridge {self.bridge}")


# -- cgroups ----------------------------------------------------------------------------


def _cgroup_mounts() -> list[Path]:
    """Every cgroup hierarchy mounted here (v1 controllers, and the v2 one of a hybrid host)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(fields[0].split()[4]))
    return mounts


def create_cgroup_root(name: str) -> None:
    """The kubelet refuses a cgroupRoot that does not exist in every hierarchy."""
    for mount in _cgroup_mounts():
        path = mount / name.lstrip("/")
        path.mkdir(exist_ok=True)
        for cpuset in ("cpuset.cpus", "cpuset.mems"):
            # A new v1 cpuset has no CPUs and no memory nodes until given its parent's.
            if (path / cpuset).exists() and not (path / cpuset).read_text().strip():
                (path / cpuset).write_text((mount / cpuset).read_text())


def _cgroup_tree(name: str) -> list[Path]:
    """Every cgroup under ``name`` in every hierarchy, deepest first."""
    found: list[Path] = []
    for mount in _cgroup_mounts():
        root = mount / name.lstrip("/")
        if root.is_dir():
            found.extend(Path(dirpath) for dirpath, _, _ in os.walk(root))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_cgroup_tree(name: str, timeout: float = 10) -> None:
    """SIGKILL every process in the tree until none is left, then remove the cgroups."""
    deadline = time.monotonic() + timeout
    while True:
        pids: set[int] = set()
        for cgroup in _cgroup_tree(name):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        if not pids:
            break
        if time.monotonic() > deadline:
            raise NodeError(f"processes {sorted(pids)} in cgroup {name} survive SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for cgroup in _cgroup_tree(name):
        with contextlib.suppress(FileNotFoundError):
            cgroup.rmdir()


# -- mounts and processes -----------------------------------------------------------


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, deepest first."""
    prefix = str(directory.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(Path(point))
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def unmount_under(directory: Path) -> None:
    """Detach every mount at or below ``directory`` (kubelet volumes, sandboxes' netns and shm, rootfs)."""
    umount2 = ctypes.CDLL(None, use_errno=True).umount2
    for _ in range(5):  # a mount may sit on top of another at the same point
        points = mounts_under(directory)
        if not points:
            return
        for point in points:
            umount2(str(point).encode(), _MNT_DETACH)
    raise NodeError(f"still mounted under {directory}: {mounts_under(directory)}")


def _processes_mentioning(directory: Path) -> list[int]:
    """Processes whose command line names ``directory``: containerd's shims carry their socket's path."""
    needle = str(directory.resolve()).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def _kill_processes_mentioning(directory: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while pids := _processes_mentioning(directory):
        if time.monotonic() > deadline:
            raise NodeError(f"processes {pids} using {directory} survive SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


# -- the node ---------------------------------------------------------------------------


class Node:
    """Configuration, images and clean-up of one node; ``ControlPlane`` starts and stops its processes.

    ``workdir`` holds containerd's root, state and socket, the kubelet's root
    directory, the CNI configuration and the IPAM leases, and the pod logs.
    """

    def __init__(self, workdir: Path, network: NodeNetwork) -> None:
        self.workdir = workdir
        self.network = network

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.workdir / "kubelet"

    @property
    def state_file(self) -> Path:
        return self.workdir / "node.json"

    def save_state(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"index": self.network.index}) + "\n")

    @classmethod
    def adopt(cls, workdir: Path) -> Node | None:
        """The node recorded in ``workdir``, if one was started there (possibly by a process now dead)."""
        try:
            state = json.loads((workdir / "node.json").read_text())
        except FileNotFoundError:
            return None
        return cls(workdir, NodeNetwork(int(state["index"])))

    # Configuration ------------------------------------------------------------------

    def write_containerd_config(self, sandbox_image: str) -> Path:
        """containerd with everything of its own under ``workdir``; CRI on, cgroupfs, CNI from Debian."""
        cri = {
            "sandbox_image": sandbox_image,
            # Sandboxes' network namespaces go under the state dir, not /run/netns.
            "netns_mounts_under_state_dir": True,
            # Sandboxes ask for oom_score_adj -998, which needs CAP_SYS_RESOURCE; where root
            # lacks it (some VMs and containers), runc fails every Pod unless containerd clamps.
            "restrict_oom_score_adj": not _has_capability(_CAP_SYS_RESOURCE),
            "containerd": {
                "snapshotter": "overlayfs",
                "default_runtime_name": "runc",
                "runtimes": {
                    "runc": {"runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": False}},
                },
            },
            "cni": {"bin_dir": str(CNI_BIN_DIR), "conf_dir": str(self.workdir / "cni" / "net.d")},
        }
        config = {
            "version": 2,
            "root": str(self.workdir / "containerd" / "root"),
            "state": str(self.workdir / "containerd" / "state"),
            "grpc": {"address": str(self.socket)},
            # opt would install into /opt/containerd; the other snapshotters are not used.
            "disabled_plugins": [
                "io.containerd.internal.v1.opt",
                "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs",
            ],
            "plugins": {"io.containerd.grpc.v1.cri": cri},
        }
        path = self.workdir / "containerd.toml"
        self.workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(_toml(config))
        self._write_cni_config()
        return path

    def _write_cni_config(self) -> None:
        network = self.network
        conflist = {
            "cniVersion": "1.0.0",
            "name": f"jobstead-{network.index}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": network.bridge,
                    "isGateway": True,
                    # Pods talk to this machine and to each other only: no masquerading, no rules to leak.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(network.subnet), "gateway": network.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                },
            ],
        }
        directory = self.workdir / "cni" / "net.d"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "10-jobstead.conflist").write_text(json.dumps(conflist, indent=2) + "\n")

    def write_kubelet_config(
        self, *, ca: Path, serving_cert: Path, serving_key: Path, port: int, healthz_port: int
    ) -> Path:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This kernel mounts cgroup v1 hierarchies; Kubernetes still supports them when asked.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.network.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": self.network.gateway,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz_port,
            "tlsCertFile": str(serving_cert),
            "tlsPrivateKeyFile": str(serving_key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(ca)},
            },
            # Only the API server holds a certificate of our CA with a name the kubelet knows.
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.workdir / "pod-logs"),
            "clusterDomain": "cluster.local",
            # Images cannot be pulled again here: never collect them, never evict for a full disk.
            "imageGCHighThresholdPercent": 100,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "failSwapOn": False,
            "serializeImagePulls": False,
        }
        path = self.workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def kubelet_args(self, config: Path, kubeconfig: Path) -> list[str]:
        return [
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.kubelet_dir}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.network.gateway}",
        ]

    def containerd_args(self, config: Path) -> list[str]:
        return [f"--config={config}", "--log-level=warn"]

    # Images ---------------------------------------------------------------------------

    def import_images(self, archives: list[Path]) -> None:
        """Load docker-archives into containerd's CRI namespace, where the kubelet finds them."""
        for archive in archives:
            result = subprocess.run(
                [
                    str(CTR),
                    "--address",
                    str(self.socket),
                    "--namespace",
                    CRI_NAMESPACE,
                    "images",
                    "import",
                    str(archive),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise NodeError(f"importing {archive.name} failed: {result.stderr.strip()}")

    def tag_image(self, source: str, target: str) -> None:
        result = subprocess.run(
            [str(CTR), "--address", str(self.socket), "--namespace", CRI_NAMESPACE, "images", "tag", source, target],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise NodeError(f"tagging {source} as {target} failed: {result.stderr.strip()}")

    # Clean-up --------------------------------------------------------------------------

    def clean_up(self) -> None:
        """Leave nothing behind: run after the kubelet and containerd were stopped, or died.

        Shims outlive containerd and containers outlive their shims, so both are
        found on their own (by the socket path, by the cgroup root), killed, and
        only then is everything under ``workdir`` unmounted.
        """
        _kill_processes_mentioning(self.workdir)
        _kill_cgroup_tree(self.network.cgroup_root)
        unmount_under(self.workdir)
        self.network.release()


def _toml(document: dict[str, object]) -> str:
    """The little TOML containerd's config needs: tables, strings, booleans, integers, string lists."""
    lines: list[str] = []

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"no TOML for {v!r}")

    def table(prefix: str, body: dict[str, object]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in body.items() if isinstance(v, dict)}
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for key, sub in tables.items():
            name = key if "." not in key else json.dumps(key)
            table(f"{prefix}.{name}" if prefix else name, sub)

    table("", document)
    return "\n".join(lines) + "\n"
