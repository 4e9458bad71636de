"""Turns for maintenance duties.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Rescue, retention and worker-registry pruning run once per interval per
database, by whichever process takes the turn (a compare-and-set on this
table), instead of by every worker at every heartbeat.
"""

import sqlalchemy as sa
from alembic import context, op

from jobstead.store.types import MYSQL_TABLE_OPTIONS, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    names = context.config.attributes["names"]
    op.create_table(
        f"{names.prefix}maintenance",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("next_run_at", UTCDateTime, nullable=False),
        sa.Column("taken_by", sa.String(64)),
        schema=names.schema,
        **MYSQL_TABLE_OPTIONS,
    )


def downgrade() -> None:
    names = context.config.attributes["names"]
    op.drop_table(f"{names.prefix}maintenance", schema=names.schema)
