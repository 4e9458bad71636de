"""Issue 33's contract as a new user reads it: the README's "Workflows" followed literally.

Each test here failed before its fix; the wider behaviour is
covered by ``tests/integration/test_workflows.py``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from html import unescape

import pytest

import jobstead
from jobstead import App, Context, InvalidOption
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
