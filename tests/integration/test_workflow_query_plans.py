"""The statements a step's completion adds, planned on a busy table (PostgreSQL): through indexes, never a scan.

A completion of a step counts its children down (``Workflows._count_down``):
one UPDATE reads the edges of the steps that ended through the edges' primary
key (parent first), counts them per child, and writes the children by id. It
must go through the edges' and the jobs' primary keys whatever the size of the
jobs table, or a fan-in would cost each parent a scan of every job; and never
through the edges' index by child, which reads every edge of the child (10,000
for a fan-in of 10,000) at each completion.
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
    count_down = next((s, p) for s, p in sent if "UPDATE" in s and "waiting" in s and "CASE" in s)
    url = postgres_target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + count_down[0], count_down[1]))
        conn.rollback()
    assert f"Seq Scan on {jobs_table}" not in plan and f"Seq Scan on {edges_table}" not in plan, plan
    assert f"{edges_table}_pkey" in plan and f"{edges_table}_child" not in plan, plan
    assert f"{jobs_table}_pkey" in plan, plan
    assert app.get_workflow(root.workflow_id or 0).stats.queued == 100
    app.close()


def _edges_read(node: dict[str, Any], edges_table: str) -> int:
    """Rows of ``edges_table`` an EXPLAIN ANALYZE (JSON) plan node and its children read."""
    read = 0
    if node.get("Relation Name") == edges_table:
        loops = int(node.get("Actual Loops", 1))
        read += (int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))) * loops
    for child in node.get("Plans", []):
        read += _edges_read(child, edges_table)
    return read


def test_a_fan_in_counts_down_reading_only_the_edges_of_the_steps_that_ended(postgres_target: Target) -> None:
    """Fifty of 2,000 parents of one step end in one write: their 50 edges are read, not the 2,000
    edges of the step they all lead to (per completion write, under the workflow's lock: a fan-in of
    10,000 spent 16 ms of the server's time in each)."""
    app = App(postgres_target.url, schema=postgres_target.schema)

    @app.handler
    def h(n: int = 0) -> None: ...

    app.migrate()
    store = app.store
    fan = 2000
    wf = app.workflow("fan")
    wf.add("root", h.job())
    for i in range(fan):
        wf.add(f"leaf-{i}", h.job(n=i), after=["root"])
    wf.add("sink", h.job(), after=[f"leaf-{i}" for i in range(fan)])
    run = wf.defer()
    with store.db.engine.begin() as conn:
        for table in (store.tables.jobs, store.tables.workflow_edges, store.tables.workflows):
            conn.exec_driver_sql(f"ANALYZE {store.tables.qualified(table)}")

    def complete(jobs: list[Any]) -> None:
        now = store.clock()
        done = [Completion(j.id, "w", j.attempts, AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED, now) for j in jobs]
        assert store.leases.complete(done) == set()

    complete(store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=1, lease_seconds=60))
    leaves = store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=50, lease_seconds=60)
    assert len(leaves) == 50 and all(j.step and j.step.startswith("leaf-") for j in leaves)
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        complete(leaves)
    finally:
        event.remove(store.db.engine, "before_cursor_execute", capture)
    count_down = next((s, p) for s, p in sent if "UPDATE" in s and "waiting" in s and "CASE" in s)
    url = postgres_target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        # On a table this small a scan of every edge is the planner's fair choice; on a big one
        # (every workflow's edges, kept until retention) it is not: the index paths are compared.
        conn.execute("SET LOCAL enable_seqscan = off")
        (plan,) = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + count_down[0], count_down[1]).fetchone() or (None,)
        conn.rollback()
    read = _edges_read(plan[0]["Plan"], store.tables.workflow_edges.name)
    assert read <= 100, f"{read} edges read to count down 50 parents: {plan}"
    assert run.refresh().stats.blocked == 1
    app.close()
