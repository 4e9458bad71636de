"""The Operator page: what the operator decided for each JobHandler, read from a real Kubernetes API.

The JobHandlers here carry the status the operator writes (``tests/e2e/test_operator.py``
checks that it does); the page must show its inputs, its reason and the recent
changes, say why when the cluster cannot be read, and say how to give the
dashboard a cluster when it has none.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobstead import App
from jobstead.dashboard.cluster import Cluster, HandlerScaling
from tests.conftest import Target
from tests.support.controlplane import Cluster as ControlPlaneCluster
from tests.support.processes import REPO, run_cli

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

GROUP, VERSION = "jobstead.io", "v1alpha1"
CHART = REPO / "charts" / "jobstead"
RBAC = "templates/dashboard-rbac.yaml"

SCALING = {
    "desiredReplicas": 3,
    "currentReplicas": 1,
    "due": 41,
    "running": 6,
    "neededReplicas": 3,
    "perPodConcurrency": 16,
    "concurrency": 48,
    "limitCap": 3,
    "minReplicas": 0,
    "maxReplicas": 10,
    "reason": "scale up: 41 due + 6 running need 3 pods of 16",
}


def ago(seconds: int) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


RECENT = [
    {"time": ago(40), "from": 1, "to": 3, "reason": "scale up: 41 due + 6 running need 3 pods of 16"},
    {
        "time": ago(700),
        "from": 0,
        "to": 1,
        "reason": "scale up: 3 due + 0 running need 1 pod of 16",
    },
    {"time": ago(900), "from": 1, "to": 0, "reason": "scale down: nothing due or running"},
    {"time": ago(1010), "from": 2, "to": 1, "reason": "scale down, cool-down: one pod kept until idle for 120 s"},
]


@pytest.fixture
def app(sqlite_target: Target) -> Iterator[App]:
    app = App(sqlite_target.url)
    app.migrate()
    yield app
    app.close()


@pytest.fixture
def page(app: App) -> Iterator[Callable[..., TestClient]]:
    from jobstead.dashboard import create_dashboard

    clients: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        made = TestClient(create_dashboard(app, auth=None, **options), follow_redirects=False)
        clients.append(made)
        return made

    yield make
    for c in clients:
        c.close()


def test_without_a_cluster_the_page_says_how_to_give_it_one(page: Callable[..., TestClient]) -> None:
    response = page().get("/operator")
    assert response.status_code == 200
    assert 'id="no-cluster"' in response.text
    assert "jobstead dashboard --kubeconfig PATH" in response.text
    assert "pip install 'jobstead[operator]'" in response.text
    assert 'href="/operator"' in page().get("/").text, "the page is in the navigation"


def test_a_kubeconfig_that_cannot_be_read_is_one_line_at_start(sqlite_target: Target, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_cli(["dashboard", "--database-url", sqlite_target.url, "--kubeconfig", str(missing)], env={})
    assert result.returncode != 0
    expected = f"--kubeconfig {missing}: cannot read it (No such file or directory)"
    assert [line for line in result.stderr.splitlines() if line.strip()] == [f"jobstead: error: {expected}"]


def test_a_broken_kubeconfig_is_said_on_the_page(page: Callable[..., TestClient], tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    response = page(kubeconfig=str(broken)).get("/operator")
    assert response.status_code == 200
    assert 'id="cluster-problem"' in response.text and f"kubeconfig {broken}" in response.text


def test_an_older_operators_status_still_shows_what_it_has() -> None:
    """Before ``status.scaling`` existed the status held replicas and counts: the page shows those, no reason."""
    body = {
        "metadata": {"namespace": "shop", "name": "mailer"},
        "spec": {"handler": "send_email", "concurrency": 6, "perPodConcurrency": 2, "maxReplicas": 3},
        "status": {"replicas": 2, "readyReplicas": 1, "queued": 9, "running": 2, "recentDecisions": [{"time": 1}]},
    }
    seen = HandlerScaling.of(body)
    assert (seen.desired, seen.ready, seen.due, seen.running) == (2, 1, 9, 2)
    assert (seen.per_pod_concurrency, seen.concurrency, seen.max_replicas, seen.min_replicas) == (2, 6, 3, 0)
    assert seen.reason is None and seen.needed is None and seen.recent == (), "a malformed entry is skipped"
    full = HandlerScaling.of({**body, "status": {"scaling": {**SCALING, "coolDownUntil": "2026-01-01T10:00:00Z"}}})
    assert full.reason == SCALING["reason"] and full.limit_cap == 3
    assert full.cool_down_until == datetime(2026, 1, 1, 10, tzinfo=UTC)


@pytest.fixture
def mailer(kube_api: client.ApiClient, jobstead_crds: list[str], namespace: str) -> Iterator[str]:
    """A JobHandler carrying the status the operator writes; its namespace."""
    custom = client.CustomObjectsApi(kube_api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobHandler",
        "metadata": {"name": "mailer"},
        "spec": {
            "handler": "send_email",
            "app": "shop.jobs:app",
            "image": "shop:1",
            "concurrency": 48,
            "perPodConcurrency": 16,
            "database": {"secretRef": {"name": "shop-db"}},
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "jobhandlers", body)
    ready = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "handler 'send_email'"}
    status = {
        "replicas": 3,
        "readyReplicas": 2,
        "conditions": [{**ready, "lastTransitionTime": "2026-01-01T09:00:00Z"}],
        "scaling": SCALING,
        "recentDecisions": RECENT,
    }
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "jobhandlers", "mailer", {"status": status})
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "jobhandlers", "mailer")["status"]
    assert stored["scaling"] == SCALING and stored["recentDecisions"] == RECENT, "the CRD schema keeps every field"
    yield namespace
    # a deleted namespace goes slowly: the next test would see this one too
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "jobhandlers", "mailer")


@pytest.mark.e2e
def test_each_jobhandler_shows_its_decision_its_inputs_and_recent_changes(
    page: Callable[..., TestClient], kube_cluster: ControlPlaneCluster, kube_api: client.ApiClient, mailer: str
) -> None:
    dashboard = page(kubeconfig=str(kube_cluster.kubeconfig))
    html = dashboard.get("/operator").text
    card = html[html.index(f'data-jobhandler="{mailer}/mailer"') :]
    card = card[: card.index("</article>")]
    assert "3 pods desired, 2 ready" in card
    assert "scale up: 41 due + 6 running need 3 pods of 16" in card
    assert "pods needed = ⌈(41 + 6) / 16⌉" in card and "limit cap = ⌈48 / 16⌉" in card
    assert "1 → 3" in card and "0 → 1" in card and card.index("1 → 3") < card.index("0 → 1"), "newest first"
    assert 'href="/jobs?handler=send_email"' in card

    # one list call per MAX_AGE, whatever the number of viewers: a change shows once the cache expires
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        GROUP, VERSION, mailer, "jobhandlers", "mailer", {"status": {"scaling": {"reason": "held at max 10: x"}}}
    )
    assert "held at max 10" not in dashboard.get("/operator").text
    cluster = Cluster(kubeconfig=str(kube_cluster.kubeconfig), max_age=0)
    assert any(h.reason == "held at max 10: x" for h in cluster.view().handlers)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_operator_page_in_chromium(
    app: App, kube_cluster: ControlPlaneCluster, mailer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobstead.dashboard import create_dashboard
    from tests.dashboard.browser import LiveServer, axe_source, axe_violations, chromium, prefer_dark
    from tests.dashboard.test_browser import text
    from tests.dashboard.test_browser_pages import readme_screenshot

    # The page names its kubeconfig: a relative one, so the README's screenshot shows no machine's path.
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_bytes(kube_cluster.kubeconfig.read_bytes())
    monkeypatch.chdir(tmp_path)
    served = create_dashboard(app, auth=None, kubeconfig=".kube/config")
    with LiveServer(served) as server, chromium() as browser:
        browser.get(server.url + "/")
        browser.find_element("link text", "Operator").click()
        card = text(browser, f'[data-jobhandler="{mailer}/mailer"]')
        assert "3 pods desired, 2 ready: scale up: 41 due + 6 running need 3 pods of 16" in card
        assert "1 → 3" in card
        source = axe_source()
        found = [f"light: {v}" for v in axe_violations(browser, source)]
        readme_screenshot(browser, tmp_path, "dashboard-operator.png")  # after axe: it removes the footer
        prefer_dark(browser)
        browser.get(server.url + "/operator")
        found += [f"dark: {v}" for v in axe_violations(browser, source)]
        assert not found, "\n".join(found)


@pytest.mark.e2e
def test_the_charts_dashboard_account_reads_jobhandlers_where_its_roles_allow_and_says_so_elsewhere(
    page: Callable[..., TestClient],
    kube_cluster: ControlPlaneCluster,
    kube_api: client.ApiClient,
    mailer: str,
    tmp_path: Path,
) -> None:
    """With ``watchNamespaces`` the chart grants Roles, and passes ``--namespace``; elsewhere the page says why not."""
    from tests.e2e.test_chart import Helm
    from tests.e2e.test_rbac import service_account_kubeconfig

    helm = Helm(kube_cluster, tmp_path / "helm")
    values = [
        "--set",
        "dashboard.enabled=true",
        "--set",
        "dashboard.auth.existingSecret=t",
        "--set",
        "database.existingSecret=d",
    ]
    values += ["--set", "dashboard.cluster.enabled=true", "--set", f"watchNamespaces={{{mailer}}}"]
    rendered = helm("template", "ops", str(CHART), "-n", mailer, *values, "--show-only", RBAC).stdout
    kube_cluster.kubectl("apply", "-f", "-", stdin=rendered)
    kubeconfig = service_account_kubeconfig(
        kube_cluster, kube_api, mailer, tmp_path / "dashboard.kubeconfig", account="ops-jobstead-dashboard"
    )
    allowed = page(kubeconfig=str(kubeconfig), namespaces=(mailer,)).get("/operator").text
    assert f"namespace {mailer}" in allowed and f'data-jobhandler="{mailer}/mailer"' in allowed
    assert "3 pods desired, 2 ready" in allowed

    everywhere = page(kubeconfig=str(kubeconfig)).get("/operator").text  # no list cluster-wide, none in "default"
    assert 'id="cluster-problem"' in everywhere
    assert "refuses to list JobHandlers in namespace default: grant get, list and watch" in everywhere
