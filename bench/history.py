"""Jobstead only: does claiming stay cheap when the table is full of finished jobs?

Finished rows are written straight into Jobstead's table with
``INSERT ... SELECT generate_series`` (the bench's business only; the runtime
never sees this SQL), a million rows per statement, in the shape a worker
leaves a succeeded no-op job: status ``succeeded``, one attempt, ``result`` NULL
(a handler that returns None), the lease owner kept (a worker id of the same
length), no ``jobstead_attempts`` row (successes are not logged there), finished
a day ago; then ``VACUUM ANALYZE`` as autovacuum would eventually do. A drain then claims
fresh jobs around them. After each drain its jobs are deleted again (and the
table vacuumed), so every repetition starts from exactly N finished rows.
"""

from __future__ import annotations

from .harness import Harness
from .systems import System

FILL = """
INSERT INTO jobstead_jobs (handler, queue, priority, status, args, run_at, created_at, started_at,
                           finished_at, attempts, cancel_requested, lease_owner)
SELECT 'noop', 'default', 0, 'succeeded', '{"t": 0.0}'::jsonb, t, t, t, t + interval '1 ms', 1, false,
       'bench-0123456789abcd'
FROM (SELECT now() - interval '1 day' + g * interval '1 ms' AS t FROM generate_series(%s::bigint, %s::bigint) AS g) AS s
"""
#: Rows per INSERT: each statement's WAL and memory stay bounded at 10,000,000 rows.
CHUNK = 1_000_000


async def fill(harness: Harness, system: System, finished: int) -> int:
    """Empty the table, write ``finished`` finished jobs, vacuum; return the highest id (the watermark)."""
    conn = await harness.admin(system)
    await conn.execute("TRUNCATE jobstead_jobs, jobstead_attempts")
    for first in range(1, finished + 1, CHUNK):
        await conn.execute(FILL, (first, min(first + CHUNK - 1, finished)))
    await conn.execute("VACUUM ANALYZE jobstead_jobs")
    await conn.execute("CHECKPOINT")
    return await harness.scalar(system, "SELECT coalesce(max(id), 0) FROM jobstead_jobs")


async def back_to(harness: Harness, system: System, watermark: int) -> None:
    """Remove the jobs a drain added (their attempts go with them), so the next run starts alike."""
    conn = await harness.admin(system)
    await conn.execute("DELETE FROM jobstead_jobs WHERE id > %s", (watermark,))
    await conn.execute("VACUUM jobstead_jobs, jobstead_attempts")
    await conn.execute("CHECKPOINT")
