"""Bad input to defer is refused with a clear error, and nothing is written."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from jobstead import App, ConfigurationError, Context, InvalidArguments


@pytest.fixture
def handler_app(app: App) -> App:
    @app.handler
    def send_email(to: str, subject: str, ctx: Context, cc: list[str] | None = None) -> None: ...

    return app


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"to": "a", "subject": "s", "body": "x"}, "unexpected keyword argument 'body'"),
        ({"to": "a"}, "missing a required argument: 'subject'"),
        (
            {"to": "a", "subject": dt.datetime(2026, 1, 1)},
            "argument 'subject' is not JSON-serialisable",
        ),
        ({"to": "a", "subject": Decimal("1.5")}, "argument 'subject' is not JSON-serialisable"),
        ({"to": "a", "subject": float("nan")}, "argument 'subject' is not JSON-serialisable"),
        ({"to": "a", "subject": "s", "cc": [object()]}, "argument 'cc' is not JSON-serialisable"),
        ({"to": "a", "subject": "s", "ctx": None}, "supplied by the worker"),
    ],
)
def test_bad_arguments(handler_app: App, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        handler_app.get_handler("send_email").defer(**kwargs)
    assert handler_app.store.queries.list_jobs() == []


def test_positional_arguments_are_stored_by_name(handler_app: App) -> None:
    job = handler_app.get_handler("send_email").defer("a@example.com", "hi")
    assert job.record.args == {"to": "a@example.com", "subject": "hi"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"run_at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC), "delay": 5}, "run_at or delay"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": -1}, "timeout"),
        ({"queue": ""}, "queue"),
        ({"metadata": {"x": object()}}, "metadata"),
    ],
)
def test_bad_options(handler_app: App, options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        handler_app.get_handler("send_email").configure(**options).defer(to="a", subject="b")
    assert handler_app.store.queries.list_jobs() == []


def test_registering_a_name_twice_is_an_error(app: App) -> None:
    @app.handler
    def one() -> None: ...

    with pytest.raises(ConfigurationError, match="already registered"):

        @app.handler(name="one")
        def other() -> None: ...


def test_positional_only_parameters_are_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="positional-only"):

        @app.handler
        def f(a: int, /) -> None: ...


def test_deduplication_key_returns_the_live_job(handler_app: App) -> None:
    h = handler_app.get_handler("send_email")
    first = h.configure(key="order-42").defer(to="a", subject="1")
    second = h.configure(key="order-42").defer(to="b", subject="2")
    other_key = h.configure(key="order-43").defer(to="c", subject="3")
    assert second.id == first.id
    assert second.record.args == {"to": "a", "subject": "1"}
    assert other_key.id != first.id
    assert len(handler_app.store.queries.list_jobs()) == 2
    first.cancel()  # a finished job frees its key
    third = h.configure(key="order-42").defer(to="d", subject="4")
    assert third.id not in (first.id, other_key.id)


def test_deduplication_in_one_bulk_defer(handler_app: App) -> None:
    h = handler_app.get_handler("send_email").configure(key="same")
    jobs = h.defer_many([{"to": "a", "subject": "1"}, {"to": "b", "subject": "2"}])
    assert jobs[0].id == jobs[1].id
