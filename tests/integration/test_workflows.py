"""Workflows through the public API, with real workers: the names issue 33 gives are the contract."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from jobstead import (
    App,
    Context,
    InvalidArguments,
    JobStatus,
    PermanentError,
    WorkflowNotFound,
    WorkflowStats,
)
from tests.conftest import Target
from tests.support.processes import run_cli

Worker = Callable[..., contextlib.AbstractContextManager[object]]


def _app(make_app: Callable[..., App]) -> tuple[App, dict[str, Any]]:
    app = make_app()
    seen: dict[str, Any] = {"ran": [], "upstream": {}, "failures": {}, "events": [], "ctx": {}}

    @app.handler(max_attempts=1, retry=0)
    def fetch_order(order_id: int, ctx: Context) -> dict[str, int]:
        seen["ran"].append(ctx.step)
        seen["ctx"][ctx.step] = (ctx.workflow_id, ctx.tenant)
        return {"order": order_id, "total": 10}

    @app.handler(max_attempts=1, retry=0)
    def charge(amount: int, ctx: Context) -> str:
        seen["ran"].append(ctx.step)
        seen["upstream"][ctx.step] = ctx.upstream
        if amount < 0:
            raise PermanentError("card declined")
        return f"charged {amount}"

    @app.handler(max_attempts=1, retry=0)
    def reserve(sku: str, ctx: Context) -> str:
        seen["ran"].append(ctx.step)
        seen["upstream"][ctx.step] = ctx.upstream
        return f"reserved {sku}"

    @app.handler(max_attempts=1, retry=0)
    def ship(ctx: Context) -> str:
        seen["ran"].append(ctx.step)
        seen["upstream"][ctx.step] = ctx.upstream
        return "shipped"

    @app.handler(max_attempts=1, retry=0)
    def apologise(ctx: Context) -> str:
        seen["ran"].append(ctx.step)
        seen["upstream"][ctx.step] = ctx.upstream
        seen["failures"][ctx.step] = {name: (e.type, e.message) for name, e in ctx.upstream_failures.items()}
        return "sorry"

    @app.handler
    def notify(event: str, ctx: Context) -> None:
        seen["events"].append((event, ctx.workflow_id))

    return app, seen


def _onboard(app: App, *, amount: int = 10, **options: Any) -> Any:
    h = app.get_handler
    wf = app.workflow("onboard", tenant="acme", metadata={"order": 42}, **options)
    wf.add("fetch", h("fetch_order").job(order_id=42))
    wf.add("charge", h("charge").job(amount=amount), after=["fetch"])
    wf.add("reserve", h("reserve").configure(queue="stock").job(sku="x"), after=["fetch"])
    wf.add("ship", h("ship").job(), after=["charge", "reserve"])
    wf.add("apologise", h("apologise").job(), after=["charge"], on_upstream_failure="run")
    return wf


def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def test_the_issue_example_runs_every_step_after_its_dependencies_with_their_results(
    make_app: Callable[..., App], running_worker: Worker
) -> None:
    app, seen = _app(make_app)
    notify = app.get_handler("notify")
    run = _onboard(app, on_success=notify.job(event="success"), on_finish=notify.job(event="finish")).defer()
    assert run.status == "active" and run.name == "onboard" and run.metadata == {"order": 42}
    assert run.steps["fetch"].status is JobStatus.QUEUED and run.steps["ship"].status is JobStatus.BLOCKED
    assert run.steps["ship"].after == ["charge", "reserve"] and run.steps["ship"].reason is None
    assert run.stats == WorkflowStats(total=5, blocked=4, queued=1)
    assert app.jobs(status="blocked")  # the jobs list knows the status
    with running_worker(app, queues=["default", "stock"]):
        stats = run.wait(timeout=30)
        _until(lambda: len(seen["events"]) == 2)
    assert run.status == "succeeded"
    assert stats == WorkflowStats(total=5, succeeded=5)
    ran = seen["ran"]
    # Each step after what it depends on, and nothing more: apologise (after charge alone) may
    # start before reserve does, when charge ends first (it did, 2 runs in 11, on a busy machine).
    assert ran[0] == "fetch" and set(ran) == set(run.steps) and len(ran) == len(run.steps)
    assert ran.index("ship") > max(ran.index("charge"), ran.index("reserve"))
    assert ran.index("apologise") > ran.index("charge")
    assert seen["upstream"]["charge"] == {"fetch": {"order": 42, "total": 10}}
    assert seen["upstream"]["ship"] == {"charge": "charged 10", "reserve": "reserved x"}
    assert seen["failures"]["apologise"] == {}
    assert seen["ctx"]["fetch"] == (run.id, "acme")  # steps carry the workflow's tenant
    assert sorted(seen["events"]) == [("finish", run.id), ("success", run.id)]
    assert sorted(e for e, _ in run.continuations) == ["finish", "success"]
    again = app.get_workflow(run.id)
    assert again.to_json()["steps"][0] == {
        "name": "fetch",
        "job_id": run.steps["fetch"].job_id,
        "status": "succeeded",
        "after": [],
        "reason": None,
    }
    assert [w.id for w in app.workflows(name="onboard", tenant="acme", status="succeeded")] == [run.id]
    assert app.workflows(name="other") == []


def test_a_failed_step_cancels_what_depends_on_it_and_a_run_anyway_step_sees_the_failure(
    make_app: Callable[..., App], running_worker: Worker
) -> None:
    app, seen = _app(make_app)
    notify = app.get_handler("notify")
    run = _onboard(
        app,
        amount=-1,
        on_success=notify.job(event="success"),
        on_failure=notify.job(event="failure"),
        on_finish=notify.job(event="finish"),
    ).defer()
    with running_worker(app, queues=["default", "stock"]):
        run.wait(timeout=30)
        _until(lambda: len(seen["events"]) == 2)
    assert run.status == "failed"
    steps = run.steps
    assert steps["charge"].status is JobStatus.FAILED
    assert steps["ship"].status is JobStatus.CANCELLED and "'charge'" in (steps["ship"].reason or "")
    assert steps["apologise"].status is JobStatus.SUCCEEDED
    assert seen["failures"]["apologise"] == {"charge": ("jobstead.PermanentError", "card declined")}
    assert seen["upstream"]["apologise"] == {}
    assert "ship" not in seen["ran"]
    assert sorted(e for e, _ in seen["events"]) == ["failure", "finish"]
    assert run.stats == WorkflowStats(total=5, succeeded=3, failed=1, cancelled=1)


def test_a_failure_cancels_transitively_with_the_failed_steps_name(
    make_app: Callable[..., App], running_worker: Worker
) -> None:
    app, _ = _app(make_app)
    h = app.get_handler
    wf = app.workflow("chain")
    wf.add("a", h("charge").job(amount=-1))
    wf.add("b", h("ship").job(), after=["a"])
    wf.add("c", h("ship").job(), after=["b"])
    wf.add("d", h("apologise").job(), after=["c"], on_upstream_failure="run")
    run = wf.defer()
    with running_worker(app):
        run.wait(timeout=30)
    assert run.status == "failed"
    assert [run.steps[n].status for n in "abcd"] == [
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
        JobStatus.SUCCEEDED,
    ]
    assert run.steps["c"].reason == "upstream step 'a' ended failed"


def test_cancel_then_retry_of_a_workflow(make_app: Callable[..., App], running_worker: Worker) -> None:
    app, seen = _app(make_app)
    notify = app.get_handler("notify")
    run = _onboard(app, on_finish=notify.job(event="finish"), on_success=notify.job(event="success")).defer()
    run.cancel()  # nothing runs yet: every step is cancelled at once
    assert run.status == "cancelled"
    assert {s.status for s in run.steps.values()} == {JobStatus.CANCELLED}
    assert run.continuations and run.continuations[0][0] == "finish"
    run.retry()
    assert run.status == "active"
    assert run.steps["fetch"].status is JobStatus.QUEUED and run.steps["ship"].status is JobStatus.BLOCKED
    with running_worker(app, queues=["default", "stock"]):
        run.wait(timeout=30)
        _until(lambda: len(seen["events"]) == 2)
    assert run.status == "succeeded"
    # on_finish fired at the cancel and stays fired; on_success fires now, once.
    assert sorted(e for e, _ in seen["events"]) == ["finish", "success"]


def test_retry_of_a_failed_workflow_blocks_the_cancelled_steps_again(
    make_app: Callable[..., App], running_worker: Worker
) -> None:
    app = make_app()
    attempts: list[str] = []

    @app.handler(max_attempts=1, retry=0)
    def flaky(name: str, ctx: Context) -> str:
        attempts.append(name)
        if name == "b" and attempts.count("b") == 1:
            raise PermanentError("first time")
        return name

    wf = app.workflow("retry-me")
    wf.add("a", flaky.job(name="a"))
    wf.add("b", flaky.job(name="b"), after=["a"])
    wf.add("c", flaky.job(name="c"), after=["b"])
    run = wf.defer()
    with running_worker(app):
        run.wait(timeout=30)
        assert run.status == "failed" and run.steps["c"].status is JobStatus.CANCELLED
        run.retry()
        assert run.steps["b"].status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED)
        run.wait(timeout=30)
    assert run.status == "succeeded"
    assert attempts == ["a", "b", "b", "c"]


def test_bad_inputs_are_refused_naming_the_problem_and_nothing_is_written(make_app: Callable[..., App]) -> None:
    app, _ = _app(make_app)
    h = app.get_handler
    other = make_app()

    @other.handler
    def stranger() -> None: ...

    with pytest.raises(InvalidArguments, match="workflow name"):
        app.workflow("")
    wf = app.workflow("bad")
    wf.add("a", h("ship").job())
    with pytest.raises(InvalidArguments, match=r"'a'.*already"):
        wf.add("a", h("ship").job())
    with pytest.raises(InvalidArguments, match="not registered in this app"):
        wf.add("s", stranger.job())
    with pytest.raises(InvalidArguments, match="no key"):
        wf.add("k", h("ship").configure(key="k1").job())
    with pytest.raises(InvalidArguments, match="step name"):
        wf.add("", h("ship").job())
    with pytest.raises(InvalidArguments, match="JSON"):
        wf.add("j", h("charge").job(amount=object()))
    unknown = app.workflow("unknown")
    unknown.add("a", h("ship").job(), after=["nowhere"])
    with pytest.raises(InvalidArguments, match="'nowhere'"):
        unknown.defer()
    cycle = app.workflow("cycle")
    cycle.add("a", h("ship").job(), after=["c"])
    cycle.add("b", h("ship").job(), after=["a"])
    cycle.add("c", h("ship").job(), after=["b"])
    with pytest.raises(InvalidArguments, match=r"cycle: a -> c -> b -> a"):
        cycle.defer()
    assert app.workflows() == []
    assert app.store.queries.list_jobs() == []
    with pytest.raises(WorkflowNotFound):
        app.get_workflow(12345)
    with pytest.raises(LookupError):
        app.get_workflow(12345)


def test_defer_in_a_session_is_rolled_back_with_it(make_app: Callable[..., App]) -> None:
    app, _ = _app(make_app)
    engine = app.store.db.engine
    with Session(engine) as session:
        run = _onboard(app).defer(session=session)
        assert run.stats.total == 5  # read in the session's own transaction
        session.rollback()
    assert app.workflows() == []
    t = app.store.tables
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.jobs)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(t.workflow_edges)).scalar_one() == 0
    with Session(engine) as session:
        run = _onboard(app).defer(session=session)
        session.commit()
    assert [w.id for w in app.workflows()] == [run.id]


def test_a_steps_delay_is_kept_to_count_from_its_release_and_a_run_at_stays_absolute(
    make_app: Callable[..., App],
) -> None:
    app, _ = _app(make_app)
    h = app.get_handler
    at = datetime.now(UTC) + timedelta(hours=1)
    wf = app.workflow("later")
    wf.add("fetch", h("fetch_order").job(order_id=1))
    wf.add("charge", h("charge").configure(delay=60).job(amount=1), after=["fetch"])
    wf.add("reserve", h("reserve").configure(run_at=at).job(sku="x"), after=["fetch"])
    run = wf.defer()
    jobs = app.store.tables.jobs
    with app.store.db.engine.connect() as conn:
        kept = dict(conn.execute(select(jobs.c.step, jobs.c.release_delay).where(jobs.c.workflow_id == run.id)).all())
    assert kept == {"fetch": None, "charge": 60.0, "reserve": None}


def test_an_empty_workflow_succeeds_at_once(make_app: Callable[..., App]) -> None:
    app, _ = _app(make_app)
    run = app.workflow("nothing").defer()
    assert run.status == "succeeded" and run.stats == WorkflowStats()


def test_the_cli_lists_shows_cancels_and_retries_workflows(make_app: Callable[..., App], target: Target) -> None:
    app, _ = _app(make_app)
    notify = app.get_handler("notify")
    run = _onboard(app, on_finish=notify.job(event="finish")).defer()

    def cli(*args: str) -> Any:
        return run_cli(["workflows", *args], target.env())

    listed = cli("list", "--name", "onboard", "--tenant", "acme", "--status", "active", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["id"], row["name"], row["stats"]["blocked"], row["stats"]["queued"]) == (run.id, "onboard", 4, 1)
    table = cli("list")
    assert table.returncode == 0 and "onboard" in table.stdout and "BLOCKED" in table.stdout
    shown = cli("show", str(run.id), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "id": run.id,
        "name": "onboard",
        "status": "active",
        "tenant": "acme",
        "metadata": {"order": 42},
        "stats": {
            "total": 5,
            "blocked": 4,
            "scheduled": 0,
            "queued": 1,
            "running": 0,
            "retrying": 0,
            "succeeded": 0,
            "failed": 0,
            "dead": 0,
            "cancelled": 0,
        },
        "steps": [
            {"name": s.name, "job_id": s.job_id, "status": s.status.value, "after": list(s.after), "reason": None}
            for s in run.steps.values()
        ],
        "continuations": [],
    }
    text = cli("show", str(run.id))
    assert text.returncode == 0 and "ship" in text.stdout and "charge,reserve" in text.stdout
    cancelled = cli("cancel", str(run.id))
    assert cancelled.returncode == 0 and "5 step(s) cancelled" in cancelled.stdout, cancelled.stdout
    again = cli("cancel", str(run.id))
    assert (again.returncode, again.stderr.strip()) == (1, f"jobstead: error: workflow {run.id} already cancelled")
    finished = json.loads(cli("show", str(run.id), "--json").stdout)
    assert finished["status"] == "cancelled" and [c["event"] for c in finished["continuations"]] == ["finish"]
    retried = cli("retry", str(run.id))
    assert retried.returncode == 0 and "5 step(s)" in retried.stdout, retried.stdout
    assert app.get_workflow(run.id).status == "active"
    for command in ("show", "cancel", "retry"):
        unknown = cli(command, "999999")
        assert (unknown.returncode, unknown.stderr.strip()) == (1, "jobstead: error: no workflow 999999")
        assert "Traceback" not in unknown.stderr


def test_the_cli_prints_workflows_for_people_line_by_line(make_app: Callable[..., App], target: Target) -> None:
    """The text the ``workflows`` commands print, every line of it: a refactoring changes none."""
    app, _ = _app(make_app)
    notify = app.get_handler("notify")
    run = _onboard(app, on_finish=notify.job(event="finish")).defer()

    def cli(*args: str) -> Any:
        return run_cli(["workflows", *args], target.env())

    ids = {name: s.job_id for name, s in run.steps.items()}
    width = max(3, *(len(str(i)) for i in ids.values()))
    created = app.store.workflows.get(run.id).created_at.isoformat()
    table = cli("list")
    assert (table.returncode, table.stdout.splitlines()) == (
        0,
        [
            "ID  NAME     STATUS  TENANT  TOTAL  BLOCKED  QUEUED  RUNNING  RETRYING  SUCCEEDED  FAILED  DEAD  "
            "CANCELLED  CREATED",
            f"{run.id:<2}  onboard  active  acme    5      4        1       0        0         0          0       "
            "0     0          " + created,
        ],
    )
    assert cli("list", "--status", "failed").stdout == "no workflows\n"
    job = "JOB".ljust(width)
    text = cli("show", str(run.id))
    assert (text.returncode, text.stdout.splitlines()) == (
        0,
        [
            f"workflow {run.id} onboard: active (tenant acme)",
            "stats: total 5, blocked 4, scheduled 0, queued 1, running 0, retrying 0, succeeded 0, failed 0, "
            "dead 0, cancelled 0",
            "metadata: {'order': 42}",
            f"STEP       {job}  STATUS   AFTER           REASON",
            f"fetch      {ids['fetch']:<{width}}  queued",
            f"charge     {ids['charge']:<{width}}  blocked  fetch",
            f"reserve    {ids['reserve']:<{width}}  blocked  fetch",
            f"ship       {ids['ship']:<{width}}  blocked  charge,reserve",
            f"apologise  {ids['apologise']:<{width}}  blocked  charge",
            "on_finish: not fired yet",
        ],
    )
    cancelled = cli("cancel", str(run.id))
    assert (cancelled.returncode, cancelled.stdout) == (0, f"workflow {run.id} cancelled: 5 step(s) cancelled\n")
    retried = cli("retry", str(run.id))
    assert (retried.returncode, retried.stdout) == (0, f"workflow {run.id} retried: 5 step(s)\n")
    nothing = cli("retry", str(run.id))
    assert (nothing.returncode, nothing.stderr.strip()) == (
        1,
        f"jobstead: error: workflow {run.id}: no failed, dead or cancelled step to retry",
    )
    bad = cli("show", "0")
    assert bad.returncode == 2 and "workflow id '0': ids start at 1" in bad.stderr


def test_a_step_grows_its_workflow_at_run_time_once_even_when_its_first_attempt_fails(
    make_app: Callable[..., App], running_worker: Worker
) -> None:
    app = make_app()
    ran: list[str] = []
    seen: dict[str, Any] = {}

    @app.handler
    def thumb(i: int, ctx: Context) -> int:
        ran.append(ctx.step or "")
        return i * 10

    @app.handler(max_attempts=3, retry=0)
    def fetch(width: int, ctx: Context) -> str:
        ran.append(f"fetch#{ctx.attempt}")
        ctx.add_steps([(f"thumb-{i}", thumb.job(i=i), ["fetch"]) for i in range(width)], before=["album"])
        if ctx.attempt == 1:
            raise RuntimeError("flaky: the steps it added go with this attempt")
        return "fetched"

    @app.handler
    def album(ctx: Context) -> None:
        ran.append("album")
        seen["upstream"] = ctx.upstream

    wf = app.workflow("album")
    wf.add("fetch", fetch.job(width=3))
    wf.add("album", album.job(), after=["fetch"])
    run = wf.defer()
    with running_worker(app):
        run.wait(timeout=30)
    assert run.status == "succeeded", run.steps
    assert run.stats == WorkflowStats(total=5, succeeded=5)
    assert sorted(run.steps) == ["album", "fetch", "thumb-0", "thumb-1", "thumb-2"]
    assert run.steps["album"].after == ["fetch", "thumb-0", "thumb-1", "thumb-2"]
    assert ran[:2] == ["fetch#1", "fetch#2"] and ran[-1] == "album"
    assert sorted(ran[2:5]) == ["thumb-0", "thumb-1", "thumb-2"], "each added step ran once"
    assert seen["upstream"] == {"fetch": "fetched", "thumb-0": 0, "thumb-1": 10, "thumb-2": 20}


def test_a_bad_addition_fails_the_adding_steps_attempt_naming_the_problem(
    make_app: Callable[..., App], running_worker: Worker
) -> None:
    app = make_app()

    @app.handler
    def noop() -> None: ...

    @app.handler(max_attempts=1)
    def grow(what: str, ctx: Context) -> None:
        if what == "duplicate":
            ctx.add_steps([("grow-dup", noop.job(), []), ("grow-dup", noop.job(), [])])
        elif what == "unknown":
            ctx.add_steps([("x", noop.job(), ["nowhere"])])
        elif what == "cycle":
            ctx.add_steps([("x", noop.job(), ["end"])], before=["end"])
        elif what == "not-blocked":
            ctx.add_steps([("x", noop.job(), [])], before=["other"])

    runs = {}
    for what in ("duplicate", "unknown", "cycle", "not-blocked"):
        wf = app.workflow(what)
        wf.add("other", noop.job())
        wf.add("grow", grow.job(what=what))
        wf.add("end", noop.job(), after=["grow"])
        runs[what] = wf.defer()
    with pytest.raises(InvalidArguments, match="only a step of a workflow"):
        Context(
            job_id=1,
            handler="h",
            attempt=1,
            max_attempts=1,
            queue="q",
            args={},
            tenant=None,
            metadata=None,
            checkpoint_data=None,
            worker_id="w",
            created_at=None,  # type: ignore[arg-type]
            save_checkpoint=lambda _: True,
        ).add_steps([])
    with running_worker(app):
        for run in runs.values():
            run.wait(timeout=30)
    messages = {}
    for what, run in runs.items():
        assert run.status == "failed" and run.stats.total == 3, (what, run.steps)
        error = app.get_job(run.steps["grow"].job_id).error
        assert error is not None and error.type == "jobstead.InvalidArguments"
        messages[what] = error.message
    assert "already" in messages["duplicate"]
    assert "'nowhere'" in messages["unknown"]
    assert "cycle" in messages["cycle"]
    assert "'other'" in messages["not-blocked"]


def test_an_async_steps_upstream_is_read_before_it_runs_off_the_event_loop_in_one_read(
    make_app: Callable[..., App], running_worker: Worker
) -> None:
    app = make_app()
    seen: dict[str, Any] = {}
    reads: list[int] = []  # the thread of each read of a step's upstream

    @app.handler
    def source(n: int) -> int:
        return n

    @app.handler
    async def sink(ctx: Context) -> None:
        seen["loop"] = threading.get_ident()
        seen["upstream"] = ctx.upstream
        seen["failures"] = ctx.upstream_failures

    @app.handler
    async def alone(ctx: Context) -> None:
        seen["alone"] = ctx.upstream

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "workflow_edges" in statement and "JOIN" in statement:
            reads.append(threading.get_ident())

    wf = app.workflow("fan-in")
    for n in (1, 2):
        wf.add(f"s{n}", source.job(n=n))
    wf.add("sink", sink.job(), after=["s1", "s2"])
    run = wf.defer()
    event.listen(Engine, "before_cursor_execute", record)
    try:
        with running_worker(app):
            run.wait(timeout=30)
            deferred = alone.defer()
            _until(lambda: "alone" in seen)
            deferred.wait(timeout=30)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert run.status == "succeeded"
    assert seen["upstream"] == {"s1": 1, "s2": 2} and seen["failures"] == {} and seen["alone"] == {}
    assert len(reads) == 1, "one read for all parents, none for a job outside a workflow"
    assert reads[0] != seen["loop"], "read on the event loop's thread: it would block every other async job"


def test_async_defer_and_wait(make_app: Callable[..., App], running_worker: Worker) -> None:
    import asyncio

    app, _ = _app(make_app)

    async def scenario() -> Any:
        run = await _onboard(app).defer_async()
        assert run.status == "active" and run.stats.total == 5
        with pytest.raises(TimeoutError, match="still active"):
            await run.wait_async(timeout=0.2)
        return run

    run = asyncio.run(scenario())
    with running_worker(app, queues=["default", "stock"]):
        stats = asyncio.run(run.wait_async(timeout=30))
    assert stats.succeeded == 5 and run.status == "succeeded"


def test_blocked_steps_are_listed_by_the_cli(make_app: Callable[..., App], target: Target) -> None:
    app, _ = _app(make_app)
    run = _onboard(app).defer()
    listed = run_cli(["jobs", "list", "--status", "blocked", "--json"], target.env())
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["step"] for r in rows) == ["apologise", "charge", "reserve", "ship"]
    assert {r["workflow_id"] for r in rows} == {run.id} and {r["status"] for r in rows} == {"blocked"}


def test_two_parents_ending_at_once_in_two_workers_release_their_child_once(
    make_app: Callable[..., App], running_worker: Worker
) -> None:
    import threading

    app = make_app()
    barrier = threading.Barrier(2, timeout=20)
    children: list[int | None] = []

    # A global limit: no worker claims ahead, so each of the two takes one parent.
    @app.handler(concurrency=2, max_attempts=1)
    def parent(ctx: Context) -> str:
        barrier.wait()  # both parents end at the same instant, in two workers
        return ctx.step or ""

    @app.handler
    def child(ctx: Context) -> None:
        children.append(ctx.workflow_id)

    runs = []
    with running_worker(app, concurrency=1), running_worker(app, concurrency=1):
        for _ in range(15):
            wf = app.workflow("race")
            wf.add("a", parent.job())
            wf.add("b", parent.job())
            wf.add("c", child.job(), after=["a", "b"])
            run = wf.defer()
            run.wait(timeout=30)
            assert run.status == "succeeded", run.steps
            runs.append(run.id)
    assert children == runs, "each child ran once, after both its parents"
