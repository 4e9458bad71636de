"""The store's contract, on every driver (see conftest)."""

from __future__ import annotations

import ast
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from jobstead.errors import JobError
from jobstead.status import AttemptOutcome, JobStatus
from jobstead.store import ClaimedJob, Completion, CronDefinition, NewJob, Store
from tests.conftest import Target
from tests.store.conftest import ManualClock, handler


def new(handler_name: str = "work", **options: object) -> NewJob:
    options.setdefault("queue", "default")
    args = options.pop("args", {"n": 1})
    return NewJob(handler=handler_name, args=args, **options)  # type: ignore[arg-type]


def claim(
    store: Store, *handlers: str, worker: str = "w1", limit: int = 10, queues: list[str] | None = None
) -> list[ClaimedJob]:
    return store.claims.claim(
        worker_id=worker, handlers=list(handlers or ["work"]), queues=queues, limit=limit, lease_seconds=30
    )


def done(job: ClaimedJob, store: Store, worker: str = "w1", **more: object) -> Completion:
    values: dict[str, object] = {
        "job_id": job.id,
        "owner": worker,
        "attempt": job.attempts,
        "outcome": AttemptOutcome.SUCCEEDED,
        "status": JobStatus.SUCCEEDED,
        "finished_at": store.clock(),
    }
    values.update(more)
    return Completion(**values)  # type: ignore[arg-type]


# -- insert ----------------------------------------------------------------------


def test_insert_returns_records_in_input_order_and_reads_back_the_same(store: Store) -> None:
    records = store.enqueue.insert([new(args={"n": i}) for i in range(5)])
    assert [r.args["n"] for r in records] == [0, 1, 2, 3, 4]
    assert [r.id for r in records] == sorted(r.id for r in records)
    for r in records:
        read = store.queries.get_job(r.id)
        assert read is not None and read.args == r.args and read.status is JobStatus.QUEUED


def test_insert_mixed_options_in_one_call(store: Store, clock: ManualClock) -> None:
    later = clock.now + timedelta(hours=1)
    jobs = [new(args={"n": 0}), new(args={"n": 1}, priority=5, run_at=later), new(args={"n": 2}, queue="mail")]
    records = store.enqueue.insert(jobs)
    assert [(r.args["n"], r.priority, r.queue, r.status) for r in records] == [
        (0, 0, "default", JobStatus.QUEUED),
        (1, 5, "default", JobStatus.SCHEDULED),
        (2, 0, "mail", JobStatus.QUEUED),
    ]


def test_insert_in_the_callers_transaction_rolls_back_with_it(store: Store) -> None:
    with store.db.engine.connect() as conn, conn.begin() as tx:
        store.enqueue.insert([new()], connection=conn)
        tx.rollback()
    assert store.queries.list_jobs() == []


def test_a_live_key_deduplicates_and_a_finished_one_is_free_again(store: Store) -> None:
    store.registry.publish_handlers([handler("work")])
    first = store.enqueue.insert([new(key="k1", args={"n": 1})])[0]
    again = store.enqueue.insert([new(key="k1", args={"n": 2})])[0]
    assert again.id == first.id and again.args == {"n": 1}
    other_handler = store.enqueue.insert([new("other", key="k1")])[0]
    assert other_handler.id != first.id, "keys are per handler"
    (job,) = claim(store)
    assert store.leases.complete([done(job, store)]) == set()
    fresh = store.enqueue.insert([new(key="k1", args={"n": 3})])[0]
    assert fresh.id != first.id and fresh.args == {"n": 3}


def test_handler_defaults_come_from_the_handlers_row(store: Store) -> None:
    store.registry.publish_handlers([handler("mailer", queue="mail")])
    with store.db.engine.connect() as conn:
        assert store.enqueue.handler_defaults(conn, "mailer") == ("mail", 0)
        assert store.enqueue.handler_defaults(conn, "nobody") == ("default", 0)


# -- claim -------------------------------------------------------------------------


def test_claims_take_priority_then_run_at_and_never_future_jobs(store: Store, clock: ManualClock) -> None:
    low = store.enqueue.insert([new(args={"n": "low"})])[0]
    clock.advance(1)
    high = store.enqueue.insert([new(args={"n": "high"}, priority=9)])[0]
    future = store.enqueue.insert([new(args={"n": "future"}, run_at=clock.now + timedelta(minutes=5))])[0]
    claimed = claim(store)
    assert [j.id for j in claimed] == [high.id, low.id]
    assert all(j.attempts == 1 for j in claimed)
    clock.advance(301)
    assert [j.id for j in claim(store)] == [future.id]


