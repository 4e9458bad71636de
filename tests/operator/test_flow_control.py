"""A JobHandler's flow control: the values it becomes, its refusals, and the replicas a rate can keep busy."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest

from jobstead import App
from jobstead.flow import FlowControl, RateLimit
from jobstead_operator.databases import AppDatabase, Databases
from jobstead_operator.jobhandlers import (
    _read_run_time,
    definition,
    describe_flow,
    scaling_status,
    unknown_keys,
)
from jobstead_operator.reasons import Reason
from jobstead_operator.scaling import RUN_TIME_EVERY, Bound, Scaler, rate_cap
from jobstead_operator.spec import JobHandlerSpec, SpecError
from jobstead_operator.targets import parse_target
from jobstead_operator.webhook import validate_jobhandler
from tests.conftest import Target, worker_thread

BASE: dict[str, Any] = {
    "handler": "charge",
    "app": "shop.jobs:app",
    "image": "shop:1",
    "database": {"secretRef": {"name": "shop-db"}},
    "concurrency": 50,
    "maxReplicas": 20,
}


def spec(**changes: Any) -> JobHandlerSpec:
    return JobHandlerSpec.parse({**BASE, **changes})


# -- what the fields become ----------------------------------------------------------


def test_every_field_reaches_the_handler_row_as_the_runtimes_value() -> None:
    parsed = spec(
        rateLimit={"limit": 5, "periodSeconds": 0.5, "by": "customer_id"},
        concurrencyBy="tenant",
        concurrencyPerKey=2,
        sequenceBy="account_id",
        fairBy="tenant",
    )
    expected = FlowControl(
        rate_limit=RateLimit(5, per=0.5),
        rate_limit_by="customer_id",
        concurrency_by="tenant",
        concurrency_per_key=2,
        sequence_by="account_id",
        fair_by="tenant",
    )
    assert parsed.flow == expected
    assert definition(parsed).flow == expected
    assert (
        describe_flow(parsed)
        == "rate 5 per 0.5 s by customer_id, 2 per tenant, in sequence by account_id, fair by tenant"
    )


def test_a_sequence_holds_on_failure_unless_told_to_continue() -> None:
    assert spec(sequenceBy="account_id").flow.sequence_on_failure == "hold"
    assert spec(sequenceBy="account_id", sequenceOnFailure="Hold").flow.sequence_on_failure == "hold"
    going_on = spec(sequenceBy="account_id", sequenceOnFailure="Continue")
    assert definition(going_on).flow.sequence_on_failure == "continue"
    assert describe_flow(going_on) == "in sequence by account_id, going on after a failure"


def test_no_flow_fields_is_no_flow_control_and_the_short_per_tenant_form_stays() -> None:
    assert spec().flow.is_none and definition(spec()).flow.is_none
    short = spec(tenantConcurrency=3)
    assert short.flow.is_none and definition(short).tenant_concurrency == 3
    assert spec(rateLimit={"limit": 600, "periodSeconds": 60}).flow.rate_limit == RateLimit(600, per=60.0)


#: (spec changes, the field the one-line message starts with): what the CRD refuses, for resources
#: written while the schema was older or the webhook is the only check.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"rateLimit": {"limit": 0, "periodSeconds": 1}}, "spec.rateLimit.limit"),
    ({"rateLimit": {"limit": -3, "periodSeconds": 1}}, "spec.rateLimit.limit"),
    ({"rateLimit": {"limit": 1.5, "periodSeconds": 1}}, "spec.rateLimit.limit"),
    ({"rateLimit": {"limit": "100/s", "periodSeconds": 1}}, "spec.rateLimit.limit"),
    ({"rateLimit": {"limit": True, "periodSeconds": 1}}, "spec.rateLimit.limit"),
    ({"rateLimit": {"limit": 10, "periodSeconds": 0}}, "spec.rateLimit.periodSeconds"),
    ({"rateLimit": {"limit": 10, "periodSeconds": -0.5}}, "spec.rateLimit.periodSeconds"),
    ({"rateLimit": {"limit": 10}}, "spec.rateLimit.periodSeconds"),
    ({"rateLimit": "100/s"}, "spec.rateLimit"),
    ({"rateLimit": {"limit": 10, "periodSeconds": 1, "by": "customer-id"}}, "spec.rateLimit.by"),
    ({"concurrencyPerKey": 2}, "spec.concurrencyPerKey requires spec.concurrencyBy"),
    ({"concurrencyBy": "customer_id"}, "spec.concurrencyBy requires spec.concurrencyPerKey"),
    ({"concurrencyBy": "customer_id", "concurrencyPerKey": 0}, "spec.concurrencyPerKey"),
    ({"concurrencyBy": "customer_id", "concurrencyPerKey": 51}, "spec.concurrencyPerKey must be less than or equal"),
    ({"concurrencyBy": "tenant", "concurrencyPerKey": 2, "tenantConcurrency": 2}, "spec.concurrencyBy and"),
    ({"sequenceBy": "account id"}, "spec.sequenceBy"),
    ({"sequenceBy": 3}, "spec.sequenceBy"),
    ({"fairBy": ""}, "spec.fairBy"),
    ({"sequenceBy": "account_id", "sequenceOnFailure": "continue"}, "spec.sequenceOnFailure must be Hold or Continue"),
    ({"sequenceOnFailure": "Continue"}, "spec.sequenceOnFailure requires spec.sequenceBy"),
]


@pytest.mark.parametrize(("changes", "field"), REFUSED, ids=[f"{c[1]}-{i}" for i, c in enumerate(REFUSED)])
def test_bad_flow_control_is_one_line_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as refused:
        spec(**changes)
    assert refused.value.reason is Reason.INVALID_SPEC
    assert refused.value.message.startswith(field), refused.value.message
    assert "\n" not in refused.value.message


@pytest.mark.parametrize(("changes", "field"), REFUSED[:3] + REFUSED[10:12])
def test_the_webhook_refuses_with_the_same_line(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as parsed:
        spec(**changes)
    with pytest.raises(kopf.AdmissionError) as refused:
        asyncio.run(validate_jobhandler(spec={**BASE, **changes}, namespace="shop", memo=None, operation="CREATE"))
    assert str(refused.value) == parsed.value.message and str(refused.value).startswith(field)


# -- the rate cap: arithmetic ----------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "per_pod", "mean", "busy", "cap"),
    [
        ({"limit": 10, "periodSeconds": 1}, 1, 0.2, True, 2),  # 10/s x 0.2 s: 2 jobs in flight
        ({"limit": 10, "periodSeconds": 1}, 1, 0.25, True, 3),  # 2.5 rounds up
        ({"limit": 10, "periodSeconds": 1}, 4, 2.0, True, 5),  # 20 in flight, 4 per pod
        ({"limit": 600, "periodSeconds": 60}, 1, 3.0, True, 30),  # per minute: 10/s
        ({"limit": 1, "periodSeconds": 0.5}, 1, 1.5, True, 3),  # a fractional period: 2/s
        ({"limit": 100, "periodSeconds": 1}, 10, 0.01, True, 1),  # 1 in flight: at least 1 while work waits
        ({"limit": 100, "periodSeconds": 1}, 10, None, True, 1),  # nothing measured yet: 1 pod measures it
        ({"limit": 100, "periodSeconds": 1}, 10, None, False, 0),  # nothing waiting: no floor from the rate
        ({"limit": 1, "periodSeconds": 3600}, 1, 60.0, True, 1),
    ],
)
def test_rate_cap_is_rate_times_mean_run_time_per_pod(
    rate: dict[str, Any], per_pod: int, mean: float | None, busy: bool, cap: int
) -> None:
    s = spec(rateLimit=rate, perPodConcurrency=per_pod)
    assert rate_cap(s, mean, busy=busy) == cap


def test_no_rate_cap_without_a_global_rate() -> None:
    assert rate_cap(spec(), 5.0, busy=True) is None
    per_key = spec(rateLimit={"limit": 10, "periodSeconds": 1, "by": "customer_id"})
    assert rate_cap(per_key, 5.0, busy=True) is None, "how many keys share the backlog is open"
    decision = Scaler().decide(per_key, due=500, running=0, current=0, now=0, mean_run_seconds=5.0)
    assert (decision.desired, decision.rate_cap, decision.limited_by) == (20, None, Bound.MAX_REPLICAS)


def test_a_rate_holds_the_replicas_and_the_status_says_why() -> None:
    s = spec(rateLimit={"limit": 10, "periodSeconds": 1}, perPodConcurrency=2)
    scaler = Scaler(window_seconds=0, idle_cooldown_seconds=0)
    held = scaler.decide(s, due=500, running=0, current=0, now=0, mean_run_seconds=0.8)
    assert (held.desired, held.needed, held.rate_cap, held.limited_by) == (4, 250, 4, Bound.RATE_CAP)
    assert held.reason == (
        "scale up, held at the rate cap 4 (rate 10/s x 0.8 s mean run / 2 per pod): "
        "500 due + 0 running need 250 pods of 2"
    )
    status = scaling_status(held)
    assert (status["rateCap"], status["ratePerSecond"], status["meanRunSeconds"], status["limitedBy"]) == (
        4,
        10.0,
        0.8,
        "rateCap",
    )
    unmeasured = Scaler().decide(s, due=500, running=0, current=0, now=0)
    assert (unmeasured.desired, unmeasured.limited_by) == (1, Bound.RATE_CAP)
    assert unmeasured.reason.startswith("scale up, held at the rate cap 1 (rate 10/s, no run time measured yet)")


def test_the_smallest_cap_is_the_one_named() -> None:
    rate = {"limit": 100, "periodSeconds": 1}
    # the rate allows 50 pods, the global limit 50 / 1 = 50, max 20: max holds
    at_max = Scaler().decide(spec(rateLimit=rate), due=500, running=0, current=0, now=0, mean_run_seconds=0.5)
    assert (at_max.desired, at_max.rate_cap, at_max.limited_by) == (20, 50, Bound.MAX_REPLICAS)
    # concurrency 8: the limit cap (8) is below the rate's (50)
    at_limit = Scaler().decide(
        spec(rateLimit=rate, concurrency=8), due=500, running=0, current=0, now=0, mean_run_seconds=0.5
    )
    assert (at_limit.desired, at_limit.limited_by) == (8, Bound.LIMIT_CAP)
    # a work load below every cap: nothing held it
    light = Scaler().decide(spec(rateLimit=rate), due=3, running=0, current=0, now=0, mean_run_seconds=0.5)
    assert (light.desired, light.rate_cap, light.limited_by) == (3, 50, None)


def test_min_replicas_stays_a_floor_under_a_rate() -> None:
    s = spec(rateLimit={"limit": 1, "periodSeconds": 1}, minReplicas=3)
    decision = Scaler().decide(s, due=500, running=0, current=0, now=0, mean_run_seconds=0.1)
    assert (decision.desired, decision.rate_cap) == (3, 1)


def test_a_mean_is_shown_and_used_to_two_digits_so_a_steady_status_stays_put() -> None:
    s = spec(rateLimit={"limit": 10, "periodSeconds": 1})
    scaler = Scaler(window_seconds=0, idle_cooldown_seconds=0)
    first = scaler.decide(s, due=500, running=0, current=0, now=0, mean_run_seconds=0.31234)
    second = scaler.decide(s, due=500, running=0, current=4, now=2, mean_run_seconds=0.30771)
    assert first.mean_run_seconds == second.mean_run_seconds == 0.31
    assert first.rate_cap == second.rate_cap == 4 and first.reason.replace("scale up, ", "") == second.reason


def test_the_run_time_is_read_each_tick_until_attempts_finish_then_every_30_seconds() -> None:
    scaler = Scaler()
    assert scaler.wants_run_time(0)
    scaler.take_run_time(None, finished=False, now=0)
    assert scaler.wants_run_time(2) and scaler.mean_run_seconds is None
    scaler.take_run_time(4.0, finished=False, now=2)  # running jobs' time so far: read again next tick
    assert scaler.wants_run_time(4) and scaler.mean_run_seconds == 4.0
    scaler.take_run_time(6.0, finished=True, now=4)
    assert not scaler.wants_run_time(4 + RUN_TIME_EVERY - 1) and scaler.wants_run_time(4 + RUN_TIME_EVERY)
    scaler.take_run_time(None, finished=False, now=40)  # a quiet window keeps the last measure
    assert scaler.mean_run_seconds == 6.0


# -- against a real database -------------------------------------------------------------

RUN_SECONDS = 0.2


@pytest.fixture
def shop(target: Target) -> Iterator[App]:
    """An app whose ``charge`` takes about RUN_SECONDS; its workers publish its parameters."""
    app = App(target.url, schema=target.schema)

    @app.handler(name="charge", concurrency=4)
    def charge(customer_id: str, amount: int) -> None:
        time.sleep(RUN_SECONDS)

    app.migrate()
    yield app
    app.close()


def run_with_database(target: Target, scenario: Callable[[AppDatabase], Any]) -> Any:
    async def main() -> Any:
        pool = Databases(republish_every=3600)
        try:
            where = parse_target(target.url, schema=target.schema, table_prefix=None, where="test")
            database, _ = await pool.use(("JobHandler", "shop", "charge"), where)
            await pool.ready(database)
            return await scenario(database)
        finally:
            await pool.close_all()

    return asyncio.run(main())


def drain(app: App, n: int) -> None:
    handler = app.get_handler("charge")
    deferred = handler.defer_many([{"customer_id": f"c{i % 3}", "amount": i} for i in range(n)])
    with worker_thread(app, concurrency=4):
        deadline = time.monotonic() + 60
        while not all(d.refresh().status.is_final for d in deferred):
            assert time.monotonic() < deadline, "the jobs did not finish"
            time.sleep(0.05)


def test_a_rate_limited_handler_is_capped_by_its_measured_run_time(target: Target, shop: App) -> None:
    drain(shop, 8)
    shop.get_handler("charge").defer_many([{"customer_id": "c", "amount": i} for i in range(300)])
    rated = spec(rateLimit={"limit": 10, "periodSeconds": 1}, perPodConcurrency=1)

    async def scenario(database: AppDatabase) -> Any:
        await database.call(database.store.registry.put_handler, definition(rated))
        run = await database.call(database.store.queries.recent_run_time, "charge")
        scaler = Scaler(window_seconds=0, idle_cooldown_seconds=0)
        await _read_run_time(database, rated, scaler)
        load = await database.call(database.store.queries.handler_load, "charge")
        decision = scaler.decide(
            rated, due=load.due, running=load.running, current=1, now=0, mean_run_seconds=scaler.mean_run_seconds
        )
        unrated = Scaler()
        await _read_run_time(database, spec(), unrated)  # no rate: nothing read
        return run, decision, unrated.mean_run_seconds

    run, decision, unread = run_with_database(target, scenario)
    assert run.finished and run.attempts == 8
    assert RUN_SECONDS <= run.mean_seconds < RUN_SECONDS + 0.5, run
    assert decision.due == 300 and decision.limited_by is Bound.RATE_CAP
    assert decision.rate_cap == math.ceil(10 * decision.mean_run_seconds - 1e-9) == decision.desired
    assert 2 <= decision.desired <= 7, decision.reason
    assert "held at the rate cap" in decision.reason and "rate 10/s x" in decision.reason
    assert unread is None


def test_while_none_finished_the_running_ones_stand_in(target: Target, shop: App) -> None:
    """A lower bound that grows: the running attempts' time so far."""
    started = time.monotonic()

    @shop.handler(name="slow", concurrency=2)
    def slow(customer_id: str) -> None:
        time.sleep(3)

    deferred = shop.get_handler("slow").defer_many([{"customer_id": "c"} for _ in range(2)])
    with worker_thread(shop, concurrency=2, handlers=["slow"]):
        while not all(d.refresh().status.value == "running" for d in deferred):
            assert time.monotonic() - started < 30
            time.sleep(0.05)
        time.sleep(0.5)

        async def scenario(database: AppDatabase) -> Any:
            return await database.call(database.store.queries.recent_run_time, "slow")

        run = run_with_database(target, scenario)
    assert not run.finished and run.attempts == 2
    assert 0.4 <= run.mean_seconds < 3.5, run


