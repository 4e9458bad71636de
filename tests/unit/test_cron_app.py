"""``@app.cron`` and ``app.cron(handler=...)``: what they register, and what they refuse at import time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobstead import App, ConfigurationError, Context, Handler
from jobstead.store import CronDefinition


@pytest.fixture
def app() -> App:
    return App("sqlite://", auto_migrate=False)  # never touched: nothing here uses the database


def test_decorating_a_function_registers_the_handler_and_the_cron(app: App) -> None:
    @app.cron("*/15 * * * *", timezone="Europe/Tallinn", args={"region": "eu"}, overlap="skip")
    def sync(region: str, ctx: Context) -> None: ...

    assert isinstance(sync, Handler) and app.get_handler("sync") is sync
    assert app.crons == {
        "sync": CronDefinition(
            name="sync",
            schedule="*/15 * * * *",
            handler="sync",
            timezone="Europe/Tallinn",
            args={"region": "eu"},
            overlap="skip",
            source="code",
        )
    }


def test_stacked_on_handler_and_on_itself(app: App) -> None:
    @app.cron("0 * * * *", name="hourly")
    @app.cron("0 3 * * *", name="nightly", starting_deadline=timedelta(minutes=10))
    @app.handler(queue="reports")
    def report() -> None: ...

    assert report.queue == "reports"
    assert sorted(app.crons) == ["hourly", "nightly"]
    assert app.crons["nightly"].starting_deadline == 600
    assert {c.handler for c in app.crons.values()} == {"report"}


def test_the_handler_form_for_an_existing_handler(app: App) -> None:
    @app.handler
    def cleanup(days: int = 30) -> None: ...

    by_object = app.cron("@daily", handler=cleanup, name="cleanup_daily", args={"days": 7})
    by_name = app.cron("@weekly", handler="cleanup", name="cleanup_weekly")
    assert by_object.args == {"days": 7} and by_name.args == {}
    assert sorted(app.crons) == ["cleanup_daily", "cleanup_weekly"]


@pytest.mark.parametrize(
    ("schedule", "options", "message"),
    [
        ("*/15 * * *", {}, "expected 5 fields"),
        ("99 * * * *", {}, "out of range"),
        ("@sometimes", {}, "unknown cron preset"),
        ("* * * * *", {"timezone": "Europe/Atlantis"}, "unknown time zone 'Europe/Atlantis'"),
        ("* * * * *", {"overlap": "queue"}, "overlap must be one of allow, skip, replace"),
        ("* * * * *", {"starting_deadline": 0}, "starting_deadline must be a positive"),
        ("* * * * *", {"args": {"colour": "red"}}, "unexpected keyword argument .colour."),
        ("* * * * *", {"args": {"size": object()}}, "not JSON-serialisable"),
    ],
)
def test_mistakes_fail_at_decoration_and_leave_nothing_registered(
    app: App, schedule: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):

        @app.cron(schedule, **options)  # type: ignore[arg-type]
        def paint(size: int = 1) -> None: ...

    assert app.handlers == {} and app.crons == {}


def test_missing_required_arguments_are_refused(app: App) -> None:
    @app.handler
    def greet(name: str) -> None: ...

    with pytest.raises(ConfigurationError, match=r"missing a required argument: .name."):
        app.cron("* * * * *", handler=greet)


def test_a_second_cron_of_a_handler_needs_its_own_name(app: App) -> None:
    @app.cron("@hourly")
    def beat() -> None: ...

    with pytest.raises(ConfigurationError, match="already registered: give this one a name="):
        app.cron("@daily", handler=beat)


def test_handlers_of_other_apps_and_unknown_names_are_refused(app: App) -> None:
    other = App("sqlite://", auto_migrate=False)

    @other.handler
    def elsewhere() -> None: ...

    with pytest.raises(ConfigurationError, match="not a handler of this app"):
        app.cron("@hourly", handler=elsewhere)
    with pytest.raises(LookupError, match="no handler named 'nope'"):
        app.cron("@hourly", handler="nope")


def test_forgetting_the_schedule_says_so(app: App) -> None:
    with pytest.raises(ConfigurationError, match="needs a schedule first"):

        @app.cron  # type: ignore[arg-type]
        def oops() -> None: ...

    with pytest.raises(ConfigurationError, match="a cron schedule is a string"):
        app.cron(15, handler=app.handler(lambda: None, name="h"))  # type: ignore[arg-type]
