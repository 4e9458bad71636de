"""An index on finished jobs, for retention.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Pruning deletes finished jobs oldest first; this partial index lets it find
them without reading the live ones or the whole table.
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FINISHED = "status IN ('cancelled', 'dead', 'failed', 'succeeded')"


def upgrade() -> None:
    names = context.config.attributes["names"]
    op.create_index(
        f"{names.prefix}jobs_finished",
        f"{names.prefix}jobs",
        ["finished_at"],
        schema=names.schema,
        postgresql_where=sa.text(FINISHED),
        sqlite_where=sa.text(FINISHED),
    )


def downgrade() -> None:
    names = context.config.attributes["names"]
    op.drop_index(f"{names.prefix}jobs_finished", f"{names.prefix}jobs", schema=names.schema)
