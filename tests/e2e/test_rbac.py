"""The operator with exactly the chart's permissions: enough for everything it does, and no more.

The chart's ServiceAccount, Role, RoleBinding and KopfPeering are rendered by
``helm template`` and applied; the operator then runs with a token of that
ServiceAccount (TokenRequest API), through every path that talks to the API:
watches, finalizers, status, Deployments, Pods, Secrets, Events, peering.
Taking one verb away must show up as a 403 in its log, so the first test is
not passing merely because nothing was checked.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from jobstead import App
from tests.e2e.test_chart import CHART, Helm
from tests.e2e.test_operator import (
    cron_schedule,
    custom,
    database_secret,
    deployment,
    events_for,
    job_handler,
    ready_condition,
    wait_until,
)
from tests.support.controlplane import Cluster
from tests.support.processes import run_cli, spawn_cli, stop

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

GROUP, VERSION = "jobstead.io", "v1alpha1"
RELEASE = "ops"
SERVICE_ACCOUNT = ROLE = "ops-jobstead"  # the chart's fullname for this release
PEERING = "jobstead"
# how a refusal shows in the operator's log: kopf's errors, the client's ApiException, urllib3's debug lines
REFUSED = re.compile(r"forbidden|\(403\)|\" 403 ", re.IGNORECASE)


def service_account_kubeconfig(
    cluster: Cluster, api: client.ApiClient, namespace: str, path: Path, account: str = SERVICE_ACCOUNT
) -> Path:
    """A kubeconfig that authenticates as one of the chart's ServiceAccounts: same server and CA, a bound token."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = client.CoreV1Api(api).create_namespaced_service_account_token(account, namespace, request)
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c["context"] for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = next(c["cluster"] for c in admin["clusters"] if c["name"] == context["cluster"])
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": server}],
        "users": [{"name": account, "user": {"token": token.status.token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "cluster", "user": account}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


@pytest.fixture
def helm(kube_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(kube_cluster, tmp_path_factory.mktemp("helm"))


@dataclass
class Setup:
    namespace: str
    schema: str
    app: App
    log: Path
    kubeconfig: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def operator_as_chart(
    helm: Helm,
    kube_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    namespace: str,
    pg_url: str,
    tmp_path: Path,
) -> Iterator[Setup]:
    rendered = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        f"operator.peeringName={PEERING}",
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        "--show-only",
        "templates/peering.yaml",
    ).stdout
    kube_cluster.kubectl("apply", "-f", "-", stdin=rendered)
    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered) if d}
    assert {("ServiceAccount", SERVICE_ACCOUNT), ("Role", ROLE), ("KopfPeering", PEERING)} <= names

    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    app = App(pg_url, schema=schema)
    from tests.apps import probes

    app.handler(name="e2e_work")(probes.app.get_handler("e2e_work").func)
    app.migrate()
    database_secret(kube_api, namespace, pg_url, schema)
    kubeconfig = service_account_kubeconfig(kube_cluster, kube_api, namespace, tmp_path / "operator.kubeconfig")
    log = tmp_path / "operator.log"
    # the arguments the chart's Deployment passes, with short scaling windows
    args = ["operator", "-n", namespace, f"--peering={PEERING}", "--log-level=debug"]
    args += ["--scale-down-window=2", "--idle-cooldown=2"]
    # as the chart runs it: no database of its own, the app's comes from its Secret
    env = {"KUBECONFIG": str(kubeconfig), "POD_ID": "operator-0", "JOBSTEAD_DATABASE_URL": ""}
    process = spawn_cli(args, env, log)
    try:
        yield Setup(namespace, schema, app, log, kubeconfig)
    finally:
        stop(process)
        app.close()
        print(f"operator log: {log}")


def is_ready(api: client.ApiClient, namespace: str, plural: str, name: str) -> bool:
    return (ready_condition(api, namespace, plural, name) or {}).get("status") == "True"


def resource_gone(api: client.ApiClient, namespace: str, plural: str, name: str) -> bool:
    items = custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
    return not any(i["metadata"]["name"] == name for i in items)