def test_a_key_that_names_no_parameter_is_reported_not_crashed_on(target: Target, shop: App) -> None:
    drain(shop, 1)  # a worker ran: the handler's parameters are published

    async def scenario(database: AppDatabase) -> list[str | None]:
        found = []
        for changes in (
            {"sequenceBy": "account_id"},
            {"rateLimit": {"limit": 5, "periodSeconds": 1, "by": "customer"}},
            {"concurrencyBy": "customer_id", "concurrencyPerKey": 2, "fairBy": "tenant"},
        ):
            flowed = spec(**changes)
            await database.call(database.store.registry.put_handler, definition(flowed))
            found.append(await unknown_keys(database, flowed))
        return found

    sequence, rate, fine = run_with_database(target, scenario)
    assert sequence == (
        "spec.sequenceBy names 'account_id', which is not a parameter of handler 'charge' "
        "(its parameters: amount, customer_id; or tenant)"
    )
    assert rate is not None and rate.startswith("spec.rateLimit.by names 'customer',")
    assert fine is None


def test_nothing_is_said_of_keys_before_any_worker_published_the_parameters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    flowed = spec(sequenceBy="account_id")

    async def scenario(database: AppDatabase) -> str | None:
        await database.call(database.store.registry.put_handler, definition(flowed))
        return await unknown_keys(database, flowed)

    assert run_with_database(Target("sqlite", url, None), scenario) is None


