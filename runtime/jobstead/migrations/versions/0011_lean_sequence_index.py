"""The sequence index keeps only the jobs that can hold a sequence.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

Written out by hand, like 0001, so it keeps meaning the same thing after
``store/tables.py`` moves on.

A claim of a handler with ``sequence_by`` takes a job only if no earlier job
of its key holds the sequence: unfinished, or failed or dead. Through an index
of every job with a key, each candidate's test read every job its key had ever
finished (50 index entries per candidate, half-way through 100 jobs a key; a
key that lives for months keeps thousands under retention). Now only the jobs
that can hold are indexed, so the test reads at most the few that do.

PostgreSQL and SQLite only: MySQL and MariaDB have no partial indexes, and their
index of the same columns stays as it is.
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

HAS_SEQUENCE = "sequence_key IS NOT NULL"
HOLDS_SEQUENCE = (
    "sequence_key IS NOT NULL AND status IN ('scheduled', 'queued', 'retrying', 'running', 'failed', 'dead')"
)


def _index_where(predicate: str) -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    if op.get_bind().dialect.name not in ("postgresql", "sqlite"):
        return
    op.drop_index(f"{p}jobs_sequence", f"{p}jobs", schema=schema)
    op.create_index(
        f"{p}jobs_sequence",
        f"{p}jobs",
        ["handler", "sequence_key", "id"],
        schema=schema,
        postgresql_where=sa.text(predicate),
        sqlite_where=sa.text(predicate),
    )


def upgrade() -> None:
    _index_where(HOLDS_SEQUENCE)


def downgrade() -> None:
    _index_where(HAS_SEQUENCE)
