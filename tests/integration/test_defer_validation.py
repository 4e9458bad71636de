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


def test_bulk_defer_keeps_the_order_and_returns_what_a_read_returns(handler_app: App) -> None:
    h = handler_app.get_handler("send_email").configure(priority=3, tenant="acme", metadata={"source": "import"})
    calls = [{"to": f"user{i}@example.com", "subject": str(i), "cc": [str(i)] if i % 2 else None} for i in range(50)]
    jobs = h.defer_many(calls)
    assert [j.record.args["to"] for j in jobs] == [c["to"] for c in calls]
    assert len({j.id for j in jobs}) == 50
    for job in jobs:
        returned = job.record
        job.refresh()
        assert job.record == returned


def test_bulk_defer_mixing_options_and_keys_keeps_every_position(handler_app: App) -> None:
    """Jobs with different settings go in as separate groups; each caller position gets its own job."""
    from jobstead.store import NewJob

    store = handler_app.store
    jobs = [
        NewJob(handler="send_email", args={"to": "a", "subject": "1"}, queue="q1"),
        NewJob(handler="send_email", args={"to": "b", "subject": "2"}, queue="q2", priority=5),
        NewJob(handler="send_email", args={"to": "c", "subject": "3"}, queue="q1", key="k"),
        NewJob(handler="send_email", args={"to": "d", "subject": "4"}, queue="q1"),
    ]
    records = store.enqueue.insert(jobs)
    assert [(r.args["to"], r.queue, r.priority) for r in records] == [
        ("a", "q1", 0),
        ("b", "q2", 5),
        ("c", "q1", 0),
        ("d", "q1", 0),
    ]
    assert records[0].id < records[3].id
    assert [store.queries.get_job(r.id) for r in records] == records


def test_defer_many_refuses_a_call_that_is_not_a_mapping(handler_app: App) -> None:
    with pytest.raises(InvalidArguments, match="mapping of keyword arguments"):
        handler_app.get_handler("send_email").defer_many([("a", "b")])  # type: ignore[list-item]
    assert handler_app.store.queries.list_jobs() == []
