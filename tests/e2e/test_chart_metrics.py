"""The chart's metrics objects: rendered only when enabled, wired to the operator's flags, lint-clean either way."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.e2e import test_chart as chart
from tests.e2e.test_chart import CHART, Helm, by_kind, kinds

pytestmark = pytest.mark.e2e
# The chart tests' fixture: the pinned helm against the session's cluster.
helm = chart.helm

ALL_ON = [
    "--set",
    "metrics.enabled=true",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.grafanaDashboard.enabled=true",
]


def operator_args(objects: list[dict[str, Any]]) -> list[str]:
    (operator,) = by_kind(objects, "Deployment")
    return operator["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("values", [[], ALL_ON], ids=["metrics-off", "metrics-on"])
def test_lint_is_clean_with_and_without_metrics(helm: Helm, values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_nothing_of_metrics_renders_unless_enabled(helm: Helm) -> None:
    off = helm.template()
    assert not {"Service", "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} & set(kinds(off))
    assert not [a for a in operator_args(off) if "metrics-port" in a]
    # a ServiceMonitor needs something to monitor: without metrics.enabled there is none
    monitor_only = kinds(helm.template("--set", "metrics.serviceMonitor.enabled=true"))
    assert not {"ServiceMonitor", "PodMonitor"} & set(monitor_only)
    only_metrics = kinds(helm.template("--set", "metrics.enabled=true"))
    assert "Service" in only_metrics and "ServiceMonitor" not in only_metrics and "PrometheusRule" not in only_metrics


def test_metrics_on_the_operator_serves_and_tells_workers_to_serve(helm: Helm) -> None:
    objects = helm.template(*ALL_ON, "--set", "metrics.port=9100", "--set", "metrics.workers.port=9200")
    args = operator_args(objects)
    assert "--metrics-port=9100" in args and "--worker-metrics-port=9200" in args
    (service,) = by_kind(objects, "Service")
    assert service["spec"]["ports"][0]["port"] == 9100
    (pods,) = by_kind(objects, "PodMonitor")
    assert pods["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "jobstead-worker",
        "app.kubernetes.io/managed-by": "jobstead-operator",
    }, "the labels the operator puts on worker pods (deployment.py)"
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pods["spec"]["namespaceSelector"] == {"any": True}
    namespaced = helm.template(*ALL_ON, "--set", "watchNamespaces={team-a}")
    (pods,) = by_kind(namespaced, "PodMonitor")
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    workers_off = helm.template(*ALL_ON, "--set", "metrics.workers.enabled=false")
    assert not [a for a in operator_args(workers_off) if a.startswith("--worker-metrics-port")]
    assert "PodMonitor" not in kinds(workers_off)


def test_the_alerts_render_with_their_thresholds(helm: Helm) -> None:
    objects = helm.template(
        *ALL_ON,
        "--set",
        "metrics.prometheusRule.oldestJobAgeSeconds=900",
        "--set",
        "metrics.prometheusRule.labels.release=prom",
    )
    (rule,) = by_kind(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"JobsteadDeadJobsRising", "JobsteadOldestJobWaiting", "JobsteadCronMissed"} <= set(alerts)
    assert alerts["JobsteadOldestJobWaiting"]["expr"].endswith("> 900")
    assert alerts["JobsteadCronMissed"]["expr"].endswith("> 300")
    # Prometheus' own templates reach Prometheus untouched by Helm
    assert "{{ $labels.handler }}" in alerts["JobsteadDeadJobsRising"]["annotations"]["summary"]


def test_the_grafana_dashboard_ships_as_a_configmap_for_the_sidecar(helm: Helm) -> None:
    objects = helm.template(*ALL_ON)
    (config_map,) = by_kind(objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(config_map["data"]["jobstead.json"])
    assert shipped == json.loads((CHART / "dashboards" / "jobstead.json").read_text())


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("metrics.workers.port=70000", "/metrics/workers/port"),
        ("metrics.prometheusRule.oldestJobAgeSeconds=0", "/metrics/prometheusRule/oldestJobAgeSeconds"),
        ("metrics.prometheusRule.for=soon", "/metrics/prometheusRule/for"),
        ("metrics.grafanaDashboard.enable=true", "/metrics/grafanaDashboard"),
    ],
)
def test_schema_refuses_bad_metrics_values(helm: Helm, setting: str, where: str) -> None:
    result = helm("template", "jobstead", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert f"at '{where}'" in result.stderr, result.stderr


def test_the_rendered_objects_are_valid_yaml_documents(helm: Helm) -> None:
    rendered = helm("template", "jobstead", str(CHART), *ALL_ON).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    assert all("kind" in d and "metadata" in d for d in documents)
