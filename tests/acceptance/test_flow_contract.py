"""Issue 34's contract as a new user reads it: the README's "Flow control" followed literally.

Each test here failed before its fix; the wider behaviour is covered by
``tests/unit/test_flow_options.py`` and ``tests/multiprocess/test_flow_*``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from jobstead import App, Context, InvalidOption, RateLimit
from jobstead.flow import MAX_RATE_LIMIT, MAX_RATE_PERIOD, FlowControl
from jobstead_operator.spec import JobHandlerSpec, SpecError
from jobstead_operator.webhook import validate_jobhandler
from tests.conftest import Target


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": -3}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"concurrency": 6, "tenant_concurrency": 0}, "tenant_concurrency"),
        ({"concurrency": 6, "tenant_concurrency": -1}, "tenant_concurrency"),
        # N slot rows at publish: a billion was a billion rows (and more than the column holds)
        ({"concurrency": 10_001}, "concurrency"),
        ({"concurrency": 10**9}, "concurrency"),
        ({"tenant_concurrency": 10**10}, "tenant_concurrency"),
    ],
)
def test_a_zero_negative_or_fractional_limit_is_an_invalid_option_and_nothing_is_written(
    sqlite_target: Target, options: dict[str, Any], option: str
) -> None:
    """ "zero or a negative number: one InvalidOption naming the option with a form that works, and
    nothing is registered or written" (README, Flow control): the global limits were a
    ConfigurationError (and 1.5 was accepted), unlike every other flow control."""
    app = App(sqlite_target.url)
    app.migrate()
    try:
        with pytest.raises(InvalidOption) as raised:

            @app.handler(**options)
            def sync_customer(customer_id: str) -> None: ...

        assert raised.value.option == option
        message = str(raised.value)
        assert message.startswith(f"{option} ") and f"{option}=8" in message and "\n" not in message
        assert not app.handlers and app.store.registry.handlers() == {}
    finally:
        app.close()


@pytest.mark.parametrize("option", ["rate_limit_by", "concurrency_by", "sequence_by", "fair_by"])
@pytest.mark.parametrize("key", ["ctx", "account"])
def test_a_key_naming_an_injected_or_unknown_parameter_is_refused_with_a_form_that_works(
    sqlite_target: Target, option: str, key: str
) -> None:
    """ "one InvalidOption naming the option with a form that works" (README, Flow control): naming
    an injected parameter said only "name a stored argument", with no example."""
    options: dict[str, Any] = {option: key}
    if option == "rate_limit_by":
        options["rate_limit"] = "10/s"
    if option == "concurrency_by":
        options["concurrency_per_key"] = 2
    app = App(sqlite_target.url)
    app.migrate()
    try:
        with pytest.raises(InvalidOption) as raised:

            @app.handler(**options)
            def apply_webhook(account_id: str, event: dict[str, Any], ctx: Context) -> None: ...

        assert raised.value.option == option
        assert f'e.g. {option}="account_id"' in str(raised.value) and repr(key) in str(raised.value)
        assert not app.handlers and app.store.registry.handlers() == {}
    finally:
        app.close()


def test_a_sequenced_step_waiting_for_a_later_step_of_its_own_key_runs_after_it(
    make_app: Callable[..., App], running_worker: Callable[..., contextlib.AbstractContextManager[object]]
) -> None:
    """Issue 33: ``after=`` may name steps added later; issue 34: sequences keep working with
    workflows. ``second`` is added (and gets its id) before ``first``, which it waits for."""
    app = make_app()

    @app.handler(sequence_by="account_id")
    def post(account_id: str, n: int) -> int:
        return n

    app.migrate()
    wf = app.workflow("ledger")
    wf.add("second", post.job(account_id="A", n=2), after=["first"])
    wf.add("first", post.job(account_id="A", n=1))
    run = wf.defer()
    with running_worker(app):
        run.wait(timeout=10)
    assert run.status == "succeeded"


#: Rates as a hurried user writes them: the one text form is N/s, N/min or N/h, nothing else.
MALFORMED_RATES = [
    "100/ s",
    "100 /s",
    " 100/s",
    "100/s ",
    "100/s\n",
    "-1/s",
    "+5/s",
    "1.5/s",
    "1e3/s",
    "0100/s",
    "100/sec",
    "100/m",
    "100/hour",
    "100/S",
    "\u0661\u0660\u0660/s",  # Arabic-Indic digits: int() reads them as 100
    "9" * 5000 + "/s",  # more digits than int() reads
    "",
    True,
    False,
    100,
]


@pytest.mark.parametrize("declare", ["handler", "shared"])
@pytest.mark.parametrize("rate", MALFORMED_RATES, ids=repr)
def test_a_rate_not_written_exactly_as_the_contract_lists_is_refused_and_nothing_is_written(
    sqlite_target: Target, declare: str, rate: Any
) -> None:
    """ "Accepted forms: "N/s", "N/min", "N/h", RateLimit(n, per=...); anything else is an
    InvalidOption at registration that names the option and shows a valid example" (issue 34):
    spaces around the number or the period were accepted, and so were digits of any script."""
    app = App(sqlite_target.url)
    app.migrate()
    try:
        with pytest.raises(InvalidOption) as raised:
            if declare == "shared":
                app.rate_limit("stripe", rate)
            else:

                @app.handler(rate_limit=rate)
                def charge(customer_id: str) -> None: ...

        message = str(raised.value)
        assert raised.value.option == "rate_limit" and message.startswith("rate_limit ")
        assert '"100/s"' in message and "\n" not in message
        if isinstance(rate, str) and len(rate) < 100:
            assert "no spaces" in message and repr(rate) in message, "it says what the text form is"
        assert not app.handlers and not app.rate_limits
        assert app.store.registry.handlers() == {} and app.store.registry.rate_limits() == {}
    finally:
        app.close()


@pytest.mark.parametrize(
    ("limit", "per", "words"),
    [
        (0, 1, "positive whole number"),
        (-1, 1, "positive whole number"),
        (1.0, 1, "positive whole number"),
        (True, 1, "positive whole number"),
        (10, 0, "positive period"),
        (10, -1, "positive period"),
        (10, timedelta(0), "positive period"),
        (10, timedelta(seconds=-1), "positive period"),
        (10, float("nan"), "positive period"),
        (10, float("inf"), "positive period"),
        (10, True, "positive period"),
        (10, "1", "positive period"),
        (10, 1e300, "at most 31536000 s"),
        (10, timedelta(days=366), "at most 31536000 s"),
        (2_000_000, 3600, 'e.g. "556/s"'),
        (10**12, 1, "at most 1000000 starts"),
    ],
)
def test_a_rate_value_out_of_range_is_refused_with_a_form_that_works(limit: Any, per: Any, words: str) -> None:
    """A ``RateLimit`` is a ring of ``limit`` rows over a window of ``per`` seconds: a period
    past a year (the JobHandler's own maximum) or a ring of billions of rows (an INTEGER
    overflow, or minutes of inserts at start) was accepted."""
    with pytest.raises(InvalidOption) as raised:
        RateLimit(limit, per=per)
    assert raised.value.option == "rate_limit" and words in raised.value.detail, str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("written", "expected"),
    [("1/s", RateLimit(1, per=1)), ("1000000/h", RateLimit(1_000_000, per=3600)), ("60/min", RateLimit(60, per=60))],
)
def test_the_text_forms_the_contract_lists_still_parse(written: str, expected: RateLimit) -> None:
    assert RateLimit.parse(written) == expected
    assert RateLimit(1, per=timedelta(days=365)).per == 31_536_000


@pytest.mark.parametrize(
    ("rate", "words"),
    [
        ({"limit": 2_000_000, "periodSeconds": 3600}, "spec.rateLimit allows at most 1000000 starts"),
        ({"limit": 10, "periodSeconds": 31_536_001}, "spec.rateLimit needs a period of at most 31536000 s"),
    ],
)
def test_a_jobhandler_rate_out_of_range_is_refused_as_the_runtime_refuses_it(rate: dict[str, Any], words: str) -> None:
    """The JobHandler's ``rateLimit`` becomes the runtime's ``RateLimit``: the CRD's schema, the
    admission webhook and the reconciler refuse what the runtime refuses, with the same bounds."""
    crd = yaml.safe_load((Path(__file__).parents[2] / "crds" / "jobstead.io_jobhandlers.yaml").read_text())
    fields = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    bounds = fields["rateLimit"]["properties"]
    assert (bounds["limit"]["maximum"], bounds["periodSeconds"]["maximum"]) == (MAX_RATE_LIMIT, MAX_RATE_PERIOD)
    spec = {
        "handler": "charge",
        "app": "shop.jobs:app",
        "image": "shop:1",
        "database": {"secretRef": {"name": "shop-db"}},
        "concurrency": 50,
        "rateLimit": rate,
    }
    with pytest.raises(SpecError) as parsed:
        JobHandlerSpec.parse(spec)
    assert parsed.value.message.startswith(words) and "\n" not in parsed.value.message, parsed.value.message
    with pytest.raises(kopf.AdmissionError) as refused:
        asyncio.run(validate_jobhandler(spec=spec, namespace="shop", memo=None, operation="CREATE"))
    assert str(refused.value) == parsed.value.message


def test_a_limit_per_key_past_what_its_column_holds_is_refused_at_registration(make_app: Callable[..., App]) -> None:
    """``concurrency_per_key=2**31`` registered, then failed the app's start on PostgreSQL and
    MariaDB ("integer out of range", naming SQL): refused by name now; the largest one is stored."""
    app = make_app()
    with pytest.raises(InvalidOption) as raised:

        @app.handler(concurrency_by="customer_id", concurrency_per_key=2**31)
        def sync_customer(customer_id: str) -> None: ...

    assert raised.value.option == "concurrency_per_key" and "at most 2147483647" in str(raised.value)

    @app.handler(concurrency_by="customer_id", concurrency_per_key=2**31 - 1)
    def sync_account(customer_id: str) -> None: ...

    app.open()
    (row,) = [h for name, h in app.store.registry.handlers().items() if name.endswith("sync_account")]
    assert row.flow.concurrency_per_key == 2**31 - 1


def test_sequence_on_failure_without_a_sequence_is_refused_as_the_jobhandler_refuses_it(sqlite_target: Target) -> None:
    """``sequence_on_failure="continue"`` with no ``sequence_by`` was accepted and meant nothing,
    while a JobHandler's ``sequenceOnFailure`` without ``sequenceBy`` is refused."""
    app = App(sqlite_target.url)
    with pytest.raises(InvalidOption) as raised:

        @app.handler(sequence_on_failure="continue")
        def apply_webhook(account_id: str) -> None: ...

    assert raised.value.option == "sequence_on_failure"
    assert 'sequence_by="account_id", sequence_on_failure="continue"' in str(raised.value)
    assert not app.handlers


@pytest.mark.parametrize("names", [None, 5, "stripe"], ids=repr)
def test_shared_limits_that_are_not_a_list_of_names_are_refused_by_name(names: Any) -> None:
    """``FlowControl(rate_limits=None)`` (as the operator and the handler build it) was a TypeError."""
    with pytest.raises(InvalidOption) as raised:
        FlowControl(rate_limits=names)
    assert raised.value.option == "rate_limits" and '["stripe"]' in str(raised.value)
