"""The JobHandler and CronSchedule CRDs, as the real kube-apiserver serves and validates them.

What the schema promises here (defaults, refusals, status fields) is what the
operator may rely on without checking again, so each promise is tested against
the apiserver rather than read off the YAML.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from jobstead_operator.spec import JobHandlerSpec, SpecError
from tests.e2e.conftest import GROUP, VERSION
from tests.support.controlplane import REPO, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("jobstead_crds")]

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
PLURALS = {"JobHandler": "jobhandlers", "CronSchedule": "cronschedules"}

JOB_HANDLER: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "JobHandler",
    "metadata": {"name": "send-email"},
    "spec": {
        "handler": "send_email",
        "app": "shop.jobs:app",
        "image": "registry.example.com/shop:1.4.2",
        "concurrency": 4,
        "database": {"secretRef": {"name": "shop-database"}},
    },
}
CRON_SCHEDULE: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "CronSchedule",
    "metadata": {"name": "nightly"},
    "spec": {"schedule": "0 3 * * *", "handler": "send_report"},
}


def resource(base: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """``base`` with spec fields set (a value of None removes the field)."""
    body = copy.deepcopy(base)
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key, None)
        else:
            body["spec"][key] = value
    return body


def create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create as kubectl does: unknown fields are errors (fieldValidation=Strict), not dropped."""
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[body["kind"]], body, field_validation="Strict"
    )
    return cast(dict[str, Any], created)


def get(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    stored = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[body["kind"]], body["metadata"]["name"]
    )
    return cast(dict[str, Any], stored)


def patch(api: client.ApiClient, namespace: str, body: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """A merge patch of the main resource."""
    patched = client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[body["kind"]], body["metadata"]["name"], change
    )
    return cast(dict[str, Any], patched)


def patch_status(api: client.ApiClient, namespace: str, body: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """A merge patch through the status subresource, as the operator writes status."""
    patched = client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURALS[body["kind"]], body["metadata"]["name"], change
    )
    return cast(dict[str, Any], patched)


def refusal(exc: client.ApiException) -> str:
    """The apiserver's message for a refused request."""
    return str(json.loads(exc.body or "{}").get("message", ""))


# -- examples and defaults ---------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_applies(kube_cluster: Cluster, namespace: str, example: Path) -> None:
    kube_cluster.kubectl("apply", "-n", namespace, "-f", str(example))
    created = json.loads(kube_cluster.kubectl("get", "-n", namespace, "-f", str(example), "-o", "json").stdout)
    sent = yaml.safe_load(example.read_text())
    assert created["metadata"]["name"] == sent["metadata"]["name"]
    if "spec" in sent:  # what we wrote is what is stored: defaults only add fields
        assert_contains(created["spec"], sent["spec"], "spec")


def assert_contains(stored: Any, sent: Any, path: str) -> None:
    if isinstance(sent, dict):
        assert isinstance(stored, dict), path
        for key, value in sent.items():
            assert key in stored, f"{path}.{key} was dropped"
            assert_contains(stored[key], value, f"{path}.{key}")
    else:
        assert stored == sent, path


def test_examples_cover_both_kinds() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in EXAMPLES}
    assert {"JobHandler", "CronSchedule"} <= kinds


def test_job_handler_defaults(kube_api: client.ApiClient, namespace: str) -> None:
    spec = create(kube_api, namespace, JOB_HANDLER)["spec"]
    assert spec["queue"] == "default"
    assert (spec["perPodConcurrency"], spec["minReplicas"], spec["maxReplicas"]) == (1, 0, 10)
    assert spec["retry"] == {"maxAttempts": 5, "policy": "Exponential"}
    assert spec["paused"] is False
    assert spec["shutdownGraceSeconds"] == 30
    assert spec["database"] == {"secretRef": {"name": "shop-database", "key": "url"}}
    assert "timeoutSeconds" not in spec and "podTemplate" not in spec


def test_cron_schedule_defaults(kube_api: client.ApiClient, namespace: str) -> None:
    spec = create(kube_api, namespace, CRON_SCHEDULE)["spec"]
    assert spec["timeZone"] == "UTC"
    assert spec["args"] == {}
    assert spec["suspend"] is False
    assert spec["concurrencyPolicy"] == "Allow"
    for optional in ("queue", "priority", "tenant", "startingDeadlineSeconds"):
        assert optional not in spec