def test_queues_are_served_in_the_order_given_and_others_left(store: Store) -> None:
    a = store.enqueue.insert([new(queue="a")])[0]
    b = store.enqueue.insert([new(queue="b")])[0]
    store.enqueue.insert([new(queue="c")])
    assert [j.id for j in claim(store, queues=["b", "a"], limit=1)] == [b.id]
    assert [j.id for j in claim(store, queues=["b", "a"])] == [a.id]
    assert claim(store, queues=["b", "a"]) == []


def test_unknown_handlers_are_never_claimed(store: Store) -> None:
    store.enqueue.insert([new("theirs")])
    assert claim(store, "mine") == []
    assert store.queries.list_jobs()[0].status is JobStatus.QUEUED


def test_a_job_is_claimed_once_by_concurrent_claimers(store: Store) -> None:
    store.enqueue.insert([new(args={"n": i}) for i in range(40)])
    taken: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            got = claim(store, worker=name, limit=3)
            if not got:
                return
            with lock:
                taken.extend(j.id for j in got)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(taken) == 40 and len(set(taken)) == 40


def test_the_global_limit_counts_running_jobs_across_claimers(store: Store) -> None:
    store.registry.publish_handlers([handler("work", concurrency=3)])
    store.enqueue.insert([new(args={"n": i}) for i in range(10)])
    first = claim(store, worker="w1", limit=2)
    second = claim(store, worker="w2", limit=5)
    assert (len(first), len(second)) == (2, 1)
    assert claim(store, worker="w3") == []
    store.leases.complete([done(first[0], store, worker="w1")])
    assert len(claim(store, worker="w3")) == 1


def test_pauses_stop_claims_by_handler_queue_or_everything(store: Store) -> None:
    store.enqueue.insert([new(), new("other"), new(queue="mail")])
    store.control.pause("handler", "work")
    store.control.pause("queue", "mail")
    assert [j.handler for j in claim(store, "work", "other")] == ["other"]
    store.control.resume("handler", "work")
    store.control.pause("all")
    assert claim(store, "work") == []
    store.control.resume("all")
    assert [j.queue for j in claim(store, "work")] == ["default"]
    store.control.resume("queue", "mail")
    assert [j.queue for j in claim(store, "work")] == ["mail"]


# -- complete, renew, checkpoint: the lease compare-and-set ----------------------


def test_completion_applies_only_while_the_lease_holds(store: Store) -> None:
    store.enqueue.insert([new()])
    (job,) = claim(store)
    assert store.leases.complete([done(job, store, worker="someone-else")]) == {job.id}
    assert store.leases.complete([done(job, store, attempt=job.attempts + 1)]) == {job.id}
    assert store.leases.complete([done(job, store, result={"ok": True})]) == set()
    record = store.queries.get_job(job.id)
    assert record is not None
    assert (record.status, record.result, record.lease_owner) == (JobStatus.SUCCEEDED, {"ok": True}, "w1")
    assert record.finished_at is not None
    assert store.leases.complete([done(job, store)]) == {job.id}, "a finished job takes no second completion"


def test_a_failure_logs_its_attempt_and_schedules_the_retry(store: Store, clock: ManualClock) -> None:
    store.enqueue.insert([new()])
    (job,) = claim(store)
    error = JobError(type="ValueError", message="boom", traceback="tb")
    retry_at = clock.now + timedelta(seconds=10)
    store.leases.complete(
        [done(job, store, outcome=AttemptOutcome.FAILED, status=JobStatus.RETRYING, error=error, run_at=retry_at)]
    )
    record = store.queries.get_job(job.id)
    assert record is not None
    assert (record.status, record.run_at, record.finished_at, record.lease_owner) == (
        JobStatus.RETRYING,
        retry_at,
        None,
        None,
    )
    assert [(a.attempt, a.outcome) for a in store.queries.attempts(job.id)] == [(1, AttemptOutcome.FAILED)]
    assert claim(store) == [], "not before its retry time"
    clock.advance(10)
    (again,) = claim(store)
    assert again.attempts == 2


def test_many_completions_in_one_batch_each_judged_on_its_own_lease(store: Store) -> None:
    store.enqueue.insert([new(args={"n": i}) for i in range(6)])
    jobs = claim(store)
    stale = done(jobs[0], store, attempt=99)
    batch = [stale, *(done(j, store) for j in jobs[1:])]
    assert store.leases.complete(batch) == {jobs[0].id}
    statuses = {r.id: r.status for r in store.queries.list_jobs()}
    assert statuses[jobs[0].id] is JobStatus.RUNNING
    assert all(statuses[j.id] is JobStatus.SUCCEEDED for j in jobs[1:])


