"""The statements a step's completion adds, planned on a busy table (PostgreSQL): through indexes, never a scan.

A completion of a step counts its children down (``Workflows._count_down``):
one UPDATE finds them through the edges keyed by the steps that ended, counts
each one's edges from those steps through the edges' index by child, and
writes them by id. It must go through the edges' and the jobs' primary keys
whatever the size of the jobs table, or a fan-in would cost each parent a scan
of every job.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from jobstead import App
from jobstead.status import AttemptOutcome, JobStatus
from jobstead.store import Completion
from tests.conftest import Target

pytestmark = pytest.mark.postgres


def test_a_step_completion_finds_its_children_through_indexes(postgres_target: Target) -> None:
    app = App(postgres_target.url, schema=postgres_target.schema)

    @app.handler
    def h(n: int = 0) -> None: ...

    app.migrate()
    store = app.store
    h.defer_many([{"n": i} for i in range(5000)])
    for _ in range(40):
        wf = app.workflow("wide")
        wf.add("root", h.job())
        for i in range(100):
            wf.add(f"s{i}", h.job(n=i), after=["root"])
        wf.add("join", h.job(), after=[f"s{i}" for i in range(100)])
        wf.defer()
    with store.db.engine.begin() as conn:
        for table in (store.tables.jobs, store.tables.workflow_edges, store.tables.workflows):
            conn.exec_driver_sql(f"ANALYZE {store.tables.qualified(table)}")
    jobs = store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=6000, lease_seconds=60)
    root = next(j for j in jobs if j.step == "root")
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        completion = Completion(
            root.id, "w", root.attempts, AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED, store.clock()
        )
        assert store.leases.complete([completion]) == set()
    finally:
        event.remove(store.db.engine, "before_cursor_execute", capture)
    jobs_table, edges_table = store.tables.jobs.name, store.tables.workflow_edges.name
    assert not [s for s, _ in sent if s.startswith("SELECT") and edges_table in s], "counted in the UPDATE"
    count_down = next((s, p) for s, p in sent if s.startswith("UPDATE") and "waiting" in s and "CASE" in s)
    url = postgres_target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + count_down[0], count_down[1]))
        conn.rollback()
    assert f"Seq Scan on {jobs_table}" not in plan and f"Seq Scan on {edges_table}" not in plan, plan
    assert f"{edges_table}_pkey" in plan and f"{edges_table}_child" in plan, plan
    assert f"{jobs_table}_pkey" in plan, plan
    assert app.get_workflow(root.workflow_id or 0).stats.queued == 100
    app.close()
