"""The operator's decisions, without a cluster: specs, replica counts, manifests."""

from __future__ import annotations

from typing import Any

import pytest

from jobstead_operator.deployment import build_deployment, worker_command
from jobstead_operator.scaling import Scaler, recommended_replicas
from jobstead_operator.spec import JobHandlerSpec, SpecError

BASE: dict[str, Any] = {
    "handler": "send_email",
    "app": "shop.jobs:app",
    "image": "registry.example/shop:1.2",
    "database": {"secretRef": {"name": "shop-db"}},
    "concurrency": 10,
    "perPodConcurrency": 3,
    "minReplicas": 0,
    "maxReplicas": 8,
}


def spec(**changes: Any) -> JobHandlerSpec:
    return JobHandlerSpec.parse({**BASE, **changes})


@pytest.mark.parametrize(
    ("due", "running", "expected"),
    [(0, 0, 0), (1, 0, 1), (3, 0, 1), (4, 0, 2), (0, 7, 3), (500, 0, 4)],  # cap: ceil(10/3) = 4 < 8
)
def test_recommended_replicas(due: int, running: int, expected: int) -> None:
    assert recommended_replicas(spec(), due=due, running=running) == expected


def test_cap_is_max_replicas_when_lower() -> None:
    assert recommended_replicas(spec(maxReplicas=2), due=500, running=0) == 2
    assert recommended_replicas(spec(minReplicas=2), due=0, running=0) == 2


def test_up_at_once_down_after_the_window_zero_after_the_cooldown() -> None:
    s = spec()
    scaler = Scaler(window_seconds=30, idle_cooldown_seconds=60)
    assert scaler.decide(s, due=500, running=0, current=0, now=0) == 4
    # the queue drains: no drop inside the window (no flapping)
    assert scaler.decide(s, due=0, running=2, current=4, now=10) == 4
    assert scaler.decide(s, due=0, running=0, current=4, now=25) == 4
    # window passed: down, but one warm pod stays through the idle cool-down
    assert scaler.decide(s, due=0, running=0, current=4, now=41) == 1
    assert scaler.decide(s, due=0, running=0, current=1, now=60) == 1
    assert scaler.decide(s, due=0, running=0, current=1, now=71) == 0
    # a new burst scales up immediately
    assert scaler.decide(s, due=5, running=0, current=0, now=72) == 2


def test_min_replicas_is_a_floor() -> None:
    scaler = Scaler(window_seconds=0, idle_cooldown_seconds=0)
    assert scaler.decide(spec(minReplicas=2), due=0, running=0, current=4, now=100) == 2


def test_retry_block_maps_onto_the_policy() -> None:
    fixed = spec(retry={"maxAttempts": 3, "policy": "Fixed", "delaySeconds": 7})
    assert fixed.max_attempts == 3 and fixed.retry.kind == "fixed" and fixed.retry.delay == 7
    explicit = spec(retry={"policy": "Explicit", "delaysSeconds": [1, 5, 30]})
    assert explicit.retry.delays == (1, 5, 30)
    exp = spec(retry={"policy": "Exponential", "delaySeconds": 2, "maxDelaySeconds": 60, "jitterPercent": 20})
    assert (exp.retry.kind, exp.retry.delay, exp.retry.max_delay, exp.retry.jitter) == ("exponential", 2, 60, 0.2)


def test_tenant_concurrency_reaches_the_handler_row() -> None:
    from jobstead_operator.jobhandlers import definition as handler_definition

    s = spec(tenantConcurrency=2)
    assert s.tenant_concurrency == 2
    assert handler_definition(s).tenant_concurrency == 2
    assert spec().tenant_concurrency is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"app": "no-colon"}, "InvalidSpec"),
        ({"perPodConcurrency": 11}, "InvalidSpec"),
        ({"tenantConcurrency": 0}, "InvalidSpec"),
        ({"tenantConcurrency": 11}, "InvalidSpec"),
        ({"minReplicas": 9}, "InvalidSpec"),
        ({"retry": {"policy": "Sometimes"}}, "InvalidRetry"),
        ({"retry": {"policy": "Explicit", "delaysSeconds": []}}, "InvalidRetry"),
        ({"database": {}}, "InvalidSpec"),
    ],
)
def test_invalid_specs_name_a_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(SpecError) as error:
        spec(**changes)
    assert error.value.reason == reason and error.value.message


def test_deployment_runs_the_worker_with_the_secret_and_overrides() -> None:
    s = spec(
        podTemplate={
            "resources": {"limits": {"memory": "256Mi"}},
            "env": [{"name": "LOG_LEVEL", "value": "debug"}],
            "serviceAccountName": "shop-worker",
            "nodeSelector": {"pool": "jobs"},
            "tolerations": [{"key": "jobs", "operator": "Exists"}],
        },
        shutdownGraceSeconds=45,
    )
    d = build_deployment("mailer", "shop", s, replicas=3)
    pod = d["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert d["metadata"] == {
        "name": "mailer-worker",
        "namespace": "shop",
        "labels": d["spec"]["template"]["metadata"]["labels"],
    }
    assert d["spec"]["replicas"] == 3
    assert container["command"] == worker_command(s)
    assert container["command"][:6] == ["jobstead", "worker", "--app", "shop.jobs:app", "--handler", "send_email"]
    assert {
        "name": "JOBSTEAD_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "url"}},
    } in container["env"]
    assert {"name": "LOG_LEVEL", "value": "debug"} in container["env"]
    assert container["resources"] == {"limits": {"memory": "256Mi"}}
    assert pod["serviceAccountName"] == "shop-worker" and pod["nodeSelector"] == {"pool": "jobs"}
    assert pod["terminationGracePeriodSeconds"] >= 45
    assert d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_worker_defaults_sit_under_the_resources_own_template() -> None:
    s = spec(podTemplate={"env": [{"name": "A", "value": "own"}], "nodeSelector": {"pool": "own"}})
    defaults = {
        "env": [{"name": "A", "value": "default"}, {"name": "B", "value": "default"}],
        "nodeSelector": {"pool": "default"},
        "resources": {"requests": {"cpu": "100m"}},
    }
    pod = build_deployment("h", "ns", s, replicas=1, defaults=defaults)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["A"] == "own" and env["B"] == "default"
    assert pod["nodeSelector"] == {"pool": "own"}
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "100m"}}


def test_worker_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobstead.errors import ConfigurationError
    from jobstead_operator.runner import WORKER_DEFAULTS_ENV, worker_defaults_from_env

    monkeypatch.delenv(WORKER_DEFAULTS_ENV, raising=False)
    assert worker_defaults_from_env() == {}
    monkeypatch.setenv(WORKER_DEFAULTS_ENV, '{"nodeSelector": {"pool": "jobs"}}')
    assert worker_defaults_from_env() == {"nodeSelector": {"pool": "jobs"}}
    for bad in ("{nope", "[1]"):
        monkeypatch.setenv(WORKER_DEFAULTS_ENV, bad)
        with pytest.raises(ConfigurationError):
            worker_defaults_from_env()
