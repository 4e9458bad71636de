"""How many jobs were waiting at the end of each minute of the last hour, from the jobs table alone.

Nothing records queue depth over time, so it is rebuilt from the rows: a job
waited from its ``run_at`` until it started (``started_at``), or until now
if it still waits. Only two kinds of rows can have waited during the last
hour: the live ones (through the ``jobs_active`` index) and the ones that
finished within the hour (through ``jobs_finished``); succeeded jobs from
before the hour, the bulk of the table, are never read. The rows are
counted per (minute waiting began, minute it ended) in SQL, times before the
hour folded into its first minute, so at most a few thousand groups come
back whatever the job rate.

A job that ran several times shows its last wait only (the row keeps the
last ``run_at`` and ``started_at``), so after retries the chart is an
approximation; without retries it is exact to the minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, func, null, select

from ..status import CLAIMABLE_STATUSES, FINAL_STATUSES, JobStatus
from ..store import Store

MINUTES = 60


def _index(value: Any, start: datetime) -> int:
    """Minutes from ``start`` to a ``minute_of`` value (a string on SQLite, a datetime elsewhere)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value + ":00").replace(tzinfo=start.tzinfo)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=start.tzinfo)
    return int((value - start).total_seconds() // 60)


def queue_depth(store: Store, start: datetime, now: datetime) -> list[int]:
    """Jobs waiting (due, not started) at the end of each of the ``MINUTES`` minutes from ``start``."""
    jobs = store.tables.jobs
    minute_of = store.db.driver.minute_of
    typed_start = bindparam("start", start, type_=jobs.c.run_at.type)
    before_start = bindparam("before_start", start - timedelta(minutes=1), type_=jobs.c.run_at.type)
    typed_now = bindparam("now", now, type_=jobs.c.run_at.type)

    def began(column: ColumnElement[Any]) -> ColumnElement[Any]:
        return minute_of(case((column < typed_start, typed_start), else_=column))

    def ended(column: ColumnElement[Any]) -> ColumnElement[Any]:
        return minute_of(case((column < typed_start, before_start), else_=column))

    # Still waiting: only ``run_at`` is read, which the ready index holds (an index-only scan).
    waiting = (
        select(began(jobs.c.run_at).label("a"), null().label("b"), func.count().label("n"))
        .where(jobs.c.status.in_([s.value for s in CLAIMABLE_STATUSES]), jobs.c.run_at <= typed_now)
        .group_by("a")
    )
    running = (
        select(began(jobs.c.run_at).label("a"), ended(jobs.c.started_at).label("b"), func.count().label("n"))
        .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.run_at <= typed_now)
        .group_by("a", "b")
    )
    left_at = func.coalesce(jobs.c.started_at, jobs.c.finished_at)
    finished = (
        select(began(jobs.c.run_at).label("a"), ended(left_at).label("b"), func.count().label("n"))
        .where(
            jobs.c.status.in_(sorted(s.value for s in FINAL_STATUSES)),
            jobs.c.finished_at >= typed_start,
            and_(left_at >= jobs.c.run_at, left_at >= typed_start),
        )
        .group_by("a", "b")
    )
    depth = [0] * MINUTES
    with store.db.engine.connect() as conn:
        groups = [*conn.execute(waiting), *conn.execute(running), *conn.execute(finished)]
    for a, b, n in groups:
        # The minute under way counts as the last one (as in the finished-jobs chart).
        first = min(max(_index(a, start), 0), MINUTES - 1)
        last = MINUTES - 1 if b is None else min(_index(b, start), MINUTES - 1) - 1
        for i in range(first, last + 1):
            depth[i] += int(n)
    return depth
