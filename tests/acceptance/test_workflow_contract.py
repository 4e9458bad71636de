"""Issue 33's contract as a new user reads it: the README's "Workflows" followed literally.

Each test here failed before its fix; the wider behaviour is
covered by ``tests/integration/test_workflows.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from html import unescape

import pytest

import jobstead
from jobstead import App, BatchNotFound, Context, InvalidArguments, InvalidOption, WorkflowNotFound
from jobstead.dashboard import create_dashboard
from tests.conftest import Target
from tests.dashboard.conftest import TestClient
from tests.support.processes import run_cli


def _app(make_app: Callable[..., App]) -> App:
    app = make_app()

    @app.handler
    def notify(what: str) -> str:
        return what

    app.migrate()
    return app


@pytest.mark.parametrize(
    ("given", "option"), [({"limit": -1}, "limit"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset")]
)
def test_listing_workflows_or_batches_refuses_a_negative_limit_or_offset_in_one_line(
    make_app: Callable[..., App], given: dict[str, int], option: str
) -> None:
    """``app.workflows(limit=-1)`` gave every workflow on SQLite and a DataError with the SQL on
    PostgreSQL; ``app.jobs`` (and the CLI's ``--limit``) refuse it by name: so do these now."""
    app = _app(make_app)
    wf = app.workflow("one")
    wf.add("a", app.get_handler("notify").job(what="a"))
    wf.defer()
    for listing in (app.workflows, app.batches):
        with pytest.raises(InvalidOption) as raised:
            listing(**given)
        assert raised.value.option == option and "\n" not in str(raised.value)
    assert [run.name for run in app.workflows(limit=1, offset=0)] == ["one"]


def test_a_steps_after_is_the_list_the_issue_shows(make_app: Callable[..., App]) -> None:
    app = _app(make_app)
    notify = app.get_handler("notify")
    wf = app.workflow("onboard")
    wf.add("ship", notify.job(what="ship"), after=["charge", "reserve"])
    wf.add("charge", notify.job(what="charge"))
    wf.add("reserve", notify.job(what="reserve"))
    run = wf.defer()
    assert run.steps["ship"].after == ["charge", "reserve"]
    assert app.get_workflow(run.id).steps["ship"].after == ["charge", "reserve"]
    assert run.steps["charge"].after == []


def test_a_step_is_the_step_the_issue_names(make_app: Callable[..., App]) -> None:
    """Issue 33 writes ``run.steps`` as ``{"fetch": Step(name, job_id, status, after=[...], reason)}``;
    ``jobstead.Step`` did not exist (the class was exported as ``StepRecord`` only)."""
    app = _app(make_app)
    wf = app.workflow("onboard")
    wf.add("fetch", app.get_handler("notify").job(what="fetch"))
    step = wf.defer().steps["fetch"]
    assert isinstance(step, jobstead.Step) and "Step" in jobstead.__all__
    assert (step.name, step.status, step.reason) == ("fetch", "queued", None) and step.job_id > 0


def test_growing_with_a_job_of_another_apps_handler_fails_the_adding_step(
    make_app: Callable[..., App],
    sqlite_target: Target,
    running_worker: Callable[..., contextlib.AbstractContextManager[object]],
) -> None:
    """ "a spec of a handler not in this app" is refused at ``wf.add``; from ``ctx.add_steps`` it was
    written and the workflow stayed active for ever, the step never claimed by any worker."""
    app = make_app()
    other = App(sqlite_target.url)

    @other.handler
    def foreign(x: int) -> int:
        return x

    @app.handler(max_attempts=1)
    def grow(ctx: Context) -> str:
        ctx.add_steps([("f", foreign.job(x=1), [])])
        return "grown"

    app.migrate()
    wf = app.workflow("grows")
    wf.add("grow", grow.job())
    run = wf.defer()
    with running_worker(app):
        run.wait(timeout=15)
    error = app.get_job(run.steps["grow"].job_id).error
    assert run.status == "failed" and list(run.steps) == ["grow"]
    assert error is not None and error.type == "jobstead.InvalidArguments" and "'foreign'" in error.message


def test_a_workflows_cancel_is_the_reason_its_steps_show_everywhere(
    make_app: Callable[..., App], target: Target
) -> None:
    """``Step.reason``: "None, or why a step was cancelled" (issue 33). After ``run.cancel()`` every
    step it ended said None, in the API, ``jobstead workflows show`` (and ``--json``) and on the
    dashboard; a retry blocks them again without a reason."""
    app = _app(make_app)
    notify = app.get_handler("notify")
    wf = app.workflow("onboard")
    wf.add("fetch", notify.job(what="fetch"))
    wf.add("charge", notify.job(what="charge"), after=["fetch"])
    run = wf.defer()
    run.cancel()
    because = "the workflow was cancelled"
    assert {name: (s.status, s.reason) for name, s in run.refresh().steps.items()} == {
        "fetch": ("cancelled", because),
        "charge": ("cancelled", because),
    }
    shown = run_cli(["workflows", "show", str(run.id), "--json"], target.env())
    assert [(s["name"], s["reason"]) for s in json.loads(shown.stdout)["steps"]] == [
        ("fetch", because),
        ("charge", because),
    ]
    text = run_cli(["workflows", "show", str(run.id)], target.env()).stdout.splitlines()
    assert [line.endswith(because) for line in text if line.startswith(("fetch", "charge"))] == [True, True]
    with TestClient(create_dashboard(app, auth=None)) as client:
        page = client.get(f"/workflows/{run.id}")
    assert page.status_code == 200 and unescape(page.text).count(because) >= 2
    run.retry()
    assert [(s.status, s.reason) for s in run.refresh().steps.values()] == [("queued", None), ("blocked", None)]


@pytest.mark.parametrize("bad", ["abc", "1", True, 1.5, None, b"1"], ids=repr)
def test_a_workflow_or_batch_id_that_is_no_whole_number_is_one_clear_error(
    make_app: Callable[..., App], bad: object
) -> None:
    """``app.get_workflow("abc")`` was a ProgrammingError naming SQL on PostgreSQL, and found
    workflow 1 for ``True`` (or ``"1"``) on SQLite and MariaDB."""
    app = _app(make_app)
    wf = app.workflow("one")
    wf.add("a", app.get_handler("notify").job(what="a"))
    wf.defer()
    app.defer_batch([app.get_handler("notify").job(what="b")])
    for get, noun in ((app.get_workflow, "workflow"), (app.get_batch, "batch")):
        with pytest.raises(InvalidArguments) as raised:
            get(bad)  # type: ignore[operator]
        assert str(raised.value) == f"{noun} id must be a whole number, not {bad!r}"


@pytest.mark.parametrize("missing", [0, -1, 2**63, 2**70], ids=repr)
def test_a_workflow_or_batch_id_no_row_can_have_is_not_found(make_app: Callable[..., App], missing: int) -> None:
    """An id past BIGINT was a DataError ("bigint out of range") on PostgreSQL and an
    OverflowError on SQLite: it is not found, like any id that names nothing; so is the CLI's."""
    app = _app(make_app)
    with pytest.raises(WorkflowNotFound, match=f"^no workflow {missing}$"):
        app.get_workflow(missing)
    with pytest.raises(BatchNotFound, match=f"^no batch {missing}$"):
        app.get_batch(missing)
    with pytest.raises(WorkflowNotFound):
        app.store.workflows.cancel(missing)
    with pytest.raises(BatchNotFound):
        app.store.batches.cancel(missing)


@pytest.mark.parametrize("option", ["name", "tenant"])
def test_a_list_filter_that_is_not_a_string_is_one_clear_error(make_app: Callable[..., App], option: str) -> None:
    """``app.workflows(name=5)`` was a ProgrammingError ("character varying = integer") on PostgreSQL
    and an empty list elsewhere."""
    app = _app(make_app)
    with pytest.raises(InvalidArguments, match=f"^{option} must be a string, not 5$"):
        app.workflows(**{option: 5})
    if option == "tenant":
        with pytest.raises(InvalidArguments, match=r"^tenant must be a string, not 5$"):
            app.batches(tenant=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a\x00b", "a\nb", "tab\there", "\x7f"], ids=repr)
def test_a_step_or_workflow_name_with_a_control_character_is_refused_at_add(
    make_app: Callable[..., App], name: str
) -> None:
    """A NUL in a step's or workflow's name was a DataError at defer on PostgreSQL (and stored
    elsewhere); a newline broke ``jobstead workflows show``'s table."""
    app = _app(make_app)
    notify = app.get_handler("notify")
    with pytest.raises(InvalidArguments, match=r"^step name .* control character"):
        app.workflow("ok").add(name, notify.job(what="x"))
    with pytest.raises(InvalidArguments, match=r"^workflow name .* control character"):
        app.workflow(name)
    assert app.workflows() == []


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"timeout": float("nan")}, "timeout must be a number of seconds"),
        ({"timeout": "1"}, "timeout must be a number of seconds"),
        ({"timeout": -1}, "timeout cannot be negative"),
        ({"timeout": 1, "poll": 0}, "poll must be a positive number of seconds"),
        ({"timeout": 1, "poll": -1}, "poll must be a positive number of seconds"),
        ({"timeout": 1, "max_poll": float("inf")}, "max_poll must be a positive number of seconds"),
    ],
)
def test_waiting_with_a_timeout_or_poll_that_is_no_duration_is_one_clear_error(
    make_app: Callable[..., App], given: dict[str, object], words: str
) -> None:
    """``run.wait(timeout=float("nan"))`` never returned, ``poll=0`` read the workflow in a busy loop,
    ``timeout="1"`` was a TypeError from inside the loop; batches' ``wait`` the same."""
    app = _app(make_app)
    notify = app.get_handler("notify")
    run = app.workflow("w").add("a", notify.job(what="a")).defer()
    batch = app.defer_batch([notify.job(what="b")])
    for handle in (run, batch):
        with pytest.raises(InvalidArguments, match=f"^{words}"):
            handle.wait(**given)  # type: ignore[arg-type]
        with pytest.raises(InvalidArguments, match=f"^{words}"):
            asyncio.run(handle.wait_async(**given))  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        run.wait(timeout=0)  # zero is a look without waiting: the workflow is still active


def test_after_given_as_bytes_is_refused_like_a_string(make_app: Callable[..., App]) -> None:
    app = _app(make_app)
    with pytest.raises(InvalidArguments, match=r"after= takes a list of step names, not b'fetch'"):
        app.workflow("w").add("ship", app.get_handler("notify").job(what="x"), after=b"fetch")  # type: ignore[arg-type]


def test_the_cli_and_the_dashboard_say_not_found_for_an_id_past_bigint(
    make_app: Callable[..., App], target: Target
) -> None:
    app = _app(make_app)
    huge = str(2**70)
    for group, code in (("workflows", 1), ("batches", 2)):
        shown = run_cli([group, "show", huge], target.env())
        noun = group[:-1] if group == "workflows" else "batch"
        assert (shown.returncode, shown.stderr.strip()) == (code, f"jobstead: error: no {noun} {huge}")
    with TestClient(create_dashboard(app, auth=None)) as client:
        for page in (f"/workflows/{huge}", f"/batches/{huge}"):
            response = client.get(page)
            assert response.status_code == 404, (page, response.status_code)
