"""Keeping the planner's statistics of the hot tables up with their growth.

PostgreSQL keeps a connection's prepared statements' plans, made for each
table as its statistics describe it. Planned on the statistics of an empty
jobs table, a worker's claim read every ready row through a bitmap scan and
sorted them all (12 ms a claim at 20,000 ready jobs, against 1.5 ms through
the ready index), until new statistics invalidated that plan. The database's
own analyze comes a minute or more late; the planner statistics service of
the workers within seconds (``services.planner_statistics``); a bulk defer
(``defer_many``, a batch, a workflow) does it at once (``after_bulk_write``),
so the first drain of a fresh installation is not the slow one (measured:
the first drain of 20,000 jobs under a global limit of 100 went from about
9,300 to 13,300-15,300 jobs/s, the rate of the drains after it).
"""

from __future__ import annotations

import logging

from .database import Database

logger = logging.getLogger("jobstead.store")

#: Jobs written in one transaction of Jobstead's own from which the writer checks the statistics:
#: the check is one catalog read, and an ANALYZE (about 0.1 s) only once per doubling of the table.
BULK_WRITE = 1000
#: How long the workers' service waits for the table's analyze lock (the database's own vacuum or
#: analyze may hold it, doing the same work).
SERVICE_LOCK_WAIT = 1.0
#: How long a defer waits for the table's analyze lock: autovacuum may hold it for minutes on a
#: busy table, and the defer's caller (a request, say) must not wait a second on what the
#: workers' service does within seconds anyway.
BULK_WRITE_LOCK_WAIT = 0.05


def refresh(db: Database, *, lock_wait: float = SERVICE_LOCK_WAIT) -> bool:
    """Gather the statistics of the jobs table and of the workflows' edges again if either outgrew
    them (``Driver.refresh_planner_statistics``, waiting ``lock_wait`` seconds at most for each
    table's analyze lock); whether either did.

    The edges too: a workflow of 10,000 steps adds 20,000 at once, and with statistics of
    an edges table of a hundred rows the planner hashed a scan of all of them at each
    completion of a fan-in (``Workflows._count_down``) instead of reading the few it needs.
    """
    driver, engine, tables = db.driver, db.engine, db.tables
    jobs = driver.refresh_planner_statistics(engine, tables.qualified(tables.jobs), lock_wait=lock_wait)
    edges = driver.refresh_planner_statistics(engine, tables.qualified(tables.workflow_edges), lock_wait=lock_wait)
    return jobs or edges


def after_bulk_write(db: Database, count: int) -> None:
    """After ``count`` jobs were committed by a transaction of Jobstead's own: ``refresh`` if they are
    many. Never raises: the jobs are written, and the workers' service checks again within seconds.

    Not after a write in the caller's transaction: it is not committed yet, and an ANALYZE
    in it would only see the table as it was before.
    """
    if count < BULK_WRITE or not db.driver.keeps_plans:
        return
    try:
        refresh(db, lock_wait=BULK_WRITE_LOCK_WAIT)
    except Exception as exc:  # the defer succeeded; this is only a head start on the service
        logger.debug("planner statistics after a bulk defer: %s", exc)
