"""The chart's dashboard: off by default; when on, a Deployment and a Service that never run without a token."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e import test_chart as chart
from tests.e2e.test_chart import CHART, Helm, by_kind, exists, kinds
from tests.support.controlplane import Cluster

# The chart tests' fixtures: the pinned helm against the session's cluster, and a release name.
helm = chart.helm
release = chart.release

pytestmark = pytest.mark.e2e

ON = [
    "--set",
    "dashboard.enabled=true",
    "--set",
    "dashboard.auth.existingSecret=dashboard-token",
    "--set",
    "dashboard.database.existingSecret=jobstead-database",
]


def dashboard_objects(objects: list[dict[str, object]]) -> list[dict[str, object]]:
    return [o for o in objects if o["metadata"]["name"].endswith("-dashboard")]  # type: ignore[index]


def test_off_by_default(helm: Helm) -> None:
    assert dashboard_objects(helm.template()) == []


def test_enabled_without_a_token_secret_is_refused(helm: Helm) -> None:
    result = helm("template", "jobstead", str(CHART), "--set", "dashboard.enabled=true", check=False)
    assert result.returncode != 0
    assert "at '/dashboard/auth/existingSecret'" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("dashboard.basePath=jobs", "/dashboard/basePath"),
        ("dashboard.port=0", "/dashboard/port"),
        ("dashboard.service.type=Public", "/dashboard/service/type"),
        ("dashboard.auth.token=plain", "/dashboard/auth"),  # no way to put a token in values
        ("dashboard.readonly=true", "/dashboard"),
    ],
)
def test_schema_refuses_bad_dashboard_values(helm: Helm, setting: str, where: str) -> None:
    result = helm("template", "jobstead", str(CHART), *ON, "--set", setting, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert f"at '{where}'" in result.stderr, result.stderr


def test_enabled_without_a_database_secret_is_refused(helm: Helm) -> None:
    result = helm(
        "template",
        "jobstead",
        str(CHART),
        "--set",
        "dashboard.enabled=true",
        "--set",
        "dashboard.auth.existingSecret=t",
        check=False,
    )
    assert result.returncode != 0 and "dashboard.database.existingSecret" in result.stderr


def test_the_operators_default_database_serves_when_the_dashboard_names_none(helm: Helm) -> None:
    objects = helm.template(
        "--set",
        "dashboard.enabled=true",
        "--set",
        "dashboard.auth.existingSecret=t",
        "--set",
        "database.existingSecret=shared-db",
    )
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-dashboard")]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JOBSTEAD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "shared-db"


def test_enabled_renders_an_authenticated_deployment_and_its_service(helm: Helm) -> None:
    objects = helm.template(*ON, "--set", "dashboard.readOnly=true", "--set", "dashboard.basePath=/jobs")
    assert kinds(dashboard_objects(objects)) == ["Deployment", "Service"]
    dashboard = next(d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-dashboard"))
    operator = next(d for d in by_kind(objects, "Deployment") if d is not dashboard)
    pod = dashboard["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["args"] == [
        "dashboard",
        "--host=0.0.0.0",
        "--port=8780",
        "--auth-token-file=/var/run/jobstead-dashboard/token",
        "--read-only",
        "--base-path=/jobs",
    ]
    (token,) = [v for v in pod["spec"]["volumes"] if v["name"] == "token"]
    assert token["secret"] == {"secretName": "dashboard-token", "items": [{"key": "token", "path": "token"}]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/jobs/healthz", "port": "http"}
    database = next(e for e in container["env"] if e["name"] == "JOBSTEAD_DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"]["name"] == "jobstead-database"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-dashboard")]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    # the two Deployments never select each other's pods
    assert not operator["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert (
        not dashboard["spec"]["selector"]["matchLabels"].items()
        <= operator["spec"]["template"]["metadata"]["labels"].items()
    )


def test_install_with_the_dashboard_creates_it_and_uninstall_removes_it(
    helm: Helm,
    kube_cluster: Cluster,
    namespace: str,
    release: str,
) -> None:
    kube_cluster.kubectl(
        "-n", namespace, "create", "secret", "generic", "dashboard-token", f"--from-literal=token={uuid.uuid4().hex}"
    )
    values = ["--set", f"operator.peeringName=peering-{release}", "--set", f"watchNamespaces={{{namespace}}}", *ON]
    helm("install", release, str(CHART), "--namespace", namespace, *values)
    name = f"{release}-jobstead-dashboard"
    assert exists(kube_cluster, "deployment", name, namespace)
    assert exists(kube_cluster, "service", name, namespace)
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=dashboard"
    kube_cluster.kubectl("wait", "-n", namespace, "--for=create", "pod", "-l", selector, "--timeout=60s", timeout=70)
    helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s")
    assert not exists(kube_cluster, "deployment", name, namespace)
    assert not exists(kube_cluster, "service", name, namespace)


def test_the_operator_page_gets_a_service_account_that_may_only_read_jobhandlers(helm: Helm) -> None:
    objects = helm.template(*ON, "--set", "dashboard.cluster.enabled=true")
    mine = dashboard_objects(objects)
    assert kinds(mine) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    (role,) = by_kind(mine, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": ["jobstead.io"], "resources": ["jobhandlers"], "verbs": ["get", "list", "watch"]}
    ]
    (binding,) = by_kind(mine, "ClusterRoleBinding")
    (account,) = by_kind(mine, "ServiceAccount")
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    (dashboard,) = by_kind(mine, "Deployment")
    pod = dashboard["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"] and pod["automountServiceAccountToken"] is True
    scoped = dashboard_objects(
        helm.template(*ON, "--set", "dashboard.cluster.enabled=true", "--set", "watchNamespaces={shop,mail}")
    )
    assert kinds(scoped) == ["Deployment", "Role", "Role", "RoleBinding", "RoleBinding", "Service", "ServiceAccount"]
    assert {r["metadata"]["namespace"] for r in by_kind(scoped, "Role")} == {"shop", "mail"}
    (scoped_dashboard,) = by_kind(scoped, "Deployment")
    args = scoped_dashboard["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--namespace=shop", "--namespace=mail"], "it reads where its Roles allow"