def test_renewal_extends_only_the_owners_leases_and_reports_cancellations(store: Store, clock: ManualClock) -> None:
    store.enqueue.insert([new(args={"n": i}) for i in range(2)])
    mine = claim(store, worker="w1", limit=1)[0]
    theirs = claim(store, worker="w2", limit=1)[0]
    store.control.cancel(mine.id)
    clock.advance(20)
    report = store.leases.renew("w1", 30, [mine.id, theirs.id])
    assert report.held == {mine.id} and report.cancel_requested == {mine.id}
    record = store.queries.get_job(mine.id)
    assert record is not None and record.lease_expires_at == clock.now + timedelta(seconds=30)


def test_renewal_of_more_ids_than_a_statement_takes_parameters(store: Store, clock: ManualClock) -> None:
    """A worker holding 70,000 jobs (a deep queue's unwritten completions) keeps every lease.

    The renewal sent one parameter per id: past 65,535 PostgreSQL refused the
    statement, every lease of that worker expired and its jobs ran twice.
    """
    store.enqueue.insert([new(args={"n": i}) for i in range(3)])
    held = [j.id for j in claim(store, worker="w1", limit=3)]
    unknown = range(10_000_000, 10_070_000)  # ids no row has: only their number matters
    clock.advance(20)
    report = store.leases.renew("w1", 30, [*held, *unknown])
    assert report.held == set(held)
    for job_id in held:
        record = store.queries.get_job(job_id)
        assert record is not None and record.lease_expires_at == clock.now + timedelta(seconds=30)


def test_checkpoints_are_written_only_under_the_lease(store: Store) -> None:
    store.enqueue.insert([new()])
    (job,) = claim(store)
    assert store.leases.checkpoint(job.id, "w1", job.attempts, {"step": 2})
    assert not store.leases.checkpoint(job.id, "intruder", job.attempts, {"step": 99})
    record = store.queries.get_job(job.id)
    assert record is not None and record.checkpoint == {"step": 2}


def test_release_hands_a_job_back_without_spending_the_attempt(store: Store) -> None:
    store.enqueue.insert([new()])
    (job,) = claim(store)
    assert store.leases.release(job.id, "w1", job.attempts)
    record = store.queries.get_job(job.id)
    assert record is not None and (record.status, record.attempts) == (JobStatus.QUEUED, 0)
    assert [a.outcome for a in store.queries.attempts(job.id)] == [AttemptOutcome.RELEASED]
    assert not store.leases.release(job.id, "w1", job.attempts), "only once"


# -- rescue -----------------------------------------------------------------------------


def test_rescue_takes_back_only_expired_leases_and_logs_the_attempt_lost(store: Store, clock: ManualClock) -> None:
    store.registry.publish_handlers([handler("work", max_attempts=2)])
    store.enqueue.insert([new(args={"n": i}) for i in range(2)])
    dead_one, live_one = claim(store, worker="dead", limit=1)[0], claim(store, worker="live", limit=1)[0]
    clock.advance(20)
    store.leases.renew("live", 30, [live_one.id])
    clock.advance(15)  # dead's lease (30 s) expired; live's runs until +50
    assert store.leases.rescue_expired() == [dead_one.id]
    record = store.queries.get_job(dead_one.id)
    assert record is not None and record.status is JobStatus.RETRYING
    assert [a.outcome for a in store.queries.attempts(dead_one.id)] == [AttemptOutcome.LOST]
    assert store.leases.complete([done(dead_one, store, worker="dead")]) == {dead_one.id}, "the dead cannot finish"
    # Its next claim is attempt 2 of 2: lost again, it is dead.
    (again,) = claim(store, worker="dead2", limit=1)
    assert again.attempts == 2
    clock.advance(31)
    store.leases.renew("live", 30, [live_one.id])
    assert store.leases.rescue_expired() == [again.id]
    final = store.queries.get_job(again.id)
    assert final is not None and final.status is JobStatus.DEAD


# -- cancel and retry ----------------------------------------------------------------


def test_cancel_is_immediate_for_waiting_jobs_and_a_request_for_running_ones(store: Store) -> None:
    waiting, running = store.enqueue.insert([new(args={"n": 1}), new(args={"n": 2}, priority=5)])
    claim(store, limit=1)
    assert store.control.cancel(waiting.id).status is JobStatus.CANCELLED
    requested = store.control.cancel(running.id)
    assert requested.status is JobStatus.RUNNING and requested.cancel_requested


def test_retry_requeues_a_dead_job_with_one_more_attempt(store: Store) -> None:
    store.registry.publish_handlers([handler("work", max_attempts=1)])
    store.enqueue.insert([new()])
    (job,) = claim(store)
    error = JobError(type="E", message="m", traceback="")
    store.leases.complete([done(job, store, outcome=AttemptOutcome.FAILED, status=JobStatus.DEAD, error=error)])
    again = store.control.retry(job.id)
    assert again.status is JobStatus.QUEUED
    assert len(claim(store)) == 1


# -- retention -----------------------------------------------------------------------------


