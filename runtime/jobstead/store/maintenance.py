"""Turns for maintenance duties: one process per interval per database does each.

Rescuing expired leases, pruning old jobs and pruning silent workers are
database-wide duties. Every worker offers to do them, but only the one that
takes the turn does: ``take`` moves the duty's ``next_run_at`` forward by a
compare-and-set, which exactly one caller wins per interval. That is a
leader election without sessions or advisory locks (a transaction pooler is
fine) and without a leader to lose: if the process that took a turn dies,
the next turn is taken by someone else one interval later. The duties
themselves are idempotent, so a turn taken twice (clock skew between hosts)
costs a scan, never a wrong result.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from ..clock import Clock
from .database import Database


class Turns:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def take(self, duty: str, every: timedelta, *, by: str) -> bool:
        """Whether ``by`` does ``duty`` now; if so, nobody else does for ``every``."""
        table = self._db.tables.maintenance
        now = self._clock()
        # Autocommitted: a process frozen after its UPDATE must not keep the duty's row
        # locked, or every other process's ``take`` would wait on it (no rescue, ever).
        with self._db.driver.alone(self._db.engine) as conn:
            taken = conn.execute(
                update(table)
                .where(table.c.name == duty, table.c.next_run_at <= now)
                .values(next_run_at=now + every, taken_by=by)
            ).rowcount
            if taken:
                return True
            if conn.execute(select(table.c.name).where(table.c.name == duty)).first() is not None:
                return False
        try:
            with self._db.engine.begin() as conn:  # the duty's first turn ever
                conn.execute(insert(table).values(name=duty, next_run_at=now + every, taken_by=by))
            return True
        except IntegrityError:  # someone else's first turn
            return False

    def next_turns(self) -> dict[str, tuple[str | None, object]]:
        """Each duty's last taker and next turn, for ``stats`` and the dashboard."""
        table = self._db.tables.maintenance
        with self._db.engine.connect() as conn:
            return {r.name: (r.taken_by, r.next_run_at) for r in conn.execute(select(table))}
