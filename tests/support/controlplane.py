"""A local Kubernetes control plane for the e2e tests and ``make cluster-up``.

No Docker engine runs on our machines, so kind is out. Like controller-runtime's
envtest we run the real binaries on loopback, and unlike envtest we also run
kube-controller-manager (owner-reference garbage collection, Deployment ->
ReplicaSet -> Pod) and kube-scheduler, because the operator's Deployments must
become real Pods. With ``node=True`` a real node runs them (containerd and a
kubelet, ``tests/support/node.py``); without one, ``tests/support/kubelet.py``
plays the kubelet for the e2e tests.

``hack/controlplane/build.sh`` builds the binaries (``make controlplane``);
this module never builds, it only asks the script where the current build is,
so the cache key lives in one place.

Every start makes a fresh PKI (a CA, one serving certificate for all three
servers, client certificates for the admin in ``system:masters`` and for the
controller manager and scheduler under their bootstrap RBAC names), so
authentication and ``--authorization-mode=RBAC`` are the real thing.

Processes started for a test session die with it: each runs in its own process
group and gets ``PR_SET_PDEATHSIG``, so even a ``kill -9`` of pytest leaves
nothing behind. ``make cluster-up`` starts them detached instead and records
them in ``state.json`` for ``make cluster-down``.

    python -m tests.support.controlplane up|down|env|status
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime as dt
import fcntl
import functools
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client, config

from tests.support.node import (
    CONTAINERD,
    NODE_NAME,
    ROLLOUT_IMAGE,
    Node,
    NodeError,
    NodeNetwork,
    create_cgroup_root,
    image_archives,
    image_name,
    node_binary_dir,
    unmount_under,
)

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "controlplane" / "build.sh"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
FRONT_PROXY_CLIENT = "front-proxy-client"
_NODE_PROCESSES = ("kubelet", "containerd")
_STOP_ORDER = (*_NODE_PROCESSES, "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or stopped; the message says which."""


def cache_dir() -> Path:
    """``$JOBSTEAD_CACHE_DIR`` as the Makefile exports it, else ``<repo>/.cache``."""
    return Path(os.environ.get("JOBSTEAD_CACHE_DIR") or REPO / ".cache")


def binary_dir() -> Path:
    """Folder of the binaries built for the current pins, or an error saying how to build them."""
    result = subprocess.run(
        [str(BUILD_SCRIPT), "bindir"],
        capture_output=True,
        text=True,
        env={**os.environ, "JOBSTEAD_CACHE_DIR": str(cache_dir())},
        check=False,
    )
    if result.returncode != 0:
        raise ControlPlaneError(result.stderr.strip() or "hack/controlplane/build.sh bindir failed")
    return Path(result.stdout.strip())


def pinned_versions(bindir: Path) -> dict[str, str]:
    """The versions a build was made from (``kubernetes``, ``etcd``, ``helm``), as build.sh recorded them."""
    text = (bindir.parent / "versions").read_text()
    return dict(line.split("=", 1) for line in text.split())


# -- certificates ------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its private key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Everything the control plane authenticates with; made fresh for every start."""

    ca: KeyPair
    serving: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    front_proxy: KeyPair
    kubelet_client: KeyPair
    service_account_key: Path
    service_account_public_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _ca_certificate(directory: Path, valid_from: dt.datetime, valid_until: dt.datetime) -> KeyPair:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("jobstead-local-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca = KeyPair(directory / "ca.crt", directory / "ca.key")
    ca.cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca.key, ca_key)
    return ca


def issue_certificate(
    ca: KeyPair,
    stem: Path,
    subject: x509.Name,
    *,
    server_ips: tuple[str, ...] = (),
    server_names: tuple[str, ...] = (),
) -> KeyPair:
    """A certificate signed by ``ca``, written to ``<stem>.crt`` and ``<stem>.key``.

    With server addresses or names it is a serving certificate for them, else a client one.
    Valid from an hour ago (clock skew) for a year.
    """
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    server = bool(server_ips or server_names)
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        names.extend(x509.DNSName(name) for name in server_names)
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = KeyPair(stem.with_suffix(".crt"), stem.with_suffix(".key"))
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pair.key, key)
    return pair


