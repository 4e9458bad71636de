"""Workers record the code crons their app defines.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

So that a process without the app's code (the operator) can re-create a code
cron that was deleted from the database while workers that define it run.
"""

import sqlalchemy as sa
from alembic import context, op

from jobstead.store.types import JSONType

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    names = context.config.attributes["names"]
    op.add_column(f"{names.prefix}workers", sa.Column("crons", JSONType), schema=names.schema)


def downgrade() -> None:
    names = context.config.attributes["names"]
    op.drop_column(f"{names.prefix}workers", "crons", schema=names.schema)
