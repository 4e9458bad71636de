"""Workflows in the store's contract, on every driver: release exactly once, failure rules, steering."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, select

import jobstead
from jobstead.errors import JobError
from jobstead.status import AttemptOutcome, JobStatus
from jobstead.store import ClaimedJob, NewJob, NewStep, Store, WorkflowStats
from jobstead.store.records import Growth
from jobstead.transitions import PURGE, UpstreamRule
from tests.store.conftest import ManualClock, handler
from tests.store.test_contract import claim, done, new


def step(name: str, *after: str, run: bool = False, **options: Any) -> NewStep:
    rule = UpstreamRule.RUN if run else UpstreamRule.CANCEL
    return NewStep(name, new(args={"step": name}, **options), tuple(after), rule)


def diamond(store: Store, **options: Any) -> int:
    return store.workflows.create(
        "diamond", [step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")], **options
    ).id


def statuses(store: Store, workflow_id: int) -> dict[str, JobStatus]:
    return {name: s.status for name, s in store.workflows.get(workflow_id).steps.items()}


def finish(store: Store, job: ClaimedJob, status: JobStatus = JobStatus.SUCCEEDED, worker: str = "w1") -> None:
    outcome = {JobStatus.SUCCEEDED: AttemptOutcome.SUCCEEDED, JobStatus.CANCELLED: AttemptOutcome.CANCELLED}.get(
        status, AttemptOutcome.FAILED
    )
    error = None if status in (JobStatus.SUCCEEDED, JobStatus.CANCELLED) else JobError("Boom", "it broke", "tb")
    result = {"from": job.args.get("step")} if status is JobStatus.SUCCEEDED else None
    assert (
        store.leases.complete([done(job, store, worker, outcome=outcome, status=status, error=error, result=result)])
        == set()
    )


def events(store: Store, workflow_id: int) -> list[str]:
    return sorted(e for e, _ in store.workflows.get(workflow_id).continuations)


def continuations() -> dict[str, NewJob]:
    return {event: new(f"on_{event}", args={"event": event}) for event in ("success", "finish", "failure")}


def test_steps_are_released_in_order_and_see_their_parents_results(store: Store) -> None:
    workflow_id = diamond(store, tenant="acme", metadata={"k": 1}, continuations=continuations())
    record = store.workflows.get(workflow_id)
    assert record.stats == WorkflowStats(total=4, blocked=3, queued=1) and record.metadata == {"k": 1}
    assert record.steps["d"].after == ["b", "c"] and record.events == ("failure", "finish", "success")
    (a,) = claim(store)
    assert (a.workflow_id, a.step, a.tenant) == (workflow_id, "a", "acme")
    assert claim(store) == [], "blocked steps are never claimed"
    finish(store, a)
    assert statuses(store, workflow_id) == {
        "a": JobStatus.SUCCEEDED,
        "b": JobStatus.QUEUED,
        "c": JobStatus.QUEUED,
        "d": JobStatus.BLOCKED,
    }
    b, c = claim(store)
    finish(store, b)
    assert statuses(store, workflow_id)["d"] is JobStatus.BLOCKED
    finish(store, c)
    (d,) = claim(store)
    assert d.step == "d"
    assert [(u.step, u.status, u.result) for u in store.workflows.upstream(d.id)] == [
        ("b", JobStatus.SUCCEEDED, {"from": "b"}),
        ("c", JobStatus.SUCCEEDED, {"from": "c"}),
    ]
    assert store.workflows.get(workflow_id).status == "active" and events(store, workflow_id) == []
    finish(store, d)
    record = store.workflows.get(workflow_id)
    assert record.status == "succeeded" and record.finished_at is not None
    assert record.stats == WorkflowStats(total=4, succeeded=4)
    assert events(store, workflow_id) == ["finish", "success"]
    fired = [store.queries.get_job(job_id) for _, job_id in record.continuations]
    assert all(j is not None and j.workflow_id == workflow_id and j.step is None for j in fired)
    assert store.workflows.get(workflow_id).stats.total == 4, "continuations are not steps"


def test_a_step_with_a_delay_is_released_scheduled(store: Store, clock: ManualClock) -> None:
    later = clock.now + timedelta(hours=1)
    workflow_id = store.workflows.create("later", [step("a"), step("b", "a", run_at=later)]).id
    finish(store, claim(store)[0])
    assert statuses(store, workflow_id)["b"] is JobStatus.SCHEDULED
    clock.advance(3601)
    assert [j.step for j in claim(store)] == ["b"]


def test_a_steps_delay_counts_from_its_release_and_an_absolute_run_at_stays(store: Store, clock: ManualClock) -> None:
    # As ``h.configure(delay=60).job()`` and ``h.configure(run_at=...).job()`` build them at defer.
    minute = clock.now + timedelta(seconds=60)
    workflow_id = store.workflows.create(
        "later", [step("a"), step("delayed", "a", run_at=minute, delay=60.0), step("at", "a", run_at=minute)]
    ).id
    (a,) = claim(store)
    clock.advance(300)  # the parent ends 5 minutes after defer
    released_at = clock.now
    finish(store, a)
    assert statuses(store, workflow_id) == {
        "a": JobStatus.SUCCEEDED,
        "delayed": JobStatus.SCHEDULED,
        "at": JobStatus.QUEUED,
    }, "a delay counts from the release; an absolute run_at that has passed is simply queued"
    delayed = store.workflows.get(workflow_id).steps["delayed"].job_id
    job = store.queries.get_job(delayed)
    assert job is not None and job.run_at == released_at + timedelta(seconds=60)
    assert [j.step for j in claim(store)] == ["at"]
    clock.advance(59)
    assert claim(store) == []
    clock.advance(2)
    assert [j.step for j in claim(store)] == ["delayed"]


def test_each_release_judges_and_delays_its_steps_by_the_time_of_its_own_completion(
    store: Store, clock: ManualClock
) -> None:
    """The settling statements are built once and reused by every completion (``Workflows._statement``):
    the time stays a bound value, so a release after a step's absolute run_at queues it though an
    earlier release (the statement's first use) scheduled its twin, and each delay counts from its
    own release."""
    at = clock.now + timedelta(seconds=120)
    shape = [step("a"), step("at", "a", run_at=at), step("delayed", "a", run_at=at, delay=30.0)]
    early, late = (store.workflows.create("twins", shape).id for _ in range(2))
    by_workflow = {job.workflow_id: job for job in claim(store, limit=2)}
    jobs = store.tables.jobs

    def stored_status(workflow_id: int) -> str:  # as written, not as shown (a due scheduled job shows queued)
        with store.db.engine.connect() as conn:
            return str(
                conn.execute(
                    select(jobs.c.status).where(jobs.c.workflow_id == workflow_id, jobs.c.step == "at")
                ).scalar_one()
            )

    finish(store, by_workflow[early])
    early_at = clock.now
    clock.advance(300)
    finish(store, by_workflow[late])
    late_at = clock.now
    assert (stored_status(early), stored_status(late)) == ("scheduled", "queued")
    for workflow_id, released_at in ((early, early_at), (late, late_at)):
        job = store.queries.get_job(store.workflows.get(workflow_id).steps["delayed"].job_id)
        assert job is not None and job.run_at == released_at + timedelta(seconds=30)


def test_a_failure_cancels_downstream_naming_the_step_and_a_run_step_runs(store: Store) -> None:
    workflow_id = store.workflows.create(
        "fails",
        [step("a"), step("b", "a"), step("c", "b"), step("r", "b", run=True), step("x")],
        continuations=continuations(),
    ).id
    a, x = claim(store)
    finish(store, a)
    (b,) = claim(store)
    finish(store, b, JobStatus.DEAD)
    record = store.workflows.get(workflow_id)
    assert record.steps["c"].status is JobStatus.CANCELLED
    assert record.steps["c"].reason == "upstream step 'b' ended dead"
    assert record.steps["r"].status is JobStatus.QUEUED and record.steps["r"].reason is None
    assert events(store, workflow_id) == ["failure"], "on_failure at the first failure; not final yet"
    (r,) = claim(store)
    (upstream,) = store.workflows.upstream(r.id)
    assert (upstream.step, upstream.status, upstream.result) == ("b", JobStatus.DEAD, None)
    assert upstream.error == JobError("Boom", "it broke", "tb")
    finish(store, r)
    finish(store, x)
    record = store.workflows.get(workflow_id)
    assert record.status == "failed"
    assert record.stats == WorkflowStats(total=5, succeeded=3, dead=1, cancelled=1)
    assert events(store, workflow_id) == ["failure", "finish"]


def test_a_retried_attempt_releases_nothing_until_the_step_succeeds(store: Store, clock: ManualClock) -> None:
    workflow_id = store.workflows.create("retry", [step("a"), step("b", "a")]).id
    (a,) = claim(store)
    error = JobError("E", "m", "")
    store.leases.complete(
        [done(a, store, outcome=AttemptOutcome.FAILED, status=JobStatus.RETRYING, error=error, run_at=clock.now)]
    )
    assert statuses(store, workflow_id)["b"] is JobStatus.BLOCKED
    finish(store, claim(store)[0])
    assert statuses(store, workflow_id)["b"] is JobStatus.QUEUED


def test_a_rescue_that_ends_a_step_dead_cancels_its_dependents(store: Store, clock: ManualClock) -> None:
    store.registry.put_handler(handler("work", max_attempts=1))
    workflow_id = store.workflows.create("lost", [step("a"), step("b", "a")]).id
    claim(store)
    clock.advance(31)
    assert len(store.leases.rescue_expired()) == 1
    record = store.workflows.get(workflow_id)
    assert (record.steps["a"].status, record.steps["b"].status, record.status) == (
        JobStatus.DEAD,
        JobStatus.CANCELLED,
        "failed",
    )


def test_two_parents_finishing_at_once_release_their_child_once(store: Store) -> None:
    for _ in range(8):
        workflow_id = store.workflows.create(
            "fan-in", [step("a"), step("b"), step("c", "a", "b")], continuations=continuations()
        ).id
        first = claim(store, worker="w1", limit=1)[0]
        second = claim(store, worker="w2", limit=1)[0]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(job: ClaimedJob, worker: str, barrier: threading.Barrier = barrier, errors: list[Any] = errors) -> None:
            barrier.wait()
            try:
                finish(store, job, worker=worker)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=a) for a in ((first, "w1"), (second, "w2"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        (child,) = claim(store)
        assert child.step == "c" and claim(store) == []
        jobs = store.tables.jobs
        with store.db.engine.connect() as conn:
            waiting = conn.execute(select(jobs.c.waiting).where(jobs.c.id == child.id)).scalar_one()
        assert waiting == 0
        finish(store, child)
        assert store.workflows.get(workflow_id).status == "succeeded"
        assert events(store, workflow_id) == ["finish", "success"]
        for _, job_id in store.workflows.get(workflow_id).continuations:
            store.control.cancel(job_id)


def test_a_wide_fan_in_releases_its_child_at_the_last_parent(store: Store) -> None:
    parents = [step(f"p{i}") for i in range(40)]
    workflow_id = store.workflows.create("wide", [*parents, step("album", *(p.name for p in parents))]).id
    jobs = claim(store, limit=100)
    for job in jobs[:-1]:
        finish(store, job)
    assert statuses(store, workflow_id)["album"] is JobStatus.BLOCKED
    finish(store, jobs[-1])
    assert statuses(store, workflow_id)["album"] is JobStatus.QUEUED


def test_many_parents_of_one_child_in_one_completion_batch(store: Store) -> None:
    workflow_id = store.workflows.create("batch", [step("a"), step("b"), step("c", "a", "b")]).id
    a, b = claim(store)
    store.leases.complete([done(a, store), done(b, store)])
    assert statuses(store, workflow_id)["c"] is JobStatus.QUEUED


def test_one_completion_batch_settles_the_steps_of_many_workflows_each_by_its_rules(store: Store) -> None:
    """Released, cancelled downstream, finished: all in one batch, and each workflow as if alone."""
    fan_in = store.workflows.create("fan-in", [step("a"), step("b"), step("c", "a", "b"), step("d", "a")]).id
    failing = store.workflows.create(
        "failing", [step("x"), step("y", "x"), step("z", "x", run=True)], continuations=continuations()
    ).id
    last = store.workflows.create("last", [step("only")], continuations=continuations()).id
    by_step = {job.step: job for job in claim(store)}
    assert set(by_step) == {"a", "b", "x", "only"}
    error = JobError("Boom", "it broke", "tb")
    failed = done(by_step["x"], store, outcome=AttemptOutcome.FAILED, status=JobStatus.FAILED, error=error)
    assert (
        store.leases.complete(
            [done(by_step["a"], store), done(by_step["b"], store), failed, done(by_step["only"], store)]
        )
        == set()
    )
    assert statuses(store, fan_in) == {
        "a": JobStatus.SUCCEEDED,
        "b": JobStatus.SUCCEEDED,
        "c": JobStatus.QUEUED,
        "d": JobStatus.QUEUED,
    }, "two parents of c in one batch count it down by two at once"
    assert statuses(store, failing) == {"x": JobStatus.FAILED, "y": JobStatus.CANCELLED, "z": JobStatus.QUEUED}
    assert store.workflows.get(failing).steps["y"].reason == "upstream step 'x' ended failed"
    assert store.workflows.get(failing).status == "active" and events(store, failing) == ["failure"]
    assert store.workflows.get(last).status == "succeeded" and events(store, last) == ["finish", "success"]
    assert store.workflows.get(fan_in).status == "active"
    for job in claim(store):
        finish(store, job)
    assert [store.workflows.get(i).status for i in (fan_in, failing, last)] == ["succeeded", "failed", "succeeded"]
    assert events(store, failing) == ["failure", "finish"]


def test_a_completion_batch_costs_the_same_statements_for_one_workflow_or_many(store: Store) -> None:
    """Settling is per batch, not per workflow: a batch of 20 workflows' steps (releasing one
    step each, then finishing each) runs no more statements than a batch of 2 workflows'.

    Counted from the first statement on the workflows table (the settling starts there, after
    the completions are written: one statement per job on some drivers).
    """
    workflows = store.tables.workflows.name

    sent: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    def statements(width: int) -> tuple[int, int]:
        ids = [store.workflows.create("pair", [step("parent"), step("child", "parent")]).id for _ in range(width)]
        counts = []
        for _ in ("parent", "child"):
            jobs = claim(store, limit=100)
            assert len(jobs) == width
            sent.clear()
            event.listen(store.db.engine, "before_cursor_execute", capture)
            try:
                assert store.leases.complete([done(job, store) for job in jobs]) == set()
            finally:
                event.remove(store.db.engine, "before_cursor_execute", capture)
            settling = next(i for i, statement in enumerate(sent) if workflows in statement)
            counts.append(len(sent) - settling)
        assert all(store.workflows.status(i) == "succeeded" for i in ids)
        return counts[0], counts[1]

    assert statements(20) == statements(2)


def test_cancelling_a_blocked_step_by_hand_cancels_its_dependents(store: Store) -> None:
    workflow_id = diamond(store)
    record = store.workflows.get(workflow_id)
    store.control.cancel(record.steps["b"].job_id)
    record = store.workflows.get(workflow_id)
    assert (
        record.steps["d"].status is JobStatus.CANCELLED
        and record.steps["d"].reason == "upstream step 'b' ended cancelled"
    )
    finish(store, claim(store)[0])
    (c,) = claim(store)
    finish(store, c)
    assert store.workflows.get(workflow_id).status == "cancelled"


def test_deleting_a_live_step_counts_as_cancelled_for_its_dependents(store: Store) -> None:
    workflow_id = store.workflows.create("gone", [step("a"), step("b", "a")]).id
    store.control.delete(store.workflows.get(workflow_id).steps["a"].job_id)
    record = store.workflows.get(workflow_id)
    assert list(record.steps) == ["b"] and record.steps["b"].status is JobStatus.CANCELLED
    assert record.steps["b"].reason == "upstream step 'a' ended cancelled"
    assert record.status == "cancelled"


def test_cancel_ends_waiting_steps_and_asks_running_ones_to_stop(store: Store) -> None:
    workflow_id = diamond(store, continuations=continuations())
    (a,) = claim(store)
    assert store.workflows.cancel(workflow_id) == [a.id]
    record = store.workflows.get(workflow_id)
    assert record.status == "active" and record.stats.cancelled == 3 and record.stats.running == 1
    assert store.leases.renew("w1", 30, [a.id]).cancel_requested == {a.id}
    finish(store, a, JobStatus.CANCELLED)
    record = store.workflows.get(workflow_id)
    assert record.status == "cancelled" and events(store, workflow_id) == ["finish"]
    assert store.workflows.cancel(workflow_id) == [], "cancelling a final workflow changes nothing"


WORKFLOW_CANCELLED = "the workflow was cancelled"


def test_every_step_a_workflow_cancel_ends_says_the_workflow_was_cancelled(store: Store) -> None:
    """``reason``: "None, or why a step was cancelled" (issue 33): the steps a workflow's cancel
    ended, waiting or running, had none; those cancelled for a failure keep naming the step."""
    workflow_id = store.workflows.create("stop", [step("a"), step("b", "a"), step("c", "b"), step("q")]).id
    a, q = claim(store)
    finish(store, q)
    store.workflows.cancel(workflow_id)
    record = store.workflows.get(workflow_id)
    assert {n: (s.status, s.reason) for n, s in record.steps.items()} == {
        "a": (JobStatus.RUNNING, None),
        "b": (JobStatus.CANCELLED, WORKFLOW_CANCELLED),
        "c": (JobStatus.CANCELLED, WORKFLOW_CANCELLED),
        "q": (JobStatus.SUCCEEDED, None),
    }
    finish(store, a, JobStatus.CANCELLED)  # its worker stops it, as it was told to
    record = store.workflows.get(workflow_id)
    assert (record.status, record.steps["a"].status, record.steps["a"].reason) == (
        "cancelled",
        JobStatus.CANCELLED,
        WORKFLOW_CANCELLED,
    )
    job = store.queries.get_job(record.steps["b"].job_id)
    assert job is not None and job.error is not None and job.error.type == "jobstead.WorkflowCancelled"


def test_a_retry_forgets_why_steps_were_cancelled(store: Store) -> None:
    """A step blocked again by a retry has no reason; cancelled by hand after that, it had the old
    one back ("upstream step 'a' ended failed": its error was still the reason of before)."""
    store.registry.put_handler(handler("work", max_attempts=1))
    workflow_id = store.workflows.create("twice", [step("a"), step("b", "a"), step("c", "b")]).id
    finish(store, claim(store)[0], JobStatus.FAILED)
    assert store.workflows.get(workflow_id).steps["c"].reason == "upstream step 'a' ended failed"
    store.workflows.retry(workflow_id)
    steps = store.workflows.get(workflow_id).steps
    assert [(steps[n].status, steps[n].reason) for n in "bc"] == [(JobStatus.BLOCKED, None)] * 2
    assert all(job.error is None for job in map(store.queries.get_job, (steps["b"].job_id, steps["c"].job_id)) if job)
    store.control.cancel(steps["c"].job_id)
    assert store.workflows.get(workflow_id).steps["c"].reason is None, "cancelled by hand: no reason"
    store.workflows.cancel(workflow_id)
    assert store.workflows.get(workflow_id).steps["b"].reason == WORKFLOW_CANCELLED
    store.workflows.retry(workflow_id)
    steps = store.workflows.get(workflow_id).steps
    assert [(steps[n].status, steps[n].reason) for n in "abc"] == [
        (JobStatus.QUEUED, None),
        (JobStatus.BLOCKED, None),
        (JobStatus.BLOCKED, None),
    ]
    finish(store, claim(store)[0], JobStatus.FAILED)
    assert store.workflows.get(workflow_id).steps["c"].reason == "upstream step 'a' ended failed"


def test_a_step_retried_by_hand_forgets_why_it_was_cancelled(store: Store) -> None:
    workflow_id = store.workflows.create("hand", [step("a"), step("b", "a")]).id
    claim(store)  # "a" runs
    store.workflows.cancel(workflow_id)
    b = store.workflows.get(workflow_id).steps["b"].job_id
    store.control.retry(b)
    job = store.queries.get_job(b)
    assert job is not None and job.error is None and job.status is JobStatus.BLOCKED
    store.control.cancel(b)
    assert store.workflows.get(workflow_id).steps["b"].reason is None


def test_a_workflow_cancelled_while_its_last_step_runs_on_to_success_is_cancelled(store: Store) -> None:
    workflow_id = store.workflows.create("late", [step("a")]).id
    (a,) = claim(store)
    store.workflows.cancel(workflow_id)
    finish(store, a)
    assert store.workflows.get(workflow_id).status == "cancelled"


def test_retry_gives_failed_steps_one_more_attempt_and_blocks_their_dependents_again(store: Store) -> None:
    store.registry.put_handler(handler("work", max_attempts=1))
    workflow_id = store.workflows.create(
        "again", [step("a"), step("b", "a"), step("c", "b"), step("r", "b", run=True)], continuations=continuations()
    ).id
    finish(store, claim(store)[0])
    (b,) = claim(store)
    finish(store, b, JobStatus.FAILED)
    finish(store, claim(store)[0])  # r runs anyway
    assert store.workflows.get(workflow_id).status == "failed"
    assert events(store, workflow_id) == ["failure", "finish"]
    assert sorted(store.workflows.retry(workflow_id)) == sorted(
        store.workflows.get(workflow_id).steps[n].job_id for n in ("b", "c")
    )
    record = store.workflows.get(workflow_id)
    assert record.status == "active" and record.finished_at is None
    assert (record.steps["b"].status, record.steps["c"].status, record.steps["c"].reason) == (
        JobStatus.QUEUED,
        JobStatus.BLOCKED,
        None,
    )
    assert record.steps["r"].status is JobStatus.SUCCEEDED, "a success stays"
    (b,) = claim(store)
    assert b.attempts == 2 and b.max_attempts == 2
    finish(store, b)
    (c,) = claim(store)
    assert c.attempts == 1, "a step that never ran gets its handler's attempts"
    finish(store, c)
    record = store.workflows.get(workflow_id)
    assert record.status == "succeeded"
    assert [e for e, _ in record.continuations].count("finish") == 1
    assert events(store, workflow_id) == ["failure", "finish", "success"]
    assert store.workflows.retry(workflow_id) == []


def test_retrying_one_step_by_hand_reopens_its_workflow(store: Store) -> None:
    workflow_id = store.workflows.create("one", [step("a")]).id
    finish(store, claim(store)[0], JobStatus.FAILED)
    assert store.workflows.get(workflow_id).status == "failed"
    store.control.retry(store.workflows.get(workflow_id).steps["a"].job_id)
    assert store.workflows.get(workflow_id).status == "active"
    finish(store, claim(store)[0])
    assert store.workflows.get(workflow_id).status == "succeeded"


def test_a_step_retried_by_hand_waits_again_for_its_unfinished_parents(store: Store) -> None:
    workflow_id = store.workflows.create(
        "by hand", [step("a"), step("b"), step("c", "a", "b"), step("r", "a", run=True)]
    ).id
    steps = store.workflows.get(workflow_id).steps
    a, b = claim(store)
    store.control.cancel(steps["c"].job_id)
    finish(store, b)
    store.control.retry(steps["c"].job_id)
    assert statuses(store, workflow_id)["c"] is JobStatus.BLOCKED, "'a' has not ended: 'c' may not run yet"
    assert claim(store) == []
    finish(store, a, JobStatus.FAILED)
    assert statuses(store, workflow_id)["c"] is JobStatus.CANCELLED, "and it follows its rule when 'a' ends"
    assert statuses(store, workflow_id)["r"] is JobStatus.QUEUED
    store.control.retry(steps["c"].job_id)
    assert statuses(store, workflow_id)["c"] is JobStatus.QUEUED, "parents that ended count as ended: it runs"
    assert sorted(j.step or "" for j in claim(store)) == ["c", "r"]


def test_a_workflow_is_written_in_the_callers_transaction(store: Store) -> None:
    with store.db.engine.connect() as conn, conn.begin() as tx:
        workflow_id = diamond(store, connection=conn)
        assert store.workflows.get(workflow_id, connection=conn).stats.total == 4
        tx.rollback()
    assert store.queries.list_jobs() == [] and store.workflows.list() == []
    with pytest.raises(LookupError):
        store.workflows.get(workflow_id)


def test_listing_by_name_tenant_and_status(store: Store) -> None:
    a = diamond(store, tenant="acme")
    b = store.workflows.create("other", [], tenant="acme").id
    c = diamond(store, tenant="globex")
    assert [r.id for r in store.workflows.list()] == [c, b, a]
    assert [r.id for r in store.workflows.list(name="diamond")] == [c, a]
    assert [r.id for r in store.workflows.list(tenant="acme", status="succeeded")] == [b]
    assert [r.id for r in store.workflows.list(tenant="acme", limit=1, offset=1)] == [a]
    light = store.workflows.list(name="diamond", steps=False)[0]
    assert light.steps == {} and light.stats == WorkflowStats(total=4, blocked=3, queued=1)


def test_a_workflow_is_deferred_in_one_statement_on_postgresql(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workflow, steps, edges and wake-up together (``Driver.insert_workflow``): the defer was six
    round trips, and the deferring app's CPU beside the workers cost them their release latency."""
    if store.db.driver.backend != "postgresql":
        pytest.skip("one statement for all of it is PostgreSQL's (data-modifying CTEs)")
    sent: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    raw_execute = psycopg.RawCursor.execute  # statements sent past SQLAlchemy count too

    def capture_raw(cursor: psycopg.RawCursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return raw_execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.RawCursor, "execute", capture_raw)
    event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        workflow_id = diamond(store)
    finally:
        event.remove(store.db.engine, "before_cursor_execute", capture)
    assert len(sent) == 1, sent
    run = store.workflows.get(workflow_id)
    assert {name: s.after for name, s in run.steps.items()} == {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert run.stats.queued == 1 and run.stats.blocked == 3


def test_a_completion_outside_a_workflow_runs_no_statement_more(store: Store) -> None:
    store.enqueue.insert([new()])
    (job,) = claim(store)
    sent: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        finish(store, job)
    finally:
        event.remove(store.db.engine, "before_cursor_execute", capture)
    t = store.tables
    tables = (t.workflows.name, t.workflow_edges.name, t.workflow_events.name)
    assert not [s for s in sent if any(name in s for name in tables)]
    if store.db.driver.backend == "postgresql":
        assert len(sent) == 1, sent


def test_retention_keeps_a_workflow_whole_until_it_is_final_and_ages_out(store: Store, clock: ManualClock) -> None:
    workflow_id = store.workflows.create("kept", [step("a"), step("b", "a")], continuations=continuations()).id
    finish(store, claim(store)[0])
    clock.advance(3600 * 3)
    store.retention.prune(finished=timedelta(hours=1), dead=timedelta(days=7))
    assert store.workflows.get(workflow_id).stats.succeeded == 1, "an active workflow keeps its finished steps"
    a_id = store.workflows.get(workflow_id).steps["a"].job_id
    assert store.control.apply((PURGE,), [a_id]) == [], "a purge spares the jobs of an active workflow"
    finish(store, claim(store)[0])
    clock.advance(3600 * 3)
    store.retention.prune(finished=timedelta(hours=1), dead=timedelta(days=7))
    assert store.workflows.get(workflow_id).stats.total == 2, "its continuations are still live"
    for continuation in claim(store, "on_success", "on_finish"):
        finish(store, continuation)
    clock.advance(3600 * 3)
    store.retention.prune(finished=timedelta(hours=1), dead=timedelta(days=7))
    with pytest.raises(LookupError):
        store.workflows.get(workflow_id)
    assert store.queries.list_jobs() == []
    edges = store.tables.workflow_edges
    with store.db.engine.connect() as conn:
        assert conn.execute(select(edges.c.child_id)).all() == []


def test_steps_added_at_run_time_are_written_with_the_success_and_a_clash_fails_the_later_one(store: Store) -> None:
    workflow_id = store.workflows.create("grow", [step("a"), step("b"), step("end", "a", "b")]).id
    a, b = claim(store)
    thumb = (step("thumb", "a"),)
    store.workflows.check_growth(Growth(workflow_id, "a", thumb, ("end",)))
    store.workflows.check_growth(Growth(workflow_id, "b", thumb))  # both fit the workflow as it is now
    failed_attempt = done(
        a, store, outcome=AttemptOutcome.FAILED, status=JobStatus.RETRYING, error=JobError("E", "m", "")
    )
    failed_attempt.growth = Growth(workflow_id, "a", thumb, ("end",))
    store.leases.complete([failed_attempt])
    assert sorted(store.workflows.get(workflow_id).steps) == ["a", "b", "end"], "a failed attempt adds nothing"
    (a,) = claim(store)
    first = done(a, store)
    first.growth = Growth(workflow_id, "a", thumb, ("end",))
    assert store.leases.complete([first]) == set()
    record = store.workflows.get(workflow_id)
    assert record.steps["thumb"].status is JobStatus.QUEUED and record.steps["end"].after == ["a", "b", "thumb"]
    second = done(b, store)
    second.growth = Growth(workflow_id, "b", thumb)
    assert store.leases.complete([second]) == set()
    record = store.workflows.get(workflow_id)
    assert record.steps["b"].status is JobStatus.FAILED, "its addition no longer fits: the attempt fails"
    assert "already" in (store.queries.get_job(b.id).error.message if store.queries.get_job(b.id) else "")  # type: ignore[union-attr]
    assert record.steps["end"].status is JobStatus.CANCELLED
    (t,) = claim(store)
    finish(store, t)
    assert store.workflows.get(workflow_id).status == "failed"


def test_each_workflow_that_ends_is_counted_once_its_transaction_commits(store: Store) -> None:
    def ended(name: str, outcome: str) -> float:
        return REGISTRY.get_sample_value("jobstead_workflows_total", {"name": name, "outcome": outcome}) or 0.0

    before = ended("counted", "succeeded"), ended("counted", "cancelled")
    workflow_id = store.workflows.create("counted", [step("a")]).id
    finish(store, claim(store)[0])
    store.workflows.cancel(workflow_id)  # final already: nothing ends again
    with store.db.engine.connect() as conn, conn.begin() as tx:
        store.workflows.create("counted", [], connection=conn)  # succeeded at once, then rolled back
        tx.rollback()
    other = store.workflows.create("counted", [step("b")]).id
    store.workflows.cancel(other)
    assert (ended("counted", "succeeded") - before[0], ended("counted", "cancelled") - before[1]) == (1, 1)


def test_a_cancel_does_not_wait_for_a_step_being_completed_right_now(store: Store) -> None:
    """The completion holds its step's row and then waits for the workflow's; a cancel that held the
    workflow's row and waited for the step's was a deadlock (the server aborted one of them)."""
    if not store.db.driver.skip_locked:
        pytest.skip("this database serialises writers whole: no row locks to cross")
    workflow_id = store.workflows.create("crossing", [step("a"), step("b", "a")]).id
    (a,) = claim(store)
    outcome: list[Any] = []
    with store.db.engine.begin() as conn:
        store.db.driver.complete(store.db, conn, [done(a, store)])  # holds a's row, as a completion does

        def cancel() -> None:
            try:
                outcome.append(store.workflows.cancel(workflow_id))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=cancel)
        thread.start()
        thread.join(10)
        assert outcome == [[]], "the cancel went past the step being completed"
        store.workflows.settle(conn, {workflow_id: [(a.id, JobStatus.SUCCEEDED)]})
    record = store.workflows.get(workflow_id)
    assert (record.steps["a"].status, record.steps["b"].status, record.status) == (
        JobStatus.SUCCEEDED,
        JobStatus.CANCELLED,
        "cancelled",
    )


