"""Flow control options at registration: parsed once, and every bad one refused there, by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobstead import App, Context, InvalidOption, RateLimit
from jobstead.flow import NO_FLOW_CONTROL, FlowControl
from jobstead.store.new_jobs import JobDefaults, key_text, new_jobs

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("100/s", RateLimit(100, per=1)),
        ("10/min", RateLimit(10, per=60)),
        ("5/h", RateLimit(5, per=3600)),
        (RateLimit(600, per=60), RateLimit(600, per=60.0)),
        (RateLimit(600, per=timedelta(minutes=1)), RateLimit(600, per=60)),
        (RateLimit(3, per=0.5), RateLimit(3, per=0.5)),
    ],
)
def test_a_rate_is_written_as_text_or_as_a_value(written: Any, expected: RateLimit) -> None:
    assert RateLimit.parse(written) == expected


def test_a_timedelta_period_is_kept_as_seconds() -> None:
    rate = RateLimit(600, per=timedelta(minutes=1))
    assert rate.per == 60.0 and isinstance(rate.per, float) and str(rate) == "600/min"
    assert rate.per_second == 10


@pytest.mark.parametrize("bad", ["100", "100/d", "1.5/s", "-1/s", "0/s", "/s", "100 per second", 100, 1.5, [1, 2]])
def test_a_malformed_rate_is_refused_naming_the_option_with_an_example(bad: Any) -> None:
    app = App("sqlite:///:memory:")
    with pytest.raises(InvalidOption) as raised:
        app.handler(rate_limit=bad)
    assert raised.value.option == "rate_limit"
    assert '"100/s"' in str(raised.value), "the message shows a form that works"
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("limit", "per"), [(0, 1), (-5, 1), (1.5, 1), (True, 1), (10, 0), (10, -1), (10, float("inf")), (10, "1s")]
)
def test_a_rate_limit_value_needs_a_positive_count_and_period(limit: Any, per: Any) -> None:
    with pytest.raises(InvalidOption, match=r"^rate_limit .*RateLimit\(100, per=1\)"):
        RateLimit(limit, per=per)


def _nothing_registered(app: App) -> None:
    """After a refusal the app has no handler and its store was never opened (nothing written)."""
    assert app._store is None and not app.handlers


@pytest.mark.parametrize(
    ("options", "option", "words"),
    [
        ({"rate_limit": "1/s", "rate_limit_by": "customer"}, "rate_limit_by", "not a parameter"),
        ({"rate_limit_by": "customer_id"}, "rate_limit_by", "needs a rate_limit"),
        ({"concurrency_by": "customer_id"}, "concurrency_by", "needs concurrency_per_key"),
        ({"concurrency_per_key": 2}, "concurrency_per_key", "needs concurrency_by"),
        ({"concurrency_by": "customer_id", "concurrency_per_key": 0}, "concurrency_per_key", "at least 1"),
        ({"concurrency_by": "customer_id", "concurrency_per_key": -2}, "concurrency_per_key", "at least 1"),
        ({"concurrency_by": "customer_id", "concurrency_per_key": 1.5}, "concurrency_per_key", "whole number"),
        ({"concurrency_by": "nope", "concurrency_per_key": 2}, "concurrency_by", "not a parameter"),
        ({"sequence_by": "ctx"}, "sequence_by", "injects"),
        ({"sequence_by": "account"}, "sequence_by", "not a parameter"),
        ({"sequence_by": "customer_id", "sequence_on_failure": "skip"}, "sequence_on_failure", '"hold" or "continue"'),
        ({"fair_by": "customer id"}, "fair_by", "must name"),
        ({"fair_by": ""}, "fair_by", "must name"),
        ({"rate_limits": "stripe"}, "rate_limits", "list of names"),
        ({"rate_limits": ["stripe"]}, "rate_limits", "app.rate_limit('stripe'"),
        (
            {"tenant_concurrency": 2, "concurrency_by": "customer_id", "concurrency_per_key": 2},
            "tenant_concurrency",
            "one or the other",
        ),
    ],
)
def test_every_bad_flow_option_is_one_error_at_registration(options: dict[str, Any], option: str, words: str) -> None:
    app = App("sqlite:///:memory:")
    with pytest.raises(InvalidOption) as raised:

        @app.handler(**options)
        def charge(customer_id: str, amount: int, ctx: Context) -> None: ...

    assert raised.value.option == option and words in raised.value.detail, str(raised.value)
    assert str(raised.value).startswith(option + " ") and "\n" not in str(raised.value)
    _nothing_registered(app)


def test_the_issues_examples_register() -> None:
    app = App("sqlite:///:memory:")
    stripe = app.rate_limit("stripe", "100/s")

    @app.handler(rate_limit="100/s")
    def a(customer_id: str) -> None: ...

    @app.handler(rate_limit=RateLimit(600, per=60))
    def b(customer_id: str) -> None: ...

    @app.handler(rate_limit="10/s", rate_limit_by="tenant")
    def c(customer_id: str) -> None: ...

    @app.handler(rate_limit="5/s", rate_limit_by="customer_id")
    def d(customer_id: str) -> None: ...

    @app.handler(rate_limits=["stripe"])
    def e(customer_id: str) -> None: ...

    @app.handler(concurrency=50, concurrency_by="customer_id", concurrency_per_key=2)
    def f(customer_id: str) -> None: ...

    @app.handler(sequence_by="account_id")
    def g(account_id: int) -> None: ...

    @app.handler(fair_by="tenant", sequence_by="account_id", sequence_on_failure="continue")
    def h(account_id: int) -> None: ...

    assert stripe == RateLimit(100, per=1) and app.rate_limits == {"stripe": stripe}
    assert a.flow == FlowControl(rate_limit=RateLimit(100, per=1))
    assert b.definition().flow.rate_limit == RateLimit(600, per=60)
    assert c.flow.rate_limit_by == "tenant" and d.flow.rate_limit_by == "customer_id"
    assert e.flow.rate_limits == ("stripe",)
    assert (f.concurrency, f.flow.concurrency_by, f.flow.concurrency_per_key) == (50, "customer_id", 2)
    assert g.flow.sequence_by == "account_id" and g.flow.sequence_on_failure == "hold"
    assert h.definition().flow == FlowControl(
        fair_by="tenant", sequence_by="account_id", sequence_on_failure="continue"
    )


def test_a_handler_taking_any_keyword_may_name_any_key() -> None:
    app = App("sqlite:///:memory:")

    @app.handler(sequence_by="account_id")
    def anything(**kwargs: Any) -> None: ...

    assert anything.flow.sequence_by == "account_id"


def test_a_shared_limit_is_declared_once() -> None:
    app = App("sqlite:///:memory:")
    app.rate_limit("stripe", "100/s")
    app.rate_limit("stripe", RateLimit(100, per=1))  # the same again is fine
    with pytest.raises(InvalidOption, match="declared already as 100/s"):
        app.rate_limit("stripe", "50/s")
    with pytest.raises(InvalidOption, match=r"^rate_limit must be a rate"):
        app.rate_limit("github", "lots")
    with pytest.raises(InvalidOption, match="needs a name"):
        app.rate_limit("", "1/s")
    assert app.rate_limits == {"stripe": RateLimit(100, per=1)}


def test_keys_are_read_from_the_arguments_once_at_defer() -> None:
    flow = FlowControl(
        rate_limit=RateLimit(5, per=1),
        rate_limit_by="customer_id",
        concurrency_by="account",
        concurrency_per_key=1,
        sequence_by="tenant",
        fair_by="customer_id",
    )
    first, second, third = new_jobs(
        "work",
        [{"customer_id": "c1", "account": 7}, {"customer_id": None}, {"account": {"b": 1, "a": [2]}}],
        JobDefaults(flow=flow),
        clock=lambda: NOW,
        tenant="acme",
    )
    assert (first.rate_key, first.concurrency_key, first.sequence_key, first.fair_key) == ("c1", "7", None, "c1")
    assert (second.rate_key, second.concurrency_key, second.fair_key) == (None, None, None), "missing or null: no key"
    assert third.concurrency_key == '{"a":[2],"b":1}', "canonical JSON: equal values, equal keys"
    assert third.sequence_key is None, "a tenant key is the job's tenant column, read by the claim"
    (plain,) = new_jobs("work", [{"customer_id": "c1"}], JobDefaults(flow=NO_FLOW_CONTROL), clock=lambda: NOW)
    assert (plain.rate_key, plain.concurrency_key, plain.sequence_key, plain.fair_key) == (None, None, None, None)


def test_a_key_longer_than_its_column_is_stored_as_its_digest() -> None:
    long = "x" * 500
    assert key_text(long) == key_text("x" * 500) != key_text("x" * 499)
    assert len(key_text(long) or "") <= 200 and (key_text(long) or "").startswith("sha256:")
    assert key_text(True) == "true" and key_text(3) == "3" and key_text("3") == "3"


def test_registration_writes_nothing_when_refused(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}")
    app.open()
    with pytest.raises(InvalidOption):

        @app.handler(rate_limit="lots")
        def work() -> None: ...

    assert app.store.registry.handlers() == {}
    app.close()
