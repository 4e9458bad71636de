"""Issue 34's contract as a new user reads it: the README's "Flow control" followed literally.

Each test here failed before its fix; the wider behaviour is covered by
``tests/unit/test_flow_options.py`` and ``tests/multiprocess/test_flow_*``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from jobstead import App, Context, InvalidOption
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
