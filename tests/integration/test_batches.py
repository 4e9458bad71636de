"""Batches through the public API, with real workers: the names issue 14 fixes are the contract."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from jobstead import (
    App,
    BatchNotFound,
    BatchStats,
    Context,
    InvalidArguments,
    JobNotFound,
    JobSpec,
    JobStatus,
    PermanentError,
)
from tests.conftest import Target
from tests.support.processes import run_cli


def _app(make_app: Callable[..., App]) -> tuple[App, dict[str, Any]]:
    app = make_app()
    seen: dict[str, Any] = {"batch_ids": [], "events": []}

    @app.handler(max_attempts=2, retry=0)
    def resize(image_id: int, ctx: Context) -> int:
        seen["batch_ids"].append(ctx.batch_id)
        if image_id < 0:
            raise PermanentError("bad image")
        return image_id

    @app.handler(max_attempts=3, retry=0)
    def flaky(key: str, ctx: Context) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return key

    @app.handler
    def notify(event: str, ctx: Context) -> None:
        seen["events"].append((event, ctx.batch_id))

    return app, seen


def test_a_batch_runs_and_its_continuations_run_once(
    make_app: Callable[..., App], running_worker: Callable[..., contextlib.AbstractContextManager[object]]
) -> None:
    app, seen = _app(make_app)
    resize, notify = app.get_handler("resize"), app.get_handler("notify")
    spec = resize.job(image_id=1)
    assert isinstance(spec, JobSpec) and spec.args == {"image_id": 1}
    batch = app.defer_batch(
        [resize.job(image_id=i) for i in range(5)] + [resize.configure(priority=5).job(image_id=99)],
        tenant="acme",
        metadata={"album": 7},
        on_success=notify.job(event="success"),
        on_finish=notify.job(event="finish"),
        on_failure=notify.job(event="failure"),
    )
    assert batch.status == "active" and batch.stats.total == 6 and batch.tenant == "acme"
    with running_worker(app):
        stats = batch.wait(timeout=30)
        deadline = time.monotonic() + 30
        while len(seen["events"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert stats == BatchStats(total=6, succeeded=6)
    assert batch.status == "succeeded"
    assert sorted(seen["events"]) == [("finish", batch.id), ("success", batch.id)]
    assert set(seen["batch_ids"]) == {batch.id}
    assert sorted(e for e, _ in batch.continuations) == ["finish", "success"]
    again = app.get_batch(batch.id)
    assert again.metadata == {"album": 7} and again.to_json()["stats"]["succeeded"] == 6
    assert [b.id for b in app.batches(tenant="acme")] == [batch.id]
    assert app.batch_stats(tenant="acme").succeeded == 6


def test_a_failure_fires_on_failure_and_a_retried_success_counts_as_success(
    make_app: Callable[..., App], running_worker: Callable[..., contextlib.AbstractContextManager[object]]
) -> None:
    app, _seen = _app(make_app)
    resize, flaky, notify = (app.get_handler(n) for n in ("resize", "flaky", "notify"))
    recovers = app.defer_batch(
        [flaky.job(key="a")], on_success=notify.job(event="success"), on_failure=notify.job(event="failure")
    )
    fails = app.defer_batch(
        [resize.job(image_id=-1), resize.job(image_id=2)],
        on_success=notify.job(event="success"),
        on_finish=notify.job(event="finish"),
        on_failure=notify.job(event="failure"),
    )
    with running_worker(app):
        assert recovers.wait(timeout=30).succeeded == 1
        assert fails.wait(timeout=30) == BatchStats(total=2, succeeded=1, failed=1)
    assert recovers.status == "succeeded" and [e for e, _ in recovers.continuations] == ["success"]
    assert fails.status == "failed"
    assert sorted(e for e, _ in fails.continuations) == ["failure", "finish"]


def test_an_empty_batch_completes_at_once(make_app: Callable[..., App]) -> None:
    app, _ = _app(make_app)
    notify = app.get_handler("notify")
    batch = app.defer_batch(
        [],
        on_success=notify.job(event="success"),
        on_finish=notify.job(event="finish"),
        on_failure=notify.job(event="failure"),
    )
    assert batch.status == "succeeded"
    assert batch.wait(timeout=1) == BatchStats()
    assert sorted(e for e, _ in batch.continuations) == ["finish", "success"]


def test_defer_batch_is_part_of_the_callers_transaction(make_app: Callable[..., App]) -> None:
    app, _ = _app(make_app)
    resize = app.get_handler("resize")
    with Session(app.store.db.engine) as session:
        batch = app.defer_batch([resize.job(image_id=1)], session=session)
        assert batch.stats.total == 1
        session.rollback()
    with pytest.raises(BatchNotFound):
        app.get_batch(batch.id)
    assert app.jobs() == []
    with Session(app.store.db.engine) as session:
        committed = app.defer_batch([resize.job(image_id=1)], session=session)
        session.commit()
    assert app.get_batch(committed.id).stats.queued == 1


def test_bad_input_is_refused_before_anything_is_written(make_app: Callable[..., App]) -> None:
    app, _ = _app(make_app)
    other = App(app.database_url)

    @other.handler
    def elsewhere() -> None: ...

    resize = app.get_handler("resize")
    with pytest.raises(InvalidArguments, match="not registered in this app"):
        app.defer_batch([resize.job(image_id=1), elsewhere.job()])
    with pytest.raises(InvalidArguments, match="not registered in this app"):
        app.defer_batch([resize.job(image_id=1)], on_finish=elsewhere.job())
    with pytest.raises(InvalidArguments):
        resize.job(image_id=object())
    with pytest.raises(InvalidArguments):
        resize.job(nope=1)
    with pytest.raises(InvalidArguments):
        app.defer_batch(resize.job(image_id=1))  # type: ignore[arg-type]
    with pytest.raises(InvalidArguments, match="no delay"):
        app.defer_batch([], on_finish=resize.configure(delay=5).job(image_id=1))
    assert app.jobs() == [] and app.batches() == []
    with pytest.raises(BatchNotFound):
        app.get_batch(424242)
    other.close()


def test_append_and_cancel(
    make_app: Callable[..., App], running_worker: Callable[..., contextlib.AbstractContextManager[object]]
) -> None:
    app, _seen = _app(make_app)
    resize, notify = app.get_handler("resize"), app.get_handler("notify")
    batch = app.defer_batch([resize.job(image_id=1)], on_finish=notify.job(event="finish"))
    added = batch.append([resize.job(image_id=2), resize.job(image_id=3)])
    assert [d.record.batch_id for d in added] == [batch.id, batch.id] and batch.stats.total == 3
    batch.cancel()
    assert batch.status == "cancelled" and batch.stats.cancelled == 3
    assert [e for e, _ in batch.continuations] == ["finish"]
    batch.cancel()  # a no-op once complete
    late = batch.append([resize.job(image_id=4)])
    with running_worker(app):
        late[0].wait(timeout=30)
        batch.wait(timeout=30)
    assert batch.status == "cancelled" and [e for e, _ in batch.continuations] == ["finish"], "no second finish"


def test_deleting_the_last_unfinished_member_from_the_dashboard_finishes_the_batch(
    make_app: Callable[..., App], running_worker: Callable[..., contextlib.AbstractContextManager[object]]
) -> None:
    """Once a bug: the dashboard's Delete wrote its own SQL, the batch stayed active with total=1 for ever."""
    from jobstead.dashboard.actions import Actions
    from jobstead.dashboard.auth import User
    from jobstead.dashboard.queries import DashboardQueries

    app, seen = _app(make_app)
    resize, notify = app.get_handler("resize"), app.get_handler("notify")
    batch = app.defer_batch(
        [resize.job(image_id=1), resize.configure(delay=timedelta(hours=1)).job(image_id=2)],
        on_success=notify.job(event="success"),
        on_finish=notify.job(event="finish"),
    )
    members = {j.args["image_id"]: j.id for j in app.store.queries.list_jobs() if j.batch_id == batch.id}
    actions = Actions(app.store, DashboardQueries(app.store))
    user = User("ops")
    with running_worker(app):
        deadline = time.monotonic() + 30
        while batch.refresh().stats.succeeded < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert batch.stats == BatchStats(total=2, succeeded=1, scheduled=1)
        actions.delete(user, members[2])
        assert batch.refresh().status == "succeeded" and batch.stats == BatchStats(total=1, succeeded=1)
        assert sorted(e for e, _ in batch.continuations) == ["finish", "success"]
        actions.delete(user, members[1])  # settling again fires nothing twice
        deadline = time.monotonic() + 30
        while len(seen["events"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    assert sorted(seen["events"]) == [("finish", batch.id), ("success", batch.id)]
    assert sorted(e for e, _ in batch.refresh().continuations) == ["finish", "success"]
    (entry,) = [a for a in DashboardQueries(app.store).activity()[0] if a.target == f"job {members[2]}"]
    assert (entry.actor, entry.action, entry.outcome) == ("ops", "delete", f"job {members[2]} deleted")
    with pytest.raises(JobNotFound, match="no job"):
        actions.delete(user, members[1])


def test_deleting_a_running_member_is_refused_and_changes_nothing(
    make_app: Callable[..., App], running_worker: Callable[..., contextlib.AbstractContextManager[object]]
) -> None:
    from jobstead.dashboard.actions import ActionRefused, Actions
    from jobstead.dashboard.auth import User
    from jobstead.dashboard.queries import DashboardQueries

    app = make_app()
    started: list[int] = []

    @app.handler
    def blocking(n: int, ctx: Context) -> None:
        started.append(n)
        ctx.wait_cancelled(60)

    batch = app.defer_batch([blocking.job(n=1)])
    (member,) = [j.id for j in app.store.queries.list_jobs() if j.batch_id == batch.id]
    actions = Actions(app.store, DashboardQueries(app.store))
    with running_worker(app):
        deadline = time.monotonic() + 30
        while not started and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(ActionRefused, match="is running; cancel it before deleting it"):
            actions.delete(User("ops"), member)
        assert batch.refresh().status == "active" and batch.stats == BatchStats(total=1, running=1)
        batch.cancel()
        batch.wait(timeout=20)
    assert batch.refresh().status == "cancelled"


def test_cancelling_a_batch_stops_its_running_jobs(
    make_app: Callable[..., App], running_worker: Callable[..., contextlib.AbstractContextManager[object]]
) -> None:
    app = make_app()
    started: list[int] = []

    @app.handler
    async def slow(n: int) -> None:
        started.append(n)
        await asyncio.sleep(60)

    @app.handler
    def blocking(n: int, ctx: Context) -> str:
        started.append(n)
        return "stopped" if ctx.wait_cancelled(60) else "ran out"

    batch = app.defer_batch([slow.job(n=1), blocking.job(n=2)])
    with running_worker(app):
        deadline = time.monotonic() + 30
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(started) == [1, 2]
        t0 = time.monotonic()
        batch.cancel()
        stats = batch.wait(timeout=20)
        took = time.monotonic() - t0
    assert stats.cancelled == 2 and batch.status == "cancelled"
    assert took < 10, f"took {took:.1f} s"


def test_async_defer_batch(make_app: Callable[..., App]) -> None:
    app, _ = _app(make_app)
    resize = app.get_handler("resize")

    async def scenario() -> None:
        batch = await app.defer_batch_async([resize.job(image_id=1)], tenant="t")
        assert batch.stats.total == 1 and batch.tenant == "t"
        with pytest.raises(TimeoutError):
            await batch.wait_async(timeout=0.2)

    asyncio.run(scenario())
    assert [j.status for j in app.jobs()] == [JobStatus.QUEUED]


def test_a_per_tenant_limit_holds_and_small_tenants_are_not_starved(
    make_app: Callable[..., App], running_worker: Callable[..., contextlib.AbstractContextManager[object]]
) -> None:
    import threading

    app = make_app()
    lock = threading.Lock()
    now: dict[str, int] = {}
    peak: dict[str, int] = {}
    finished_at: dict[str, float] = {}

    @app.handler(concurrency=6, tenant_concurrency=2)
    def work(tenant: str) -> None:
        with lock:
            now[tenant] = now.get(tenant, 0) + 1
            peak[tenant] = max(peak.get(tenant, 0), now[tenant])
        time.sleep(0.05)
        with lock:
            now[tenant] -= 1
            finished_at[tenant] = time.monotonic()

    work.configure(tenant="big").defer_many([{"tenant": "big"}] * 60)  # the big backlog comes first
    for tenant in ("small1", "small2"):
        work.configure(tenant=tenant).defer_many([{"tenant": tenant}] * 6)
    with running_worker(app, concurrency=8), running_worker(app, concurrency=8):
        deadline = time.monotonic() + 60
        while app.stats().by_status.get("succeeded", 0) < 72 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert peak["small1"] <= 2 and peak["small2"] <= 2 and peak["big"] <= 2, peak
    assert finished_at["small1"] < finished_at["big"] and finished_at["small2"] < finished_at["big"]


def test_the_cli_lists_shows_and_cancels_batches(make_app: Callable[..., App], target: Target) -> None:
    """Every line the ``batches`` commands print, and their exit codes: a refactoring changes none."""
    app, _ = _app(make_app)
    resize, notify = app.get_handler("resize"), app.get_handler("notify")
    batch = app.defer_batch(
        [resize.job(image_id=i) for i in range(3)],
        tenant="acme",
        metadata={"album": 7},
        on_finish=notify.job(event="finish"),
        on_success=notify.job(event="success"),
    )

    def cli(*args: str) -> Any:
        return run_cli(["batches", *args], target.env())

    record = app.store.batches.get(batch.id)
    listed = cli("list", "--tenant", "acme", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [json.loads(json.dumps(record.to_json(), default=str))]
    created = record.created_at.isoformat()
    table = cli("list", "--status", "active")
    assert (table.returncode, table.stdout.splitlines()) == (
        0,
        [
            "ID  STATUS  TENANT  TOTAL  QUEUED  RUNNING  RETRYING  SUCCEEDED  FAILED  DEAD  CANCELLED  CREATED",
            f"{batch.id:<2}  active  acme    3      3       0        0         0          0       0     0          "
            + created,
        ],
    )
    nothing = cli("list", "--tenant", "nobody")
    assert (nothing.returncode, nothing.stdout) == (0, "no batches of tenant nobody\n")
    assert cli("list", "--status", "failed").stdout == "no batches\n"
    shown = cli("show", str(batch.id), "--json")
    assert (shown.returncode, json.loads(shown.stdout)) == (0, json.loads(json.dumps(record.to_json(), default=str)))
    text = cli("show", str(batch.id))
    assert (text.returncode, text.stdout) == (
        0,
        f"batch {batch.id}: active (tenant acme)\n"
        "stats: total 3, scheduled 0, queued 3, running 0, retrying 0, succeeded 0, failed 0, dead 0, cancelled 0\n"
        "metadata: {'album': 7}\n"
        "on_finish: not fired yet\n"
        "on_success: not fired yet\n",
    )
    cancelled = cli("cancel", str(batch.id))
    assert (cancelled.returncode, cancelled.stdout) == (0, f"batch {batch.id} cancelled: 3 job(s) cancelled\n")
    again = cli("cancel", str(batch.id))
    assert (again.returncode, again.stderr.strip()) == (1, f"jobstead: error: batch {batch.id} already cancelled")
    (finish,) = app.store.batches.get(batch.id).continuations
    assert cli("show", str(batch.id)).stdout.splitlines()[-2:] == [
        f"on_finish: job {finish[1]}",
        "on_success: not fired yet",
    ]
    for command in ("show", "cancel"):
        unknown = cli(command, "999999")
        assert (unknown.returncode, unknown.stderr.strip()) == (2, "jobstead: error: no batch 999999")
    bad = cli("show", "x")
    assert bad.returncode == 2 and "batch id 'x': give a whole number" in bad.stderr
    assert "Traceback" not in bad.stderr + unknown.stderr