def test_retention_prunes_old_successes_and_keeps_failures_longer(store: Store, clock: ManualClock) -> None:
    store.enqueue.insert([new(args={"n": i}) for i in range(3)])
    ok, failed = claim(store, limit=2)
    error = JobError(type="E", message="m", traceback="")
    store.leases.complete(
        [done(ok, store), done(failed, store, outcome=AttemptOutcome.FAILED, status=JobStatus.DEAD, error=error)]
    )
    clock.advance(3600 * 2)
    deleted = store.retention.prune(finished=timedelta(hours=1), dead=timedelta(days=7))
    assert deleted == 1
    left = {r.id: r.status for r in store.queries.list_jobs()}
    assert ok.id not in left and left[failed.id] is JobStatus.DEAD and len(left) == 2
    assert store.retention.prune(finished=None, dead=None) == 0


# -- crons ------------------------------------------------------------------------------------


def test_a_fire_time_defers_exactly_one_job_however_many_fire_it(store: Store, clock: ManualClock) -> None:
    store.registry.publish_handlers([handler("work", queue="cronq")])
    store.crons.put(CronDefinition(name="tick", schedule="* * * * *", handler="work", source="database"))
    fire_at = clock.now.replace(second=0) + timedelta(minutes=1)
    clock.now = fire_at + timedelta(seconds=1)
    results = [store.crons.fire("tick", fire_at, schedule="* * * * *", timezone="UTC") for _ in range(3)]
    assert [r.outcome for r in results] == ["fired", "stale", "stale"]
    (job,) = store.queries.list_jobs()
    assert job.id == results[0].job_id and job.queue == "cronq", "handler defaults, resolved by the enqueuer"
    assert job.metadata == {"cron": "tick", "cron_fire_at": fire_at.isoformat()}
    cron = store.crons.get("tick")
    assert cron is not None and cron.last_job_id == job.id


def test_concurrent_schedulers_fire_once(store: Store, clock: ManualClock) -> None:
    store.crons.put(CronDefinition(name="tick", schedule="* * * * *", handler="work", source="database"))
    fire_at = clock.now.replace(second=0) + timedelta(minutes=1)
    clock.now = fire_at
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def scheduler() -> None:
        barrier.wait()
        outcomes.append(store.crons.fire("tick", fire_at, schedule="* * * * *", timezone="UTC").outcome)

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["fired", "stale", "stale", "stale"]
    assert len(store.queries.list_jobs()) == 1


def test_a_fire_computed_from_an_old_schedule_is_stale(store: Store, clock: ManualClock) -> None:
    store.crons.put(CronDefinition(name="tick", schedule="* * * * *", handler="work", source="database"))
    fire_at = clock.now.replace(second=0) + timedelta(minutes=1)
    clock.now = fire_at
    assert store.crons.fire("tick", fire_at, schedule="*/5 * * * *", timezone="UTC").outcome == "stale"
    assert store.queries.list_jobs() == []


def test_overlap_skip_consumes_the_fire_while_the_previous_job_lives(store: Store, clock: ManualClock) -> None:
    store.crons.put(
        CronDefinition(name="tick", schedule="* * * * *", handler="work", overlap="skip", source="database")
    )
    first_at = clock.now.replace(second=0) + timedelta(minutes=1)
    clock.now = first_at
    assert store.crons.fire("tick", first_at, schedule="* * * * *", timezone="UTC").outcome == "fired"
    clock.advance(60)
    second = store.crons.fire("tick", first_at + timedelta(minutes=1), schedule="* * * * *", timezone="UTC")
    assert second.outcome == "overlap"
    assert len(store.queries.list_jobs()) == 1


# -- maintenance turns -------------------------------------------------------------------------------


def test_one_process_takes_each_maintenance_turn(store: Store, clock: ManualClock) -> None:
    every = timedelta(seconds=5)
    assert store.turns.take("rescue", every, by="a")
    assert not store.turns.take("rescue", every, by="b")
    assert store.turns.take("retention", every, by="b"), "duties have turns of their own"
    clock.advance(5)
    takers = [store.turns.take("rescue", every, by=name) for name in ("b", "c")]
    assert takers == [True, False]
    assert store.turns.next_turns()["rescue"][0] == "b"