def test_the_read_walks_a_bounded_number_of_the_newest_finished_jobs(target: Target, shop: App) -> None:
    """Jobs of other handlers that ended since can crowd a handler out of the walk: its mean is then unknown."""
    drain(shop, 4)

    @shop.handler(name="quick")
    def quick(n: int) -> None:
        pass

    others = shop.get_handler("quick").defer_many([{"n": i} for i in range(6)])
    with worker_thread(shop, concurrency=2, handlers=["quick"]):
        for job in others:
            job.wait(30)
    queries = shop.store.queries
    crowded = queries.recent_run_time("charge", scan=6)
    assert (crowded.mean_seconds, crowded.attempts, crowded.finished) == (None, 0, False)
    walked = queries.recent_run_time("charge", scan=10)
    assert walked.finished and walked.attempts == 4 and walked.mean_seconds >= RUN_SECONDS
    assert queries.recent_run_time("charge", sample=3).attempts == 3
    assert queries.recent_run_time("charge", within=timedelta(0)).attempts == 0


def test_the_handler_row_carries_the_resources_flow_control_and_code_does_not_undo_it(
    target: Target, shop: App
) -> None:
    flowed = spec(
        rateLimit={"limit": 5, "periodSeconds": 0.5},
        concurrencyBy="customer_id",
        concurrencyPerKey=2,
        sequenceBy="customer_id",
        sequenceOnFailure="Continue",
        fairBy="tenant",
    )

    async def scenario(database: AppDatabase) -> Any:
        await database.call(database.store.registry.put_handler, definition(flowed))
        return await database.call(database.store.registry.handler, "charge")

    row = run_with_database(target, scenario)
    assert row is not None and row.source == "crd" and row.flow == flowed.flow
    drain(shop, 1)  # a worker of the code (no flow control) starts and publishes the handler
    after = shop.store.registry.handler("charge")
    assert after is not None and after.flow == flowed.flow, "the resource's settings stay the row's"
    assert [name for name, _ in after.params] == ["customer_id", "amount"]