def make_pki(directory: Path, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Write a CA and the certificates signed by it into ``directory``.

    ``extra_ips``: addresses besides 127.0.0.1 the API server is reached at (a
    node's Pods reach it on the node's bridge). EC P-256 keys: generating them
    takes microseconds, and every component accepts them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca = _ca_certificate(directory, now - dt.timedelta(hours=1), now + dt.timedelta(days=365))

    def client_cert(stem: str, subject: x509.Name) -> KeyPair:
        return issue_certificate(ca, directory / stem, subject)

    sa_key = ec.generate_private_key(ec.SECP256R1())
    sa_private, sa_public = directory / "sa.key", directory / "sa.pub"
    _write_key(sa_private, sa_key)
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return Pki(
        ca=ca,
        serving=issue_certificate(
            ca,
            directory / "serving",
            _name("kube-apiserver"),
            # The first address of the service range: the `kubernetes` Service.
            server_ips=("127.0.0.1", "10.0.0.1", *extra_ips),
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        ),
        admin=client_cert("admin", _name("jobstead-admin", "system:masters")),
        # The names the bootstrap RBAC policy grants the components' permissions to.
        controller_manager=client_cert("kube-controller-manager", _name("system:kube-controller-manager")),
        scheduler=client_cert("kube-scheduler", _name("system:kube-scheduler")),
        # The apiserver's identity towards aggregated APIs; also what lets the
        # components' delegated authentication find a request-header CA.
        front_proxy=client_cert("front-proxy-client", _name(FRONT_PROXY_CLIENT)),
        # The apiserver's identity towards kubelets (logs, exec, port-forward).
        kubelet_client=client_cert("kubelet-client", _name("kube-apiserver-kubelet-client", "system:masters")),
        service_account_key=sa_private,
        service_account_public_key=sa_public,
    )


def write_kubeconfig(path: Path, *, server: str, ca: Path, user: str, credentials: KeyPair) -> None:
    """A kubeconfig with everything embedded, so it keeps working when copied elsewhere."""

    def data(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "jobstead-local", "cluster": {"server": server, "certificate-authority-data": data(ca)}}],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": data(credentials.cert),
                    "client-key-data": data(credentials.key),
                },
            }
        ],
        "contexts": [{"name": "jobstead-local", "context": {"cluster": "jobstead-local", "user": user}}],
        "current-context": "jobstead-local",
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)