@pytest.mark.parametrize(
    "schedule",
    ["*/5 * * * *", "0 9 * * MON-FRI", "0 0 1,15 * *", "30 */2 * * * 15", "0 0 L * ?", "@daily", "@annually"],
)
def test_schedule_shapes_accepted(kube_api: client.ApiClient, namespace: str, schedule: str) -> None:
    body = resource(CRON_SCHEDULE, schedule=schedule)
    body["metadata"]["name"] = f"c-{uuid.uuid4().hex[:8]}"
    assert create(kube_api, namespace, body)["spec"]["schedule"] == schedule


# -- refusals ------------------------------------------------------------------------

JH, CS = JOB_HANDLER, CRON_SCHEDULE
RETRY = {"maxAttempts": 3}
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # (case id, resource, the field the message must name, a word of the reason)
    ("handler-missing", resource(JH, handler=None), "spec.handler", "Required"),
    ("app-without-attribute", resource(JH, app="shop.jobs"), "spec.app", "should match"),
    ("image-empty", resource(JH, image=""), "spec.image", "at least 1"),
    ("concurrency-zero", resource(JH, concurrency=0), "spec.concurrency", "greater than or equal to 1"),
    ("concurrency-above-maximum", resource(JH, concurrency=10_001), "spec.concurrency", "less than or equal to 10000"),
    ("concurrency-not-a-number", resource(JH, concurrency="ten"), "spec.concurrency", "integer"),
    ("per-pod-zero", resource(JH, perPodConcurrency=0), "spec.perPodConcurrency", "greater than or equal to 1"),
    ("per-pod-above-global", resource(JH, perPodConcurrency=5), "spec.perPodConcurrency", "less than or equal"),
    ("min-replicas-negative", resource(JH, minReplicas=-1), "spec.minReplicas", "greater than or equal to 0"),
    ("max-below-min", resource(JH, minReplicas=5, maxReplicas=2), "spec.maxReplicas", "minReplicas"),
    ("max-replicas-zero", resource(JH, maxReplicas=0), "spec.maxReplicas", "greater than or equal to 1"),
    ("retry-policy-unknown", resource(JH, retry={"policy": "Linear"}), "spec.retry.policy", "Unsupported value"),
    ("retry-attempts-zero", resource(JH, retry={"maxAttempts": 0}), "spec.retry.maxAttempts", "greater than"),
    (
        "retry-explicit-without-delays",
        resource(JH, retry={"policy": "Explicit"}),
        "spec.retry.delaysSeconds",
        "at least one delay",
    ),
    (
        "retry-explicit-empty-delays",
        resource(JH, retry={"policy": "Explicit", "delaysSeconds": []}),
        "spec.retry.delaysSeconds",
        "at least one delay",
    ),
    (
        "retry-negative-delay",
        resource(JH, retry={"policy": "Explicit", "delaysSeconds": [5, -1]}),
        "spec.retry.delaysSeconds[1]",
        "greater than or equal to 0",
    ),
    (
        "retry-cap-below-base",
        resource(JH, retry={"delaySeconds": 60, "maxDelaySeconds": 10}),
        "spec.retry.maxDelaySeconds",
        "greater than or equal to delaySeconds",
    ),
    ("retry-jitter-over-100", resource(JH, retry={"jitterPercent": 101}), "spec.retry.jitterPercent", "100"),
    ("timeout-zero", resource(JH, timeoutSeconds=0), "spec.timeoutSeconds", "greater than or equal to 1"),
    ("grace-negative", resource(JH, shutdownGraceSeconds=-5), "spec.shutdownGraceSeconds", "greater than"),
    ("database-missing", resource(JH, database=None), "spec.database", "Required"),
    ("secret-ref-missing", resource(JH, database={}), "spec.database.secretRef", "Required"),
    ("secret-name-missing", resource(JH, database={"secretRef": {"key": "url"}}), "spec.database.secretRef.name", ""),
    (
        "secret-name-not-dns",
        resource(JH, database={"secretRef": {"name": "Shop_DB"}}),
        "spec.database.secretRef.name",
        "should match",
    ),
    ("unknown-field", resource(JH, maxReplica=3), "spec.maxReplica", "unknown field"),
    (
        "toleration-operator",
        resource(JH, podTemplate={"tolerations": [{"key": "a", "operator": "Maybe"}]}),
        "spec.podTemplate.tolerations[0].operator",
        "Unsupported value",
    ),
    (
        "resource-quantity",
        resource(JH, podTemplate={"resources": {"limits": {"cpu": "lots"}}}),
        "spec.podTemplate.resources.limits.cpu",
        "should match",
    ),
    (
        "duplicate-env-name",
        resource(JH, podTemplate={"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
        "spec.podTemplate.env[1]",
        "Duplicate value",
    ),
    # flow control: every refusal names the field
    (
        "rate-limit-zero",
        resource(JH, rateLimit={"limit": 0, "periodSeconds": 1}),
        "spec.rateLimit.limit",
        "greater than or equal to 1",
    ),
    (
        "rate-limit-negative",
        resource(JH, rateLimit={"limit": -5, "periodSeconds": 1}),
        "spec.rateLimit.limit",
        "greater than or equal to 1",
    ),
    (
        "rate-limit-fraction",
        resource(JH, rateLimit={"limit": 1.5, "periodSeconds": 1}),
        "spec.rateLimit.limit",
        "integer",
    ),
    (
        "rate-limit-text",
        resource(JH, rateLimit={"limit": "100/s", "periodSeconds": 1}),
        "spec.rateLimit.limit",
        "integer",
    ),
    (
        "rate-period-zero",
        resource(JH, rateLimit={"limit": 10, "periodSeconds": 0}),
        "spec.rateLimit.periodSeconds",
        "greater than 0",
    ),
    (
        "rate-period-negative",
        resource(JH, rateLimit={"limit": 10, "periodSeconds": -1}),
        "spec.rateLimit.periodSeconds",
        "greater than 0",
    ),
    ("rate-period-missing", resource(JH, rateLimit={"limit": 10}), "spec.rateLimit.periodSeconds", "Required"),
    ("rate-limit-missing", resource(JH, rateLimit={"periodSeconds": 1}), "spec.rateLimit.limit", "Required"),
    (
        "rate-by-not-a-name",
        resource(JH, rateLimit={"limit": 10, "periodSeconds": 1, "by": "customer-id"}),
        "spec.rateLimit.by",
        "parameter of the handler",
    ),
    ("rate-limit-as-text", resource(JH, rateLimit="100/s"), "spec.rateLimit", "object"),
    (
        "per-key-without-by",
        resource(JH, concurrencyPerKey=2),
        "spec.concurrencyPerKey",
        "requires concurrencyBy",
    ),
    (
        "by-without-per-key",
        resource(JH, concurrencyBy="customer_id"),
        "spec.concurrencyBy",
        "requires concurrencyPerKey",
    ),
    (
        "per-key-zero",
        resource(JH, concurrencyBy="customer_id", concurrencyPerKey=0),
        "spec.concurrencyPerKey",
        "greater than or equal to 1",
    ),
    (
        "per-key-above-global",
        resource(JH, concurrencyBy="customer_id", concurrencyPerKey=5),
        "spec.concurrencyPerKey",
        "less than or equal to concurrency",
    ),
    (
        "per-key-and-tenant-concurrency",
        resource(JH, concurrencyBy="tenant", concurrencyPerKey=2, tenantConcurrency=2),
        "spec.concurrencyBy",
        "short form",
    ),
    ("concurrency-by-empty", resource(JH, concurrencyBy="", concurrencyPerKey=1), "spec.concurrencyBy", "at least 1"),
    ("sequence-by-not-a-name", resource(JH, sequenceBy="account id"), "spec.sequenceBy", "parameter of the handler"),
    ("sequence-by-not-a-string", resource(JH, sequenceBy=3), "spec.sequenceBy", "string"),
    ("fair-by-not-a-name", resource(JH, fairBy="1tenant"), "spec.fairBy", "parameter of the handler"),
    (
        "sequence-on-failure-unknown",
        resource(JH, sequenceBy="account_id", sequenceOnFailure="Skip"),
        "spec.sequenceOnFailure",
        "Unsupported value",
    ),
    (
        "sequence-on-failure-without-sequence",
        resource(JH, sequenceOnFailure="Continue"),
        "spec.sequenceOnFailure",
        "requires sequenceBy",
    ),
    (
        "rate-limit-unknown-field",
        resource(JH, rateLimit={"limit": 1, "periodSeconds": 1, "per": 1}),
        "spec.rateLimit.per",
        "unknown field",
    ),
    ("schedule-missing", resource(CS, schedule=None), "spec.schedule", "Required"),
    ("schedule-words", resource(CS, schedule="every day"), "spec.schedule", "5 or 6 space-separated"),
    ("schedule-four-fields", resource(CS, schedule="* * * *"), "spec.schedule", "5 or 6 space-separated"),
    ("schedule-seven-fields", resource(CS, schedule="0 0 0 * * * *"), "spec.schedule", "5 or 6 space-separated"),
    ("schedule-unknown-preset", resource(CS, schedule="@every 5m"), "spec.schedule", "5 or 6 space-separated"),
    ("cron-handler-missing", resource(CS, handler=None), "spec.handler", "Required"),
    ("time-zone-with-space", resource(CS, timeZone="Europe Berlin"), "spec.timeZone", "should match"),
    ("args-not-an-object", resource(CS, args=["a", "b"]), "spec.args", "object"),
    ("concurrency-policy", resource(CS, concurrencyPolicy="Sometimes"), "spec.concurrencyPolicy", "Unsupported"),
    ("deadline-negative", resource(CS, startingDeadlineSeconds=-1), "spec.startingDeadlineSeconds", "greater"),
    ("suspend-not-bool", resource(CS, suspend="yes"), "spec.suspend", "boolean"),
]


FLOW_CONTROL: dict[str, Any] = {
    "rateLimit": {"limit": 5, "periodSeconds": 0.5, "by": "customer_id"},
    "concurrencyBy": "tenant",
    "concurrencyPerKey": 4,
    "sequenceBy": "account_id",
    "sequenceOnFailure": "Continue",
    "fairBy": "tenant",
}


def test_flow_control_fields_are_kept_as_written(kube_api: client.ApiClient, namespace: str) -> None:
    """A fractional period stays a fraction, and a rate without ``by`` is accepted as it is."""
    spec = create(kube_api, namespace, resource(JH, **FLOW_CONTROL))["spec"]
    assert {key: spec[key] for key in FLOW_CONTROL} == FLOW_CONTROL
    other = resource(JH, rateLimit={"limit": 600, "periodSeconds": 60})
    other["metadata"]["name"] = "global-rate"
    assert create(kube_api, namespace, other)["spec"]["rateLimit"] == {"limit": 600, "periodSeconds": 60}


@pytest.mark.parametrize(("body", "field", "reason"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_resource_is_refused(
    kube_api: client.ApiClient, namespace: str, body: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(client.ApiException) as refused:
        create(kube_api, namespace, body)
    assert refused.value.status in (400, 422), refused.value.body
    message = refusal(refused.value)
    assert field in message, message
    assert reason in message, message


FLOW_FIELDS = ("spec.rateLimit", "spec.concurrencyBy", "spec.concurrencyPerKey", "spec.sequence", "spec.fairBy")
#: The flow control refusals the operator makes too (an unknown field is the API server's alone: it prunes it).
FLOW_REFUSALS = [c for c in INVALID if c[2].startswith(FLOW_FIELDS) and c[3] != "unknown field"]


@pytest.mark.parametrize(("body", "field"), [c[1:3] for c in FLOW_REFUSALS], ids=[c[0] for c in FLOW_REFUSALS])
def test_the_operator_refuses_what_the_schema_refuses_naming_the_same_field(body: dict[str, Any], field: str) -> None:
    """What the webhook and the Ready condition say of a resource written before the schema refused it."""
    with pytest.raises(SpecError) as refused:
        JobHandlerSpec.parse(body["spec"])
    assert refused.value.message.startswith(field), refused.value.message


# -- status subresource --------------------------------------------------------------

JOB_HANDLER_STATUS = {
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "DatabaseUnreachable",
            "message": "connection refused",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 1,
        }
    ],
    "observedGeneration": 1,
    "replicas": 3,
    "readyReplicas": 2,
    "queued": 41,
    "running": 6,
    "failed": 2,
    "lastScaleTime": "2026-01-02T03:04:06Z",
}
CRON_SCHEDULE_STATUS = {
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Scheduled",
            "message": "recorded in the database",
            "lastTransitionTime": "2026-01-02T03:00:00Z",
            "observedGeneration": 1,
        }
    ],
    "observedGeneration": 1,
    "lastScheduleTime": "2026-01-02T03:00:00Z",
    "nextScheduleTime": "2099-01-03T03:00:00Z",
    "lastJobId": "01JGXYZ0000000000000000000",
}


