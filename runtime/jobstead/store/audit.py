"""The audit log: who changed what from the dashboard, and what came of it.

A row per action (retry, cancel, delete, pause, a cron switch), written after
the action through the store like every other write; the dashboard's
activity page reads them back.
"""

from __future__ import annotations

from ..clock import Clock
from .database import Database

#: Column widths: longer texts are cut, never refused (an audit row must not fail an action).
ACTOR_LENGTH, ACTION_LENGTH, TEXT_LENGTH = 200, 64, 1000


class Audit:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def record(self, *, actor: str, action: str, target: str, outcome: str) -> None:
        audit = self._db.tables.audit
        with self._db.engine.begin() as conn:
            conn.execute(
                audit.insert().values(
                    at=self._clock(),
                    actor=actor[:ACTOR_LENGTH],
                    action=action[:ACTION_LENGTH],
                    target=target[:TEXT_LENGTH],
                    outcome=outcome[:TEXT_LENGTH],
                )
            )
