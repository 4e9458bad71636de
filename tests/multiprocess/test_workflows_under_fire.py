"""Workflows through kill -9 (issue 33): every step released once, none before its parents, continuations once.

200 workflows shaped as a diamond of 10 steps (1 -> 8 -> 1) whose root adds
one more step as it runs (after itself, before the join), 4 worker
processes, 10 random kill -9 (each killed worker is replaced). Printed: what
ran, what ran again and why, and whether the stats equal a recount.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobstead import App, JobStatus
from jobstead.status import AttemptOutcome
from tests.apps.diamonds import STARTS_ENV
from tests.conftest import Target
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

WORKFLOWS, MIDDLE, WORKERS, KILLS = 200, 8, 4, 10
WORKER = [
    "worker",
    "--app",
    "tests.apps.diamonds:app",
    "--lease-seconds",
    "2",
    "--poll-interval",
    "0.1",
    "--concurrency",
    "10",
]


@pytest.fixture
def target(postgres_target: Target) -> Target:
    return postgres_target


def test_steps_are_released_exactly_once_through_kill_9(target: Target, tmp_path: Path) -> None:
    from tests.apps import diamonds

    app = App(target.url, schema=target.schema)
    for name in ("step", "root", "continuation"):
        h = diamonds.app.get_handler(name)
        app.handler(name=name, max_attempts=h.max_attempts, retry=h.retry)(h.func)
    step, root, continuation = (app.get_handler(n) for n in ("step", "root", "continuation"))
    runs = []
    for n in range(WORKFLOWS):
        wf = app.workflow(
            "diamond",
            tenant=f"t{n % 3}",
            on_success=continuation.job(event="success"),
            on_finish=continuation.job(event="finish"),
        )
        wf.add("root", root.job())
        for i in range(MIDDLE):
            wf.add(f"m{i}", step.job(n=i), after=["root"])
        wf.add("join", step.job(n=-1), after=[f"m{i}" for i in range(MIDDLE)])
        runs.append(wf.defer().id)
    starts = tmp_path / "starts.log"
    env = {**target.env(), STARTS_ENV: str(starts)}
    workers = [spawn_cli(WORKER, env, tmp_path / f"w{i}.log") for i in range(WORKERS)]
    rng = random.Random(33)
    deadline = time.monotonic() + 60
    while (not starts.exists() or len(starts.read_text().splitlines()) < 100) and time.monotonic() < deadline:
        time.sleep(0.05)  # the kills land on workers that run steps, not on ones still starting
    kills = 0
    killed: set[int] = set()
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if kills < KILLS:
                time.sleep(rng.uniform(0.2, 0.8))
                victim = rng.randrange(WORKERS)
                killed.add(workers[victim].pid)
                os.kill(workers[victim].pid, signal.SIGKILL)
                workers[victim].wait(10)
                kills += 1
                workers[victim] = spawn_cli(WORKER, env, tmp_path / f"w{victim}-{kills}.log")
                continue
            if _all_final(app):
                break
            time.sleep(0.5)
        assert _all_final(app), "every step and continuation reaches a final state"
    finally:
        for w in workers:
            stop(w)

    store = app.store
    t = store.tables
    jobs, edges, attempts = t.jobs, t.workflow_edges, t.attempts
    with store.db.engine.connect() as conn:
        rows = conn.execute(select(jobs.c.id, jobs.c.workflow_id, jobs.c.step, jobs.c.finished_at)).all()
        parents_of = defaultdict(list)
        for parent_id, child_id in conn.execute(select(edges.c.parent_id, edges.c.child_id)).all():
            parents_of[child_id].append(parent_id)
        lost_by = list(
            conn.execute(select(attempts.c.worker_id).where(attempts.c.outcome == AttemptOutcome.LOST.value)).scalars()
        )
        unfinished = set(conn.execute(select(t.workflows.c.unfinished)).scalars())
        fired = Counter(conn.execute(select(t.workflow_events.c.workflow_id)).scalars())
    finished_at = {r.id: r.finished_at for r in rows}
    id_of = {(r.workflow_id, r.step): r.id for r in rows if r.step is not None}
    continuations = Counter(r.workflow_id for r in rows if r.step is None)
    lost_by_live = [w for w in lost_by if int(str(w).split("-")[-2]) not in killed]
    early: list[str] = []
    started: Counter[tuple[int, str]] = Counter()
    for line in starts.read_text().splitlines():
        workflow_id, what, at, _pid, _attempt = line.split()
        started[(int(workflow_id), what)] += 1
        if what.startswith("on_"):
            continue
        job_id = id_of[(int(workflow_id), what)]
        began = datetime.fromtimestamp(float(at), UTC)
        if any(finished_at[p] is None or began < finished_at[p] for p in parents_of[job_id]):
            early.append(f"{workflow_id}/{what}")
    again = Counter(n for n in started.values() if n > 1)
    lost_jobs = {r.id for r in rows} & set(_lost_job_ids(app))
    without_reason = [
        key for key, n in started.items() if n > 1 and not key[1].startswith("on_") and id_of[key] not in lost_jobs
    ]
    records = [app.get_workflow(w) for w in runs]
    statuses = Counter(r.status for r in records)
    steps_ok = all(
        sorted(r.steps) == sorted(["root", "extra", "join", *(f"m{i}" for i in range(MIDDLE))])
        and {s.status for s in r.steps.values()} == {JobStatus.SUCCEEDED}
        and r.steps["join"].after[-1] == "extra"
        for r in records
    )
    recount_ok = all(
        r.stats.total == r.stats.succeeded == MIDDLE + 3 == sum(1 for k in id_of if k[0] == r.id) for r in records
    )
    print(
        f"\nworkflows under fire: {WORKFLOWS} diamonds of {MIDDLE + 2} steps + 1 grown at run time, "
        f"{WORKERS} workers, {kills} kill -9"
        f"\n  steps: {len(id_of)} for {WORKFLOWS * (MIDDLE + 3)}; started before a parent ended: {len(early)}"
        f"\n  starts per step or continuation run more than once (a kill, a lost attempt): {dict(again)}; "
        f"steps run again without a lost attempt: {len(without_reason)}"
        f"\n  continuations deferred: {sum(continuations.values())} for {2 * WORKFLOWS}; "
        f"events recorded per workflow: {Counter(fired.values())}"
        f"\n  lost attempts: {len(lost_by)}, of workers never killed: {len(lost_by_live)}"
        f"\n  workflow statuses: {dict(statuses)}; every step succeeded: {steps_ok}; "
        f"stats equal a recount: {recount_ok}"
    )
    assert len(id_of) == WORKFLOWS * (MIDDLE + 3), "the grown step was added once per workflow"
    assert early == []
    assert without_reason == [], "a step ran again only after its worker was killed"
    assert set(continuations.values()) == {2} and set(fired.values()) == {2}
    assert unfinished == {0}
    assert not lost_by_live, f"live workers lost leases: {Counter(lost_by_live)}"
    assert steps_ok and recount_ok and statuses == {"succeeded": WORKFLOWS}
    app.close()


def _lost_job_ids(app: App) -> list[int]:
    attempts = app.store.tables.attempts
    with app.store.db.engine.connect() as conn:
        return list(
            conn.execute(select(attempts.c.job_id).where(attempts.c.outcome == AttemptOutcome.LOST.value)).scalars()
        )


def _all_final(app: App) -> bool:
    store = app.store
    jobs = store.tables.jobs
    with store.db.engine.connect() as conn:
        live = conn.execute(
            select(func.count())
            .select_from(jobs)
            .where(jobs.c.status.in_(["scheduled", "queued", "running", "retrying", "blocked"]))
        ).scalar_one()
    return live == 0