@pytest.mark.parametrize(
    ("body", "status"),
    [(JOB_HANDLER, JOB_HANDLER_STATUS), (CRON_SCHEDULE, CRON_SCHEDULE_STATUS)],
    ids=["JobHandler", "CronSchedule"],
)
def test_status_round_trips_through_the_subresource(
    kube_api: client.ApiClient, namespace: str, body: dict[str, Any], status: dict[str, Any]
) -> None:
    created = create(kube_api, namespace, body)

    # Every field comes back: none is pruned as undeclared.
    assert patch_status(kube_api, namespace, body, {"status": status})["status"] == status
    stored = get(kube_api, namespace, body)
    assert stored["status"] == status
    assert stored["metadata"]["generation"] == created["metadata"]["generation"]

    # The main resource ignores status, the subresource ignores spec.
    patch(kube_api, namespace, body, {"status": {"observedGeneration": 9}})
    patch_status(kube_api, namespace, body, {"spec": {"handler": "other"}})
    stored = get(kube_api, namespace, body)
    assert stored["status"] == status
    assert stored["spec"]["handler"] == body["spec"]["handler"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (JOB_HANDLER, {"queued": -1}, "status.queued"),
        (JOB_HANDLER, {"conditions": [{"type": "Ready", "status": "Yes"}]}, "status.conditions[0].status"),
        (CRON_SCHEDULE, {"nextScheduleTime": "tomorrow"}, "status.nextScheduleTime"),
    ],
    ids=["negative-count", "condition-status", "not-a-date"],
)
def test_invalid_status_is_refused(
    kube_api: client.ApiClient, namespace: str, body: dict[str, Any], status: dict[str, Any], field: str
) -> None:
    create(kube_api, namespace, body)
    with pytest.raises(client.ApiException) as refused:
        patch_status(kube_api, namespace, body, {"status": status})
    assert refused.value.status == 422
    assert field in refusal(refused.value)


