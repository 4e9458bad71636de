"""Jobstead only: does claiming stay cheap when the table is full of finished jobs?

Finished rows are written straight into Jobstead's table with one
``INSERT ... SELECT generate_series`` (the bench's business only; the runtime
never sees this SQL): status ``succeeded``, one attempt, finished a day ago,
then ``VACUUM ANALYZE`` as autovacuum would eventually do. A drain then claims
fresh jobs around them. After each drain its jobs are deleted again (and the
table vacuumed), so every repetition starts from exactly N finished rows.
"""

from __future__ import annotations

from .harness import Harness
from .systems import System

FILL = """
INSERT INTO jobstead_jobs (handler, queue, priority, status, args, run_at, created_at, started_at,
                           finished_at, attempts, cancel_requested, result)
SELECT 'noop', 'default', 0, 'succeeded', '{"t": 0.0}'::jsonb, t, t, t, t + interval '1 ms', 1, false, 'null'::jsonb
FROM (SELECT now() - interval '1 day' + g * interval '1 ms' AS t FROM generate_series(1, %s) AS g) AS s
"""


async def fill(harness: Harness, system: System, finished: int) -> int:
    """Empty the table, write ``finished`` finished jobs, vacuum; return the highest id (the watermark)."""
    conn = await harness.admin(system)
    await conn.execute("TRUNCATE jobstead_jobs, jobstead_attempts")
    await conn.execute(FILL, (finished,))
    await conn.execute("VACUUM ANALYZE jobstead_jobs")
    await conn.execute("CHECKPOINT")
    return await harness.scalar(system, "SELECT coalesce(max(id), 0) FROM jobstead_jobs")


async def back_to(harness: Harness, system: System, watermark: int) -> None:
    """Remove the jobs a drain added (their attempts go with them), so the next run starts alike."""
    conn = await harness.admin(system)
    await conn.execute("DELETE FROM jobstead_jobs WHERE id > %s", (watermark,))
    await conn.execute("VACUUM jobstead_jobs, jobstead_attempts")
    await conn.execute("CHECKPOINT")
