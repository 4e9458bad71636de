"""Bad input a demanding new user gives the job API: one clear line each, nothing written.

Each test here failed before its fix (a traceback naming SQL on PostgreSQL, a
TypeError, or a wait that never ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from jobstead import App, Context, InvalidArguments, InvalidOption, JobNotFound
from tests.conftest import Target
from tests.support.processes import run_cli

CONTROL_CHARACTERS = ["a\x00b", "a\nb", "tab\there", "\x7f"]


def _app(make_app: Callable[..., App]) -> App:
    app = make_app()

    @app.handler
    def notify(what: str) -> str:
        return what

    app.migrate()
    return app


@pytest.mark.parametrize("bad", ["abc", "1", True, 1.5, None, b"1"], ids=repr)
def test_a_job_id_that_is_no_whole_number_is_one_clear_error(make_app: Callable[..., App], bad: object) -> None:
    """``app.get_job("abc")`` was a ProgrammingError quoting SQL on PostgreSQL, and ``True``
    found job 1 on SQLite and MariaDB; the workflow and batch lookups refuse it already."""
    app = _app(make_app)
    app.get_handler("notify").defer(what="one")
    with pytest.raises(InvalidArguments) as raised:
        app.get_job(bad)  # type: ignore[arg-type]
    assert str(raised.value) == f"job id must be a whole number, not {bad!r}"


@pytest.mark.parametrize("missing", [0, -1, 2**63, 2**70], ids=repr)
def test_a_job_id_no_row_can_have_is_not_found(make_app: Callable[..., App], target: Target, missing: int) -> None:
    """``app.get_job(2**63)`` was a DataError ("bigint out of range") on PostgreSQL and an
    OverflowError on SQLite: it is ``JobNotFound``, like any id that names nothing."""
    app = _app(make_app)
    with pytest.raises(JobNotFound, match=f"^no job with id {missing}$"):
        app.get_job(missing)
    if missing == 2**63:
        shown = run_cli(["jobs", "show", str(missing)], target.env())
        assert shown.returncode != 0 and "Traceback" not in shown.stderr
        assert shown.stderr.strip().splitlines()[-1].endswith(f"job ids are between 1 and {2**63 - 1}, got '{missing}'")
        shown = run_cli(["jobs", "show", "abc"], target.env())
        assert shown.returncode != 0 and "Traceback" not in shown.stderr
        assert shown.stderr.strip().splitlines()[-1].endswith("job ids are whole numbers, got 'abc'")


@pytest.mark.parametrize("timeout", [float("nan"), "1", True, -1], ids=repr)
def test_a_job_wait_with_a_timeout_that_is_no_number_of_seconds_is_refused(
    make_app: Callable[..., App], timeout: Any
) -> None:
    """``Deferred.wait(timeout=nan)`` never ended (no deadline is ever passed) and
    ``timeout="1"`` was a TypeError; the workflow and batch waits refuse both already."""
    app = _app(make_app)
    job = app.get_handler("notify").defer(what="never run")
    with pytest.raises(InvalidArguments, match=r"^timeout "):
        job.wait(timeout=timeout)
    with pytest.raises(InvalidArguments, match=r"^timeout "):
        asyncio.run(job.wait_async(timeout=timeout))
    with pytest.raises(TimeoutError):
        job.wait(timeout=0)


def test_handler_rate_limits_none_is_refused_by_name(make_app: Callable[..., App]) -> None:
    """``app.handler(rate_limits=None)`` was a TypeError from ``tuple(None)``."""
    app = make_app()
    with pytest.raises(InvalidOption) as raised:
        app.handler(rate_limits=None)  # type: ignore[arg-type]
    assert raised.value.option == "rate_limits" and '["stripe"]' in str(raised.value)
    assert not app.handlers


@pytest.mark.parametrize("name", [" ", "\t", *CONTROL_CHARACTERS], ids=repr)
def test_a_shared_rate_limit_name_that_is_blank_or_holds_a_control_character_is_refused(
    make_app: Callable[..., App], name: str
) -> None:
    """``app.rate_limit(" ", ...)`` was declared, and a NUL in its name crashed publishing
    the limits on PostgreSQL."""
    app = _app(make_app)
    with pytest.raises(InvalidOption) as raised:
        app.rate_limit(name, "1/s")
    assert raised.value.option == "rate_limit" and "printable characters" in str(raised.value)
    assert app.rate_limits == {}


@pytest.mark.parametrize("name", CONTROL_CHARACTERS, ids=repr)
@pytest.mark.parametrize("option", ["queue", "tenant"])
def test_a_queue_or_tenant_with_a_control_character_is_refused(
    make_app: Callable[..., App], option: str, name: str
) -> None:
    """A NUL in a queue or tenant was a DataError at defer on PostgreSQL (and stored elsewhere)."""
    app = _app(make_app)
    notify = app.get_handler("notify")
    with pytest.raises(InvalidOption, match=f"^{option} .*control characters"):
        notify.configure(**{option: name}).defer(what="x")
    if option == "tenant":
        with pytest.raises(InvalidOption, match=r"^tenant .*control characters"):
            app.defer_batch([notify.job(what="y")], tenant=name)
    assert app.jobs() == [] and app.batches() == []


@pytest.mark.parametrize("queue", ["", *CONTROL_CHARACTERS], ids=repr)
def test_a_handlers_queue_that_is_empty_or_holds_a_control_character_is_refused(
    make_app: Callable[..., App], queue: str
) -> None:
    """``@app.handler(queue="a\\x00b")`` was registered, and its jobs crashed defer on PostgreSQL."""
    app = make_app()
    with pytest.raises(InvalidOption) as raised:

        @app.handler(queue=queue)
        def work() -> None: ...

    assert raised.value.option == "queue"
    assert not app.handlers


@pytest.mark.parametrize("where", ["after", "before"])
def test_growing_a_workflow_with_none_for_after_or_before_fails_with_one_clear_line(
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[object]],
    where: str,
) -> None:
    """``ctx.add_steps([(name, spec, None)])`` and ``before=None`` failed the step with a TypeError
    ("'NoneType' object is not iterable") instead of ``InvalidArguments``."""
    app = make_app()

    @app.handler
    def notify(what: str) -> str:
        return what

    @app.handler(max_attempts=1)
    def grow(ctx: Context) -> str:
        if where == "after":
            ctx.add_steps([("more", notify.job(what="x"), None)])  # type: ignore[list-item]
        else:
            ctx.add_steps([("more", notify.job(what="x"), [])], before=None)  # type: ignore[arg-type]
        return "grown"

    app.migrate()
    wf = app.workflow("grows")
    wf.add("grow", grow.job())
    run = wf.defer()
    with running_worker(app):
        run.wait(timeout=15)
    error = app.get_job(run.steps["grow"].job_id).error
    assert run.status == "failed" and list(run.steps) == ["grow"]
    assert error is not None and error.type == "jobstead.InvalidArguments"
    assert re.search(f"{where}=? takes a list of step names, not None$", error.message)