# -- kubectl ------------------------------------------------------------------------------


def table(output: str) -> list[list[str]]:
    """kubectl's table as rows of cells (columns are separated by 2+ spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]


def test_kubectl_get_jobstead_lists_both_kinds_with_columns(
    kube_cluster: Cluster, kube_api: client.ApiClient, namespace: str
) -> None:
    create(kube_api, namespace, JOB_HANDLER)
    create(kube_api, namespace, CRON_SCHEDULE)
    patch_status(kube_api, namespace, JOB_HANDLER, {"status": JOB_HANDLER_STATUS})
    patch_status(kube_api, namespace, CRON_SCHEDULE, {"status": CRON_SCHEDULE_STATUS})

    output = kube_cluster.kubectl("get", "jobstead", "-n", namespace).stdout
    tables = {t.splitlines()[1].split("/")[0]: t for t in output.strip().split("\n\n")}
    assert tables.keys() == {"jobhandler.jobstead.io", "cronschedule.jobstead.io"}
    handlers, crons = tables["jobhandler.jobstead.io"], tables["cronschedule.jobstead.io"]
    # what the README promises: handler and Ready on both kinds, queue and replicas on JobHandlers
    assert table(handlers)[0] == [
        "NAME",
        "HANDLER",
        "QUEUE",
        "CONCURRENCY",
        "REPLICAS",
        "QUEUED",
        "RUNNING",
        "READY",
        "AGE",
    ]
    assert table(handlers)[1][:8] == [
        "jobhandler.jobstead.io/send-email",
        "send_email",
        "default",
        "4",
        "3",
        "41",
        "6",
        "False",
    ]
    assert table(crons)[0] == [
        "NAME",
        "HANDLER",
        "SCHEDULE",
        "TIMEZONE",
        "SUSPEND",
        "READY",
        "LAST SCHEDULE",
        "NEXT SCHEDULE",
        "AGE",
    ]
    row = table(crons)[1]
    assert row[:6] == ["cronschedule.jobstead.io/nightly", "send_report", "0 3 * * *", "UTC", "false", "True"]
    assert row[6].endswith("d")  # a date column: the age of the last fire
    assert row[7] == "2099-01-03T03:00:00Z"  # a future time as a timestamp, not <invalid>

    wide = table(kube_cluster.kubectl("get", "jh", "-n", namespace, "-o", "wide").stdout)
    shown = 5 + len(FLOW_COLUMNS)
    assert wide[0][-shown:] == ["MIN", "MAX", "FAILED", "PAUSED", "REASON", *FLOW_COLUMNS]
    assert wide[1][-5:] == ["0", "10", "2", "false", "DatabaseUnreachable"]  # no flow control: blank cells
    wide = table(kube_cluster.kubectl("get", "jcs", "-n", namespace, "-o", "wide").stdout)
    assert wide[0][-1:] == ["LAST JOB"]
    assert wide[1][-1:] == ["01JGXYZ0000000000000000000"]


FLOW_COLUMNS = [
    "RATE LIMIT",
    "PERIOD SECONDS",
    "RATE BY",
    "CONCURRENCY BY",
    "PER KEY",
    "SEQUENCE BY",
    "FAIR BY",
    "LIMITED BY",
]


def test_kubectl_get_wide_shows_flow_control_and_what_held_the_replicas(
    kube_cluster: Cluster, kube_api: client.ApiClient, namespace: str
) -> None:
    create(kube_api, namespace, resource(JH, concurrency=8, **FLOW_CONTROL))
    scaling = {"limitedBy": "rateCap", "rateCap": 2, "ratePerSecond": 10.0, "meanRunSeconds": 0.25}
    assert patch_status(kube_api, namespace, JH, {"status": {"scaling": scaling}})["status"]["scaling"] == scaling
    wide = table(kube_cluster.kubectl("get", "jh", "-n", namespace, "-o", "wide").stdout)
    assert wide[0][-len(FLOW_COLUMNS) :] == FLOW_COLUMNS
    assert wide[1][-len(FLOW_COLUMNS) :] == [
        "5",
        "0.5",
        "customer_id",
        "tenant",
        "4",
        "account_id",
        "tenant",
        "rateCap",
    ]


def test_short_names_clash_with_nothing(kube_cluster: Cluster) -> None:
    rows = table(kube_cluster.kubectl("api-resources", "--no-headers").stdout)
    short_names = [name for row in rows if len(row) == 5 for name in row[1].split(",")]
    assert short_names.count("jh") == 1
    assert short_names.count("jcs") == 1


def test_selectable_handler_field(kube_cluster: Cluster, kube_api: client.ApiClient, namespace: str) -> None:
    create(kube_api, namespace, CRON_SCHEDULE)
    other = resource(CRON_SCHEDULE, handler="other")
    other["metadata"]["name"] = "other"
    create(kube_api, namespace, other)
    names = kube_cluster.kubectl(
        "get", "jcs", "-n", namespace, "--field-selector", "spec.handler=send_report", "-o", "name"
    ).stdout.split()
    assert names == ["cronschedule.jobstead.io/nightly"]


# -- owner references ----------------------------------------------------------------


def test_deployment_owned_by_a_deleted_job_handler_is_garbage_collected(
    kube_api: client.ApiClient, namespace: str
) -> None:
    owner = create(kube_api, namespace, JOB_HANDLER)
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    labels = {"jobstead.io/handler": "send_email"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(
            name="send-email-worker",
            owner_references=[
                client.V1OwnerReference(
                    api_version=f"{GROUP}/{VERSION}",
                    kind="JobHandler",
                    name=owner["metadata"]["name"],
                    uid=owner["metadata"]["uid"],
                    controller=True,
                    block_owner_deletion=True,
                )
            ],
        ),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    # No node matches: the Pods stay Pending, whatever else the session runs.
                    node_selector={"jobstead.io/e2e": "no-such-node"},
                    containers=[client.V1Container(name="worker", image="registry.example.com/shop:1.4.2")],
                ),
            ),
        ),
    )
    apps.create_namespaced_deployment(namespace, deployment)
    selector = "jobstead.io/handler=send_email"

    # The controllers make it real: Deployment -> ReplicaSet -> Pods.
    wait_until(lambda: len(core.list_namespaced_pod(namespace, label_selector=selector).items) == 2, 60)
    assert len(apps.list_namespaced_replica_set(namespace, label_selector=selector).items) == 1

    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "jobhandlers", owner["metadata"]["name"]
    )
    # The garbage collector learns about a new CRD at its next discovery sync (30 s).
    wait_until(lambda: not apps.list_namespaced_deployment(namespace).items, 120)
    wait_until(lambda: not apps.list_namespaced_replica_set(namespace, label_selector=selector).items, 60)
    wait_until(lambda: not core.list_namespaced_pod(namespace, label_selector=selector).items, 60)


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s"
        time.sleep(0.2)
