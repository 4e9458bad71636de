"""The worker Deployment of one JobHandler, as a plain manifest.

Built from the spec alone (plus the replica count the scaler chose), so the
reconciler can compare desired with actual by value and tests need no cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import JobHandlerSpec
from .targets import SCHEMA_KEY, TABLE_PREFIX_KEY

LABEL_HANDLER = "jobstead.io/handler"
LABEL_OWNER = "jobstead.io/jobhandler"
MANAGED_BY = "jobstead-operator"
SECRET_VERSION = "jobstead.io/database-secret-version"
#: The worker needs this long after its own grace period to hand jobs back and exit.
EXIT_MARGIN_SECONDS = 10
#: Worker variables set from optional keys of the database Secret (see ``targets``).
SECRET_LOCATION = {"JOBSTEAD_SCHEMA": SCHEMA_KEY, "JOBSTEAD_TABLE_PREFIX": TABLE_PREFIX_KEY}
#: Variables only the Secret sets: a podTemplate value would point the workers at other tables than the operator.
FROM_SECRET = frozenset({"JOBSTEAD_DATABASE_URL", *SECRET_LOCATION})


def deployment_name(resource_name: str) -> str:
    return f"{resource_name}-worker"


def worker_command(spec: JobHandlerSpec, metrics_port: int | None = None) -> list[str]:
    command = [
        "jobstead",
        "worker",
        "--app",
        spec.app,
        "--handler",
        spec.handler,
        "--queue",
        spec.queue,
        "--concurrency",
        str(spec.per_pod_concurrency),
        "--shutdown-grace",
        str(spec.shutdown_grace_seconds),
    ]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    return command


def merge_template(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """The resource's podTemplate wins over the chart's workerDefaults; env merges by name."""
    merged = {**defaults, **own}
    env = {e["name"]: e for e in defaults.get("env") or []}
    env.update({e["name"]: e for e in own.get("env") or []})
    if env:
        merged["env"] = list(env.values())
    return merged


def build_deployment(
    name: str,
    namespace: str,
    spec: JobHandlerSpec,
    replicas: int,
    defaults: Mapping[str, Any] | None = None,
    secret_version: str | None = None,
    metrics_port: int | None = None,
) -> dict[str, Any]:
    """``secret_version``: the database Secret's resourceVersion, on the pod template, so that a
    rotated Secret rolls the workers over to the new database (a running process keeps its env).

    ``metrics_port``: the operator's default for worker metrics; the resource's ``spec.metrics``
    decides. When on, the worker serves ``/metrics`` there, the container declares the port
    (named ``metrics``, for a PodMonitor) and the pod carries the ``prometheus.io`` annotations
    that annotation-based scrape configs look for."""
    labels = {
        "app.kubernetes.io/name": "jobstead-worker",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_OWNER: name,
        LABEL_HANDLER: _label_value(spec.handler),
    }
    template = merge_template(defaults or {}, spec.pod_template)
    secret = spec.database.name
    env: list[dict[str, Any]] = [
        {"name": "JOBSTEAD_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": secret, "key": spec.database.key}}},
        # Where in the database: from the same Secret the operator reads, so both use the same tables.
        *[
            {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for name, key in SECRET_LOCATION.items()
        ],
        {"name": "JOBSTEAD_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *[e for e in template.get("env") or [] if e.get("name") not in FROM_SECRET],
    ]
    port = spec.metrics.port_with(metrics_port)
    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.image,
        "command": worker_command(spec, port),
        "env": env,
    }
    annotations = {SECRET_VERSION: secret_version} if secret_version else {}
    if port is not None:
        container["ports"] = [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        annotations.update({"prometheus.io/scrape": "true", "prometheus.io/port": str(port)})
    if template.get("resources"):
        container["resources"] = template["resources"]
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": spec.shutdown_grace_seconds + EXIT_MARGIN_SECONDS,
    }
    for key in ("serviceAccountName", "nodeSelector", "tolerations"):
        if template.get(key):
            pod_spec[key] = template[key]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(name), "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL_OWNER: name}},
            # Never more pods than asked for during a rollout: the cap is a promise to the database.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels, **({"annotations": annotations} if annotations else {})},
                "spec": pod_spec,
            },
        },
    }


def _label_value(value: str) -> str:
    """Label values are at most 63 characters of [A-Za-z0-9_.-]."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:63].strip("-_.")
    return cleaned or "handler"
