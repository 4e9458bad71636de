"""The Helm chart: lint, schema, server-side validation, and a real install and uninstall.

No kubelet runs, so the operator's Pods stay Pending; what is checked is that
every object the chart promises is accepted by a real API server, created by
``helm install`` and removed by ``helm uninstall`` (CRDs excepted: Helm never
deletes them, so users' JobHandlers survive an uninstall).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.controlplane import REPO, Cluster

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "jobstead"


class Helm:
    """The pinned helm binary against the session's cluster, with its caches kept out of $HOME."""

    def __init__(self, cluster: Cluster, home: Path) -> None:
        self.cluster = cluster
        self.binary = str(cluster.bindir / "helm") if cluster.bindir else "helm"
        self.env = {
            **cluster.env(),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def template(self, *args: str, namespace: str = "default", release: str = "jobstead") -> list[dict[str, Any]]:
        """The rendered objects (parsed), for ``--set``/``--show-only`` options in ``args``."""
        rendered = self("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(rendered) if doc]


@pytest.fixture(scope="session")
def helm(kube_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(kube_cluster, tmp_path_factory.mktemp("helm"))


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


# -- lint and schema -------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], ["--set", "watchNamespaces={team-a,team-b}"]], ids=["default", "namespaced"])
def test_lint_is_clean(helm: Helm, values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def chart_crds() -> list[str]:
    """The CRDs Helm installs: every document of every file in the chart's crds/."""
    files = sorted((CHART / "crds").glob("*.yaml"))
    return [doc["metadata"]["name"] for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]


def test_chart_ships_the_repo_crds() -> None:
    """One source of truth: the chart's crds/ is the repo's crds/, kopf's peering CRDs included."""
    assert (CHART / "crds").is_symlink() and (CHART / "crds").resolve() == REPO / "crds"
    assert set(chart_crds()) == {
        "jobhandlers.jobstead.io",
        "cronschedules.jobstead.io",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("replicaCount=-1", "/replicaCount"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("operator.logLevel=loud", "/operator/logLevel"),
        ("operator.livenesPort=8080", "/operator"),  # a misspelt key is an error, not ignored
        ("operator.peeringLifetimeSeconds=2", "/operator/peeringLifetimeSeconds"),
        ("metrics.port=0", "/metrics/port"),
        ("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval"),
        ("database.existingSecret=Not_A_Name", "/database/existingSecret"),
        ("workerDefaults.affinity.x=y", "/workerDefaults"),
        ("operator.extraEnv[0].value=5", "/operator/extraEnv/0"),  # an EnvVar without its name
        ("webhook.certificates=selfmade", "/webhook/certificates"),
    ],
)
def test_schema_refuses_bad_values(helm: Helm, setting: str, where: str) -> None:
    result = helm("template", "jobstead", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr
    assert f"at '{where}'" in result.stderr, result.stderr


def test_schema_accepts_every_documented_value(helm: Helm, tmp_path: Path) -> None:
    """values.yaml itself, and a file setting every optional value, both render."""
    values = {
        "image": {"repository": "registry.example.com/jobstead", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "nameOverride": "js",
        "fullnameOverride": "jobstead-op",
        "replicaCount": 3,
        "serviceAccount": {"create": True, "name": "jobstead-op", "annotations": {"a": "b"}},
        "rbac": {"create": True},
        "watchNamespaces": ["team-a"],
        "database": {"existingSecret": "db", "key": "DATABASE_URL"},
        "operator": {
            "logLevel": "debug",
            "peeringName": "js",
            "peeringLifetimeSeconds": 30,
            "scaleDownWindowSeconds": 30,
            "idleCooldownSeconds": 0.5,
            "livenessPort": 8081,
            "extraEnv": [{"name": "JOBSTEAD_SCALE_INTERVAL", "value": "5"}],
        },
        "workerDefaults": {
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "env": [{"name": "TZ", "value": "UTC"}],
            "serviceAccountName": "workers",
            "nodeSelector": {"pool": "jobs"},
            "tolerations": [{"key": "jobs", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "resources": {"limits": {"cpu": 1, "memory": "1Gi"}},
        "podSecurityContext": {"runAsNonRoot": True, "fsGroup": 10001},
        "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "system", "operator": "Equal", "value": "yes", "effect": "NoExecute"}],
        "affinity": {"podAntiAffinity": {}},
        "metrics": {"enabled": True, "port": 9100, "serviceMonitor": {"enabled": True, "interval": "1m", "labels": {}}},
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    objects = helm.template("-f", str(path))
    (operator,) = by_kind(objects, "Deployment")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/jobstead:1.2.3"
    assert (
        json.loads(next(e["value"] for e in container["env"] if e["name"] == "JOBSTEAD_WORKER_DEFAULTS"))
        == (values["workerDefaults"])
    )


# -- what is rendered ------------------------------------------------------------------


def test_metrics_objects_only_when_enabled(helm: Helm) -> None:
    assert "Service" not in kinds(helm.template())
    assert "ServiceMonitor" not in kinds(helm.template("--set", "metrics.serviceMonitor.enabled=true"))

    objects = helm.template(
        "--set",
        "metrics.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prom",
    )
    (service,) = by_kind(objects, "Service")
    (monitor,) = by_kind(objects, "ServiceMonitor")
    (operator,) = by_kind(objects, "Deployment")
    pod = operator["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {"name": "metrics", "containerPort": 9090} in pod["spec"]["containers"][0]["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]


def test_operator_deployment_is_probed_and_named_for_peering(helm: Helm) -> None:
    (operator,) = by_kind(helm.template(), "Deployment")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert "--liveness-endpoint=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080} in container["ports"]
    # kopf's identity in the peering object is the pod's name
    pod_id = next(e for e in container["env"] if e["name"] == "POD_ID")
    assert pod_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # no fixed --priority: every replica picks its own (same priorities freeze kopf)
    assert not any(a.startswith("--priority") for a in container["args"])


def test_the_operator_needs_no_database_of_its_own(helm: Helm) -> None:
    def env(*values: str) -> dict[str, Any]:
        (operator,) = by_kind(helm.template(*values), "Deployment")
        return {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}

    default = env()
    assert "JOBSTEAD_DATABASE_URL" not in default, "each resource's Secret names its app's database"
    assert default["JOBSTEAD_OPERATOR_MIGRATE"]["value"] == "true"
    assert env("--set", "operator.migrate=false")["JOBSTEAD_OPERATOR_MIGRATE"]["value"] == "false"
    fallback = env("--set", "database.existingSecret=ops-db")["JOBSTEAD_DATABASE_URL"]
    assert fallback["valueFrom"]["secretKeyRef"] == {"name": "ops-db", "key": "url"}


def test_extra_env_reaches_the_operator_after_the_charts_own(helm: Helm) -> None:
    """``operator.extraEnv``: the operator's settings that are variables, not flags, set as chart values."""

    def env(*values: str) -> list[dict[str, Any]]:
        (operator,) = by_kind(helm.template(*values), "Deployment")
        return list(operator["spec"]["template"]["spec"]["containers"][0]["env"])

    extra = [
        {"name": "JOBSTEAD_SCALE_INTERVAL", "value": "30"},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    rendered = env("--set-json", f"operator.extraEnv={json.dumps(extra)}")
    assert rendered[-2:] == extra
    assert rendered[:-2] == env(), "the chart's own come first, unchanged"


def secret_rules(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in role["rules"] if "secrets" in r.get("resources", [])]


def test_secrets_are_read_by_name_only_and_only_where_the_operator_works(helm: Helm) -> None:
    namespaced = helm.template("--set", "watchNamespaces={team-a,team-b}")
    assert not by_kind(namespaced, "ClusterRole"), "watched namespaces: no cluster-wide grant"
    roles = by_kind(namespaced, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert [r["verbs"] for r in secret_rules(role)] == [["get"]], "get by name; never list"
    (cluster_role,) = by_kind(helm.template(), "ClusterRole")
    assert [r["verbs"] for r in secret_rules(cluster_role)] == [["get"]]


@pytest.mark.usefixtures("jobstead_crds")
@pytest.mark.parametrize(
    "values",
    [[], ["--set", "metrics.enabled=true"], ["namespaced"], ["--set", "webhook.enabled=true"]],
    ids=["cluster-wide", "metrics", "namespaced", "webhook"],
)
def test_rendered_chart_is_accepted_by_the_apiserver(
    helm: Helm, kube_cluster: Cluster, namespace: str, values: list[str]
) -> None:
    if values == ["namespaced"]:
        values = ["--set", f"watchNamespaces={{{namespace}}}"]
    rendered = helm("template", f"r-{uuid.uuid4().hex[:6]}", str(CHART), "--namespace", namespace, *values).stdout
    result = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert result.returncode == 0, result.stderr
    assert "ServiceMonitor" not in rendered  # needs the prometheus-operator's CRD, absent here


# -- install and uninstall -------------------------------------------------------------


def exists(cluster: Cluster, kind: str, name: str, namespace: str | None = None) -> bool:
    args = ["get", kind, name, "--ignore-not-found", "-o", "name"]
    if namespace:
        args += ["-n", namespace]
    return bool(cluster.kubectl(*args).stdout.strip())


@pytest.fixture
def release(helm: Helm, namespace: str) -> Iterator[str]:
    name = f"js-{uuid.uuid4().hex[:6]}"
    yield name
    helm("uninstall", name, "--namespace", namespace, check=False)


@pytest.mark.parametrize("scope", ["namespaced", "cluster-wide"])
def test_install_creates_every_object_and_uninstall_removes_them(
    helm: Helm, kube_cluster: Cluster, namespace: str, release: str, scope: str
) -> None:
    peering = f"peering-{release}"  # a ClusterKopfPeering is cluster-wide: one of this test's own
    values = ["--set", f"operator.peeringName={peering}"]
    if scope == "namespaced":
        values += ["--set", f"watchNamespaces={{{namespace}}}"]
    helm("install", release, str(CHART), "--namespace", namespace, *values)

    crds = chart_crds()
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in crds))

    fullname = f"{release}-jobstead"
    expected: list[tuple[str, str, str | None]] = [
        ("serviceaccount", fullname, namespace),
        ("deployment", fullname, namespace),
    ]
    if scope == "namespaced":
        expected += [
            ("role", fullname, namespace),
            ("rolebinding", fullname, namespace),
            ("kopfpeerings.kopf.dev", peering, namespace),
        ]
    else:
        expected += [
            ("clusterrole", fullname, None),
            ("clusterrolebinding", fullname, None),
            ("clusterkopfpeerings.kopf.dev", peering, None),
        ]
    for kind, name, ns in expected:
        assert exists(kube_cluster, kind, name, ns), f"{kind}/{name} was not created"
    # the Deployment is real: the controller manager made its Pods (Pending: no node runs here)
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    kube_cluster.kubectl("wait", "-n", namespace, "--for=create", "pod", "-l", selector, "--timeout=60s", timeout=70)

    helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s")
    for kind, name, ns in expected:
        assert not exists(kube_cluster, kind, name, ns), f"{kind}/{name} outlived the uninstall"
    for crd in crds:  # as Helm does: CRDs (and so every JobHandler) stay
        assert exists(kube_cluster, "crd", crd)


def test_webhook_replicas_share_one_certificate_behind_a_service(helm: Helm) -> None:
    """Every replica serves the webhook with the same mounted certificate, so kopf's caBundle fits them all."""
    objects = helm.template("--set", "webhook.enabled=true", namespace="jobs")
    (operator,) = by_kind(objects, "Deployment")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert "--webhook-service=jobs/jobstead-webhook" in container["args"]
    assert "--webhook-cert-dir=/certs" in container["args"]
    assert {"name": "webhook-tls", "mountPath": "/certs", "readOnly": True} in container["volumeMounts"]
    (secret,) = [o for o in by_kind(objects, "Secret") if o["metadata"]["name"] == "jobstead-webhook-tls"]
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret["data"])
    (service,) = [o for o in by_kind(objects, "Service") if o["metadata"]["name"] == "jobstead-webhook"]
    assert service["spec"]["ports"][0]["port"] == 443
    rules = [r for role in by_kind(objects, "ClusterRole") for r in role["rules"]]
    assert any("validatingwebhookconfigurations" in r["resources"] for r in rules)
    managed = helm.template("--set", "webhook.enabled=true", "--set", "webhook.certificates=certManager")
    assert {"Issuer", "Certificate"} <= set(kinds(managed))
    assert not [o for o in by_kind(managed, "Secret") if o["metadata"]["name"].endswith("webhook-tls")]
    assert "Service" not in kinds(helm.template()), "no webhook objects unless enabled"
