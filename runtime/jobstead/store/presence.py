"""What a database already holds, found without creating or changing anything.

Read-only tools (``jobstead jobs list``, ``stats``, ``pause``) must not create
a SQLite file or migrate a schema in whatever directory they run in: an empty
table there would tell a user in the wrong directory that they have no jobs.
They ask here first, and say what is missing instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import inspect, select

from .database import Database

SchemaState = Literal["missing", "outdated", "current"]


def schema_state(db: Database) -> SchemaState:
    """``missing``: no Jobstead tables with this prefix/schema; ``outdated``: older than this code."""
    jobs = db.tables.jobs
    with db.engine.connect() as conn:
        if not inspect(conn).has_table(jobs.name, schema=jobs.schema):
            return "missing"
    from ..migrations import is_current  # Alembic only when a command needs it

    return "current" if is_current(db) else "outdated"


def schema_revision(db: Database) -> str | None:
    """The migration revision the schema is at, or None where there is none yet (read-only)."""
    from ..migrations import current_revision

    with db.engine.connect() as conn:
        return current_revision(db, conn)


@dataclass(frozen=True)
class KnownNames:
    """Handler and queue names some app has published here, or some job carries."""

    handlers: frozenset[str]
    queues: frozenset[str]


def known_names(db: Database) -> KnownNames:
    t = db.tables
    with db.engine.connect() as conn:
        handler_rows = conn.execute(select(t.handlers.c.name, t.handlers.c.queue)).all()
        worker_queues = conn.execute(select(t.workers.c.queues).where(t.workers.c.queues.is_not(None))).scalars()
        queues = {q for (_, q) in handler_rows}
        for listed in worker_queues:
            queues.update(str(q) for q in listed or ())
        queues.update(conn.execute(select(t.jobs.c.queue).distinct()).scalars())
        handlers = {n for (n, _) in handler_rows}
        handlers.update(conn.execute(select(t.jobs.c.handler).distinct()).scalars())
    return KnownNames(handlers=frozenset(handlers), queues=frozenset(queues))


def known_in_scope(db: Database, scope: Literal["handler", "queue"], also: Iterable[str] = ()) -> set[str]:
    """The handler (or queue) names a pause may name: those this database knows, plus ``also``
    (the caller's own app's). One rule for ``app.pause`` and ``jobstead pause``: a typo must not "succeed"."""
    names = known_names(db)
    return set(names.handlers if scope == "handler" else names.queues) | set(also)