def test_operator_needs_nothing_beyond_the_chart_rbac(operator_as_chart: Setup, kube_api: client.ApiClient) -> None:
    s = operator_as_chart
    ns, api = s.namespace, custom(kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", job_handler("mailer"))
    api.create_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", cron_schedule("report"))

    # watch, finalizer, status, Secret read, Deployment create: Ready=True on both kinds
    wait_until(lambda: is_ready(kube_api, ns, "jobhandlers", "mailer"), 30, "the JobHandler Ready=True")
    wait_until(lambda: is_ready(kube_api, ns, "cronschedules", "report"), 30, "the CronSchedule Ready=True")
    handler = api.get_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "mailer")
    assert handler["status"]["observedGeneration"] == 1
    assert "jobstead.io/finalizer" in handler["metadata"]["finalizers"]
    dep = deployment(kube_api, ns, "mailer")
    assert dep is not None and dep.metadata.owner_references[0].name == "mailer"
    assert s.app.store.crons.get("report") is not None

    # peering: the operator's keep-alive reached the chart's KopfPeering object
    peering = api.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", PEERING)
    assert "operator-0" in (peering.get("status") or {})

    # an edit patches the Deployment; queued work scales it up, and away again once the work is gone
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "mailer", {"spec": {"maxReplicas": 4}})
    job = s.app.get_handler("e2e_work").defer(i=1)
    wait_until(lambda: deployment(kube_api, ns, "mailer").spec.replicas == 1, 20, "the scale-up")
    # the controller manager makes the Pod (Pending: no node); the operator watches and ranks it
    core = client.CoreV1Api(kube_api)
    wait_until(
        lambda: core.list_namespaced_pod(ns, label_selector="jobstead.io/jobhandler=mailer").items, 30, "the pod"
    )
    job.cancel()
    wait_until(lambda: deployment(kube_api, ns, "mailer").spec.replicas == 0, 30, "the scale-down")
    reasons = {e.reason for e in events_for(kube_api, ns, "mailer")}
    assert "Scaled" in reasons, f"the operator posted no Event: {reasons}"

    # a missing Secret: Ready=False and a Warning Event
    api.create_namespaced_custom_object(
        GROUP, VERSION, ns, "jobhandlers", job_handler("orphan", database={"secretRef": {"name": "nope"}})
    )
    wait_until(lambda: any(e.reason == "SecretNotFound" for e in events_for(kube_api, ns, "orphan")), 30, "a Warning")

    # deletion: the finalizers run and are removed
    api.delete_namespaced_custom_object(GROUP, VERSION, ns, "cronschedules", "report")
    api.delete_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "mailer")
    wait_until(lambda: resource_gone(kube_api, ns, "cronschedules", "report"), 30, "the CronSchedule to go")
    wait_until(lambda: resource_gone(kube_api, ns, "jobhandlers", "mailer"), 30, "the JobHandler to go")
    assert s.app.store.crons.get("report") is None

    time.sleep(1)  # let the last requests reach the log
    refusals = [line for line in s.log_text().splitlines() if REFUSED.search(line)]
    assert not refusals, "the chart's RBAC refused the operator:\n" + "\n".join(refusals[:10])


def drop_verb(api: client.ApiClient, namespace: str, resource: str, verb: str) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    role = rbac.read_namespaced_role(ROLE, namespace)
    for rule in role.rules:
        if resource in rule.resources:
            assert verb in rule.verbs
            rule.verbs = [v for v in rule.verbs if v != verb]
    rbac.replace_namespaced_role(ROLE, namespace, role)


def test_a_missing_verb_is_reported(operator_as_chart: Setup, kube_api: client.ApiClient) -> None:
    s = operator_as_chart
    ns, api = s.namespace, custom(kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", job_handler("mailer"))
    wait_until(lambda: is_ready(kube_api, ns, "jobhandlers", "mailer"), 30, "the JobHandler Ready=True")
    assert not REFUSED.search(s.log_text())

    drop_verb(kube_api, ns, "deployments", "patch")
    body: dict[str, Any] = {"spec": {"maxReplicas": 4}}
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, "jobhandlers", "mailer", body)
    wait_until(lambda: REFUSED.search(s.log_text()), 30, "the refusal in the operator's log")
    refused = [line for line in s.log_text().splitlines() if REFUSED.search(line)]
    assert any("deployments" in line for line in refused), "\n".join(refused[:10])


def test_a_missing_peering_object_it_may_not_create_refuses_the_start(
    operator_as_chart: Setup, kube_api: client.ApiClient
) -> None:
    """The chart grants no ``create`` on peerings (it makes them): a name it did not make is refused, in one line."""
    s = operator_as_chart
    done = run_cli(
        ["operator", "-n", s.namespace, "--peering=elsewhere"],
        {"KUBECONFIG": str(s.kubeconfig), "JOBSTEAD_DATABASE_URL": ""},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "KopfPeering 'elsewhere'" in lines[0] and s.namespace in lines[0], lines[0]
    assert "kubectl" in lines[0] and "--standalone" in lines[0], lines[0]