# -- the cluster as its users see it -------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """A running Kubernetes API as tests and the operator use it: kubeconfig, URL, clients."""

    kubeconfig: Path
    server: str
    bindir: Path | None = None
    local: bool = True
    # The local node's name when one runs (a kubelet, containerd): Pods really run.
    node: str | None = None
    # Its address: where Pods reach this machine (the API server, a test's PostgreSQL).
    node_ip: str | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, bindir: Path | None = None) -> Cluster:
        """Some other cluster (kind, for ``make e2e-kind``), known only by its kubeconfig."""
        document = yaml.safe_load(kubeconfig.read_text())
        contexts = {c["name"]: c["context"] for c in document["contexts"]}
        clusters = {c["name"]: c["cluster"] for c in document["clusters"]}
        current = contexts[document["current-context"]]
        return cls(kubeconfig, clusters[current["cluster"]]["server"], bindir, local=False)

    def api_client(self) -> client.ApiClient:
        """A fresh client authenticated as the cluster admin; close it when done."""
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), client_configuration=configuration, persist_config=False
        )
        return client.ApiClient(configuration)

    def env(self) -> dict[str, str]:
        """Environment for subprocesses: KUBECONFIG, and our kubectl/helm first on PATH."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        if self.bindir:
            env["PATH"] = f"{self.bindir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; with ``check`` a failure raises with its stderr."""
        kubectl = str(self.bindir / "kubectl") if self.bindir else "kubectl"
        result = subprocess.run(
            [kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def wait_for_service_account(self, namespace: str, name: str = "default", timeout: float = 30) -> None:
        """Pods are refused until their ServiceAccount exists; the controller manager creates it."""
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    core.read_namespaced_service_account(name, namespace)
                    return
                except client.ApiException as exc:
                    if exc.status != 404 or time.monotonic() > deadline:
                        raise
                time.sleep(0.1)


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (start() retries if one is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL the child when the thread that spawned it ends.

    libc is loaded here, before fork, so the child only makes the system call.
    The parent may have died before prctl ran, hence the getppid check.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            os._exit(125)
        if os.getppid() != parent_pid:
            os._exit(0)

    return preexec


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count: it has already exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _executable(pid: int) -> str | None:
    try:
        target = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    # A rebuild for new pins deletes the old binaries while they may still run.
    return target.removesuffix(" (deleted)")


@dataclass
class _Process:
    name: str
    pid: int
    binary: Path
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        # Not our child (make cluster-down): make sure the pid was not reused.
        return pid_alive(self.pid) and _executable(self.pid) == str(self.binary)

    def stop(self, grace: float) -> None:
        """SIGTERM its process group, SIGKILL what is left after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if not self.running():
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + wait
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.running():
            raise ControlPlaneError(f"{self.name} (pid {self.pid}) survived SIGKILL")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1; with ``node``, a node too.

    ``workdir`` holds the PKI, kubeconfigs, etcd's data and one log per process.
    ``detached`` processes outlive this Python process (``make cluster-up``);
    otherwise they die with the thread that started them.

    ``node`` adds containerd and a kubelet registered as ``jobstead-node``
    (``tests/support/node.py``): the API server then also listens on the node's
    bridge, where Pods reach it through the ``kubernetes`` Service.
    """

    def __init__(
        self, workdir: Path, *, bindir: Path | None = None, detached: bool = False, node: bool = False
    ) -> None:
        self.workdir = workdir
        self.bindir = bindir or binary_dir()
        self.detached = detached
        self.with_node = node
        self.node: Node | None = None
        self.kubeconfig = workdir / "kubeconfig"
        self.processes: dict[str, _Process] = {}
        self.server = ""
        self.image_import_seconds = 0.0

    # The public surface -----------------------------------------------------------

    def start(self, timeout: float = 90.0, attempts: int = 3) -> Cluster:
        """Start everything and wait until Pods could be created; stop it all on failure.

        Ports are picked free just before use; another process can still take one
        first, so a failure to bind starts over on new ports.
        """
        if self.with_node:
            timeout += 120  # importing images, the kubelet's first sync
        for attempt in range(1, attempts + 1):
            try:
                self._start(time.monotonic() + timeout)
                return self.cluster()
            except BaseException as exc:
                logs = "\n".join(f"--- {p.name} ({p.log}):\n{p.log_tail()}" for p in self.processes.values())
                self.stop()
                port_clash = "address already in use" in logs
                if not isinstance(exc, ControlPlaneError) or not port_clash or attempt == attempts:
                    if isinstance(exc, ControlPlaneError):
                        raise ControlPlaneError(f"{exc}\n{logs}") from None
                    raise
        raise AssertionError("unreachable")

    def cluster(self) -> Cluster:
        if not self.node:
            return Cluster(self.kubeconfig, self.server, self.bindir)
        return Cluster(self.kubeconfig, self.server, self.bindir, node=NODE_NAME, node_ip=self.node.network.gateway)

    def stop(self, grace: float = 10.0) -> None:
        """Stop in reverse dependency order; raises if a process cannot be stopped.

        The node goes first, and completely: its containers, mounts, cgroups and
        network, which outlive the kubelet and containerd processes.
        """
        for name in _STOP_ORDER:
            process = self.processes.get(name)
            if process:
                process.stop(grace)
                if process.popen is not None:
                    process.popen.wait()
            if name == _NODE_PROCESSES[-1] and self.node:
                self.node.clean_up()
                self.node = None
        self.processes.clear()

    def running(self) -> dict[str, bool]:
        return {name: p.running() for name, p in self.processes.items()}

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # State for make cluster-up / cluster-down ------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    def save_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "bindir": str(self.bindir),
            "node": self.node is not None,
            "processes": {
                name: {"pid": p.pid, "binary": str(p.binary), "log": str(p.log)} for name, p in self.processes.items()
            },
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def adopt(cls, workdir: Path) -> ControlPlane | None:
        """The detached control plane recorded in ``workdir``, if there is one."""
        try:
            state = json.loads((workdir / "state.json").read_text())
        except FileNotFoundError:
            return None
        plane = cls(workdir, bindir=Path(state["bindir"]), detached=True, node=state.get("node", False))
        plane.node = Node.adopt(workdir / "node")
        plane.server = state["server"]
        for name, p in state["processes"].items():
            plane.processes[name] = _Process(name, p["pid"], Path(p["binary"]), Path(p["log"]))
        return plane

    # Starting -------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], binary: Path | None = None) -> _Process:
        binary = binary or self.bindir / name
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:  # the child keeps its own descriptor
            popen = subprocess.Popen(
                [str(binary), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # its own process group: stop() signals the group
                preexec_fn=None if self.detached else _die_with(os.getpid()),
            )
        process = _Process(name, popen.pid, binary, log, popen)
        self.processes[name] = process
        return process

    def _wait(self, what: str, deadline: float, ready: Callable[[], bool]) -> None:
        while True:
            for process in self.processes.values():
                if not process.running():
                    raise ControlPlaneError(f"{process.name} exited while waiting for {what}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _start(self, deadline: float) -> None:
        remove_workdir(self.workdir)
        self.workdir.mkdir(parents=True)
        if self.with_node:
            # Before anything listens: the API server and the kubelet bind the bridge's address.
            self.node = Node(self.workdir / "node", NodeNetwork.allocate())
            self.node.save_state()
        node_ips = (self.node.network.gateway,) if self.node else ()
        pki = make_pki(self.workdir / "pki", extra_ips=node_ips)
        images_imported = self._start_containerd(self.node, deadline) if self.node else None
        serving = [f"--tls-cert-file={pki.serving.cert}", f"--tls-private-key-file={pki.serving.key}"]

        etcd_port, peer_port = free_port(), free_port()
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                "--name=jobstead",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=jobstead={peer_url}",
                # Throwaway data: skipping fsync makes the API several times faster.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", deadline, lambda: _http_ok(etcd_port, "/health", None))

        api_port = free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.workdir / 'kube-apiserver'}",
                *serving,
                f"--client-ca-file={pki.ca.cert}",
                # Node: a kubelet may touch only its own Node and the Pods bound to it.
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                *self._apiserver_network_args(),
                f"--kubelet-client-certificate={pki.kubelet_client.cert}",
                f"--kubelet-client-key={pki.kubelet_client.key}",
                f"--kubelet-certificate-authority={pki.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--requestheader-client-ca-file={pki.ca.cert}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy.cert}",
                f"--proxy-client-key-file={pki.front_proxy.key}",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        write_kubeconfig(
            self.kubeconfig, server=self.server, ca=pki.ca.cert, user="jobstead-admin", credentials=pki.admin
        )
        admin_tls = ssl.create_default_context(cafile=str(pki.ca.cert))
        admin_tls.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        self._wait("kube-apiserver", deadline, lambda: _http_ok(api_port, "/readyz", admin_tls))

        for name, credentials in (
            ("kube-controller-manager", pki.controller_manager),
            ("kube-scheduler", pki.scheduler),
        ):
            write_kubeconfig(
                self.workdir / f"{name}.kubeconfig",
                server=self.server,
                ca=pki.ca.cert,
                user=f"system:{name}",
                credentials=credentials,
            )
        component_ports = {"kube-controller-manager": free_port(), "kube-scheduler": free_port()}

        def component_args(name: str) -> list[str]:
            kubeconfig = self.workdir / f"{name}.kubeconfig"
            return [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={component_ports[name]}",
                *serving,
                # One instance each: skip the lease dance, start acting at once.
                "--leader-elect=false",
                "--profiling=false",
            ]

        self._spawn(
            "kube-controller-manager",
            [
                *component_args("kube-controller-manager"),
                # One ServiceAccount per controller, as in a real cluster, so RBAC applies.
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
            ],
        )
        self._spawn("kube-scheduler", component_args("kube-scheduler"))
        verified = ssl.create_default_context(cafile=str(pki.ca.cert))
        for name, port in component_ports.items():
            self._wait(name, deadline, functools.partial(_http_ok, port, "/healthz", verified))
        # The ServiceAccount controller creating default/default proves the controller
        # manager runs with working credentials; Pods need that account to be admitted.
        self._wait(
            "the default ServiceAccount (controller manager at work)",
            deadline,
            lambda: _http_ok(api_port, "/api/v1/namespaces/default/serviceaccounts/default", admin_tls),
        )
        if self.node and images_imported:
            self._start_node(self.node, pki, api_port, images_imported, deadline)

    def _apiserver_network_args(self) -> list[str]:
        if not self.node:
            # The `kubernetes` Service cannot point at a loopback address; nothing
            # in the cluster needs it (pods run as local processes).
            return ["--endpoint-reconciler-type=none"]
        return [
            # Loopback for us, the bridge for Pods (the `kubernetes` Service's endpoint).
            "--bind-address=0.0.0.0",
            f"--advertise-address={self.node.network.gateway}",
            # Webhooks and aggregated APIs are called at their Pods' addresses,
            # which the host routes to, rather than at Service IPs (no kube-proxy).
            "--enable-aggregator-routing=true",
        ]

    def _start_containerd(self, node: Node, deadline: float) -> Callable[[], None]:
        """containerd, and its images imported in the background; call the result to wait for them.

        Importing (mostly unpacking the jobstead image) takes longer than starting
        the control plane, so the two overlap.
        """
        archives = image_archives()
        config = node.write_containerd_config(sandbox_image=image_name(archives["pause"]))
        self._spawn("containerd", node.containerd_args(config), binary=CONTAINERD)
        self._wait("containerd", deadline, node.socket.exists)
        failures: list[BaseException] = []

        def import_images() -> None:
            began = time.monotonic()
            try:
                # The base image is only what the jobstead one was built on: no Pod runs it.
                node.import_images([archives[name] for name in ("pause", "jobstead", "testapp")])
                node.tag_image(image_name(archives["testapp"]), ROLLOUT_IMAGE)
            except BaseException as exc:
                failures.append(exc)
            self.image_import_seconds = time.monotonic() - began

        importer = threading.Thread(target=import_images, name="node-image-import", daemon=True)
        importer.start()

        def wait() -> None:
            importer.join(max(deadline - time.monotonic(), 0))
            if importer.is_alive():
                raise ControlPlaneError("timed out importing the node's images")
            if failures:
                raise failures[0]

        return wait

    def _start_node(
        self, node: Node, pki: Pki, api_port: int, images_imported: Callable[[], None], deadline: float
    ) -> None:
        """The kubelet, once the images are in; done when the Node is Ready."""
        images_imported()
        serving = issue_certificate(
            pki.ca, node.workdir / "kubelet-serving", _name(NODE_NAME), server_ips=(node.network.gateway,)
        )
        credentials = issue_certificate(
            pki.ca, node.workdir / "kubelet-client", _name(f"system:node:{NODE_NAME}", "system:nodes")
        )
        kubeconfig = node.workdir / "kubelet.kubeconfig"
        write_kubeconfig(
            kubeconfig, server=self.server, ca=pki.ca.cert, user=f"system:node:{NODE_NAME}", credentials=credentials
        )
        kubelet_config = node.write_kubelet_config(
            ca=pki.ca.cert,
            serving_cert=serving.cert,
            serving_key=serving.key,
            port=free_port(),
            healthz_port=free_port(),
        )
        create_cgroup_root(node.network.cgroup_root)
        self._spawn("kubelet", node.kubelet_args(kubelet_config, kubeconfig), binary=node_binary_dir() / "kubelet")

        with self.cluster().api_client() as api:
            core = client.CoreV1Api(api)
            spec = core.read_namespaced_service("kubernetes", "default").spec
            assert spec is not None and spec.cluster_ip and spec.ports
            node.network.forward_service(spec.cluster_ip, spec.ports[0].port, node.network.gateway, api_port)
            self._wait(f"node {NODE_NAME} to be Ready", deadline, functools.partial(_node_ready, core))


def _node_ready(core: client.CoreV1Api) -> bool:
    try:
        node = core.read_node(NODE_NAME)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    conditions = node.status.conditions if node.status else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


def remove_workdir(workdir: Path) -> None:
    """Delete a control plane's workdir, first cleaning up after a node that ran there.

    A node that was not stopped (its test process was killed) leaves containers,
    mounts and its bridge behind; deleting files under a mount would be worse.
    """
    if not workdir.exists():
        return
    node = Node.adopt(workdir / "node")
    if node:
        node.clean_up()
    unmount_under(workdir)
    shutil.rmtree(workdir, ignore_errors=True)  # another session may be removing it too


def _http_ok(port: int, path: str, tls: ssl.SSLContext | None) -> bool:
    connection: http.client.HTTPConnection
    if tls is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=tls)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    finally:
        connection.close()


# -- workdirs -----------------------------------------------------------------------


def session_workdir() -> Path:
    """A workdir for this test session: ``<cache>/e2e/<pid>``.

    Engineers share one working tree, so sessions must not share a cluster.
    Leftovers of sessions whose process is gone are removed here.
    """
    root = cache_dir() / "e2e"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.name.isdigit() and not pid_alive(int(old.name)):
            remove_workdir(old)
    return root / str(os.getpid())


@contextlib.contextmanager
def _locked(workdir: Path) -> Iterator[None]:
    """One ``make cluster-up``/``cluster-down`` at a time."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with open(workdir.parent / f".{workdir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- command line (make cluster-up / cluster-down) ---------------------------------------


def _cli_up(workdir: Path, node: bool) -> int:
    with _locked(workdir):
        existing = ControlPlane.adopt(workdir)
        if existing and existing.processes and all(existing.running().values()):
            print(f"control plane already running at {existing.server}")
            _print_env(existing.cluster())
            return 0
        if existing:
            existing.stop()
        plane = ControlPlane(workdir, detached=True, node=node)
        began = time.monotonic()
        cluster = plane.start()
        plane.save_state()
    print(f"control plane up in {time.monotonic() - began:.1f} s at {cluster.server}")
    if cluster.node:
        print(f"node {cluster.node} Ready (images imported in {plane.image_import_seconds:.1f} s)")
    print(f"logs in {workdir / 'logs'}; point kubectl at it with:")
    _print_env(cluster)
    return 0


def _cli_down(workdir: Path, node: bool) -> int:
    with _locked(workdir):
        plane = ControlPlane.adopt(workdir)
        if plane:
            plane.stop()
            print("control plane stopped")
        else:
            print("no control plane running")
        remove_workdir(workdir)
    return 0


def _cli_env(workdir: Path, node: bool) -> int:
    plane = ControlPlane.adopt(workdir)
    if not plane:
        print("no control plane running: make cluster-up", file=sys.stderr)
        return 1
    _print_env(plane.cluster())
    return 0


def _cli_status(workdir: Path, node: bool) -> int:
    plane = ControlPlane.adopt(workdir)
    if not plane:
        print("no control plane running")
        return 1
    for name, running in plane.running().items():
        print(f"{name:<24} pid {plane.processes[name].pid:<8} {'running' if running else 'STOPPED'}")
    return 0 if all(plane.running().values()) else 1


def _print_env(cluster: Cluster) -> None:
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    if cluster.bindir:
        print(f'export PATH="{cluster.bindir}:$PATH"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.controlplane",
        description="Run the local Kubernetes control plane outside pytest.",
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "env", "status"],
        help="up: start it detached; down: stop it; env: print shell exports; status: list processes",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="state, PKI, kubeconfig and logs (default: $JOBSTEAD_CACHE_DIR/cluster)",
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="up: also start a node (containerd and a kubelet; needs root and `make node`)",
    )
    args = parser.parse_args(argv)
    workdir = (args.workdir or cache_dir() / "cluster").absolute()
    commands = {"up": _cli_up, "down": _cli_down, "env": _cli_env, "status": _cli_status}
    try:
        return commands[args.command](workdir, args.node)
    except (ControlPlaneError, NodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