def test_cancel_notes_have_one_writer() -> None:
    """Telling workers to stop jobs now (a NOTIFY of ids, in chunks under PostgreSQL's payload limit)
    lives in ``moves.notify_cancel``, the home of what a move means: it was written twice, in
    ``batches.py`` and in ``workflows.py``."""
    root = Path(jobstead.__file__).parent / "store"
    defined = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "def notify_cancel(" in p.read_text())
    assert defined == ["moves.py"]
    prefixed = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "CANCEL_PREFIX +" in p.read_text())
    assert prefixed == ["moves.py"]


def test_cancelling_many_running_steps_and_members_tells_their_workers_every_id(store: Store) -> None:
    """A workflow's and a batch's cancel tell listening workers each running id, however many:
    the notes are chunked under PostgreSQL's 8000-byte payload limit."""
    if not store.supports_listen:
        pytest.skip("this driver has no wake-ups: workers learn of a cancel at their next renewal")
    workflow_id = store.workflows.create("wide", [step(f"s{i}") for i in range(1_200)]).id
    batch_id, _ = store.batches.create([new() for _ in range(700)])
    running = {job.id for job in claim(store, limit=2_000)}
    assert len(running) == 1_900

    async def scenario() -> set[int]:
        heard: set[int] = set()
        connected, everything = asyncio.Event(), asyncio.Event()

        def cancelled(ids: list[int]) -> None:
            heard.update(ids)
            if heard >= running:
                everything.set()

        task = asyncio.create_task(store.listen([], lambda _: None, connected=connected.set, cancelled=cancelled))
        await asyncio.wait_for(connected.wait(), 15)
        stopping = await asyncio.to_thread(store.workflows.cancel, workflow_id)
        stopping += await asyncio.to_thread(store.batches.cancel, batch_id)
        assert set(stopping) == running
        await asyncio.wait_for(everything.wait(), 15)
        task.cancel()
        return heard

    assert asyncio.run(scenario()) == running
