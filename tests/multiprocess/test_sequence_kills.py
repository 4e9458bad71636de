"""Sequences under kill -9: per key, starts in id order with no overlap, across 4 worker processes while 10 of
them are killed mid-job; a killed job's re-run keeps its place (nothing after it starts before it ends).

The times are read back from the database: every attempt writes its start into
the job's checkpoint as it begins (a killed attempt's start stays there), and the
last one its start and end into the result, all from this machine's one clock.
Not the claim's ``started_at``: that is the claimer's time as it began the
claim, which a wait for a pooled connection can put well before the claim took
the job. Each kill picks a worker that holds a running job, so each interrupts one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import select

from jobstead import App, JobStatus
from jobstead.status import AttemptOutcome
from tests.conftest import Target
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.slow]

KEYS = 10
KILLS = 10
WORKER = [
    "worker",
    "--app",
    "tests.apps.sequenced:app",
    "--concurrency",
    "4",
    "--poll-interval",
    "0.05",
    "--lease-seconds",
    "1",
]


def _defer_round(app: App, start: int, per_key: int) -> int:
    """``per_key`` more jobs for every key, after the ones already deferred (so after them in id order)."""
    handler = app.get_handler("in_sequence")
    handler.defer_many([{"account_id": f"acct-{k}", "n": start + n} for n in range(per_key) for k in range(KEYS)])
    return start + per_key


def test_a_sequence_keeps_its_order_through_ten_kill_9s_of_four_workers(server_target: Target, tmp_path: Path) -> None:
    from tests.apps import sequenced

    app = App(server_target.url, schema=server_target.schema)
    h = sequenced.app.get_handler("in_sequence")
    app.handler(name="in_sequence", sequence_by="account_id", max_attempts=h.max_attempts, retry=0)(h.func)
    deferred = _defer_round(app, 0, 20)
    store, jobs, workers_table = app.store, app.store.tables.jobs, app.store.tables.workers
    spawned = 0

    def spawn() -> subprocess.Popen[bytes]:
        nonlocal spawned
        spawned += 1
        return spawn_cli(WORKER, server_target.env(), tmp_path / f"worker-{spawned}.log")

    workers = [spawn() for _ in range(4)]
    killed: list[int] = []
    rng = random.Random(34)
    try:
        deadline = time.monotonic() + 240
        while len(killed) < KILLS:
            assert time.monotonic() < deadline, f"only {len(killed)} kills in 240 s"
            time.sleep(rng.uniform(0.2, 0.6))
            with store.db.engine.connect() as conn:
                unfinished = conn.execute(
                    select(jobs.c.id).where(jobs.c.status.in_([s.value for s in JobStatus if not s.is_final]))
                ).all()
                holding = set(
                    conn.execute(
                        select(workers_table.c.pid)
                        .select_from(workers_table.join(jobs, jobs.c.lease_owner == workers_table.c.id))
                        .where(jobs.c.status == JobStatus.RUNNING.value)
                    ).scalars()
                )
            if len(unfinished) < 10 * KEYS:  # keep the sequences busy until every kill is done
                deferred = _defer_round(app, deferred, 5)
            ours = [w for w in workers if w.poll() is None and w.pid in holding]
            if not ours:
                continue
            victim = rng.choice(ours)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            killed.append(victim.pid)
            workers[workers.index(victim)] = spawn()
        _wait_all_final(app, timeout=240)
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0, 0, 0], "the workers alive at the end stop cleanly"
    assert len(killed) == KILLS

    with store.db.engine.connect() as conn:
        rows = conn.execute(
            select(jobs.c.id, jobs.c.status, jobs.c.args, jobs.c.result, jobs.c.checkpoint).order_by(jobs.c.id)
        ).all()
    assert {row.status for row in rows} == {JobStatus.SUCCEEDED.value}, "every job ran to success"
    lost = sum(1 for row in rows for a in store.queries.attempts(row.id) if a.outcome is not AttemptOutcome.SUCCEEDED)
    assert lost >= KILLS, f"each kill interrupted a running job: {lost} attempts lost"
    assert max(len(row.checkpoint["starts"]) for row in rows) > 1, "some killed job ran again"
    chains: dict[str, list[tuple[int, float, float]]] = {}
    for row in rows:
        first_start = min(row.checkpoint["starts"])
        assert first_start <= row.result["start"]
        chains.setdefault(row.args["account_id"], []).append((row.id, first_start, row.result["end"]))
    assert len(chains) == KEYS and all(len(c) == deferred for c in chains.values())
    for key, chain in chains.items():
        for (earlier, _, ended), (later, started, _) in pairwise(chain):
            assert started >= ended, (
                f"{key}: job {later} first started {ended - started:.3f} s before job {earlier}, deferred "
                f"before it, ended; their attempts: {_attempts(app, earlier)} and {_attempts(app, later)}"
            )
    app.close()


def _attempts(app: App, job_id: int) -> list[str]:
    return [
        f"#{a.attempt} {a.outcome.value} by {a.worker_id} {a.started_at} .. {a.finished_at}"
        for a in app.store.queries.attempts(job_id)
    ]


def _wait_all_final(app: App, timeout: float) -> None:
    jobs = app.store.tables.jobs
    deadline = time.monotonic() + timeout
    while True:
        with app.store.db.engine.connect() as conn:
            left = conn.execute(
                select(jobs.c.id).where(jobs.c.status.in_([s.value for s in JobStatus if not s.is_final])).limit(1)
            ).first()
        if left is None:
            return
        assert time.monotonic() < deadline, "the sequences did not finish"
        time.sleep(0.2)