def test_concurrent_first_turns_have_one_winner(store: Store) -> None:
    wins: list[bool] = []
    barrier = threading.Barrier(4)

    def take(name: str) -> None:
        barrier.wait()
        wins.append(store.turns.take("fresh", timedelta(seconds=60), by=name))

    threads = [threading.Thread(target=take, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(wins) == [False, False, False, True]


# -- the driver's own contract -----------------------------------------------------------------------


def test_the_driver_describes_its_database_without_the_password(store: Store) -> None:
    text = store.describe()
    assert text and "@" not in text
    password = store.db.engine.url.password
    if password:
        assert str(password) not in text


def test_transient_errors_are_told_from_permanent_ones(store: Store) -> None:
    from sqlalchemy.exc import OperationalError

    assert store.is_transient(OperationalError("SELECT 1", {}, Exception("connection refused")))
    assert not store.is_transient(ValueError("a bug"))


def test_wakeups_reach_a_listener_where_the_driver_has_them(store: Store) -> None:
    import asyncio

    if not store.supports_listen:
        pytest.skip("this driver has no wake-ups: workers poll")

    async def scenario() -> list[str]:
        heard: list[str] = []
        connected = asyncio.Event()
        woken = asyncio.Event()

        def wake(queue: str) -> None:
            heard.append(queue)
            if queue == "mail":
                woken.set()

        task = asyncio.create_task(store.listen(["mail"], wake, connected=connected.set))
        await asyncio.wait_for(connected.wait(), 15)
        await asyncio.to_thread(store.enqueue.insert, [new(queue="other"), new(queue="mail")])
        await asyncio.wait_for(woken.wait(), 15)
        task.cancel()
        return heard

    heard = asyncio.run(scenario())
    assert "mail" in heard and "other" not in heard


def test_nothing_outside_the_drivers_asks_which_database_it_is_on() -> None:
    """The layering rule, checked: database names and dialect branches live in store/drivers only."""
    from pathlib import Path

    import jobstead

    root = Path(jobstead.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "drivers" in path.parts or "migrations" in path.parts:
            continue
        text = path.read_text()
        for needle in (
            "is_postgres",
            "is_sqlite",
            "dialect.name",
            "get_backend_name",
            "pg_notify",
            "postgresql.insert",
        ):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert offenders == []


#: SQLAlchemy's statement builders that write (and ``text``, raw SQL that could).
WRITING_CONSTRUCTS = frozenset({"insert", "update", "delete", "text"})


def writes_outside_the_store(source: str) -> list[str]:
    """Where ``source`` builds a write to a table (or raw SQL): ``line: what``.

    Read with ``ast``, not grepped, so ``store.enqueue.insert(jobs)`` (a store
    operation), ``dict.update(x)`` and ``sys.path.insert(0, p)`` are not writes;
    ``from sqlalchemy import delete``, ``table.insert()`` and
    ``sa.text("...")`` are.
    """
    tree = ast.parse(source)
    sqlalchemy_names = {
        alias.asname or alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.split(".")[0] == "sqlalchemy"
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            found += [f"{node.lineno}: imports {a.name}" for a in node.names if a.name in WRITING_CONSTRUCTS]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, node.func.value
            if name in {"insert", "update", "delete"} and not node.args and not node.keywords:
                found.append(f"{node.lineno}: .{name}()")  # Table.insert(): a table's own writer
            elif name in WRITING_CONSTRUCTS and isinstance(owner, ast.Name) and owner.id in sqlalchemy_names:
                found.append(f"{node.lineno}: {owner.id}.{name}(...)")
            elif name == "exec_driver_sql":
                found.append(f"{node.lineno}: exec_driver_sql(...)")
    return sorted(found, key=lambda where: int(where.split(":")[0]))


def test_nothing_outside_the_store_writes_to_jobsteads_tables() -> None:
    """Every write goes through ``store/`` (and the schema through ``migrations/``): no other
    module of the runtime or the operator builds an INSERT, UPDATE, DELETE or raw SQL.
    Read-only ``select``s may stay where they are used (the dashboard's lists)."""
    from pathlib import Path

    import jobstead

    runtime = Path(jobstead.__file__).parent
    operator = runtime.parent.parent / "operator" / "jobstead_operator"
    offenders = [
        f"{path.relative_to(runtime.parent.parent)}:{where}"
        for root in (runtime, operator)
        for path in sorted(root.rglob("*.py"))
        if not ({"store", "migrations"} & set(path.relative_to(root).parts))
        for where in writes_outside_the_store(path.read_text())
    ]
    assert offenders == []


def test_the_write_checker_sees_a_write_and_only_a_write() -> None:
    """The rule above can fail: each way of writing is reported, store calls and dict updates are not."""
    source = """
import sqlalchemy as sa
from sqlalchemy import delete, select
from sqlalchemy.sql import text

def go(store, conn, tables, d, jobs):
    store.enqueue.insert(jobs)
    store.control.delete(1)
    d.update({"a": 1})
    conn.execute(select(tables.jobs))
    conn.execute(tables.audit.insert().values(actor="x"))
    conn.execute(sa.update(tables.jobs))
    conn.exec_driver_sql("DELETE FROM jobs")
"""
    assert writes_outside_the_store(source) == [
        "3: imports delete",
        "4: imports text",
        "11: .insert()",
        "12: sa.update(...)",
        "13: exec_driver_sql(...)",
    ]


def test_the_status_column_is_what_the_records_say(store: Store) -> None:
    """A guard for drivers that store enums their own way: raw rows read back as JobStatus values."""
    store.enqueue.insert([new()])
    jobs = store.tables.jobs
    with store.db.engine.connect() as conn:
        assert conn.execute(select(jobs.c.status)).scalar() == JobStatus.QUEUED.value


def test_the_store_tells_time_by_the_database_server(target: Target) -> None:
    """With no clock injected, time-critical decisions use the server's clock, not this host's."""
    from jobstead.store.database_clock import DatabaseClock

    store = Store.connect(target.url, schema=target.schema)
    store.migrate()
    try:
        if not store.db.driver.server_clock:
            assert not isinstance(store.clock, DatabaseClock), "an embedded database shares this host's clock"
            return
        assert isinstance(store.clock, DatabaseClock)
        with store.db.engine.connect() as conn:
            server = store.db.driver.server_now(conn)
        assert server is not None
        assert abs((store.clock() - server).total_seconds()) < 1
        # Every operation goes by it: pretend this host's clock is 100 s behind the server's.
        import time as _time

        store.clock._offset += timedelta(seconds=100)  # type: ignore[attr-defined]
        store.clock._measured_at = _time.monotonic()  # type: ignore[attr-defined]
        record = store.enqueue.insert([new()])[0]
        assert (record.created_at - server).total_seconds() > 90
    finally:
        store.close()


def test_the_attempts_log_keeps_the_success_that_follows_a_release(store: Store) -> None:
    """Regression: a released attempt carries the number of the attempt that follows it, and the
    success (which lives in the job row) was only added when no logged attempt had that number."""
    store.enqueue.insert([new()])
    (job,) = claim(store)
    assert store.leases.release(job.id, "w1", job.attempts)
    (again,) = claim(store, worker="w2")
    assert again.attempts == 1, "a release does not spend the attempt"
    store.leases.complete([done(again, store, worker="w2")])
    log = store.queries.attempts(job.id)
    assert [(a.attempt, a.outcome, a.worker_id) for a in log] == [
        (1, AttemptOutcome.RELEASED, "w1"),
        (1, AttemptOutcome.SUCCEEDED, "w2"),
    ]


def test_a_deduplication_key_is_scoped_to_its_tenant(store: Store) -> None:
    """Regression: the unique index was (handler, key), so tenant globex got tenant acme's job."""
    acme = store.enqueue.insert([new(key="invoice-1", tenant="acme", args={"who": "acme"})])[0]
    globex = store.enqueue.insert([new(key="invoice-1", tenant="globex", args={"who": "globex"})])[0]
    assert globex.id != acme.id and globex.args == {"who": "globex"} and globex.tenant == "globex"
    untenanted = store.enqueue.insert([new(key="invoice-1", args={"who": "nobody"})])[0]
    assert untenanted.id not in (acme.id, globex.id)
    assert store.enqueue.insert([new(key="invoice-1", args={"who": "again"})])[0].id == untenanted.id
    assert store.enqueue.insert([new(key="invoice-1", tenant="acme", args={"who": "x"})])[0].id == acme.id


# -- batches -------------------------------------------------------------------------------------------


def _finish(store: Store, job: ClaimedJob, status: JobStatus, worker: str = "w1") -> None:
    outcome = {
        JobStatus.SUCCEEDED: AttemptOutcome.SUCCEEDED,
        JobStatus.CANCELLED: AttemptOutcome.CANCELLED,
    }.get(status, AttemptOutcome.FAILED)
    error = None if status in (JobStatus.SUCCEEDED, JobStatus.CANCELLED) else JobError("E", "m", "")
    assert (
        store.leases.complete([done(job, store, worker=worker, outcome=outcome, status=status, error=error)]) == set()
    )


def _continuations() -> dict[str, NewJob]:
    return {event: new(f"on_{event}", args={"event": event}) for event in ("success", "finish", "failure")}


def test_a_batch_fires_success_and_finish_once_when_its_last_member_succeeds(store: Store) -> None:
    batch_id, members = store.batches.create(
        [new(args={"n": i}) for i in range(3)], tenant="acme", metadata={"k": "v"}, continuations=_continuations()
    )
    assert all(m.batch_id == batch_id and m.tenant == "acme" for m in members)
    jobs = claim(store)
    for job in jobs[:2]:
        _finish(store, job, JobStatus.SUCCEEDED)
    record = store.batches.get(batch_id)
    assert record.status == "active" and record.continuations == ()
    assert (record.stats.total, record.stats.succeeded, record.stats.running) == (3, 2, 1)
    _finish(store, jobs[2], JobStatus.SUCCEEDED)
    record = store.batches.get(batch_id)
    assert record.status == "succeeded" and record.finished_at is not None
    assert sorted(e for e, _ in record.continuations) == ["finish", "success"]
    fired = {e: store.queries.get_job(j) for e, j in record.continuations}
    assert all(job is not None and job.batch_id == batch_id and job.tenant == "acme" for job in fired.values())
    assert record.stats.total == 3, "continuations are not members"
    assert record.to_json()["metadata"] == {"k": "v"}


def test_on_failure_fires_once_at_the_first_failure_and_the_batch_ends_failed(store: Store) -> None:
    batch_id, _ = store.batches.create([new(args={"n": i}) for i in range(3)], continuations=_continuations())
    a, b, c = claim(store)
    _finish(store, a, JobStatus.DEAD)
    assert [e for e, _ in store.batches.get(batch_id).continuations] == ["failure"]
    _finish(store, b, JobStatus.FAILED)
    _finish(store, c, JobStatus.SUCCEEDED)
    record = store.batches.get(batch_id)
    assert record.status == "failed"
    assert sorted(e for e, _ in record.continuations) == ["failure", "finish"], "no success, failure once"


def test_a_retry_that_succeeds_counts_as_success(store: Store, clock: ManualClock) -> None:
    batch_id, _ = store.batches.create([new()], continuations=_continuations())
    (job,) = claim(store)
    error = JobError("E", "m", "")
    store.leases.complete(
        [done(job, store, outcome=AttemptOutcome.FAILED, status=JobStatus.RETRYING, error=error, run_at=clock.now)]
    )
    assert store.batches.get(batch_id).continuations == ()
    (again,) = claim(store)
    _finish(store, again, JobStatus.SUCCEEDED)
    record = store.batches.get(batch_id)
    assert record.status == "succeeded" and sorted(e for e, _ in record.continuations) == ["finish", "success"]


def test_an_empty_batch_is_complete_at_once(store: Store) -> None:
    batch_id, members = store.batches.create([], continuations=_continuations())
    record = store.batches.get(batch_id)
    assert members == [] and record.status == "succeeded"
    assert sorted(e for e, _ in record.continuations) == ["finish", "success"]


def test_a_batch_is_written_in_the_callers_transaction(store: Store) -> None:
    with store.db.engine.connect() as conn, conn.begin() as tx:
        batch_id, _ = store.batches.create([new()], continuations=_continuations(), connection=conn)
        tx.rollback()
    assert store.queries.list_jobs() == []
    with pytest.raises(LookupError):
        store.batches.get(batch_id)


def test_cancel_ends_waiting_members_at_once_and_asks_running_ones_to_stop(store: Store) -> None:
    batch_id, _ = store.batches.create([new(args={"n": i}) for i in range(3)], continuations=_continuations())
    (running,) = claim(store, limit=1)
    assert store.batches.cancel(batch_id) == [running.id]
    record = store.batches.get(batch_id)
    assert (record.stats.cancelled, record.stats.running, record.status) == (2, 1, "active")
    report = store.leases.renew("w1", 30, [running.id])
    assert report.cancel_requested == {running.id}
    _finish(store, running, JobStatus.CANCELLED)
    record = store.batches.get(batch_id)
    assert record.status == "cancelled" and [e for e, _ in record.continuations] == ["finish"]
    assert store.batches.cancel(batch_id) == [], "cancelling a completed batch is a no-op"


def test_append_after_completion_adds_jobs_but_fires_nothing_twice(store: Store) -> None:
    batch_id, _ = store.batches.create([new()], continuations=_continuations())
    _finish(store, claim(store)[0], JobStatus.SUCCEEDED)
    assert store.batches.get(batch_id).status == "succeeded"
    added = store.batches.append(batch_id, [new(args={"n": 99})])
    assert added[0].batch_id == batch_id
    assert store.batches.get(batch_id).status == "active"
    _finish(store, claim(store, "work")[0], JobStatus.SUCCEEDED)
    record = store.batches.get(batch_id)
    assert record.status == "succeeded" and record.stats.total == 2
    assert sorted(e for e, _ in record.continuations) == ["finish", "success"]


def test_retrying_a_dead_member_reopens_the_batch_without_refiring(store: Store) -> None:
    batch_id, _ = store.batches.create([new()], continuations=_continuations())
    (job,) = claim(store)
    _finish(store, job, JobStatus.DEAD)
    assert store.batches.get(batch_id).status == "failed"
    store.control.retry(job.id)
    assert store.batches.get(batch_id).status == "active"
    _finish(store, claim(store, "work")[0], JobStatus.SUCCEEDED)
    record = store.batches.get(batch_id)
    assert record.status == "succeeded" and record.stats.succeeded == 1
    assert sorted(e for e, _ in record.continuations) == ["failure", "finish", "success"]
    assert len(record.continuations) == 3, "finish fired once, before the retry"


def test_the_last_two_members_finishing_at_once_fire_one_continuation(store: Store) -> None:
    for _ in range(8):
        batch_id, _ = store.batches.create([new(args={"n": i}) for i in range(2)], continuations=_continuations())
        first = claim(store, worker="w1", limit=1)[0]
        second = claim(store, worker="w2", limit=1)[0]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def finish(
            job: ClaimedJob, worker: str, barrier: threading.Barrier = barrier, errors: list[BaseException] = errors
        ) -> None:
            barrier.wait()
            try:
                _finish(store, job, JobStatus.SUCCEEDED, worker=worker)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=finish, args=a) for a in ((first, "w1"), (second, "w2"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        record = store.batches.get(batch_id)
        assert sorted(e for e, _ in record.continuations) == ["finish", "success"]
        events = store.tables.batch_events
        with store.db.engine.connect() as conn:
            count = conn.execute(select(events.c.event).where(events.c.batch_id == batch_id)).all()
        assert len(count) == 2
        for _, job_id in record.continuations:
            store.control.cancel(job_id)


def test_tenant_batch_stats_and_listing(store: Store) -> None:
    a, _ = store.batches.create([new(), new()], tenant="acme")
    store.batches.create([new()], tenant="globex")
    b, _ = store.batches.create([new()], tenant="acme")
    assert [r.id for r in store.batches.list_batches(tenant="acme")] == [b, a]
    assert store.batches.tenant_stats("acme").total == 3
    assert store.batches.tenant_stats("globex").queued == 1
    assert [r.id for r in store.batches.list_batches(tenant="acme", limit=1, offset=1)] == [a]
    assert store.batches.list_batches(tenant="acme", status="succeeded") == []


# -- per-tenant limits -------------------------------------------------------------------------------------


def test_a_tenant_limit_caps_each_tenant_and_lets_the_others_through(store: Store, clock: ManualClock) -> None:
    from dataclasses import replace

    store.registry.publish_handlers([replace(handler("work", concurrency=6), tenant_concurrency=2)])
    store.enqueue.insert([new(tenant="big", args={"n": i}) for i in range(20)])
    clock.advance(1)  # the small tenants' jobs come after the big backlog
    store.enqueue.insert([new(tenant=t, args={"n": i}) for t in ("a", "b") for i in range(3)])
    store.enqueue.insert([new(args={"n": "no tenant"})])
    first = claim(store, worker="w1", limit=10)
    by_tenant: dict[str | None, int] = {}
    for job in first:
        by_tenant[job.tenant] = by_tenant.get(job.tenant, 0) + 1
    assert by_tenant == {"big": 2, "a": 2, "b": 2}, "the global limit (6) is full; each tenant got its 2"
    store.leases.complete([done(j, store, worker="w1") for j in first if j.tenant == "a"])
    second = claim(store, worker="w2", limit=10)
    assert sorted(j.tenant or "-" for j in second) == ["-", "a"], "a's freed slots: one a, then the untenanted job"


def test_retention_keeps_a_batch_whole_until_it_ages_out(store: Store, clock: ManualClock) -> None:
    batch_id, _ = store.batches.create([new(args={"n": i}) for i in range(2)], continuations=_continuations())
    a, b = claim(store)
    _finish(store, a, JobStatus.SUCCEEDED)
    clock.advance(3600 * 3)
    store.retention.prune(finished=timedelta(hours=1), dead=timedelta(days=7))
    assert store.batches.get(batch_id).stats.succeeded == 1, "an active batch keeps its finished members"
    _finish(store, b, JobStatus.SUCCEEDED)  # complete: success and finish continuations are deferred
    clock.advance(3600 * 3)
    store.retention.prune(finished=timedelta(hours=1), dead=timedelta(days=7))
    assert store.batches.get(batch_id).stats.total == 2, "its continuations are still live"
    for continuation in claim(store, "on_success", "on_finish"):
        _finish(store, continuation, JobStatus.SUCCEEDED)
    clock.advance(3600 * 3)
    store.retention.prune(finished=timedelta(hours=1), dead=timedelta(days=7))
    with pytest.raises(LookupError):
        store.batches.get(batch_id)
    assert [j for j in store.queries.list_jobs() if j.batch_id == batch_id] == []


def test_created_at_reads_back_exactly_as_written(store: Store) -> None:
    """The token a Deferred checks its row against (SQLite reuses the ids of rolled-back rows)."""
    records = [
        *store.enqueue.insert([new()]),
        *store.enqueue.insert([new(args={"n": i}) for i in range(3)]),
        *store.enqueue.insert([new(key="k")]),
    ]
    with store.db.engine.begin() as conn:
        records += store.enqueue.insert([new(args={"n": 9})], connection=conn)
    for record in records:
        read = store.queries.get_job(record.id)
        assert read is not None and read.created_at == record.created_at
