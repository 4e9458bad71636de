"""The operator's decisions, without a cluster: specs, replica counts, manifests."""

from __future__ import annotations

from typing import Any

import pytest

from jobstead_operator.deployment import build_deployment, worker_command
from jobstead_operator.scaling import Bound, Scaler, recommended_replicas
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
    assert scaler.decide(s, due=500, running=0, current=0, now=0).desired == 4
    # the queue drains: no drop inside the window (no flapping)
    assert scaler.decide(s, due=0, running=2, current=4, now=10).desired == 4
    assert scaler.decide(s, due=0, running=0, current=4, now=25).desired == 4
    # window passed: down, but one warm pod stays through the idle cool-down
    assert scaler.decide(s, due=0, running=0, current=4, now=41).desired == 1
    assert scaler.decide(s, due=0, running=0, current=1, now=60).desired == 1
    assert scaler.decide(s, due=0, running=0, current=1, now=71).desired == 0
    # a new burst scales up immediately
    assert scaler.decide(s, due=5, running=0, current=0, now=72).desired == 2


def test_min_replicas_is_a_floor() -> None:
    scaler = Scaler(window_seconds=0, idle_cooldown_seconds=0)
    assert scaler.decide(spec(minReplicas=2), due=0, running=0, current=4, now=100).desired == 2


def test_each_decision_says_why_in_words() -> None:
    """The reason a JobHandler's status carries: the verb, what held it, and the arithmetic."""
    s = spec(concurrency=48, perPodConcurrency=16, maxReplicas=10)
    scaler = Scaler(window_seconds=30, idle_cooldown_seconds=60)
    up = scaler.decide(s, due=41, running=6, current=1, now=0)
    assert (up.desired, up.needed, up.limit_cap, up.limited_by) == (3, 3, 3, None)
    assert up.reason == "scale up: 41 due + 6 running need 3 pods of 16"
    capped = scaler.decide(s, due=500, running=0, current=3, now=1)
    assert (capped.desired, capped.needed, capped.limited_by) == (3, 32, Bound.LIMIT_CAP)
    assert capped.reason == (
        "held at the limit cap 3 (concurrency 48, 16 per pod): 500 due + 0 running need 32 pods of 16"
    )
    held = scaler.decide(s, due=0, running=10, current=3, now=5)
    assert (held.desired, held.limited_by) == (3, Bound.WINDOW)
    assert held.reason == "held at 3 for the 30 s stabilisation window: 0 due + 10 running need 1 pod of 16"
    cooling = scaler.decide(s, due=0, running=0, current=3, now=40)
    assert (cooling.desired, cooling.limited_by, cooling.cooldown_left) == (1, Bound.COOL_DOWN, 25)
    assert cooling.reason == "scale down, cool-down: one pod kept until idle for 60 s"
    idle = scaler.decide(s, due=0, running=0, current=1, now=70)
    assert (idle.desired, idle.cooldown_left, idle.reason) == (0, None, "scale down: nothing due or running")
    assert scaler.decide(s, due=0, running=0, current=0, now=71).reason == "idle: nothing due or running"


def test_max_and_min_replicas_are_named_when_they_hold() -> None:
    scaler = Scaler(window_seconds=0, idle_cooldown_seconds=0)
    at_max = scaler.decide(spec(maxReplicas=2), due=500, running=0, current=0, now=0)
    assert (at_max.desired, at_max.limited_by) == (2, Bound.MAX_REPLICAS)
    assert at_max.reason == "scale up, held at max 2: 500 due + 0 running need 167 pods of 3"
    at_min = scaler.decide(spec(minReplicas=2), due=0, running=0, current=2, now=1)
    assert (at_min.desired, at_min.limited_by, at_min.reason) == (
        2,
        Bound.MIN_REPLICAS,
        "held at min 2: nothing due or running",
    )


def test_changes_are_kept_newest_first_and_survive_a_restart_through_the_status() -> None:
    s = spec()
    scaler = Scaler(window_seconds=0, idle_cooldown_seconds=0)
    for i in range(7):
        decision = scaler.decide(s, due=3 * (i % 2), running=0, current=1 - i % 2, now=i)
        scaler.record(decision, f"2026-01-01T00:00:0{i}Z")
    stored = [c.as_status() for c in scaler.recent]
    assert len(stored) == 5 and stored[0]["time"] == "2026-01-01T00:00:06Z"
    assert set(stored[0]) == {"time", "from", "to", "reason"}
    restarted = Scaler()
    restarted.remember([*stored, {"time": "broken"}])
    restarted.remember([])  # only the first status counts: later ones are its own
    assert [c.as_status() for c in restarted.recent] == stored


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
        ({"concurrency": 10_001}, "InvalidSpec"),  # as many slot rows at publish: the schema's maximum
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
